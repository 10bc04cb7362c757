"""RETR straight from the image file (firmware/pop3/direct.py) over real loopback sockets.

Plain TCP RETR copies from the image; POP3S pulls the body through the store in chunks. Both
must give the same bytes, also when the record wraps around the end of the ring, when stuffed
dots sit on chunk and window boundaries, and when compaction moves the record mid-RETR.
"""

from __future__ import annotations

import os
import random
import socket
import ssl

import pytest
import trio
import trio.testing

import firmware.flash.image
from firmware.pop3.direct import WINDOW, can_map
from firmware.pop3.protocol import STREAM_CHUNK
from firmware.store.board import Board
from firmware.store.wire import encode
from tests.pop3.conftest import BOB_PASSWORD, RawClient, Server

# Wire lines of 64 octets that all start with a stuffed dot: every 64 KiB chunk and every
# mapping window then begins exactly at "..".
DOTTED = b"".join(b".%060d\r\n" % n for n in range(20_000)) + b".\r\n"
assert len(encode(DOTTED)[0]) == 20_000 * 64 + 4 and 65536 % 64 == 0 == WINDOW % 64


def ragged(size: int, seed: int) -> bytes:
    """Lines of random length, often starting with '.', no final line end (the store adds it)."""
    rng = random.Random(seed)
    lines = []
    total = 0
    while total < size:
        line = (b"." if rng.random() < 0.3 else b"") + b"x" * rng.randrange(0, 200)
        lines.append(line)
        total += len(line) + 2
    return b"\r\n".join(lines)


def wire_of(message: bytes) -> bytes:
    """What RETR must send after the +OK line: the stuffed message and the terminator."""
    return encode(message)[0] + b".\r\n"


async def plain(server: Server, box: str = "bob", password: str = BOB_PASSWORD) -> RawClient:
    client = await server.connect()
    assert (await client.login(box, password)).startswith(b"+OK")
    return client


async def pop3s(server: Server, context: ssl.SSLContext) -> RawClient:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", server.pop3s_port))
    await client.starttls(context)
    assert (await client.login("bob", BOB_PASSWORD)).startswith(b"+OK")
    return client


def deliver_across_the_ring_end(board: Board, box: str, message: bytes) -> None:
    """Deliver `message` so that its record wraps around the end of the ring (data area)."""
    ring_end = board.geometry.data_offset + board.usage().total
    gap = len(message) // 3
    for n in range(100):
        probe = board.deliver("alice", b"probe %d\r\n" % n)
        offset, length = board.wire_extents("alice", probe.uid)[-1]
        board.delete("alice", [probe.uid])
        left = ring_end - (offset + length)
        if left <= gap:
            info = board.deliver(box, message)
            if len(board.wire_extents(box, info.uid)) == 2:
                return
            board.delete(box, [info.uid])
            continue
        filler = board.deliver("alice", b"y" * min(left - gap, 4 << 20))
        board.delete("alice", [filler.uid])
    raise AssertionError("could not place a record across the end of the ring")


async def test_plain_and_tls_retr_give_the_same_bytes_also_across_the_ring_end(
    tls_pop3: Server, client_context: ssl.SSLContext
) -> None:
    board = tls_pop3.board
    messages = [DOTTED, ragged(700_000, 1), b"x" * STREAM_CHUNK, b"y" * (STREAM_CHUNK - 2)]
    for message in messages:
        board.deliver("bob", message)
    messages.append(ragged(900_000, 2))
    deliver_across_the_ring_end(board, "bob", messages[-1])
    direct = await plain(tls_pop3)  # plain TCP: straight from the image file
    sent = []
    for n, message in enumerate(messages, 1):
        head, body = await direct.multi(f"RETR {n}")
        assert head == b"+OK %d octets\r\n" % board.messages("bob")[n - 1].size
        assert body == wire_of(message), n
        sent.append((head, body))
    assert await direct.cmd("QUIT") == b"+OK signing off (5 messages left)\r\n"
    tls = await pop3s(tls_pop3, client_context)  # TLS: pulled through the store in chunks
    for n in range(1, len(messages) + 1):
        assert await tls.multi(f"RETR {n}") == sent[n - 1], n


async def slow_client(server: Server) -> RawClient:
    """A plain client with a small receive buffer: the server soon waits for it to read."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    await sock.connect(("127.0.0.1", server.port))
    client = RawClient(trio.SocketStream(sock))
    assert (await client.login("bob", BOB_PASSWORD)).startswith(b"+OK")
    return client


async def read_some(client: RawClient, at_least: int) -> None:
    while len(client.buffered) < at_least:
        assert await client._fill()


@pytest.mark.parametrize("erase", ["punch-hole", "write-zeros"])
async def test_compaction_moving_the_message_mid_retr_still_sends_the_right_bytes(
    pop3: Server, erase: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old place is erased while bytes from it may still sit in socket buffers.

    With os.sendfile the kernel would read those bytes from the file only when the client
    receives them, so this fails (zeros inside the message) at least with "write-zeros", the
    erase used where the file system cannot punch holes.
    """
    if erase == "write-zeros":
        monkeypatch.setattr(firmware.flash.image, "_fallocate", None)
    board = pop3.board
    dead = board.deliver("bob", b"to be deleted\r\n" * 1000)
    message = ragged(3_000_000, 3)
    info = board.deliver("bob", message)
    client = await plain(pop3)
    assert (await client.cmd("RETR 2")).startswith(b"+OK")
    await read_some(client, 100_000)
    before = board.wire_extents("bob", info.uid)
    for round_ in range(3):  # the record moves, its old place is erased; more than once
        # The server has filled the socket buffers from the old place and waits for us.
        await trio.testing.wait_all_tasks_blocked()
        board.delete("bob", [dead.uid])
        dead = board.deliver("bob", b"more mail %d\r\n" % round_)
        board.compact()
        after = board.wire_extents("bob", info.uid)
        assert after != before
        before = after
        await read_some(client, len(client.buffered) + 300_000)
    assert await client.body() == wire_of(message)
    assert (await client.cmd("NOOP")).startswith(b"+OK")


async def test_a_message_removed_mid_retr_ends_the_connection_without_the_final_dot(
    pop3: Server,
) -> None:
    board = pop3.board
    info = board.deliver("bob", ragged(2_000_000, 4))
    client = await slow_client(pop3)
    assert (await client.cmd("DELE 1")).startswith(b"+OK")
    assert (await client.cmd("RSET")).startswith(b"+OK")
    assert (await client.cmd("RETR 1")).startswith(b"+OK")
    await read_some(client, 100_000)
    board.delete("bob", [info.uid])  # as an administrator's purge would
    while await client._fill():
        pass
    assert not client.buffered.endswith(b"\r\n.\r\n")
    assert len(client.buffered) < len(encode(ragged(2_000_000, 4))[0])


async def test_kill_mid_retr_ends_the_connection_and_commits_nothing(pop3: Server) -> None:
    board = pop3.board
    board.deliver("bob", ragged(2_000_000, 5))
    board.deliver("bob", b"second\r\n")
    before = board.messages("bob")
    client = await slow_client(pop3)
    assert (await client.cmd("DELE 2")).startswith(b"+OK")
    assert (await client.cmd("RETR 1")).startswith(b"+OK")
    await read_some(client, 100_000)
    [session] = pop3.service.sessions()
    assert pop3.service.kill(session.id)
    while await client._fill():
        pass
    assert not client.buffered.endswith(b"\r\n.\r\n")
    with trio.fail_after(5):
        while pop3.service.active_sessions:
            await trio.sleep(0.01)
    assert board.messages("bob") == before  # no UPDATE: DELE 2 was not committed


async def test_a_client_that_leaves_mid_retr_ends_only_its_session(pop3: Server) -> None:
    message = ragged(2_000_000, 6)
    pop3.board.deliver("bob", message)
    client = await slow_client(pop3)
    assert (await client.cmd("RETR 1")).startswith(b"+OK")
    await read_some(client, 100_000)
    await client.aclose()
    with trio.fail_after(5):
        while pop3.service.active_sessions:
            await trio.sleep(0.01)
    again = await plain(pop3)
    assert await again.multi("RETR 1") == (
        b"+OK %d octets\r\n" % len(message + b"\r\n"),
        wire_of(message),
    )


async def test_without_access_to_the_image_file_retr_reads_through_the_store(
    pop3: Server,
) -> None:
    board = pop3.board
    message = ragged(500_000, 7)
    board.deliver("bob", message)
    os.rename(board.path, board.path.with_suffix(".moved"))  # open() by name now fails
    client = await plain(pop3)
    assert (await client.multi("RETR 1"))[1] == wire_of(message)


def test_can_map_a_file_but_not_a_pipe(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"x" * 8192)
    fd = os.open(path, os.O_RDONLY)
    r, w = os.pipe()
    try:
        assert can_map(fd)
        assert not can_map(r)
    finally:
        for each in (fd, r, w):
            os.close(each)
