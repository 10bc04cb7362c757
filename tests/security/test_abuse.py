"""Abuse controls with a hand-driven clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.security import abuse
from firmware.security.abuse import (
    BoxLockout,
    ClientSessions,
    LoginPenalty,
    PreauthEvictor,
    client_key,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- client keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_client_key(address: str, key: str) -> None:
    assert client_key(address) == key


# -- LoginPenalty ------------------------------------------------------------------------


def test_penalty_doubles_up_to_the_cap_like_dovecot(clock: Clock) -> None:
    penalty = LoginPenalty(2.0, clock=clock)
    assert [penalty.failure("192.0.2.1") for _ in range(6)] == [2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert penalty.failures("192.0.2.1") == 6
    assert penalty.failure("192.0.2.2") == 2.0  # another client is not affected


def test_penalty_is_per_ipv6_prefix(clock: Clock) -> None:
    penalty = LoginPenalty(1.0, clock=clock)
    penalty.failure("2001:db8::1")
    assert penalty.failure("2001:db8::2") == 2.0
    assert penalty.failure("2001:db8:0:1::1") == 1.0


def test_penalty_reset_by_success(clock: Clock) -> None:
    penalty = LoginPenalty(2.0, clock=clock)
    penalty.failure("192.0.2.1")
    penalty.failure("192.0.2.1")
    penalty.success("192.0.2.1")
    assert penalty.failures("192.0.2.1") == 0
    assert penalty.failure("192.0.2.1") == 2.0


def test_penalty_forgotten_after_quiet_period(clock: Clock) -> None:
    penalty = LoginPenalty(2.0, forget_after_s=60, clock=clock)
    penalty.failure("192.0.2.1")
    penalty.failure("192.0.2.1")
    clock.advance(59)
    assert penalty.failures("192.0.2.1") == 2
    clock.advance(1)
    assert penalty.failures("192.0.2.1") == 0
    assert len(penalty) == 0
    assert penalty.failure("192.0.2.1") == 2.0


def test_penalty_zero_base_means_no_delay(clock: Clock) -> None:
    penalty = LoginPenalty(0.0, clock=clock)
    assert penalty.failure("192.0.2.1") == 0.0
    penalty.base_delay_s = 0.5  # a live profile change
    assert penalty.failure("192.0.2.1") == 1.0


def test_penalty_table_is_bounded_and_evicts_the_oldest(clock: Clock) -> None:
    penalty = LoginPenalty(1.0, max_entries=100, clock=clock)
    penalty.failure("10.0.0.0")
    penalty.failure("10.0.0.0")
    for n in range(1, 1000):
        clock.advance(0.01)
        penalty.failure(f"10.0.{n // 256}.{n % 256}")
    assert len(penalty) == 100
    assert penalty.failures("10.0.0.0") == 0  # the oldest was evicted
    assert penalty.failures("10.0.3.231") == 1


def test_penalty_huge_failure_counts_stay_at_the_cap(clock: Clock) -> None:
    penalty = LoginPenalty(2.0, clock=clock)
    assert penalty.delay_for(10_000) == abuse.PENALTY_CAP_S
    assert penalty.delay_for(0) == 0.0


# -- BoxLockout --------------------------------------------------------------------------


def test_lockout_after_failures_in_window(clock: Clock) -> None:
    lockout = BoxLockout(max_failures=3, window_s=60, lock_s=300, clock=clock)
    assert not lockout.failure("alice")
    assert not lockout.failure("alice")
    assert not lockout.is_locked("alice")
    assert lockout.failure("alice")
    assert lockout.is_locked("alice")
    assert lockout.locked_boxes() == {"alice": 300.0}
    clock.advance(100)
    assert lockout.locked_boxes() == {"alice": 200.0}
    assert not lockout.failure("alice")  # does not extend the lock
    clock.advance(200)
    assert not lockout.is_locked("alice")
    assert lockout.locked_boxes() == {}
    assert not lockout.failure("alice")  # counting starts afresh after a lock


def test_lockout_failures_outside_the_window_do_not_count(clock: Clock) -> None:
    lockout = BoxLockout(max_failures=3, window_s=60, lock_s=300, clock=clock)
    lockout.failure("alice")
    lockout.failure("alice")
    clock.advance(61)
    assert not lockout.failure("alice")
    assert not lockout.failure("alice")
    assert lockout.failure("alice")


def test_lockout_success_clears_and_unlock_lifts(clock: Clock) -> None:
    lockout = BoxLockout(max_failures=2, window_s=60, lock_s=300, clock=clock)
    lockout.failure("alice")
    lockout.success("alice")
    assert not lockout.failure("alice")
    assert lockout.failure("alice")
    assert lockout.unlock("alice")
    assert not lockout.is_locked("alice")
    assert not lockout.unlock("alice")
    assert not lockout.failure("alice")


def test_lockout_lists_boxes_by_name(clock: Clock) -> None:
    lockout = BoxLockout(max_failures=1, lock_s=10, clock=clock)
    lockout.failure("zed")
    clock.advance(1)
    lockout.failure("amy")
    assert list(lockout.locked_boxes()) == ["amy", "zed"]


def test_lockout_tables_are_bounded(clock: Clock) -> None:
    lockout = BoxLockout(max_failures=2, max_entries=50, clock=clock)
    for n in range(500):
        lockout.failure(f"guess{n}")
    assert lockout.failure("guess499")  # the newest is still counted
    assert not lockout.failure("guess0")  # the oldest was forgotten
    for n in range(500):
        lockout.failure(f"lock{n}")
        lockout.failure(f"lock{n}")
        clock.advance(0.001)
    assert len(lockout.locked_boxes()) == 50
    assert lockout.is_locked("lock499") and not lockout.is_locked("lock0")


def test_lockout_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="max_failures"):
        BoxLockout(max_failures=0)


# -- ClientSessions ----------------------------------------------------------------------


def test_sessions_per_client_bound() -> None:
    sessions = ClientSessions(limit=2)
    assert sessions.acquire("192.0.2.1")
    assert sessions.acquire("::ffff:192.0.2.1")  # the same client
    assert not sessions.acquire("192.0.2.1")
    assert sessions.acquire("192.0.2.2")
    assert sessions.count("192.0.2.1") == 2
    sessions.release("192.0.2.1")
    assert sessions.acquire("192.0.2.1")
    sessions.limit = 3  # a live profile change
    assert sessions.acquire("192.0.2.1")


def test_sessions_release_forgets_idle_clients_and_catches_double_release() -> None:
    sessions = ClientSessions(limit=4)
    sessions.acquire("192.0.2.1")
    assert len(sessions) == 1
    sessions.release("192.0.2.1")
    assert len(sessions) == 0
    with pytest.raises(RuntimeError, match="released more often"):
        sessions.release("192.0.2.1")


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=60))
def test_sessions_never_exceed_the_bound(ops: list[tuple[bool, str]]) -> None:
    sessions = ClientSessions(limit=3)
    held = {"a": 0, "b": 0, "c": 0}
    for take, who in ops:
        if take:
            if sessions.acquire(who):
                held[who] += 1
        elif held[who]:
            sessions.release(who)
            held[who] -= 1
        assert all(0 <= sessions.count(w) == held[w] <= 3 for w in held)
    assert len(sessions) == sum(1 for w in held if held[w])


# -- PreauthEvictor ----------------------------------------------------------------------


def test_evictor_picks_the_oldest_pre_login_connection(clock: Clock) -> None:
    waiting: PreauthEvictor[int] = PreauthEvictor(clock=clock)
    for conn in (1, 2, 3):
        waiting.add(conn)
        clock.advance(1)
    waiting.discard(1)  # logged in: never evicted
    assert waiting.oldest() == 2
    assert waiting.evict() == 2
    assert 2 not in waiting and len(waiting) == 1
    assert waiting.evict() == 3
    assert waiting.evict() is None


def test_evictor_spares_connections_younger_than_min_age(clock: Clock) -> None:
    waiting: PreauthEvictor[str] = PreauthEvictor(clock=clock)
    waiting.add("new")
    assert waiting.evict(min_age_s=5) is None
    clock.advance(5)
    assert waiting.evict(min_age_s=5) == "new"


def test_evictor_discard_is_idempotent(clock: Clock) -> None:
    waiting: PreauthEvictor[int] = PreauthEvictor(clock=clock)
    waiting.discard(7)
    waiting.add(7)
    waiting.discard(7)
    waiting.discard(7)
    assert len(waiting) == 0


# -- LoginGuard --------------------------------------------------------------------------


def test_guard_combines_penalty_and_lockout(clock: Clock) -> None:
    guard = abuse.LoginGuard(2.0, clock=clock, lockout_failures=3, lockout_s=60)
    assert guard.refusal("alice") is None
    assert [guard.failed("192.0.2.1", "alice") for _ in range(2)] == [2.0, 4.0]
    assert guard.failed("192.0.2.2", "alice") == 2.0  # a second address: its own penalty
    assert guard.refusal("alice") == "box-locked"  # but the box counts all addresses
    assert guard.lockout.locked_boxes() == {"alice": 60.0}
    assert guard.failed("192.0.2.1", None) == 8.0  # no box name read: penalty only
    guard.succeeded("192.0.2.1", "bob")
    assert guard.failed("192.0.2.1", "bob") == 2.0
    clock.advance(60)
    assert guard.refusal("alice") is None
    assert guard.refusal(None) is None
