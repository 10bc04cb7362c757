"""The RAM budget: exact accounting, MEMORY FULL at the boundary, never negative, back to idle."""

from __future__ import annotations

import poplib
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.config.budget import RamBudget
from firmware.config.profile import factory
from firmware.device.boards import create_board, saved_profile
from firmware.errors import MemoryFullError
from firmware.pop3.server import Pop3Service
from firmware.scanner.job import ScanRequest, run_scan_async
from firmware.store.board import Board

WHEN = datetime(2026, 11, 27, 10, 15, tzinfo=UTC)


def test_exact_fit_then_one_byte_more_is_memory_full() -> None:
    budget = RamBudget(1000)
    held = budget.reserve(600, "first")
    fits = budget.reserve(400, "exact fit")
    assert budget.free == 0 and budget.used == 1000
    with pytest.raises(MemoryFullError, match=r"MEMORY FULL: third needs 1 bytes, 0 free of 1000"):
        budget.reserve(1, "third")
    fits.release()
    held.release()
    assert budget.used == 0 and budget.holders == 0


def test_failed_reserve_takes_nothing() -> None:
    budget = RamBudget(100)
    budget.reserve(30, "held")
    with pytest.raises(MemoryFullError, match="needs 71 bytes, 70 free"):
        budget.reserve(71, "too big")
    assert budget.used == 30 and budget.holders == 1


def test_grow_keeps_what_is_held_when_memory_is_full() -> None:
    budget = RamBudget(100)
    with budget.reserve(10, "session") as session:
        session.grow(90)
        with pytest.raises(MemoryFullError):
            session.grow(1)
        assert session.nbytes == 100 and budget.used == 100
        session.shrink(40)
        assert budget.used == 60
    assert budget.used == 0 and budget.holders == 0


def test_release_twice_gives_back_once() -> None:
    budget = RamBudget(100)
    other = budget.reserve(50, "other")
    held = budget.reserve(50, "held")
    held.release()
    held.release()
    assert budget.used == 50 and budget.holders == 1
    other.release()
    assert budget.used == 0


def test_shrinking_the_total_keeps_holders_and_refuses_newcomers() -> None:
    budget = RamBudget(100)
    held = budget.reserve(80, "held")
    budget.resize_total(50)
    assert budget.free == 0
    with pytest.raises(MemoryFullError):
        budget.reserve(1, "new")
    held.release()
    assert budget.free == 50


@pytest.mark.parametrize("bad", [-1, -100])
def test_negative_amounts_are_bugs(bad: int) -> None:
    with pytest.raises(ValueError):
        RamBudget(bad)
    with pytest.raises(ValueError):
        RamBudget(10).reserve(bad, "x")


# ----- any mix of scan jobs and POP3 sessions on one budget (hypothesis) -----------------------

JOB_FORMATS = [("tiff", "mono"), ("pdf", "mono"), ("jpeg", "gray")]
job_ops = st.tuples(
    st.just("job"), st.integers(1, 2), st.sampled_from(JOB_FORMATS), st.floats(0, 0.05)
)
session_ops = st.tuples(st.just("session"), st.just(0), st.just(("", "")), st.floats(0, 0.05))


def pop3_session(port: int) -> str:
    """A whole POP3 session: login, list, retrieve all, quit; or how it was refused."""
    try:
        client = poplib.POP3("127.0.0.1", port, timeout=30)
    except poplib.error_proto:
        return "refused"
    try:
        client.user("alice")
        client.pass_("alice-pw")
        for n in range(1, client.stat()[0] + 1):
            client.retr(n)
        return "done"
    except poplib.error_proto:
        return "failed"
    finally:
        client.quit()


async def run_mix(board: Board, budget: RamBudget, ops: list[tuple[Any, ...]]) -> list[str]:
    profile = saved_profile(board)
    service = Pop3Service(board, lambda: profile, budget)
    outcomes: list[str] = []
    violations: list[str] = []

    async def watch() -> None:
        while True:
            if not 0 <= budget.used <= budget.total:
                violations.append(f"used {budget.used} of {budget.total}")
            await trio.sleep(0.001)

    async def job(n: int, pages: int, fmt: str, mode: str, delay: float) -> None:
        await trio.sleep(delay)
        request = ScanRequest("alice", pages, "200x100", mode, fmt)
        try:
            await run_scan_async(request, board, budget, profile, job_number=n, now=WHEN)
            outcomes.append("stored")
        except MemoryFullError:
            outcomes.append("memory full")

    async def session(port: int, delay: float) -> None:
        await trio.sleep(delay)
        outcomes.append("session " + await trio.to_thread.run_sync(pop3_session, port))

    async with trio.open_nursery() as nursery:
        port = await nursery.start(service.serve, "127.0.0.1", 0)
        nursery.start_soon(watch)
        async with trio.open_nursery() as mix:
            for n, (kind, pages, (fmt, mode), delay) in enumerate(ops, 1):
                if kind == "job":
                    mix.start_soon(job, n, pages, fmt, mode, delay)
                else:
                    mix.start_soon(session, port, delay)
        nursery.cancel_scope.cancel()
    assert violations == []
    return outcomes


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    total=st.integers(0, 160_000),
    ops=st.lists(st.one_of(job_ops, session_ops), min_size=1, max_size=5),
)
def test_budget_is_never_negative_and_returns_to_idle(
    total: int, ops: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        profile = factory("DP-3530").with_value("pop3.plaintext_auth", "always")
        board = create_board(Path(tmp) / "b.img", profile, "admin-pw", size=8 << 20)
        try:
            board.add_box("alice", "alice-pw")
            budget = RamBudget(total)
            outcomes = trio.run(run_mix, board, budget, ops)
            assert budget.used == 0 and budget.holders == 0
            assert len(outcomes) == len(ops)
            assert len(board.messages("alice")) == outcomes.count("stored")
        finally:
            board.close()
