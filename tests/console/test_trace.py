"""Console `trace on|off|show [SESSION]` over a running device with a real POP3 client."""

from __future__ import annotations

import poplib

import trio

from firmware.device.device import Device
from tests.console.conftest import BOX_PASSWORD, Term


def alice_session(port: int) -> None:
    pop = poplib.POP3("127.0.0.1", port, timeout=15)
    pop.user("alice")
    pop.pass_(BOX_PASSWORD)
    pop.stat()
    pop.quit()


async def test_trace_on_show_off(live_device: Device, live_term: Term) -> None:
    port = live_device.pop3_addresses[0][1]
    assert live_term.run("trace show") == "no trace records (tracing is off: `trace on`)\n"
    await trio.to_thread.run_sync(alice_session, port)
    assert live_term.run("trace show").startswith("no trace records")  # nothing while off

    assert live_term.run("trace on") == "protocol trace on\n"
    await trio.to_thread.run_sync(alice_session, port)
    shown = live_term.run("trace show").splitlines()
    # HH:MM:SS.mmm SESSION PEER DIRECTION LINE
    rows = [line.split(maxsplit=3) for line in shown]
    assert {row[1] for row in rows} == {rows[0][1]} and rows[0][2].startswith("127.0.0.1:")
    assert [row[3] for row in rows[1::2]] == [
        "c->s USER alice",
        "c->s PASS ***",
        "c->s STAT",
        "c->s QUIT",
    ]
    assert all(row[3].startswith("s->c +OK") for row in rows[0::2]) and len(rows) == 9
    assert BOX_PASSWORD not in "\n".join(shown)
    session = rows[0][1]
    assert live_term.run(f"trace show {session}").splitlines() == shown
    assert live_term.run("trace show 99999") == "no trace records of session 99999\n"
    assert live_term.run("trace show x") == (
        "error: trace show: 'x' is not a session id (see `session list`)\n"
    )
    assert live_term.run("trace off") == "protocol trace off\n"
    await trio.to_thread.run_sync(alice_session, port)
    assert len(live_term.run("trace show").splitlines()) == len(shown)  # the ring keeps them
    assert "trace show [SESSION]" in live_term.run("help trace")
