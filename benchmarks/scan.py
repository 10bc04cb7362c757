"""Scanner benchmark (not a test): pages per second per format and mode, and peak RSS.

Run: `.venv/bin/python -m benchmarks.scan [--pages-200 N] [--pages-600 N] [--rss-pages N]`.
Pages per second covers drawing plus encoding (the CPU work of a job). The peak RSS figure is
a whole `run_scan` job (50 pages at 600 dpi mono by default) stored into a temporary board
image, measured in a fresh subprocess so nothing else inflates it.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from firmware.device.boards import create_board
from firmware.scanner.encode import FORMAT_MODES, open_writer
from firmware.scanner.render import PageSpec, parse_resolution, render_page

WHEN = datetime(2026, 11, 27, 10, 15, tzinfo=UTC)
COMBOS = [(fmt, mode) for fmt in ("tiff", "pdf", "jpeg") for mode in FORMAT_MODES[fmt]]


def pages_per_second(fmt: str, mode: str, dpi: str, pages: int) -> tuple[float, int]:
    """(pages per second, mean compressed bytes per page) for one format/mode/resolution."""
    x, y = parse_resolution(dpi)
    writer = open_writer(fmt, (x, y), "benchmark", WHEN)
    total = 0
    start = time.perf_counter()
    for n in range(1, pages + 1):
        spec = PageSpec("DP-3530", "bench.local", "bench", 1, n, pages, WHEN, x, y, mode)
        total += writer.add_page(render_page(spec))
    writer.finish()
    return pages / (time.perf_counter() - start), total // pages


def rss_child(pages: int) -> None:
    """Run one whole job into a fresh board image; print peak RSS (KiB) and the job's figures."""
    from firmware.config.budget import RamBudget
    from firmware.config.profile import factory
    from firmware.scanner.job import ScanRequest, run_scan

    profile = factory("DP-3530")
    with tempfile.TemporaryDirectory() as tmp:
        board = create_board(Path(tmp) / "bench.img", profile, "bench-admin-pw")
        try:
            board.add_box("bench", "bench-pw")
            budget = RamBudget(profile.int("memory.image_ram_mib") * 1024 * 1024)
            request = ScanRequest(box="bench", pages=pages, dpi="600", mode="mono", format="tiff")
            start = time.perf_counter()
            result = run_scan(request, board, budget, profile, job_number=1, now=WHEN)
            seconds = time.perf_counter() - start
        finally:
            board.close()
    print(f"{peak_rss_kib()} {result.size} {result.bytes_encoded} {seconds:.2f}")


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM); ru_maxrss survives fork+exec on Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scan", description=__doc__)
    parser.add_argument("--pages-200", type=int, default=10, help="pages per combo at 200 dpi")
    parser.add_argument("--pages-600", type=int, default=3, help="pages per combo at 600 dpi")
    parser.add_argument("--rss-pages", type=int, default=50, help="pages of the RSS job")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return 0

    print(f"{'format':6} {'mode':5} {'dpi':>7} {'pages/s':>8} {'KiB/page':>9}")
    for dpi, pages in (("200x200", args.pages_200), ("600", args.pages_600)):
        for fmt, mode in COMBOS:
            rate, per_page = pages_per_second(fmt, mode, dpi, pages)
            print(f"{fmt:6} {mode:5} {dpi:>7} {rate:8.2f} {per_page / 1024:9.1f}")
            sys.stdout.flush()

    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.scan", "--rss-child", str(args.rss_pages)],
        capture_output=True,
        text=True,
        check=True,
    )
    peak_kib, size, held, seconds = child.stdout.split()
    print(
        f"\n{args.rss_pages}-page 600 dpi mono TIFF job (run_scan into a board image): "
        f"peak RSS {int(peak_kib) / 1024:.0f} MiB, {float(seconds):.1f} s, "
        f"message {int(size) / 2**20:.1f} MiB, held in budget {int(held) / 2**20:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
