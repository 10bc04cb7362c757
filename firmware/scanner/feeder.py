"""The lab's scan feeder: random jobs into random boxes at a steady rate (`--scan-feed RATE`).

It stands in for people at the copier so that POP3 clients, the RAM budget and the flash see
realistic traffic. Jobs start on a fixed schedule (RATE per minute); at most `concurrency` run
at once, and when all are busy the schedule waits instead of piling jobs up.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from firmware.config.profile import Profile
from firmware.errors import (
    BoxError,
    DeviceError,
    MemoryFullError,
    QuotaError,
    StorageFullError,
)
from firmware.scanner.encode import FORMAT_MODES
from firmware.scanner.job import ScanRequest, ScanResult
from firmware.store.board import Board
from firmware.text import os_reason, plural

log = logging.getLogger("dpfw.scanner.feeder")

FEED_MAX_PAGES = 5  # random jobs are 1..5 pages (never more than the profile allows)


class ScanHost(Protocol):
    """What the feeder needs from the device: its boxes, its profile, a way to scan."""

    @property
    def board(self) -> Board: ...

    @property
    def profile(self) -> Profile: ...

    async def scan(self, request: ScanRequest) -> ScanResult: ...


@dataclass(frozen=True)
class FeederStats:
    """A snapshot for the console's `status`."""

    rate_per_min: float
    started: int
    done: int
    pages: int
    bytes_stored: int
    failed: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None

    def describe(self) -> str:
        failed = sum(self.failed.values())
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.failed.items()))
        text = (
            f"scan feeder {self.rate_per_min:g} jobs/min: {self.done} done "
            f"({plural(self.pages, 'page')}, {plural(self.bytes_stored, 'byte')}), {failed} failed"
        )
        return f"{text} ({reasons})" if reasons else text


def failure_reason(exc: BaseException) -> str:
    """A short, stable name for why a job failed (the `status` counters' keys)."""
    if isinstance(exc, MemoryFullError):
        return "memory full"
    if isinstance(exc, QuotaError):
        return "quota"
    if isinstance(exc, StorageFullError):
        return "flash full"
    if isinstance(exc, BoxError):
        return "box"
    if isinstance(exc, DeviceError):
        return "refused"
    return "internal error"


def random_request(rng: random.Random, profile: Profile, boxes: Sequence[str]) -> ScanRequest:
    """A job the profile allows: any offered resolution, mode and a format that carries it."""
    if not boxes:
        raise BoxError("no mailboxes to scan into")
    formats = profile.list("scan.formats")
    pairs = [
        (mode, fmt)
        for mode in profile.list("scan.color_modes")
        for fmt in formats
        if mode in FORMAT_MODES[fmt]
    ]
    if not pairs:
        raise DeviceError("the profile offers no colour mode that any offered format carries")
    mode, fmt = rng.choice(pairs)
    pages = rng.randint(1, min(FEED_MAX_PAGES, profile.int("scan.max_pages_per_job")))
    dpi = rng.choice(profile.list("scan.resolutions"))
    return ScanRequest(box=rng.choice(list(boxes)), pages=pages, dpi=dpi, mode=mode, format=fmt)


class ScanFeeder:
    """Runs random scan jobs through `host.scan` at `rate_per_min` until cancelled."""

    def __init__(
        self,
        host: ScanHost,
        rate_per_min: float,
        *,
        concurrency: int = 2,
        seed: int | None = None,
        max_jobs: int | None = None,
    ) -> None:
        if rate_per_min <= 0:
            raise ValueError(f"scan feed rate must be positive, not {rate_per_min}")
        self._host = host
        self.rate_per_min = rate_per_min
        self._limiter = trio.CapacityLimiter(max(1, concurrency))
        self._rng = random.Random(seed)
        self._max_jobs = max_jobs
        self._started = 0
        self._done = 0
        self._pages = 0
        self._bytes = 0
        self._failed: Counter[str] = Counter()
        self._last_error: str | None = None

    @property
    def stats(self) -> FeederStats:
        return FeederStats(
            rate_per_min=self.rate_per_min,
            started=self._started,
            done=self._done,
            pages=self._pages,
            bytes_stored=self._bytes,
            failed=dict(self._failed),
            last_error=self._last_error,
        )

    async def run(self) -> None:
        """Start a job every 60/RATE seconds; returns after `max_jobs` (or runs until cancelled)."""
        interval = 60.0 / self.rate_per_min
        next_start = trio.current_time()
        async with trio.open_nursery() as nursery:
            while self._max_jobs is None or self._started < self._max_jobs:
                await trio.sleep_until(next_start)
                await self._limiter.acquire_on_behalf_of(self._started)
                nursery.start_soon(self._one_job, self._started)
                self._started += 1
                # A slow job delays the schedule; it never makes the feeder burst to catch up.
                next_start = max(next_start + interval, trio.current_time())

    async def _one_job(self, token: int) -> None:
        try:
            boxes = [box.name for box in self._host.board.boxes()]
            request = random_request(self._rng, self._host.profile, boxes)
            result = await self._host.scan(request)
        except Exception as exc:  # a failed job is counted and logged; the device goes on
            reason = failure_reason(exc)
            self._failed[reason] += 1
            self._last_error = f"{reason}: {os_reason(exc)}"
            if reason == "internal error":
                log.exception("scan feeder job failed")
            else:
                log.info("scan feeder job failed: %s", os_reason(exc))
        else:
            self._done += 1
            self._pages += result.pages
            self._bytes += result.size
            log.info(
                "scan feeder: job %04d, %s into %s (%s)",
                result.job_number,
                plural(result.pages, "page"),
                result.box,
                plural(result.size, "byte"),
            )
        finally:
            self._limiter.release_on_behalf_of(token)
