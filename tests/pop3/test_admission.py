"""The admission policy alone: decisions from counts, limits, ages and the RAM budget.

No sockets, no tasks: `Admission` is the sans-IO rule the trio adapter applies
(tests/pop3/test_server_abuse.py checks that the adapter applies it on real sockets).
"""

from __future__ import annotations

from firmware.config.budget import RamBudget
from firmware.pop3.admission import EVICT_MIN_AGE_S, SESSION_RAM, Admission, Admit, Refuse


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def admitted(decision: Admit | Refuse) -> Admit:
    assert isinstance(decision, Admit), decision
    return decision


def test_admits_until_the_bound_then_evicts_the_oldest_pre_login_session() -> None:
    clock = Clock()
    policy = Admission(RamBudget(1 << 20), clock=clock)
    first = admitted(policy.decide("192.0.2.1", max_sessions=2, per_client=5))
    clock.now += 1
    second = admitted(policy.decide("192.0.2.2", max_sessions=2, per_client=5))
    assert first.evict is None and second.evict is None and first.session_id != second.session_id
    clock.now += EVICT_MIN_AGE_S
    third = admitted(policy.decide("192.0.2.3", max_sessions=2, per_client=5))
    assert third.evict == first.session_id  # the oldest that has not logged in
    # The evicted one still holds its slot until it has ended; it is not chosen twice.
    fourth = admitted(policy.decide("192.0.2.4", max_sessions=2, per_client=5))
    assert fourth.evict == second.session_id


def test_logged_in_and_young_sessions_are_never_evicted() -> None:
    clock = Clock()
    policy = Admission(RamBudget(1 << 20), clock=clock)
    old = admitted(policy.decide("192.0.2.1", max_sessions=2, per_client=5))
    policy.logged_in(old.session_id)
    admitted(policy.decide("192.0.2.2", max_sessions=2, per_client=5))  # just now: too young
    refusal = policy.decide("192.0.2.3", max_sessions=2, per_client=5)
    assert refusal == Refuse("sessions", "too many POP3 sessions; try again later", "SYS/TEMP")
    clock.now += EVICT_MIN_AGE_S
    assert admitted(policy.decide("192.0.2.3", max_sessions=2, per_client=5)).evict is not None


def test_per_client_bound_refuses_and_a_full_client_cannot_evict() -> None:
    clock = Clock()
    policy = Admission(RamBudget(1 << 20), clock=clock)
    one = admitted(policy.decide("192.0.2.9", max_sessions=10, per_client=1))
    assert policy.decide("192.0.2.9", max_sessions=10, per_client=1) == Refuse(
        "per-client", "too many POP3 sessions from your address"
    )
    clock.now += 5
    # All slots taken and this client at its own bound: refused, nobody evicted.
    assert policy.decide("192.0.2.9", max_sessions=1, per_client=1) == Refuse(
        "sessions", "too many POP3 sessions; try again later"
    )
    assert policy.pre_login() == 1
    policy.closed(one.session_id)
    assert policy.open_sessions == 0
    admitted(policy.decide("192.0.2.9", max_sessions=1, per_client=1))


def test_the_ram_budget_refuses_and_a_session_holds_its_reservation() -> None:
    budget = RamBudget(SESSION_RAM + 100)
    policy = Admission(budget, clock=Clock())
    first = admitted(policy.decide("192.0.2.1", max_sessions=10, per_client=10))
    assert budget.used == SESSION_RAM
    assert policy.decide("192.0.2.2", max_sessions=10, per_client=10) == Refuse(
        "memory", "out of memory; try again later"
    )
    assert policy.open_sessions == 1  # a refusal takes no slot
    first.reservation.release()
    policy.closed(first.session_id)
    policy.closed(first.session_id)  # every exit path may say so: harmless
    assert budget.used == 0 and policy.open_sessions == 0 and policy.pre_login() == 0
    admitted(policy.decide("192.0.2.2", max_sessions=10, per_client=10))
