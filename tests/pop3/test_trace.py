"""The protocol trace: redaction on library events (sans-IO) and a live service's records."""

from __future__ import annotations

import base64

import trio

from firmware.pop3.connection import ServerConnection
from firmware.pop3.events import (
    NEED_DATA,
    BadCommand,
    Command,
    MultilineStart,
    Reply,
    SaslContinuation,
    SaslResponse,
)
from firmware.pop3.trace import (
    Tracer,
    TraceRecord,
    body_octets,
    redact_command,
    reply_line,
)
from tests.pop3.conftest import ALICE_PASSWORD, MESSAGES, Server


def client_events(wire: bytes, *, sasl: bool = False) -> list[str]:
    """Feed client bytes to a ServerConnection; the redacted trace line of each event.
    With `sasl`, every AUTH is answered with a continuation, so the next line is a
    SaslResponse."""
    conn = ServerConnection()
    conn.send(Reply(True, "ready"))
    conn.receive_data(wire)
    lines: list[str] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return lines
        assert isinstance(event, Command | BadCommand | SaslResponse), event
        lines.append(redact_command(event))
        if sasl and isinstance(event, Command) and event.keyword == "AUTH":
            conn.send(SaslContinuation(""))
        else:  # +OK where the state table allows it, so the session reaches TRANSACTION
            ok = isinstance(event, Command) and event.keyword in ("USER", "PASS", "STAT")
            conn.send(Reply(ok))


def test_secrets_are_redacted_from_client_lines() -> None:
    secret = base64.b64encode(b"\0alice\0" + ALICE_PASSWORD.encode()).decode()
    wire = (
        "APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n"
        f"AUTH PLAIN {secret}\r\nUSER alice\r\nPASS {ALICE_PASSWORD}\r\n"
        "STAT\r\nRETR 2\r\nTOP 1 10\r\nNOSUCH x\r\n"
    ).encode()
    lines = client_events(wire)
    assert lines == [
        "APOP alice ***",
        "AUTH PLAIN ***",
        "USER alice",
        "PASS ***",
        "STAT",
        "RETR 2",
        "TOP 1 10",
        "<unknown command>",
    ]
    assert not any(ALICE_PASSWORD in line or secret in line for line in lines)


def test_sasl_continuation_lines_are_redacted() -> None:
    lines = client_events(b"AUTH PLAIN\r\nc2VjcmV0\r\n", sasl=True)
    assert lines == ["AUTH PLAIN", "***"]


def test_reply_lines() -> None:
    assert reply_line(Reply(True, "2 320")) == "+OK 2 320"
    assert reply_line(Reply(False, "busy", "SYS/TEMP")) == "-ERR [SYS/TEMP] busy"
    assert reply_line(MultilineStart("120 octets")) == "+OK 120 octets"
    assert reply_line(SaslContinuation("")) == "+"
    assert body_octets("<120 octets>") == 120
    assert body_octets("+OK 120 octets") is None


def test_ring_is_bounded_and_subscriber_that_lags_loses_records_never_blocks() -> None:
    tracer = Tracer(ring_size=3, clock=lambda: 1.0)
    assert not tracer.active
    with tracer.subscribe(buffer=2) as receive:
        assert tracer.active
        for n in range(5):
            tracer.record(1, "127.0.0.1:5", "c->s", f"NOOP {n}")
        got = [receive.receive_nowait().line for _ in range(2)]
    assert got == ["NOOP 0", "NOOP 1"]
    assert tracer.dropped == 3
    assert [r.line for r in tracer.show()] == ["NOOP 2", "NOOP 3", "NOOP 4"]
    assert not tracer.active
    record = TraceRecord(7, "p", 2.5, "s->c", "+OK")
    assert TraceRecord.from_json(record.to_json()) == record


async def test_a_live_session_is_traced_with_body_octet_counts(pop3: Server) -> None:
    tracer = pop3.service.tracer
    assert not tracer.active  # nobody traces: no records
    client = await pop3.connect()
    await client.login()
    await client.aclose()
    assert tracer.show() == []

    tracer.on = True
    client = await pop3.connect()
    assert (await client.login()).startswith(b"+OK")
    _, body = await client.multi("RETR 2")
    await client.cmd("QUIT")
    await client.aclose()
    records = tracer.show()
    assert {r.session for r in records} == {records[0].session}
    assert [(r.direction, r.line.split(" ")[0]) for r in records] == [
        ("s->c", "+OK"),
        ("c->s", "USER"),
        ("s->c", "+OK"),
        ("c->s", "PASS"),
        ("s->c", "+OK"),
        ("c->s", "RETR"),
        ("s->c", "+OK"),
        ("s->c", f"<{len(body) - 3}"),  # the stuffed body without ".\r\n"
        ("c->s", "QUIT"),
        ("s->c", "+OK"),
    ]
    assert records[3].line == "PASS ***"
    assert not any(ALICE_PASSWORD in r.line for r in records)
    assert len(body) - 3 > len(MESSAGES[1])  # message 2 has lines that needed stuffing


async def test_subscriber_sees_records_as_they_happen(pop3: Server) -> None:
    tracer = pop3.service.tracer
    with tracer.subscribe() as receive:
        client = await pop3.connect()
        await client.line()
        record = await receive.receive()
        assert record.direction == "s->c" and record.line.startswith("+OK")
        await client.cmd("CAPA")
        assert (await receive.receive()).line == "CAPA"
        await client.aclose()
    with trio.fail_after(5):
        while tracer.subscribers:
            await trio.sleep(0)
    assert not tracer.active
