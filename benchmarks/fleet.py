"""`tools/bench fleet`: what a fleet of devices in one process costs (docs/fleet.md).

- marginal RSS per idle device: the fleet process's RSS with 1, 10 and 100 devices (each with
  its POP3 listener, HTTP API and console pty), once every device is ready and idle;
- start-up time of 100 devices: `dpfw fleet up` spawned to "fleet ready" (images made
  beforehand, as on every start but the first; their creation is timed apart);
- POP3 sessions/s across 100 devices: 64 clients, each on boxes of its own spread over the
  devices, full sessions (USER, PASS, STAT, UIDL, RETR of a 50 KB message, QUIT) checked
  byte for byte by benchmarks/loadgen.py.

The fleet runs as `python -m firmware fleet up DIR` (the product's command) in a child
process; this process creates the images through firmware.fleet (the same code `fleet up`
uses), delivers one message into each box, and drives the load.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from benchmarks.loadgen import ProtocolFailure, Tally, full_session
from benchmarks.pop3_corpus import SMALL_SIZE, Account, build_message
from benchmarks.pop3_procs import free_base
from firmware.device.boards import open_board
from firmware.fleet import manifest as mf
from firmware.fleet.images import ensure_images, image_path
from firmware.fleet.plan import plan

ADMIN = "Bench-admin-pw-1"
BOXES_PER_DEVICE = 2


def manifest_text(count: int, base: int, console: str) -> str:
    return f"""
[fleet]
name = "bench"
count = {count}
template = "DP-3510"
pop3_base_port = {base}
http_base_port = {base + count}
console = "{console}"
flash_mib = 8
settings = {{ "pop3.plaintext_auth" = "always", "pop3.max_sessions" = 8 }}

[[fleet.boxes]]
name = "a{{index}}"
password = "Pw-a-{{index}}-bench"

[[fleet.boxes]]
name = "b{{index}}"
password = "Pw-b-{{index}}-bench"
"""


@dataclass
class Prepared:
    directory: Path
    ports: list[int]
    accounts: list[tuple[int, Account]]  # (POP3 port, account)
    create_s: float


def prepare(root: Path, count: int, console: str, message: bytes) -> Prepared:
    directory = root / f"fleet{count}"
    directory.mkdir()
    base = free_base(2 * count)
    (directory / "fleet.toml").write_text(manifest_text(count, base, console))
    manifest = mf.load(directory / "fleet.toml")
    plans = plan(manifest)
    t0 = time.perf_counter()
    ensure_images(partial(image_path, directory), manifest, plans, lambda: ADMIN)
    create_s = time.perf_counter() - t0
    accounts = []
    for device in plans:
        with open_board(image_path(directory, device)) as board:
            for box in device.boxes:
                board.deliver(box.name, message)
                accounts.append((device.pop3[1], Account(box.name, box.password, message)))
    return Prepared(directory, [d.pop3[1] for d in plans], accounts, create_s)


class FleetProcess:
    def __init__(self, directory: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "firmware", "fleet", "up", str(directory)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.ready = threading.Event()
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            if len(self.lines) < 2000:
                self.lines.append(line.rstrip())
            if line.startswith("dpfw: fleet ready"):
                self.ready.set()
        self.ready.set()

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.popen.pid}/task"))

    def stop(self) -> float:
        t0 = time.perf_counter()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        code = self.popen.wait(120)
        if code != 0:
            raise SystemExit(f"fleet exited {code}:\n" + "\n".join(self.lines[-20:]))
        return time.perf_counter() - t0


def start(directory: Path) -> tuple[FleetProcess, float]:
    t0 = time.perf_counter()
    fleet = FleetProcess(directory)
    if not fleet.ready.wait(600) or fleet.popen.poll() is not None:
        raise SystemExit("fleet did not start:\n" + "\n".join(fleet.lines[-20:]))
    return fleet, time.perf_counter() - t0


async def drive(accounts: Sequence[tuple[int, Account]], clients: int, duration: float) -> Tally:
    """`clients` concurrent clients, client i on accounts i, i+clients, ... (its own boxes,
    spread over the devices), full sessions until `duration` s have passed."""
    parts = [list(accounts[i::clients]) for i in range(clients)]
    tallies = [Tally() for _ in parts]
    uid_seen: dict[str, list[bytes]] = {}
    deadline = time.monotonic() + duration

    async def worker(mine: list[tuple[int, Account]], tally: Tally) -> None:
        i = 0
        while time.monotonic() < deadline:
            port, account = mine[i % len(mine)]
            i += 1
            try:
                async with asyncio.timeout(30):
                    tally.octets += await full_session("127.0.0.1", port, account, uid_seen)
                tally.done += 1
            except (ProtocolFailure, OSError, TimeoutError) as exc:
                tally.fail(exc)
                await asyncio.sleep(0.01)

    async with asyncio.TaskGroup() as group:
        for mine, tally in zip(parts, tallies, strict=True):
            group.create_task(worker(mine, tally))
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/bench fleet", description=__doc__)
    parser.add_argument("--counts", default="1,10,100", help="fleet sizes for RSS (1,10,100)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0, help="POP3 load, seconds")
    parser.add_argument("--console", choices=("pty", "none"), default="pty")
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before RSS")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    message = build_message(SMALL_SIZE, "fleet")
    rss: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="dpfw-fleet-bench-") as tmp:
        for count in counts:
            prepared = prepare(Path(tmp), count, args.console, message)
            fleet, start_s = start(prepared.directory)
            try:
                time.sleep(args.settle)
                rss[count] = fleet.rss_kib()
                print(
                    f"{count:4d} devices: images made in {prepared.create_s:6.2f} s, "
                    f"started in {start_s:6.2f} s, RSS {rss[count] / 1024:7.1f} MiB, "
                    f"{fleet.threads()} threads",
                    flush=True,
                )
                if count == max(counts) and args.clients > 0:
                    clients = min(args.clients, len(prepared.accounts))
                    t0 = time.monotonic()
                    tally = asyncio.run(drive(prepared.accounts, clients, args.duration))
                    wall = time.monotonic() - t0
                    print(
                        f"POP3 across {count} devices, {clients} clients: "
                        f"{tally.done / wall:7.1f} sessions/s "
                        f"({tally.done} in {wall:.1f} s, {tally.errors} errors, "
                        f"{tally.mismatches} mismatches) {tally.samples[:2]}",
                        flush=True,
                    )
                    rss_after = fleet.rss_kib()
                    print(f"RSS after the load: {rss_after / 1024:.1f} MiB", flush=True)
            finally:
                stop_s = fleet.stop()
            print(f"{count:4d} devices: stopped in {stop_s:.2f} s", flush=True)
    ordered = sorted(rss)
    for small, large in itertools.pairwise(ordered):
        per = (rss[large] - rss[small]) / (large - small) / 1024
        print(f"marginal RSS per idle device ({small} -> {large}): {per:.2f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
