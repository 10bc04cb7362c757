"""Store benchmark (not a test): durable deliveries/s, boot (replay) time and RSS, compaction.

Run: `.venv/bin/python -m benchmarks.store [--deliveries N] [--messages N] [--dir DIR]`,
or the store-scale table: `... --scale 100000,1000000 [--sizes 2000-10000]`.
- deliveries/s: 50 KB messages, each written and fsync'ed before the next (what the scanner and
  `dpfw deliver` wait for);
- boot: `open_board` (Board.open, then the profile read) of an image holding --messages
  messages (10,000 by default), timed in a fresh subprocess whose peak RSS is reported too
  (replay verifies every CRC);
- compaction: half of those messages deleted, then `compact()`; MB/s of live data moved.
- scale (--scale N,N...): for each N an image of N messages in two boxes, written by a bulk
  writer (records packed straight into the file, one sync at the end). The first boot walks
  the whole log (no checkpoint yet) and its clean close writes the index checkpoint; --runs
  more boots load it. Boot times, peak RSS (before the close), resident bytes per message (RSS
  after boot minus RSS after booting an empty image, over N), the time to list a box; then
  `dpfw run` on the image and a poplib client: PASS to +OK of the first login to box a, a full
  UIDL, and the server's RSS growth for that one session.
Use --dir to put the images on the file system you care about (default: a temporary directory).
"""

from __future__ import annotations

import argparse
import gc
import os
import poplib
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from benchmarks.pop3_procs import free_port
from firmware.config.profile import Profile, factory
from firmware.device.boards import create_board, open_board
from firmware.flash.layout import KIND_MESSAGE, RECORD_HEADER_SIZE, align
from firmware.store.log import Header

MiB = 1 << 20


def message(n: int, size: int) -> bytes:
    head = f"From: scanner@bench.local\nSubject: bench {n}\n\n".encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.\n"
    return head + line * max(1, (size - len(head)) // len(line))


def profile_for_bench() -> Profile:
    p = factory("DP-6030")
    for key, value in (
        ("mailbox.max_messages", "1000000"),
        ("mailbox.quota_mib", "65536"),
        ("pop3.plaintext_auth", "always"),
    ):
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


def wire_message(n: int, size: int) -> tuple[bytes, int]:
    """A message already in wire form (CRLF, no line starts with '.'), and its header length."""
    head = f"From: scanner@bench.local\r\nSubject: bench {n}\r\n\r\n".encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.\r\n"
    return head + line * max(1, (size - len(head)) // len(line)), len(head)


def bulk_image(path: Path, count: int, low: int, high: int) -> int:
    """An image holding `count` messages alternately in boxes a and b, sizes low..high bytes.

    The records are packed straight into the file in log order (what `deliver` would write,
    without an fsync per message), then one fsync. Returns the bytes of log written.
    """
    span = max(1, high - low)
    estimate = count * (align(RECORD_HEADER_SIZE + (low + high) // 2) + 64) + 64 * MiB
    size = max(256 * MiB, estimate * 5 // 4)
    with create_board(path, profile_for_bench(), "bench", size=size) as b:
        b.add_box("a", "pw")
        b.add_box("b", "pw")
        ids = [box.box_id for box in b.boxes()]
        seq = b._index.next_seq
        data_offset = b.geometry.data_offset
        if estimate > b.geometry.capacity:
            raise SystemExit("bench: image too small for the log")
    bodies = [wire_message(0, low + (k * 7919) % span) for k in range(64)]
    crcs = [zlib.crc32(body) for body, _ in bodies]
    pos = 0
    out = bytearray()
    now = time.time()
    with open(path, "r+b") as f:
        f.seek(data_offset)
        for n in range(count):
            body, header_len = bodies[n % 64]
            header = Header(
                pos,
                KIND_MESSAGE,
                seq + n,
                len(body),
                crcs[n % 64],
                ids[n % 2],
                now,
                len(body),
                header_len,
            )
            out += header.build()
            out += body
            out += bytes(header.total - RECORD_HEADER_SIZE - len(body))
            pos += header.total
            if len(out) >= 8 * MiB:
                f.write(out)
                out.clear()
        f.write(out)
        f.flush()
        os.fsync(f.fileno())
    return pos


def rss_kib() -> int:
    """Resident set size now (KiB), from /proc/self/statm."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def boot_child(path: str) -> None:
    start = time.perf_counter()
    with open_board(Path(path)) as board:
        elapsed = time.perf_counter() - start
        gc.collect()
        rss_now = rss_kib()
        boxes = board.boxes()
        count = sum(info.messages for info in boxes)
        started = time.perf_counter()
        lister = getattr(board, "listing", board.messages)  # main had only messages()
        listing = lister(boxes[0].name) if boxes else []
        list_seconds = time.perf_counter() - started
        list_kib = rss_kib() - rss_now
        del listing
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before close's checkpoint
    print(f"{elapsed} {rss} {count} {rss_now} {list_seconds} {list_kib}")


def boot_figures(path: Path) -> list[float]:
    """Boot `path` in a fresh interpreter: seconds, peak RSS KiB, messages, RSS KiB after boot,
    seconds to list the first box, KiB that listing added."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.store", "--boot-child", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [float(x) for x in out]


def boot(path: Path) -> tuple[float, int, int]:
    figures = boot_figures(path)
    return figures[0], int(figures[1]), int(figures[2])


def login_figures(image: Path) -> tuple[float, float, int, int]:
    """`dpfw run` on the image; a poplib client logs in to box a: seconds from PASS to its +OK
    (password check and listing), seconds for a full UIDL, server RSS growth (KiB) for that
    one logged-in session, lines UIDL sent."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "firmware", "run", str(image), "--pop3", f"127.0.0.1:{port}",
         "--console", "none"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = poplib.POP3("127.0.0.1", port, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("bench: the device did not start") from None
                time.sleep(0.05)
        with open(f"/proc/{server.pid}/statm", encoding="ascii") as f:
            before = int(f.read().split()[1])
        client.user("a")
        started = time.perf_counter()
        client.pass_("pw")
        login = time.perf_counter() - started
        with open(f"/proc/{server.pid}/statm", encoding="ascii") as f:
            after = int(f.read().split()[1])
        started = time.perf_counter()
        _, lines, _ = client.uidl()
        uidl = time.perf_counter() - started
        client.quit()
        page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
        return login, uidl, (after - before) * page_kib, len(lines)
    finally:
        server.terminate()
        server.wait()


def scale(directory: Path, counts: list[int], low: int, high: int, runs: int) -> None:
    """The store-scale table (docs/benchmarks.md)."""
    empty = directory / "empty.img"
    bulk_image(empty, 0, low, high)
    base = min(boot_figures(empty)[3] for _ in range(runs))
    print(f"boot of an empty image: RSS {base / 1024:.1f} MiB")
    print(
        "messages   log MiB  build s  walk boot s  peak MiB   checkpoint boot s  peak MiB"
        "  B/message  list s"
    )
    for count in counts:
        image = directory / f"scale-{count}.img"
        started = time.perf_counter()
        log_bytes = bulk_image(image, count, low, high)
        built = time.perf_counter() - started
        walk = boot_figures(image)  # no checkpoint yet: the whole log; its close writes one
        runs_out = [boot_figures(image) for _ in range(runs)]
        secs = [r[0] for r in runs_out]
        best = min(runs_out, key=lambda r: r[0])
        per_message = (max(walk[3], best[3]) - base) * 1024 / max(count, 1)
        print(
            f"{count:>9,}  {log_bytes / MiB:8.0f}  {built:7.1f}  {walk[0]:11.3f}  "
            f"{walk[1] / 1024:8.1f}   {min(secs):6.3f} / {max(secs):6.3f}  "
            f"{best[1] / 1024:8.1f}  {per_message:9.0f}  {best[4]:6.3f}"
        )
        login, uidl, grew, lines = login_figures(image)
        print(
            f"           first login to box a ({lines:,} messages): PASS to +OK "
            f"{login * 1000:.1f} ms, UIDL {uidl:.2f} s, server RSS +{grew} KiB"
        )
        image.unlink()


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
    parser.add_argument("--scale", help="store-scale table for these message counts (N,N,...)")
    parser.add_argument("--sizes", default="2000-10000", help="message sizes for --scale: LOW-HIGH")
    parser.add_argument("--runs", type=int, default=3, help="boots per image for --scale")
    parser.add_argument("--boot-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.boot_child:
        boot_child(args.boot_child)
        return
    if args.scale:
        low, _, high = args.sizes.partition("-")
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            print(f"images in {tmp} ({os.uname().machine}, Python {sys.version.split()[0]})")
            counts = [int(c.replace("_", "")) for c in args.scale.split(",")]
            scale(Path(tmp), counts, int(low), int(high or low), args.runs)
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
