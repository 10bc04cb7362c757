"""Store benchmark (not a test): durable deliveries/s, boot (replay) time and RSS, compaction.

Run: `.venv/bin/python -m benchmarks.store [--deliveries N] [--messages N] [--dir DIR]`.
- deliveries/s: 50 KB messages, each written and fsync'ed before the next (what the scanner and
  `dpfw deliver` wait for);
- boot: `open_board` (Board.open, then the profile read) of an image holding --messages
  messages (10,000 by default), timed in a fresh subprocess whose peak RSS is reported too
  (replay verifies every CRC);
- compaction: half of those messages deleted, then `compact()`; MB/s of live data moved.
Use --dir to put the images on the file system you care about (default: a temporary directory).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from firmware.config.profile import Profile, factory
from firmware.device.boards import create_board, open_board

MiB = 1 << 20


def message(n: int, size: int) -> bytes:
    head = f"From: scanner@bench.local\nSubject: bench {n}\n\n".encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.\n"
    return head + line * max(1, (size - len(head)) // len(line))


def profile_for_bench() -> Profile:
    p = factory("DP-6030")
    for key, value in (("mailbox.max_messages", "1000000"), ("mailbox.quota_mib", "65536")):
        p = p.with_value(key, value)
    return p


def deliveries_per_second(directory: Path, count: int) -> float:
    path = directory / "deliver.img"
    with create_board(path, profile_for_bench(), "bench", size=max(64, count // 10) * MiB) as b:
        b.add_box("bench", "pw")
        body = message(0, 50_000)
        start = time.perf_counter()
        for _ in range(count):
            b.deliver("bench", body)
        elapsed = time.perf_counter() - start
    path.unlink()
    return count / elapsed


def build_image(path: Path, count: int, size: int) -> None:
    # Fill the log without an fsync per message (the bench measures replay, not writing).
    with create_board(path, profile_for_bench(), "bench", size=size) as b:
        b.add_box("a", "pw")
        b.add_box("b", "pw")
        sync = b.image.sync
        b.image.sync = lambda: None  # type: ignore[method-assign]
        try:
            for n in range(count):
                b.deliver("ab"[n % 2], message(n, 2_000 + (n * 7919) % 8_000))
        finally:
            b.image.sync = sync  # type: ignore[method-assign]
            sync()


def boot_child(path: str) -> None:
    start = time.perf_counter()
    with open_board(Path(path)) as board:
        elapsed = time.perf_counter() - start
        count = sum(info.messages for info in board.boxes())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{elapsed} {rss} {count}")


def boot(path: Path) -> tuple[float, int, int]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.store", "--boot-child", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def compaction(path: Path) -> tuple[float, int, float]:
    with open_board(path) as board:
        for box in ("a", "b"):
            uids = [m.uid for m in board.messages(box)]
            board.delete(box, uids[::2])
        report = board.compact()
    return report.bytes_moved / MiB / max(report.seconds, 1e-9), report.bytes_moved, report.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=300)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--boot-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.boot_child:
        boot_child(args.boot_child)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        print(f"images in {directory} ({os.uname().machine}, Python {sys.version.split()[0]})")
        rate = deliveries_per_second(directory, args.deliveries)
        print(f"durable deliveries of 50 KB messages: {rate:.0f}/s ({args.deliveries} messages)")
        image = directory / "boot.img"
        size = max(256 * MiB, args.messages * 8_000 * 2)
        build_image(image, args.messages, size)
        used = image.stat().st_blocks * 512
        seconds, rss_kib, count = boot(image)
        print(
            f"boot (replay, every CRC checked) with {count} messages ({used / MiB:.0f} MiB "
            f"on flash): {seconds:.3f} s, peak RSS {rss_kib / 1024:.1f} MiB"
        )
        mbps, moved, secs = compaction(image)
        print(f"compaction: moved {moved / MiB:.1f} MiB in {secs:.2f} s = {mbps:.0f} MB/s")


if __name__ == "__main__":
    main()
