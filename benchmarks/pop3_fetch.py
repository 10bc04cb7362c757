"""The fetch-and-delete test of `tools/bench pop3`: its scan feed and its NOOP probe.

The workload is how scan-to-mailbox clients poll: USER, PASS, STAT, UIDL, RETR 1, DELE 1,
QUIT (benchmarks/loadgen.py, `run_fetch_delete`), on boxes that start with a stack of 50 KB
messages while a feed keeps delivering more (as the copier's scanner would). Meanwhile a
separate process keeps a few logged-in sessions idle but for a NOOP every few ms and times
each (benchmarks/latency.py's client): does the server keep answering at once while it
commits deletions and stores new mail?

Feeds: dpfw gets each message through its HTTP API (POST .../messages, answered 201 once it
is durable); Dovecot through its maildir, as a local delivery agent writes it (tmp/, fsync,
rename into new/). The feed runs in the generator's process; for dpfw its receiving side is in
the server's CPU figure, for Dovecot it is not (the server only finds the files), so the
comparison is tilted against dpfw, not for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from benchmarks.pop3_corpus import Account


class Feed(Protocol):
    """Delivers one copy of the run's message into a box; raises on failure."""

    async def deliver(self, box: str) -> None: ...

    async def aclose(self) -> None: ...


class HttpFeed:
    """dpfw: POST the message to /api/v1/boxes/BOX/messages (201 once durable)."""

    def __init__(self, base_url: str, admin_password: str, message: bytes) -> None:
        import httpx

        self._client = httpx.AsyncClient(base_url=base_url, auth=("admin", admin_password))
        self._message = message

    async def deliver(self, box: str) -> None:
        reply = await self._client.post(
            f"/api/v1/boxes/{box}/messages",
            content=self._message,
            headers={"Content-Type": "message/rfc822"},
        )
        if reply.status_code != 201:
            raise RuntimeError(f"feed to {box}: HTTP {reply.status_code} {reply.text[:200]}")

    async def aclose(self) -> None:
        await self._client.aclose()


class MaildirFeed:
    """Dovecot: write tmp/NAME, fsync, rename into new/ (how an LDA delivers), as its user."""

    def __init__(self, home: Path, message: bytes, uid: int, gid: int, crlf: bool) -> None:
        self._home = home
        self._data = message if crlf else message.replace(b"\r\n", b"\n")
        self._size = len(message)
        self._owner = (uid, gid)
        self._serial = itertools.count()

    def _write(self, box: str) -> None:
        maildir = self._home / box / "Maildir"
        name = (
            f"{time.time_ns()}.F{next(self._serial)}P{os.getpid()}.dpfw-bench,"
            f"S={len(self._data)},W={self._size}"
        )
        tmp = maildir / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, self._data)
            os.fchown(fd, *self._owner)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, maildir / "new" / name)

    async def deliver(self, box: str) -> None:
        await asyncio.to_thread(self._write, box)

    async def aclose(self) -> None:
        return None


async def run_feed(
    feed: Feed, boxes: Sequence[Account], rate: float, stop: asyncio.Event
) -> tuple[int, int]:
    """Deliver `rate` messages/s round-robin into `boxes` until `stop`: (delivered, failed)."""
    delivered = failed = 0
    if rate <= 0 or not boxes:
        await stop.wait()
        return 0, 0
    period = 1.0 / rate
    due = time.monotonic()
    for account in itertools.cycle(boxes):
        if stop.is_set():
            break
        try:
            await feed.deliver(account.name)
            delivered += 1
        except Exception as exc:  # counted and shown; the test goes on
            failed += 1
            if failed <= 3:
                print(f"feed: {exc}", file=sys.stderr, flush=True)
        due += period
        delay = due - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return delivered, failed


class NoopProbe:
    """A process holding logged-in sessions that each send a NOOP every `interval_ms`."""

    def __init__(self, port: int, accounts: Sequence[Account], interval_ms: float) -> None:
        self._port = port
        self._accounts = accounts
        self._interval_ms = interval_ms
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        args = [str(self._port), str(self._interval_ms)]
        args += [f"{a.name}:{a.password}" for a in self._accounts]
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.pop3_fetch",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if line != b"ready\n":
            raise RuntimeError(f"the NOOP probe failed to log in: {line!r}")

    async def stop(self) -> list[tuple[float, float]]:
        """End the probe; its samples: (time.monotonic() at send, latency in s)."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        out = await proc.stdout.read()
        await proc.wait()
        return [(float(at), float(lat)) for at, lat in json.loads(out)]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie (nearest rank; NaN if none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main(argv: Sequence[str]) -> int:
    """The probe process: PORT INTERVAL_MS BOX:PASSWORD..."""
    from benchmarks.latency import run_clients

    port, interval = int(argv[0]), float(argv[1])
    accounts = [a.split(":", 1) for a in argv[2:]]
    run_clients(port, [(box, password) for box, password in accounts], interval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
