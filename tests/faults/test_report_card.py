"""The device's fault plan feeds its client report card: a client that meets an injected
fault has it on its card (counted, graded by what the client did next), through a real
device and a real client (poplib)."""

from __future__ import annotations

import poplib

import pytest
import trio
import trio.testing

from firmware.ops.clients import client_list
from tests.faults.conftest import Lab


async def test_a_fault_met_is_on_the_clients_card(lab: Lab) -> None:
    lab.fault(action="reply-error", command="PASS", box="alice", code="IN-USE", times=1)

    def refused_then_retried() -> None:
        pop = poplib.POP3("127.0.0.1", lab.port, timeout=15)
        pop.user("alice")
        with pytest.raises(poplib.error_proto, match=r"IN-USE"):
            pop.pass_("alice-lab")
        pop.quit()
        lab.retr(1)  # the client comes back at once: no back-off

    await trio.to_thread.run_sync(refused_then_retried)
    cards = {card.address: card for card in client_list(lab.ctx).clients}
    card = cards["127.0.0.1"]
    assert card.counters["faults_met"] == 1
    items = {item.name: item for item in card.items}
    assert "fault:reply-error [IN-USE]" in items, sorted(items)
    assert items["fault:reply-error [IN-USE]"].verdict != "not-seen"


async def test_a_device_fault_is_no_clients(lab: Lab) -> None:
    # flash-full has no peer: it fires inside the store, not on a client's session.
    lab.fault(action="flash-full", times=1)
    await trio.to_thread.run_sync(lab.retr, 1)
    cards = client_list(lab.ctx).clients
    assert cards and all(card.counters["faults_met"] == 0 for card in cards)


async def test_a_session_a_drop_fault_closed_is_ended_by_the_device(lab: Lab) -> None:
    # drop-after-greeting and drop-after-reply: the device closed the connection, so the
    # card's history must not say the client ended it.
    lab.fault(action="drop-after-greeting", times=1)
    lab.fault(action="drop-after-reply", command="STAT", times=1)

    def meet_both() -> None:
        pop = poplib.POP3("127.0.0.1", lab.port, timeout=15)  # the greeting, then EOF
        with pytest.raises((poplib.error_proto, EOFError, OSError)):
            pop.capa()
        pop.close()
        pop = lab.login()
        pop.stat()  # answered, then the device closes
        with pytest.raises((poplib.error_proto, EOFError, OSError)):
            pop.noop()
        pop.close()

    await trio.to_thread.run_sync(meet_both)
    await trio.testing.wait_all_tasks_blocked()  # the device saw both connections end
    card = {c.address: c for c in client_list(lab.ctx).clients}["127.0.0.1"]
    ends = [line.rpartition("[")[2] for line in card.history]
    assert ends == ["ended by device]", "ended by device]"], card.history
    assert card.counters["ended_by_device"] == 2 and card.counters["dropped"] == 0


async def test_a_session_a_retr_break_cut_is_ended_by_the_device(lab: Lab) -> None:
    # retr-break closes the connection mid-body: the device's doing, like the drop faults
    # (found trying the emulator with curl: the card said the client "dropped" it).
    lab.fault(action="retr-break", box="alice", after_percent=50, times=1)

    def cut() -> None:
        pop = lab.login()
        with pytest.raises((poplib.error_proto, EOFError, OSError)):
            pop.retr(1)
        pop.close()

    await trio.to_thread.run_sync(cut)
    await trio.testing.wait_all_tasks_blocked()
    card = {c.address: c for c in client_list(lab.ctx).clients}["127.0.0.1"]
    assert card.history[-1].endswith("[ended by device]"), card.history
    assert card.counters["ended_by_device"] == 1 and card.counters["dropped"] == 0
