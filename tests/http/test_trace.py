"""GET /api/v1/trace: the POP3 protocol trace as Server-Sent Events, read with httpx."""

from __future__ import annotations

import json
import poplib
from collections.abc import Iterator

from tests.http.conftest import BOXES, Lab

API = "/api/v1"


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of each SSE event; comment lines are skipped (WHATWG HTML §9.2.6)."""
    event, data = "message", list[str]()
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)


def test_trace_stream_carries_a_session_with_the_password_redacted(lab: Lab) -> None:
    with (
        lab.client() as client,
        client.stream("GET", f"{API}/trace", timeout=30) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines).startswith(":")  # subscribed: what follows is in the stream
        pop = poplib.POP3("127.0.0.1", lab.pop3_port, timeout=10)
        pop.user("alice")
        pop.pass_(BOXES["alice"])
        pop.stat()
        pop.quit()
        records = []
        for event, data in sse_events(lines):
            assert event == "trace"
            records.append(json.loads(data))
            if (
                records[-1]["line"].startswith("+OK")
                and records[-2:-1]
                and (records[-2]["line"] == "QUIT")
            ):
                break
    assert [r["line"].split(" ")[0] for r in records] == [
        "+OK",
        "USER",
        "+OK",
        "PASS",
        "+OK",
        "STAT",
        "+OK",
        "QUIT",
        "+OK",
    ]
    assert records[3]["line"] == "PASS ***" and records[3]["direction"] == "c->s"
    assert all(BOXES["alice"] not in r["line"] for r in records)


def test_trace_needs_the_admin_and_a_numeric_session(lab: Lab) -> None:
    with lab.client(auth=None) as anonymous:
        assert anonymous.get(f"{API}/trace").status_code == 401
    assert lab.api.get(f"{API}/trace", params={"session": "x"}).status_code == 400
    assert lab.api.get(f"{API}/trace", params={"bogus": "1"}).status_code == 400
    document = lab.api.get(f"{API}/openapi.json").json()
    assert (
        "text/event-stream"
        in document["paths"][f"{API}/trace"]["get"]["responses"]["200"]["content"]
    )
