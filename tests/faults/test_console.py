"""Console `fault add|list|clear` over a running device, met by a real client."""

from __future__ import annotations

import poplib

import pytest
import trio

from firmware.console.shell import ConsoleShell
from tests.console.conftest import Term
from tests.faults.conftest import Lab


@pytest.fixture
def term(lab: Lab) -> Term:
    term = Term(ConsoleShell(lab.ctx, clock=trio.current_time))
    term.shell.connect()
    assert "logged in" in term.login("admin-lab")
    return term


async def test_fault_add_list_clear(lab: Lab, term: Term) -> None:
    assert term.run("fault list") == "no faults set\n"
    assert term.run("fault add reply-error command=PASS code=IN-USE times=1") == (
        "fault 1 set: reply-error command=PASS times=1 code=IN-USE text=fault injected "
        "(fired 0, 1 left)\n"
    )

    def login() -> bytes:
        pop = poplib.POP3("127.0.0.1", lab.port, timeout=15)
        pop.user("alice")
        try:
            return pop.pass_("alice-lab")
        except poplib.error_proto as exc:
            return bytes(exc.args[0])
        finally:
            pop.close()

    assert (await trio.to_thread.run_sync(login)).startswith(b"-ERR [IN-USE] fault injected")
    assert term.run("fault list") == (
        "seed random\n"
        "   1 reply-error command=PASS times=1 code=IN-USE text=fault injected (fired 1, spent)\n"
    )
    assert (await trio.to_thread.run_sync(login)).startswith(b"+OK")
    term.run("fault add delay seconds=0.5")
    assert term.run("fault clear 1") == "cleared 1 fault: 1\n"
    assert term.run("fault clear") == "cleared 1 fault: 2\n"
    assert term.run("fault list") == "no faults set\n"


async def test_fault_mistakes_are_one_line(term: Term) -> None:
    assert term.run("fault add") == "error: usage: fault add ACTION [K=V ...]\n"
    assert term.run("fault add nope").startswith("error: fault add: unknown action 'nope'")
    assert term.run("fault add delay seconds=x") == (
        "error: fault add delay: seconds must be a number, not 'x'\n"
    )
    assert term.run("fault add delay x=1").startswith("error: fault add delay: unknown key 'x'")
    assert term.run("fault clear 7") == "error: fault 7: no such fault (see `fault list`)\n"
    assert (
        term.run("fault clear x")
        == "error: fault clear: 'x' is not a fault id (see `fault list`)\n"
    )
    assert "retr-break" in term.run("help fault add")
