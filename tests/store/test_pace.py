"""Cooperative pauses (firmware/store/pace.py): only on threads that ask, at the set pace, and
every store worker operation asks (real StoreWorker, real threads, real sleeps)."""

from __future__ import annotations

import threading
import time

from firmware.store import pace
from firmware.store.worker import StoreWorker


def busy(seconds: float) -> int:
    """Work for `seconds`, calling give_way as a long store loop does; the pauses taken."""
    before = pace.pauses()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pace.give_way()
    return pace.pauses() - before


def test_give_way_pauses_only_inside_paced() -> None:
    assert busy(0.02) == 0  # the command-line tools, direct Board calls
    with pace.paced():
        took = busy(0.02)
    # one pause per GIVE_WAY_AFTER_S of work: at most 10 in 20 ms, at least a few
    assert 2 <= took <= 0.02 / pace.GIVE_WAY_AFTER_S
    assert busy(0.02) == 0  # off again


def test_pacing_is_per_thread() -> None:
    seen: list[int] = []
    with pace.paced():
        other = threading.Thread(target=lambda: seen.append(busy(0.02)))
        other.start()
        other.join()
        assert busy(0.01) >= 1
    assert seen == [0]


def test_a_pause_sleeps_and_then_works_on_for_the_interval() -> None:
    with pace.paced():
        time.sleep(pace.GIVE_WAY_AFTER_S * 1.5)
        before = pace.pauses()
        start = time.perf_counter()
        pace.give_way()  # due: pauses
        paused = time.perf_counter() - start
        pace.give_way()  # just paused: does not
        assert pace.pauses() == before + 1
    assert paused >= pace.PAUSE_S


async def test_store_worker_operations_are_paced() -> None:
    worker = StoreWorker()
    assert await worker.run(busy, 0.02) >= 2
    assert busy(0.01) == 0  # the loop thread itself is never paced
