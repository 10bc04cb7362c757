"""`tools/bench api`: HTTP API deliveries of a 50 KB message while 32 POP3 clients run.

One `dpfw run --http` on a board image with one 50 KB message in each of the POP3 boxes and
an empty box `api-inbox`. Three timed phases of the same length:

1. POP3 alone: CLIENTS clients, each doing full sessions (USER, PASS, STAT, UIDL, RETR 1,
   QUIT) on boxes of its own, every reply checked (benchmarks/loadgen.py);
2. API alone: API_CLIENTS HTTP clients (httpx, keep-alive, Basic auth; in a process of their
   own, so the POP3 generator keeps its CPU) POSTing the 50 KB
   message to /api/v1/boxes/api-inbox/messages, each answered 201 after it is durable;
3. both at once.

Reported: POP3 sessions/s and API deliveries/s in each phase, so the cost of deliveries to
POP3 (and of POP3 to deliveries) reads off directly; every delivery is checked once more at
the end (count and, for a sample, the bytes through GET .../raw).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from benchmarks.loadgen import run_sessions
from benchmarks.pop3_corpus import SMALL_SIZE, build_corpus, build_message
from benchmarks.pop3_dpfw import ADMIN_PASSWORD, MODEL, run_settings
from benchmarks.pop3_procs import free_port, wait_for_greeting

API_BOX = "api-inbox"
MIB = 1 << 20


@dataclass
class Phase:
    name: str
    seconds: float
    pop3_sessions: int = 0
    pop3_errors: int = 0
    deliveries: int = 0
    delivery_errors: int = 0
    delivery_ms_p50: float = 0.0
    delivery_ms_p99: float = 0.0

    @property
    def sessions_per_s(self) -> float:
        return self.pop3_sessions / self.seconds

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.seconds


def build_image(path: Path, boxes: int, room_mib: int) -> None:
    from firmware.config.profile import factory
    from firmware.device.boards import create_board

    corpus = build_corpus(boxes, 0)
    profile = factory(MODEL).with_value("mailbox.max_boxes", str(boxes + 16))
    board = create_board(path, profile, ADMIN_PASSWORD, size=(room_mib + 64) * MIB)
    try:
        for account in corpus.accounts:
            board.add_box(account.name, account.password)
            board.deliver(account.name, account.message)
        board.add_box(API_BOX, "api-inbox-bench-pw")
    finally:
        board.close()


async def deliveries(base: str, clients: int, seconds: float, message: bytes, phase: Phase) -> None:
    times: list[float] = []
    deadline = time.monotonic() + seconds

    async def one_client() -> None:
        async with httpx.AsyncClient(
            base_url=base, auth=("admin", ADMIN_PASSWORD), timeout=60
        ) as client:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                got = await client.post(
                    f"/api/v1/boxes/{API_BOX}/messages",
                    content=message,
                    headers={"Content-Type": "message/rfc822"},
                )
                if got.status_code == 201:
                    phase.deliveries += 1
                    times.append(time.perf_counter() - t0)
                else:
                    phase.delivery_errors += 1
                    if phase.delivery_errors <= 3:
                        print(f"api: {got.status_code} {got.text[:200]}", file=sys.stderr)

    async with asyncio.TaskGroup() as tg:
        for _ in range(clients):
            tg.create_task(one_client())
    if times:
        times.sort()
        phase.delivery_ms_p50 = times[len(times) // 2] * 1000
        phase.delivery_ms_p99 = times[min(len(times) - 1, len(times) * 99 // 100)] * 1000


def _api_process(base: str, clients: int, seconds: float, message: bytes, name: str) -> Phase:
    phase = Phase(name, seconds)
    asyncio.run(deliveries(base, clients, seconds, message, phase))
    return phase


def _in_process(base: str, clients: int, seconds: float, message: bytes, phase: Phase) -> None:
    """Run the HTTP clients in a child process and copy their counts into `phase`."""
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        done = pool.submit(_api_process, base, clients, seconds, message, phase.name).result()
    phase.deliveries, phase.delivery_errors = done.deliveries, done.delivery_errors
    phase.delivery_ms_p50, phase.delivery_ms_p99 = done.delivery_ms_p50, done.delivery_ms_p99


async def measure(args: argparse.Namespace, base: str, pop3_port: int) -> list[Phase]:
    corpus = build_corpus(args.clients * 4, 0)
    message = build_message(args.size, "api")
    uid_seen: dict[str, list[bytes]] = {}
    phases = []
    await run_sessions("127.0.0.1", pop3_port, corpus.accounts, args.clients, 2.0, uid_seen)
    for name, pop3_on, api_on in (
        ("POP3 alone", True, False),
        ("API alone", False, True),
        ("POP3 + API", True, True),
    ):
        phase = Phase(name, args.seconds)
        tasks = []
        async with asyncio.TaskGroup() as tg:
            if pop3_on:
                tasks.append(
                    tg.create_task(
                        run_sessions(
                            "127.0.0.1",
                            pop3_port,
                            corpus.accounts,
                            args.clients,
                            args.seconds,
                            uid_seen,
                        )
                    )
                )
            if api_on:  # in a process of its own: the POP3 generator keeps its CPU
                tg.create_task(
                    asyncio.to_thread(
                        _in_process, base, args.api_clients, args.seconds, message, phase
                    )
                )
        for task in tasks:
            result = task.result()
            phase.pop3_sessions = result.tally.done
            phase.pop3_errors = result.tally.errors + result.tally.mismatches
        phases.append(phase)
        print(
            f"{name:11}  POP3 {phase.sessions_per_s:7.1f} sessions/s ({phase.pop3_errors} errors)"
            f"  API {phase.deliveries_per_s:6.1f} deliveries/s ({phase.delivery_errors} errors,"
            f" p50 {phase.delivery_ms_p50:.1f} ms, p99 {phase.delivery_ms_p99:.1f} ms)",
            file=sys.stderr,
            flush=True,
        )
    async with httpx.AsyncClient(base_url=base, auth=("admin", ADMIN_PASSWORD)) as client:
        listing = (await client.get(f"/api/v1/boxes/{API_BOX}/messages")).json()["messages"]
        stored = sum(p.deliveries for p in phases)
        if len(listing) != stored:
            raise SystemExit(f"api: {stored} deliveries answered 201, {len(listing)} stored")
        raw = await client.get(f"/api/v1/boxes/{API_BOX}/messages/{listing[-1]['uid']}/raw")
        if raw.content != message:
            raise SystemExit("api: the last delivered message does not read back byte for byte")
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api", description=__doc__)
    parser.add_argument("--clients", type=int, default=32, help="POP3 clients (default 32)")
    parser.add_argument("--api-clients", type=int, default=4, help="HTTP clients (default 4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase (default 10)")
    parser.add_argument("--size", type=int, default=SMALL_SIZE, help="message octets (50 KB)")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dpfw-bench-api-") as tmp:
        image = Path(tmp) / "board.img"
        room = max(256, int(args.size * 400 * args.seconds * 2 / MIB) + 64)
        build_image(image, args.clients * 4, room)
        pop3_port, http_port = free_port(), free_port()
        command = [sys.executable, "-m", "firmware", "run", str(image)]
        command += ["--pop3", f"127.0.0.1:{pop3_port}", "--http", f"127.0.0.1:{http_port}"]
        settings = run_settings(args.clients * 2)
        settings += ["mailbox.quota_mib=65536", "mailbox.max_messages=1000000"]
        for setting in settings:
            command += ["--set", setting]
        log = (Path(tmp) / "dpfw.log").open("wb")
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        try:
            wait_for_greeting("127.0.0.1", pop3_port, proc, timeout_s=60.0)
            phases = asyncio.run(measure(args, f"http://127.0.0.1:{http_port}", pop3_port))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            text = (Path(tmp) / "dpfw.log").read_text(errors="replace")
            lines = text.splitlines()
            for at, line in enumerate(lines):  # say what went wrong on the device
                if " ERROR " in line:
                    print("\n".join(lines[at : at + 40]), file=sys.stderr)
                    break
    alone, api_alone, both = phases
    print(
        f"API deliveries of {args.size} octets: {api_alone.deliveries_per_s:.1f}/s alone, "
        f"{both.deliveries_per_s:.1f}/s with {args.clients} POP3 clients; POP3 sessions/s "
        f"{alone.sessions_per_s:.1f} alone, {both.sessions_per_s:.1f} with deliveries "
        f"({(both.sessions_per_s / alone.sessions_per_s - 1) * 100:+.0f}%)"
        if alone.sessions_per_s
        else "no POP3 session completed"
    )
    if args.json is not None:
        figures = [
            asdict(p) | {"sessions_per_s": p.sessions_per_s, "deliveries_per_s": p.deliveries_per_s}
            for p in phases
        ]
        run = vars(args) | {"json": str(args.json)}
        args.json.write_text(json.dumps({"args": run, "phases": figures}, indent=2))
    return 0 if all(p.pop3_errors == 0 and p.delivery_errors == 0 for p in phases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
