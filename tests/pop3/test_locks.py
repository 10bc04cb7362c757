"""Box locks and login pacing."""

from __future__ import annotations

from firmware.pop3.locks import BoxLocks


def test_one_holder_per_box_and_only_the_holder_releases() -> None:
    locks = BoxLocks()
    assert locks.acquire("alice", 1)
    assert locks.acquire("alice", 1)  # the holder asking again keeps it
    assert not locks.acquire("alice", 2)
    locks.release("alice", 2)
    assert locks.holder("alice") == 1
    assert locks.acquire("bob", 2)
    assert locks.held() == 2
    locks.release("alice", 1)
    assert locks.holder("alice") is None
    assert locks.acquire("alice", 2)


def test_seconds_since_login() -> None:
    locks = BoxLocks()
    assert locks.seconds_since_login("alice", 100.0) is None
    locks.note_login("alice", 100.0)
    assert locks.seconds_since_login("alice", 130.0) == 30.0
    assert locks.seconds_since_login("bob", 130.0) is None
