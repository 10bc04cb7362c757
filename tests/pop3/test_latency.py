"""The event loop is never blocked by storage: idle sessions' NOOPs while the store works.

A real device in this process, a real image file, idle logged-in sessions driven from another
process (benchmarks/latency.py, which `tools/bench latency` runs with the same plan). Before the
store worker, every NOOP sent during a compaction of 110 MiB waited for all of it: 192 ms on a
quiet machine, 816 ms on this busy 2-CPU VM (median and p99 alike); a QUIT committing 10,000
deletions held them 45 ms. Now the loop answers in a few ms (p99 9-16 ms, max 30 ms here under
load 3.8); the bounds are generous for a busy CI machine, and the p99 bound is one the old code
cannot meet, since there every NOOP of a compaction waits for the whole of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.latency import Plan, measure

# The p99 bound is what the old code fails every time (every NOOP waited for the whole
# compaction: 816 ms). One outlier reached 201.6 and 213 ms in full-suite runs on 2 cores
# (a scheduling or GC pause, not the store), so the single worst NOOP is bounded loosely.
MAX_MS = 500.0
P99_MS = 60.0


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("DPFW_LATENCY") != "1",
    reason="timing measurement, flaky inside a full run on 2 cores (p99 176 ms once, 3-44 ms "
    "alone): run with DPFW_LATENCY=1, or `tools/bench latency`",
)
def test_idle_sessions_answer_noop_while_the_store_compacts_commits_and_stores_a_scan(
    tmp_path: Path,
) -> None:
    figures = {case.name: case for case in measure(Plan(), tmp_path)}
    for case in figures.values():
        print(case.line())
    assert "110.8 MiB) moved" in figures["compact"].detail  # >= 100 MiB of live records
    assert figures["quit"].detail == "+OK signing off (0 messages left)"  # 10,000 deletions
    for name in ("compact", "quit", "scan"):
        case = figures[name]
        assert case.noops >= 10, case.line()  # the sessions were being answered meanwhile
        assert case.p99_ms <= P99_MS, case.line()
        assert case.max_ms <= MAX_MS, case.line()
