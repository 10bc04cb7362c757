"""A verifying POP3 load generator: one asyncio process, raw protocol callbacks, no pipelining.

It has to stay out of the way of the server it measures (the machine has two cores shared by
both), so each connection is an `asyncio.Protocol` that only collects chunks and wakes its
coroutine when a reply is complete. Every reply is still checked: status lines, STAT numbers,
UIDL count and stability, RETR octets against STAT/LIST, and the body after unstuffing against
the expected bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.pop3_corpus import Account

REPLY_TIMEOUT_S = 30.0
_STAT = re.compile(rb"\+OK (\d+) (\d+)")
_LIST = re.compile(rb"\+OK (\d+) (\d+)")
_UIDL_LINE = re.compile(rb"(\d+) ([\x21-\x7e]{1,70})")
_TERMINATOR = b"\r\n.\r\n"


class ProtocolFailure(Exception):
    """The server answered something a correct POP3 server would not have."""


class Mismatch(ProtocolFailure):
    """A size or content check failed (counted apart from other errors)."""


@dataclass
class Tally:
    """What one test run counted: completed units, failures, and the first few failure texts."""

    done: int = 0
    octets: int = 0
    errors: int = 0
    mismatches: int = 0
    samples: list[str] = field(default_factory=list)
    first_reply_s: list[float] = field(default_factory=list)  # STLS: 1st reply after handshake
    session_s: list[float] = field(default_factory=list)  # TLS: whole sessions, connect to close
    tls_versions: dict[str, int] = field(default_factory=dict)  # TLS: sessions per version
    empty: int = 0  # fetch-and-delete: sessions that found the box empty (no RETR, no DELE)
    deleted: int = 0  # fetch-and-delete: deletions the server acknowledged (+OK to QUIT)

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, Mismatch):
            self.mismatches += 1
        else:
            self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(f"{type(exc).__name__}: {exc}"[:300])

    def add(self, other: Tally) -> None:
        self.done += other.done
        self.octets += other.octets
        self.errors += other.errors
        self.mismatches += other.mismatches
        self.samples.extend(other.samples[: max(0, 5 - len(self.samples))])
        self.first_reply_s.extend(other.first_reply_s)
        self.session_s.extend(other.session_s)
        for version, n in other.tls_versions.items():
            self.tls_versions[version] = self.tls_versions.get(version, 0) + n
        self.empty += other.empty
        self.deleted += other.deleted


class _Pop3Protocol(asyncio.Protocol):
    """Collects one reply at a time; wakes the waiting coroutine when it is complete.

    Chunks are kept in a list and joined once (a 10 MB RETR arrives in ~100 chunks); only the
    last five octets seen are needed to spot the end of a multi-line reply.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._tail = b""
        self._status_done = False  # the first CRLF (end of the status line) has been seen
        self._multi = False
        self._waiter: asyncio.Future[bytes] | None = None
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        tail = self._tail + data if len(data) < 5 else data
        self._tail = tail[-5:]
        waiter = self._waiter
        if waiter is None:  # unsolicited bytes: kept, and caught when the next reply is checked
            return
        if not self._status_done:
            if b"\r\n" not in data and b"\r\n" not in b"".join(self._chunks):
                return
            self._status_done = True
        if self._multi and self._chunks[0][:1] == b"+" and not tail.endswith(_TERMINATOR):
            return  # a stuffed body never holds CRLF.CRLF, so the first one ends the reply
        reply = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks = []
        self._tail = b""
        self._status_done = False
        self._waiter = None
        if not waiter.done():
            waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(
                ProtocolFailure(f"connection closed while awaiting a reply: {exc}")
            )

    def expect(self, multi: bool) -> asyncio.Future[bytes]:
        """Arm for the next reply; data already buffered counts towards it."""
        self._multi = multi
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._waiter = fut
        if self._chunks:
            pending = b"".join(self._chunks)
            self._chunks = []
            self._tail = b""
            self.data_received(pending)
        elif self.closed.done():
            fut.set_exception(ProtocolFailure("connection already closed by the server"))
        return fut


class Pop3Client:
    """One connection. Commands return the whole reply; `-ERR` raises ProtocolFailure."""

    def __init__(self, proto: _Pop3Protocol) -> None:
        self._p = proto
        self.tls_version: str | None = None  # "TLSv1.3" etc. once TLS is on

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        stls: ssl.SSLContext | None = None,
        nagle: bool = False,
        pop3s: ssl.SSLContext | None = None,
    ) -> Pop3Client:
        """Connect and read the greeting; with `stls`, also `STLS` and the TLS handshake.

        `pop3s`: implicit TLS (POP3S, RFC 8314 section 3.3): the TLS handshake right after
        the TCP connect, then the greeting inside TLS. `nagle`: leave Nagle's algorithm on
        (asyncio sets TCP_NODELAY on its sockets; poplib, fetchmail and most mail clients do
        not), so a server that leaves the client's last handshake segment unacknowledged shows
        as a delayed-ACK wait on the next command. Nagle is switched back on right after the
        TCP connect, before any octet is sent, so STLS and POP3S handshakes both run with it:
        that is why POP3S starts TLS on the connected transport (`start_tls`) instead of
        `create_connection(ssl=...)`, whose socket would keep TCP_NODELAY for its handshake.
        """
        if stls is not None and pop3s is not None:
            raise ValueError("STLS and implicit TLS (POP3S) exclude each other")
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_connection(lambda: _Pop3Protocol(loop), host, port)
        client = cls(proto)
        try:
            if nagle:
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            if pop3s is not None:
                tls = await loop.start_tls(transport, proto, pop3s, server_hostname=host)
                if tls is None:
                    raise ProtocolFailure("POP3S: the TLS handshake did not complete")
                proto.transport = tls
                client.tls_version = _version(tls)
            _ok(await proto.expect(multi=False), "greeting")
            if stls is not None:
                await client.command(b"STLS\r\n")
                tls = await loop.start_tls(transport, proto, stls, server_hostname=host)
                if tls is None:
                    raise ProtocolFailure("STLS: the TLS handshake did not complete")
                proto.transport = tls
                client.tls_version = _version(tls)
        except BaseException:
            client.abort()
            raise
        return client

    async def command(self, line: bytes, multi: bool = False) -> bytes:
        transport = self._p.transport
        assert transport is not None
        fut = self._p.expect(multi)
        transport.write(line)
        reply = await fut
        _ok(reply, line.split(b" ", 1)[0].strip().decode("ascii", "replace"))
        if not multi and len(reply) != reply.find(b"\r\n") + 2:
            raise ProtocolFailure(f"extra bytes after the reply to {line[:20]!r}: {reply[:80]!r}")
        return reply

    async def login(self, account: Account) -> None:
        await self.command(b"USER " + account.name.encode() + b"\r\n")
        await self.command(b"PASS " + account.password.encode() + b"\r\n")

    async def stat(self) -> tuple[int, int]:
        reply = await self.command(b"STAT\r\n")
        m = _STAT.match(reply)
        if m is None:
            raise ProtocolFailure(f"malformed STAT reply {reply[:80]!r}")
        return int(m[1]), int(m[2])

    async def list_one(self, n: int) -> int:
        reply = await self.command(b"LIST %d\r\n" % n)
        m = _LIST.match(reply)
        if m is None or int(m[1]) != n:
            raise ProtocolFailure(f"malformed LIST {n} reply {reply[:80]!r}")
        return int(m[2])

    async def uidl(self) -> list[bytes]:
        reply = await self.command(b"UIDL\r\n", multi=True)
        lines = reply.split(b"\r\n")
        # ["+OK ...", "1 uid", ..., ".", ""]
        if lines[-2:] != [b".", b""]:
            raise ProtocolFailure("UIDL listing not terminated")
        uids: list[bytes] = []
        for i, line in enumerate(lines[1:-2], start=1):
            m = _UIDL_LINE.fullmatch(line)
            if m is None or int(m[1]) != i:
                raise ProtocolFailure(f"malformed UIDL line {i}: {line[:80]!r}")
            uids.append(m[2])
        return uids

    async def retr(self, n: int, expected: bytes, size: int) -> int:
        """RETR message n and check it is `expected` (CRLF form) and `size` octets.

        The body must equal the expected message after unstuffing. That is checked as "the
        received octets equal the dot-stuffed expected message", which is equivalent for a
        correct server, stricter for a wrong one, and needs no copy of a 10 MB body.
        """
        reply = await self.command(b"RETR %d\r\n" % n, multi=True)
        start = reply.find(b"\r\n") + 2
        wire = stuffed(expected)
        if len(expected) != size:
            raise Mismatch(
                f"RETR {n}: the message has {len(expected)} octets, STAT/LIST said {size}"
            )
        if len(reply) - 3 - start == len(wire) and reply.startswith(wire, start):
            return size
        body = reply[start : len(reply) - 3]
        body = (body[1:] if body.startswith(b"..") else body).replace(b"\r\n..", b"\r\n.")
        if len(body) != size:
            raise Mismatch(f"RETR {n}: {len(body)} octets after unstuffing, STAT/LIST said {size}")
        at = next((i for i, (a, b) in enumerate(zip(body, expected, strict=False)) if a != b), -1)
        raise Mismatch(f"RETR {n}: body differs from the stored message at octet {at}")

    async def quit(self) -> None:
        await self.command(b"QUIT\r\n")
        await asyncio.wait_for(asyncio.shield(self._p.closed), REPLY_TIMEOUT_S)

    async def dele(self, n: int) -> None:
        await self.command(b"DELE %d\r\n" % n)

    def abort(self) -> None:
        if self._p.transport is not None:
            self._p.transport.abort()


_STUFFED: dict[int, tuple[bytes, bytes]] = {}


def stuffed(message: bytes) -> bytes:
    """The message as it travels in a RETR reply before the final ".\r\n" (cached)."""
    hit = _STUFFED.get(id(message))
    if hit is not None and hit[0] is message:
        return hit[1]
    wire = message.replace(b"\r\n.", b"\r\n..")
    if wire.startswith(b"."):
        wire = b"." + wire
    _STUFFED[id(message)] = (message, wire)
    return wire


def _version(transport: asyncio.Transport) -> str:
    ssl_object = transport.get_extra_info("ssl_object")
    version = ssl_object.version() if ssl_object is not None else None
    return str(version or "?")


def _ok(reply: bytes, what: str) -> None:
    if not reply.startswith(b"+OK"):
        raise ProtocolFailure(f"{what}: {reply[:120]!r}")


async def full_session(
    host: str,
    port: int,
    account: Account,
    uid_seen: dict[str, list[bytes]],
    stls: ssl.SSLContext | None = None,
    first_reply_s: list[float] | None = None,
    pop3s: ssl.SSLContext | None = None,
    session_s: list[float] | None = None,
    tls_versions: dict[str, int] | None = None,
) -> int:
    """USER, PASS, STAT, UIDL, RETR 1, QUIT and wait for the server to close; return octets.

    With `stls`: STLS and a TLS handshake first; with `pop3s`: implicit TLS (the handshake
    before the greeting). Over TLS the client's Nagle is left on, as mail clients do. The
    time from sending USER to its reply is appended to `first_reply_s`, and the wall time of
    the whole session (seconds, from the TCP connect to the server's close after QUIT) to
    `session_s`, and the session is counted under its TLS version in `tls_versions`, when
    given.
    """
    t_start = time.perf_counter()
    tls = stls is not None or pop3s is not None
    client = await Pop3Client.connect(host, port, stls, nagle=tls, pop3s=pop3s)
    try:
        t0 = time.perf_counter()
        await client.command(b"USER " + account.name.encode() + b"\r\n")
        if first_reply_s is not None:
            first_reply_s.append(time.perf_counter() - t0)
        await client.command(b"PASS " + account.password.encode() + b"\r\n")
        count, total = await client.stat()
        if count != 1 or total != len(account.message):
            raise Mismatch(f"STAT {count} {total}, expected 1 {len(account.message)}")
        uids = await client.uidl()
        if len(uids) != count:
            raise Mismatch(f"UIDL listed {len(uids)} messages, STAT said {count}")
        known = uid_seen.setdefault(account.name, uids)
        if known != uids:
            raise Mismatch(f"UIDL of {account.name} changed: {known!r} -> {uids!r}")
        octets = await client.retr(1, account.message, total)
        await client.quit()
    except BaseException:
        client.abort()
        raise
    if session_s is not None:
        session_s.append(time.perf_counter() - t_start)
    if tls_versions is not None and client.tls_version is not None:
        tls_versions[client.tls_version] = tls_versions.get(client.tls_version, 0) + 1
    return octets


async def fetch_delete_session(host: str, port: int, account: Account, tally: Tally) -> int:
    """The scan-retrieval poll: USER, PASS, STAT, UIDL, RETR 1, DELE 1, QUIT; octets retrieved.

    The box may hold any number of copies of `account.message` (a feed adds more while this
    runs); an empty box gets QUIT after STAT and counts in `tally.empty`. The deletion counts
    in `tally.deleted` only once QUIT's +OK says it is committed.
    """
    client = await Pop3Client.connect(host, port)
    try:
        await client.login(account)
        count, total = await client.stat()
        if count == 0:
            await client.quit()
            tally.empty += 1
            return 0
        uids = await client.uidl()
        if len(uids) != count:
            raise Mismatch(f"UIDL listed {len(uids)} messages, STAT said {count}")
        size = len(account.message)
        if total != count * size:
            raise Mismatch(f"STAT {count} {total}: every message has {size} octets")
        octets = await client.retr(1, account.message, size)
        await client.dele(1)
        await client.quit()
        tally.deleted += 1
    except BaseException:
        client.abort()
        raise
    return octets


async def _fetch_worker(
    host: str, port: int, boxes: Sequence[Account], deadline: float, tally: Tally
) -> None:
    i = 0
    while time.monotonic() < deadline:
        account = boxes[i % len(boxes)]
        i += 1
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                tally.octets += await fetch_delete_session(host, port, account, tally)
            tally.done += 1
        except (ProtocolFailure, OSError, TimeoutError) as exc:
            tally.fail(exc)
            await asyncio.sleep(0.01)


async def run_fetch_delete(
    host: str, port: int, accounts: Sequence[Account], clients: int, duration_s: float
) -> RunResult:
    """Fetch-and-delete sessions from `clients` concurrent clients, each on boxes of its own."""
    parts = _partition(accounts, clients)
    tallies = [Tally() for _ in parts]
    cpu0, t0 = time.process_time(), time.monotonic()
    deadline = t0 + duration_s
    async with asyncio.TaskGroup() as tg:
        for boxes, tally in zip(parts, tallies, strict=True):
            tg.create_task(_fetch_worker(host, port, boxes, deadline, tally))
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    total = Tally()
    for t in tallies:
        total.add(t)
    return RunResult(total, wall, cpu)


async def count_messages(host: str, port: int, accounts: Sequence[Account]) -> int:
    """The messages in all of `accounts`' boxes now (STAT of each, one session at a time)."""
    total = 0
    for account in accounts:
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            client = await Pop3Client.connect(host, port)
            try:
                await client.login(account)
                total += (await client.stat())[0]
                await client.quit()
            except BaseException:
                client.abort()
                raise
    return total


async def _session_worker(
    host: str,
    port: int,
    boxes: Sequence[Account],
    deadline: float,
    tally: Tally,
    uid_seen: dict[str, list[bytes]],
    max_sessions: int,
    stls: ssl.SSLContext | None,
    pop3s: ssl.SSLContext | None = None,
) -> None:
    tls = stls is not None or pop3s is not None
    i = 0
    while time.monotonic() < deadline and i < max_sessions:
        account = boxes[i % len(boxes)]
        i += 1
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                tally.octets += await full_session(
                    host,
                    port,
                    account,
                    uid_seen,
                    stls,
                    tally.first_reply_s if tls else None,
                    pop3s,
                    tally.session_s if tls else None,
                    tally.tls_versions,
                )
            tally.done += 1
        except (ProtocolFailure, OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            tally.fail(exc)
            await asyncio.sleep(0.01)


@dataclass
class RunResult:
    """One measured level: tally, wall time and the generator's own CPU time."""

    tally: Tally
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.tally.done / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.tally.octets / self.wall_s / 1e6 if self.wall_s > 0 else 0.0


def _partition(accounts: Sequence[Account], clients: int) -> list[list[Account]]:
    """Give each client its own boxes (client i gets boxes i, i+clients, ...): never shared."""
    if clients > len(accounts):
        raise ValueError(f"{clients} clients need {clients} boxes, only {len(accounts)} exist")
    return [list(accounts[i::clients]) for i in range(clients)]


async def run_sessions(
    host: str,
    port: int,
    accounts: Sequence[Account],
    clients: int,
    duration_s: float,
    uid_seen: dict[str, list[bytes]],
    max_sessions: int = 10**9,
    stls: ssl.SSLContext | None = None,
    pop3s: ssl.SSLContext | None = None,
) -> RunResult:
    """Full sessions from `clients` concurrent clients, each on boxes of its own, for a while.

    `stls`: every session starts TLS with STLS first; `pop3s`: every session is implicit TLS
    (`port` is then the server's POP3S port). Over TLS the tally also gets each session's
    first-reply and whole-session times (see full_session).
    """
    parts = _partition(accounts, clients)
    tallies = [Tally() for _ in parts]
    cpu0, t0 = time.process_time(), time.monotonic()
    deadline = t0 + duration_s
    async with asyncio.TaskGroup() as tg:
        for boxes, tally in zip(parts, tallies, strict=True):
            tg.create_task(
                _session_worker(
                    host, port, boxes, deadline, tally, uid_seen, max_sessions, stls, pop3s
                )
            )
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    total = Tally()
    for t in tallies:
        total.add(t)
    return RunResult(total, wall, cpu)


async def _retr_worker(
    host: str,
    port: int,
    account: Account,
    deadline: float,
    tally: Tally,
    stls: ssl.SSLContext | None = None,
) -> None:
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + REPLY_TIMEOUT_S):
            client = await Pop3Client.connect(host, port, stls)
            try:
                await client.login(account)
                count, total = await client.stat()
                size = await client.list_one(1)
                if count != 1 or size != len(account.message) or total != size:
                    raise Mismatch(f"STAT {count} {total} / LIST {size}: expected one message")
                while time.monotonic() < deadline:
                    tally.octets += await client.retr(1, account.message, size)
                    tally.done += 1
                await client.quit()
            except BaseException:
                client.abort()
                raise
    except (ProtocolFailure, OSError, TimeoutError) as exc:
        tally.fail(exc)


async def run_retr(
    host: str,
    port: int,
    accounts: Sequence[Account],
    connections: int,
    duration_s: float,
    stls: ssl.SSLContext | None = None,
) -> RunResult:
    """RETR 1 over and over on `connections` logged-in connections (one box each); with
    `stls`, each connection starts TLS with STLS first."""
    if connections > len(accounts):
        raise ValueError(f"{connections} connections need as many large boxes")
    tallies = [Tally() for _ in range(connections)]
    cpu0, t0 = time.process_time(), time.monotonic()
    deadline = t0 + duration_s
    async with asyncio.TaskGroup() as tg:
        for account, tally in zip(accounts, tallies, strict=False):
            tg.create_task(_retr_worker(host, port, account, deadline, tally, stls))
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    total = Tally()
    for t in tallies:
        total.add(t)
    return RunResult(total, wall, cpu)


class IdleSessions:
    """Holds many logged-in, idle sessions open until `close()`."""

    def __init__(self) -> None:
        self.clients: list[Pop3Client] = []
        self.tally = Tally()

    async def open(
        self, host: str, port: int, accounts: Sequence[Account], parallel: int = 16
    ) -> None:
        queue = list(reversed(accounts))

        async def opener() -> None:
            while queue:
                account = queue.pop()
                try:
                    async with asyncio.timeout(REPLY_TIMEOUT_S):
                        client = await Pop3Client.connect(host, port)
                        try:
                            await client.login(account)
                            count, _ = await client.stat()
                            if count != 1:
                                raise Mismatch(f"STAT of {account.name}: {count} messages")
                        except BaseException:
                            client.abort()
                            raise
                    self.clients.append(client)
                    self.tally.done += 1
                except (ProtocolFailure, OSError, TimeoutError) as exc:
                    self.tally.fail(exc)

        async with asyncio.TaskGroup() as tg:
            for _ in range(parallel):
                tg.create_task(opener())

    async def still_open(self) -> int:
        """How many held sessions the server has not closed (checks with NOOP)."""
        alive = 0
        for client in self.clients:
            with contextlib.suppress(ProtocolFailure, OSError, TimeoutError):
                async with asyncio.timeout(REPLY_TIMEOUT_S):
                    await client.command(b"NOOP\r\n")
                    alive += 1
        return alive

    async def close(self, parallel: int = 32) -> None:
        queue = list(self.clients)
        self.clients = []

        async def closer() -> None:
            while queue:
                client = queue.pop()
                try:
                    async with asyncio.timeout(REPLY_TIMEOUT_S):
                        await client.quit()
                except (ProtocolFailure, OSError, TimeoutError) as exc:
                    client.abort()
                    self.tally.fail(exc)

        async with asyncio.TaskGroup() as tg:
            for _ in range(parallel):
                tg.create_task(closer())
