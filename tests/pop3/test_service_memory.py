"""The POP3 service over in-process streams and the in-memory maildrop: no socket, no Board.

`serve_listeners` takes any trio listener, so these tests hand it a listener of
`trio.testing.memory_stream_pair` streams and synchronise with `wait_all_tasks_blocked`
instead of sleeping; `MemoryMailstore` stands in for the Board.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from firmware.config.budget import RamBudget
from firmware.config.profile import Profile, factory
from firmware.errors import DeviceError
from firmware.pop3.memory import MemoryMailstore
from firmware.pop3.server import Pop3Service

PASSWORD = "memory-pw"
FIRST = b"Subject: one\r\n\r\nfirst body\r\n"
SECOND = b"Subject: two\r\n\r\n.dot line\r\nsecond\r\n"


class MemoryListener(trio.abc.Listener[trio.abc.HalfCloseableStream]):
    """Hands the server one end of each `connect()`ed memory stream pair."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.HalfCloseableStream](16)
        self.lockstep = False  # lockstep pairs: one receive_some gets one send_all at most

    async def connect(self) -> trio.abc.HalfCloseableStream:
        pair = (
            trio.testing.lockstep_stream_pair if self.lockstep else trio.testing.memory_stream_pair
        )
        client, server = pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.HalfCloseableStream:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError("listener closed") from None

    async def aclose(self) -> None:
        self._receive.close()
        await trio.lowlevel.checkpoint()


class Client:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = b""

    async def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = await self.stream.receive_some()
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    async def cmd(self, text: str) -> bytes:
        await self.stream.send_all(text.encode() + b"\r\n")
        return await self.line()

    async def body(self) -> bytes:
        lines = []
        while (line := await self.line()) != b".":
            lines.append(line)
        return b"\r\n".join(lines) + b"\r\n" if lines else b""


@dataclass
class Setup:
    service: Pop3Service
    listener: MemoryListener
    store: MemoryMailstore
    profile: list[Profile]

    async def connect(self) -> Client:
        client = Client(await self.listener.connect())
        assert (await client.line()).startswith(b"+OK DP-3530 POP3 service ready")
        return client

    async def login(self, box: str = "alice") -> Client:
        client = await self.connect()
        assert await client.cmd(f"USER {box}") == b"+OK send PASS"
        reply = await client.cmd(f"PASS {PASSWORD}")
        assert reply.startswith(b"+OK"), reply
        return client


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    store = MemoryMailstore()
    for box in ("alice", "bob"):
        store.add_box(box, PASSWORD)
    store.deliver("alice", FIRST)
    store.deliver("alice", SECOND)
    profile = [
        factory("DP-3530")
        .with_value("pop3.plaintext_auth", "always")
        .with_value("pop3.auth_failure_delay_s", "0")
    ]
    service = Pop3Service(None, lambda: profile[0], RamBudget(1 << 24), store=store)
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(service.serve_listeners, [listener])
        yield Setup(service, listener, store, profile)
        nursery.cancel_scope.cancel()


async def test_a_whole_session_over_memory_streams(setup: Setup) -> None:
    client = await setup.login()
    octets = sum(m.size for m in setup.store.stored("alice"))
    assert await client.cmd("STAT") == b"+OK 2 %d" % octets
    assert (await client.cmd("RETR 2")).startswith(b"+OK")
    assert await client.body() == b"Subject: two\r\n\r\n..dot line\r\nsecond\r\n"
    assert (await client.cmd("TOP 1 0")).startswith(b"+OK")
    assert await client.body() == b"Subject: one\r\n\r\n"
    assert await client.cmd("DELE 1") == b"+OK message 1 deleted"
    assert await client.cmd("QUIT") == b"+OK signing off (1 message left)"
    [(box, uids)] = setup.store.deletions
    assert box == "alice" and len(uids) == 1
    assert [m.wire for m in setup.store.stored("alice")] == [
        b"Subject: two\r\n\r\n..dot line\r\nsecond\r\n"
    ]
    await trio.testing.wait_all_tasks_blocked()
    assert setup.service.active_sessions == 0


async def test_sessions_are_listed_and_counted_without_sleeping(setup: Setup) -> None:
    alice = await setup.login("alice")
    bob = await setup.connect()
    await trio.testing.wait_all_tasks_blocked()
    sessions = setup.service.sessions()
    assert [(s.box, s.state) for s in sessions] == [
        ("alice", "transaction"),
        (None, "authorization"),
    ]
    assert {s.peer for s in sessions} == {"memory"}
    await bob.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert setup.service.active_sessions == 1
    assert await alice.cmd("NOOP") == b"+OK"


async def test_a_session_over_the_limit_is_refused(setup: Setup) -> None:
    setup.profile[0] = setup.profile[0].with_value("pop3.max_sessions", "1")
    await setup.login()
    extra = Client(await setup.listener.connect())
    assert await extra.line() == b"-ERR [SYS/TEMP] too many POP3 sessions; try again later"
    assert setup.service.stats.sessions_refused == 1


async def test_a_store_that_fails_at_quit_removes_nothing_and_says_so(setup: Setup) -> None:
    client = await setup.login()
    assert (await client.cmd("DELE 2")).startswith(b"+OK")
    setup.store.fail = DeviceError("flash busy")
    assert await client.cmd("QUIT") == b"-ERR [SYS/TEMP] no messages removed: flash busy"
    assert len(setup.store.stored("alice")) == 2 and not setup.store.deletions
    assert setup.service.stats.commits_failed == 1


async def test_a_wrong_password_is_refused_and_counted(setup: Setup) -> None:
    client = await setup.connect()
    await client.cmd("USER alice")
    assert await client.cmd("PASS nope") == b"-ERR [AUTH] invalid mailbox name or password"
    assert setup.service.stats.logins_failed == 1


async def test_replies_to_pipelined_commands_go_out_in_one_write(setup: Setup) -> None:
    # RFC 2449 §6.6: a client may send several commands at once. The service answers them in
    # order and joins the replies into one write (one segment, one wake-up for the client).
    # Over a lockstep stream one receive_some returns what one send_all wrote, no more.
    setup.listener.lockstep = True
    client = await setup.login()
    octets = sum(m.size for m in setup.store.stored("alice"))
    await client.stream.send_all(b"NOOP\r\nSTAT\r\nLIST 1\r\nNOOP\r\n")
    first = await client.stream.receive_some()
    size = setup.store.stored("alice")[0].size
    assert first == b"+OK\r\n+OK 2 %d\r\n+OK 1 %d\r\n+OK\r\n" % (octets, size)
