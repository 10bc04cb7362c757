"""The fault plan, sans I/O: trigger matching, times, the seed, subscribers, the fault log."""

from __future__ import annotations

import logging

import pytest

from firmware.errors import DeviceError
from firmware.faults.log import format_fired, parse
from firmware.faults.plan import FaultEvent, FaultPlan, Where
from firmware.faults.spec import FaultSpecError, parse_fault


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plan(seed: int | None = 1, clock: Clock | None = None) -> FaultPlan:
    return FaultPlan(seed, clock=clock or Clock(), wall=lambda: 1.5e9, log_events=False)


def cmd(keyword: str, box: str | None = "alice", peer: str = "127.0.0.1", **kw: int) -> Where:
    return Where(session=1, peer=peer, box=box, command=keyword, **kw)


def test_inactive_until_a_fault_is_set_and_after_it_is_spent() -> None:
    p = plan()
    assert not p.active
    fault = p.add(parse_fault({"action": "reply-error", "times": 2}))
    assert p.active
    assert p.fire("command", cmd("STAT")) == [fault]
    assert p.fire("body", cmd("RETR")) == []  # another point
    assert p.fire("command", cmd("NOOP")) == [fault]
    assert not p.active and not fault.live and fault.fired == 2
    assert p.fire("command", cmd("NOOP")) == []
    assert [f.id for f in p.faults()] == [fault.id]  # listed, spent, until cleared
    assert p.fired_by_action == {"reply-error": 2}


def test_triggers_box_client_command_nth() -> None:
    p = plan()
    by_box = p.add(parse_fault({"action": "reply-error", "box": "bob"}))
    by_client = p.add(parse_fault({"action": "delay", "client": "192.0.2.7"}))
    by_command = p.add(parse_fault({"action": "drop-after-reply", "command": "pass"}))
    third = p.add(parse_fault({"action": "reply-error", "nth_command": 3, "code": "AUTH"}))
    assert p.fire("command", cmd("STAT")) == []
    assert p.fire("command", cmd("STAT", box="bob")) == [by_box]
    assert p.fire("command", cmd("STAT", peer="192.0.2.7")) == [by_client]
    assert p.fire("command", cmd("PASS")) == [by_command]
    assert p.fire("command", cmd("LIST", nth_command=3)) == [third]


def test_nth_session_counts_from_when_the_fault_was_set() -> None:
    p = plan()
    first = p.add(parse_fault({"action": "delay", "at": "greeting", "times": 1}))
    assert p.fire("accept", Where(nth_session=p.session_opened())) == [first]
    second = p.add(parse_fault({"action": "drop-after-greeting", "nth_session": 2}))
    firsts = [p.fire("accept", Where(nth_session=p.session_opened())) for _ in range(3)]
    assert [[f.id for f in fired] for fired in firsts] == [[], [second.id], []]


def test_after_s_arms_later() -> None:
    clock = Clock()
    p = plan(clock=clock)
    fault = p.add(parse_fault({"action": "reply-error", "after_s": 5}))
    assert p.fire("command", cmd("STAT")) == []
    clock.now += 5
    assert p.fire("command", cmd("STAT")) == [fault]


def test_unreadable_matches_its_message_only() -> None:
    p = plan()
    fault = p.add(parse_fault({"action": "unreadable", "message": 2}))
    assert p.fire("command", cmd("RETR", message=1)) == []
    assert p.fire("command", cmd("STAT")) == []
    assert p.fire("command", cmd("TOP", message=2)) == [fault]


def test_the_same_seed_and_events_fire_the_same_faults() -> None:
    def run(seed: int) -> list[int]:
        p = plan(seed)
        p.add(parse_fault({"action": "reply-error", "probability": 0.3}))
        return [n for n in range(200) if p.fire("command", cmd("NOOP", nth_command=n))]

    assert run(42) == run(42)
    assert run(42) != run(43)
    assert 30 < len(run(42)) < 90  # about 30 %


def test_probability_draws_only_when_everything_else_matched() -> None:
    # Events that concern no fault must not move the random sequence: a client that also
    # runs NOOPs meets the same RETR faults.
    def fired(noops: int) -> list[int]:
        p = plan(9)
        p.add(parse_fault({"action": "reply-error", "command": "RETR", "probability": 0.5}))
        out = []
        for n in range(50):
            for _ in range(noops):
                p.fire("command", cmd("NOOP"))
            if p.fire("command", cmd("RETR")):
                out.append(n)
        return out

    assert fired(0) == fired(3)


def test_clear_one_or_all() -> None:
    p = plan()
    a = p.add(parse_fault({"action": "delay"}))
    b = p.add(parse_fault({"action": "vanish"}))
    p.hidden["alice"] = {"uid1"}
    assert [f.id for f in p.clear(a.id)] == [a.id] and p.active
    assert p.hidden  # the vanish fault is still set
    with pytest.raises(DeviceError, match=r"^fault 99: no such fault \(see `fault list`\)$"):
        p.clear(99)
    assert [f.id for f in p.clear()] == [b.id] and not p.active
    assert not p.hidden  # cleared: the message is back
    assert p.add(parse_fault({"action": "delay"})).id == 3  # ids are never reused


def test_subscribers_get_each_firing_and_a_failing_one_is_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = plan()
    got: list[FaultEvent] = []

    def broken(event: FaultEvent) -> None:
        raise RuntimeError("grader bug")

    p.subscribe(broken)
    unsubscribe = p.subscribe(got.append)
    fault = p.add(parse_fault({"action": "reply-error"}))
    with caplog.at_level(logging.ERROR):
        p.fire("command", cmd("STAT"))
    assert got == [
        FaultEvent(fault.id, "reply-error", 1.5e9, 1, "127.0.0.1", "alice", "STAT", "SYS/TEMP")
    ]
    assert "grader bug" in caplog.text
    unsubscribe()
    p.fire("command", cmd("STAT"))
    assert len(got) == 1 and len(p.events) == 2


def test_the_fault_log_line(caplog: pytest.LogCaptureFixture) -> None:
    p = FaultPlan(1, wall=lambda: 1.5e9)  # with the log subscriber
    fault = p.add(parse_fault({"action": "retr-break", "box": "al ice"}))
    with caplog.at_level(logging.WARNING, logger="dpfw.fault"):
        p.fire("body", cmd("RETR", box="al ice"))
    line = caplog.records[-1].getMessage()
    assert line == (
        f"dpfw fault event=fault-fired rip=127.0.0.1 id={fault.id} action=retr-break "
        'session=1 box="al\\x20ice" cmd=RETR'
    )
    assert parse("2026-01-01 WARNING dpfw.fault: " + line)["box"] == "al ice"
    device = FaultEvent(2, "power-cut", 0.0)
    assert format_fired(device) == "dpfw fault event=fault-fired rip=- id=2 action=power-cut"
    assert parse(format_fired(device))["rip"] == "-"


def test_a_power_cut_at_now_is_spent_once_it_fired() -> None:
    # A device action decided when it is added fires once: it must not stay live (and count
    # in dpfw_faults_active) after the cut.
    p = plan()
    fault = p.add(parse_fault({"action": "power-cut"}))
    assert fault.spec.triggers["times"] == 1 and p.active
    assert p.fire("device", Where()) == [fault]
    assert not fault.live and not p.active
    with pytest.raises(FaultSpecError, match="at now fires once"):
        parse_fault({"action": "power-cut", "at": "now", "times": 3})
    # The other power cuts keep their own times (default: until cleared).
    assert "times" not in parse_fault({"action": "power-cut", "at": "after-quit-ok"}).triggers
