"""The device's fault plan feeds its client report card: a client that meets an injected
fault has it on its card (counted, graded by what the client did next), through a real
device and a real client (poplib)."""

from __future__ import annotations

import poplib

import pytest
import trio

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
