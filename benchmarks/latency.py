"""`tools/bench latency`: does store work stall the POP3 event loop? NOOP latency under load.

A real device (firmware.device.Device, in this process, on a real image file) serves POP3 on
127.0.0.1. A separate client process (`--clients`, so its timing is not held up by this one)
keeps N logged-in sessions idle but for a NOOP every few milliseconds, and records every NOOP's
round trip. Meanwhile the device does, one after the other:

- idle: nothing (the baseline);
- compact: the console's `compact`, which moves >= 100 MiB of live records;
- quit: a POP3 session's QUIT that commits 10,000 deletions in one record;
- scan: a 50-page scan job, stored into a box.

For each case: the NOOPs sent while it ran, their median, p99 and max latency in ms. The store
work runs on the store worker (firmware/store/worker.py), so the loop should answer within a
few ms; before it, the loop waited for the whole operation (compact: ~192 ms).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

MIB = 1024 * 1024
PASSWORD = "latency-pw"
ADMIN_PASSWORD = "latency-admin"
IDLE_BOX = "idle{:03d}"
BULK_BOX, QUIT_BOX, SCAN_BOX = "bulk", "quit", "scan"


@dataclass(frozen=True)
class Plan:
    sessions: int = 20
    interval_ms: float = 2.0
    live_mib: int = 110  # live records compaction moves
    dead_mib: int = 8  # reclaimable records in front of them
    deletions: int = 10_000
    scan_pages: int = 50
    idle_s: float = 0.5


@dataclass(frozen=True)
class CaseFigures:
    name: str
    seconds: float  # how long the operation ran
    noops: int
    median_ms: float
    p99_ms: float
    max_ms: float
    detail: str = ""
    worst_at_ms: float = float("nan")  # when the worst NOOP was sent, from the case's start

    def line(self) -> str:
        return (
            f"{self.name:8} {self.seconds * 1000:9.1f} ms  {self.noops:6d} NOOPs  "
            f"median {self.median_ms:6.2f}  p99 {self.p99_ms:7.2f}  max {self.max_ms:7.2f} ms"
            + (f"  ({self.detail})" if self.detail else "")
            + (
                f"  worst sent at {self.worst_at_ms:+.0f} ms"
                if math.isfinite(self.worst_at_ms)
                else ""
            )
        )


# -- the image -----------------------------------------------------------------------------


def build_image(path: Path, plan: Plan) -> None:
    """Boxes for the idle sessions, the bulk box (dead then live records), the quit box."""
    from firmware.config.profile import factory
    from firmware.device.boards import create_board

    profile = factory("DP-3530")
    for key, value in (
        ("pop3.plaintext_auth", "always"),
        ("pop3.auth_failure_delay_s", "0"),
        ("pop3.max_sessions", str(plan.sessions + 8)),
        ("pop3.max_sessions_per_client", str(plan.sessions + 8)),
        ("mailbox.max_boxes", str(plan.sessions + 8)),
        ("mailbox.max_messages", str(max(1000, plan.deletions))),
        ("mailbox.quota_mib", str(plan.live_mib + plan.dead_mib + 64)),
        ("memory.image_ram_mib", "512"),
        ("storage.compact_threshold_pct", "1"),
    ):
        profile = profile.with_value(key, value, "latency benchmark")
    size = 2 * (plan.live_mib + plan.dead_mib) * MIB + 128 * MIB
    board = create_board(path, profile, ADMIN_PASSWORD, size=size)
    try:
        for name in (BULK_BOX, QUIT_BOX, SCAN_BOX):
            board.add_box(name, PASSWORD)
        for i in range(plan.sessions):
            board.add_box(IDLE_BOX.format(i), PASSWORD)
            board.deliver(IDLE_BOX.format(i), b"Subject: idle\r\n\r\nhello\r\n")
        body = b"Subject: bulk\r\n\r\n" + (b"x" * 1022 + b"\r\n") * 1023
        dead = [board.deliver(BULK_BOX, body).uid for _ in range(plan.dead_mib)]
        for _ in range(plan.live_mib):
            board.deliver(BULK_BOX, body)
        board.delete(BULK_BOX, dead)
        small = b"Subject: small\r\n\r\nx\r\n"
        for _ in range(plan.deletions):
            board.deliver(QUIT_BOX, small)
    finally:
        board.close()


# -- the client process --------------------------------------------------------------------


def _reply(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        buf += data
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def run_clients(port: int, accounts: Sequence[tuple[str, str]], interval_ms: float) -> None:
    """The client process: log in, say "ready", NOOP until stdin closes, print the samples.

    One session per (box, password) of `accounts`. Samples are (time.monotonic() at send,
    latency in s): CLOCK_MONOTONIC is system-wide, so the parent can place them in its
    cases' windows. Also the NOOP probe of `tools/bench pop3`'s fetch-and-delete test.
    """
    socks = []
    for box, password in accounts:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        assert _reply(sock, buf).startswith(b"+OK")
        sock.sendall(f"USER {box}\r\nPASS {password}\r\n".encode())
        assert _reply(sock, buf).startswith(b"+OK")
        assert _reply(sock, buf).startswith(b"+OK"), "login failed"
        sock.setblocking(False)
        socks.append(sock)
    print("ready", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ, sock)
    samples: list[tuple[float, float]] = []
    sent_at: dict[socket.socket, float] = {}
    next_send = time.monotonic()
    running = True
    while running:
        now = time.monotonic()
        if now >= next_send:
            for sock in socks:
                if sock not in sent_at:
                    sent_at[sock] = time.monotonic()
                    sock.send(b"NOOP\r\n")
            next_send = now + interval_ms / 1000
        timeout = max(0.0, next_send - time.monotonic())
        for key, _ in selector.select(timeout):
            if key.data is None:
                if not sys.stdin.readline():
                    running = False
                continue
            sock = key.data
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("server closed an idle session")
            at = time.monotonic()
            if sock in sent_at:
                start = sent_at.pop(sock)
                samples.append((start, at - start))
    for start in sent_at.values():  # still unanswered: count them as pending until now
        samples.append((start, time.monotonic() - start))
    json.dump(samples, sys.stdout)
    sys.stdout.flush()


# -- the device side -----------------------------------------------------------------------


def _quit_with_deletions(port: int, count: int) -> tuple[float, float, bytes]:
    """Log in to the quit box, mark `count` messages deleted, QUIT: (start, end, reply)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        buf = bytearray()
        _reply(sock, buf)
        sock.sendall(f"USER {QUIT_BOX}\r\nPASS {PASSWORD}\r\n".encode())
        _reply(sock, buf)
        assert _reply(sock, buf).startswith(b"+OK"), "quit box login failed"
        batch = 500
        for first in range(1, count + 1, batch):
            numbers = range(first, min(first + batch, count + 1))
            sock.sendall(b"".join(b"DELE %d\r\n" % n for n in numbers))
            for _ in numbers:
                assert _reply(sock, buf).startswith(b"+OK")
        start = time.monotonic()
        sock.sendall(b"QUIT\r\n")
        reply = _reply(sock, buf)
        return start, time.monotonic(), reply


async def _maybe_await(value: object) -> object:
    return await value if inspect.isawaitable(value) else value


async def run_cases(image: Path, plan: Plan) -> list[CaseFigures]:
    from firmware.device.device import Device, RunOptions
    from firmware.ops import render, storage
    from firmware.ops.context import OpsContext
    from firmware.scanner.job import ScanRequest

    device = Device(RunOptions(image=image, pop3=("127.0.0.1", 0)))
    windows: list[tuple[str, float, float, str]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(device.run)
        await device.wait_booted()
        port = device.pop3_addresses[0][1]
        proc = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "benchmarks.latency",
                "--clients",
                str(port),
                str(plan.sessions),
                str(plan.interval_ms),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        out = b""
        while b"ready\n" not in out:
            data = await proc.stdout.receive_some()
            if not data:
                raise RuntimeError("the client process failed to log in")
            out += data
        out = out.split(b"ready\n", 1)[1]

        async def case(name: str, operation: Callable[[], object]) -> None:
            start = time.monotonic()
            detail = await _maybe_await(operation())
            windows.append((name, start, time.monotonic(), str(detail or "")))
            await trio.sleep(0.1)

        await trio.sleep(0.2)
        start = time.monotonic()
        await trio.sleep(plan.idle_s)
        windows.append(("idle", start, time.monotonic(), ""))
        await trio.sleep(0.1)
        ctx = OpsContext.running(device)

        async def compact() -> str:  # the console's `compact`: on the store worker
            return render.compact(await ctx.run_store(storage.compact, ctx))

        await case("compact", compact)
        start, end, reply = await trio.to_thread.run_sync(
            _quit_with_deletions, port, plan.deletions
        )
        windows.append(("quit", start, end, reply.decode(errors="replace")))
        await trio.sleep(0.1)
        request = ScanRequest(
            box=SCAN_BOX, pages=plan.scan_pages, dpi="200x100", mode="mono", format="tiff"
        )
        scan_start = time.monotonic()
        result = await device.scan(request)
        windows.append(
            ("scan", scan_start, time.monotonic(), f"{result.size / MIB:.1f} MiB stored")
        )
        await trio.sleep(0.1)
        await proc.stdin.aclose()
        while data := await proc.stdout.receive_some():
            out += data
        await proc.wait()
        device.request_shutdown()
    samples: list[tuple[float, float]] = json.loads(out)
    figures = []
    for name, start, end, detail in windows:
        window = [(lat, at) for at, lat in samples if at <= end and at + lat >= start]
        inside = sorted(lat for lat, _ in window)
        ms = [x * 1000 for x in inside] or [float("nan")]
        worst_at = (max(window)[1] - start) * 1000 if window else float("nan")
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        figures.append(
            CaseFigures(
                name,
                end - start,
                len(inside),
                statistics.median(ms),
                p99,
                max(ms),
                detail,
                worst_at,
            )
        )
    return figures


def measure(plan: Plan, workdir: Path | None = None) -> list[CaseFigures]:
    """Build the image in `workdir` (a temporary directory if None) and run every case."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        image = Path(tmp) / "latency.img"
        build_image(image, plan)
        return trio.run(run_cases, image, plan)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/bench latency", description=__doc__)
    p.add_argument("--sessions", type=int, default=Plan.sessions, help="idle sessions (20)")
    p.add_argument("--interval-ms", type=float, default=Plan.interval_ms, help="NOOP period (2)")
    p.add_argument("--live-mib", type=int, default=Plan.live_mib, help="MiB compact moves (110)")
    p.add_argument("--deletions", type=int, default=Plan.deletions, help="QUIT's deletions")
    p.add_argument("--pages", type=int, default=Plan.scan_pages, help="scan pages (50)")
    p.add_argument("--clients", nargs=3, metavar=("PORT", "N", "MS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.clients:
        idle = [(IDLE_BOX.format(i), PASSWORD) for i in range(int(args.clients[1]))]
        run_clients(int(args.clients[0]), idle, float(args.clients[2]))
        return 0
    plan = Plan(
        sessions=args.sessions,
        interval_ms=args.interval_ms,
        live_mib=args.live_mib,
        deletions=args.deletions,
        scan_pages=args.pages,
    )
    print(
        f"NOOP latency of {plan.sessions} idle sessions (one NOOP each per "
        f"{plan.interval_ms} ms, from another process) while the device works; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for figures in measure(plan):
        print(figures.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
