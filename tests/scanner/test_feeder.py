"""The lab feeder: random allowed jobs on a steady schedule, every outcome counted."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
import trio

from firmware.config.budget import RamBudget
from firmware.config.profile import Profile
from firmware.device.boards import saved_profile
from firmware.errors import BoxError, MemoryFullError, QuotaError, StorageFullError
from firmware.scanner.encode import FORMAT_MODES
from firmware.scanner.feeder import ScanFeeder, failure_reason, random_request
from firmware.scanner.job import ScanRequest, ScanResult, check_request, run_scan_async
from firmware.store.board import Board
from tests.scanner.conftest import BOX, MakeBoard, MiB, lab_profile


@dataclass
class Host:
    """What `dpfw run` gives the feeder: the board, the profile in force and a way to scan."""

    board: Board
    profile: Profile
    budget: RamBudget
    started_at: list[float] = field(default_factory=list)

    async def scan(self, request: ScanRequest) -> ScanResult:
        self.started_at.append(trio.current_time())
        number = len(self.started_at)
        return await run_scan_async(
            request, self.board, self.budget, self.profile, job_number=number
        )


def fast_board(make_board: MakeBoard) -> Board:
    """Low resolution and short jobs only, so random jobs stay quick."""
    return make_board(scan__resolutions="200x100", scan__max_pages_per_job="2")


def test_random_requests_are_always_allowed() -> None:
    profile = lab_profile(scan__max_pages_per_job="3")
    rng = random.Random(5)
    seen = set()
    for _ in range(300):
        request = random_request(rng, profile, ["a", "b"])
        check_request(request, profile)
        assert request.mode in FORMAT_MODES[request.format]
        seen.add((request.format, request.mode, request.dpi, request.box))
    assert len(seen) > 30  # formats, modes, resolutions and boxes all vary


def test_no_boxes_is_a_box_error() -> None:
    with pytest.raises(BoxError, match="no mailboxes"):
        random_request(random.Random(1), lab_profile(), [])


async def test_feeder_stores_jobs_and_counts_them(make_board: MakeBoard) -> None:
    board = fast_board(make_board)
    board.add_box("bob", "bob-pw")
    host = Host(board, saved_profile(board), RamBudget(128 * MiB))
    feeder = ScanFeeder(host, rate_per_min=1200, seed=3, max_jobs=4)
    await feeder.run()
    stats = feeder.stats
    assert stats.started == 4 and stats.done == 4 and stats.failed == {}
    stored = board.messages(BOX) + board.messages("bob")
    assert len(stored) == 4
    assert stats.bytes_stored == sum(m.size for m in stored)
    assert host.budget.used == 0
    assert "4 done" in stats.describe()


async def test_feeder_keeps_its_rate(make_board: MakeBoard, autojump_clock: object) -> None:
    board = fast_board(make_board)
    host = Host(board, saved_profile(board), RamBudget(128 * MiB))
    await ScanFeeder(host, rate_per_min=2, seed=1, max_jobs=3).run()
    gaps = [b - a for a, b in zip(host.started_at, host.started_at[1:], strict=False)]
    assert gaps == [pytest.approx(30.0, abs=0.01)] * 2  # 2 jobs per minute: one every 30 s


async def test_failed_jobs_are_counted_by_reason(make_board: MakeBoard) -> None:
    board = fast_board(make_board)
    host = Host(board, saved_profile(board), RamBudget(1000))  # no page fits in 1000 bytes
    feeder = ScanFeeder(host, rate_per_min=6000, seed=2, max_jobs=3)
    await feeder.run()
    stats = feeder.stats
    assert stats.done == 0 and stats.failed == {"memory full": 3}
    assert stats.last_error is not None and "MEMORY FULL" in stats.last_error
    assert "3 failed (memory full 3)" in stats.describe()
    assert board.messages(BOX) == []


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (MemoryFullError("x"), "memory full"),
        (QuotaError("x"), "quota"),
        (StorageFullError("x"), "flash full"),
        (BoxError("x"), "box"),
        (RuntimeError("x"), "internal error"),
    ],
)
def test_failure_reasons(exc: Exception, reason: str) -> None:
    assert failure_reason(exc) == reason


def test_rate_must_be_positive(board: Board) -> None:
    with pytest.raises(ValueError, match="positive"):
        ScanFeeder(Host(board, saved_profile(board), RamBudget(1)), rate_per_min=0)
