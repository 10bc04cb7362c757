"""The trio adapter over real sockets on 127.0.0.1: admission, locks, timers, commits."""

from __future__ import annotations

import contextlib
import logging
import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from firmware.config.budget import RamBudget
from firmware.device.boards import open_board
from firmware.pop3.admission import SESSION_RAM
from firmware.pop3.server import IDLE_SLACK_S, Pop3Service
from firmware.store.board import Board
from tests.pop3.conftest import BOB_PASSWORD, LiveProfile, RawClient, Server, make_board


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.01)


async def test_greeting_login_and_quit(pop3: Server) -> None:
    client = await pop3.connect()
    assert (await client.login()).startswith(b"+OK alice has 3 messages")
    [info] = pop3.service.sessions()
    assert (info.box, info.state) == ("alice", "transaction")
    assert info.peer.startswith("127.0.0.1:")
    assert await client.cmd("QUIT") == b"+OK signing off (3 messages left)\r\n"
    assert await client.closed()
    await wait_for(lambda: not pop3.service.sessions())
    assert pop3.service.stats.logins_ok == 1


async def test_pipelined_commands_are_answered_in_order(pop3: Server) -> None:
    client = await pop3.connect()
    await client.login()
    await client.stream.send_all(b"NOOP\r\nSTAT\r\nLIST 2\r\n" * 100)
    for _ in range(100):
        assert await client.line() == b"+OK\r\n"
        assert (await client.line()).startswith(b"+OK 3 ")
        assert (await client.line()).startswith(b"+OK 2 ")


async def test_admission_refuses_one_more_than_max_sessions(pop3: Server) -> None:
    pop3.profile.set("pop3.max_sessions_per_client", "3")
    pop3.profile.set("pop3.max_sessions", "3")
    clients = [await pop3.connect() for _ in range(3)]
    for client in clients:
        assert (await client.line()).startswith(b"+OK")
    extra = await pop3.connect()
    assert await extra.line() == b"-ERR [SYS/TEMP] too many POP3 sessions; try again later\r\n"
    assert await extra.closed()
    assert pop3.service.stats.sessions_refused == 1
    await clients[0].cmd("QUIT")
    await wait_for(lambda: len(pop3.service.sessions()) == 2)
    again = await pop3.connect()
    assert (await again.line()).startswith(b"+OK")


async def test_admission_limits_sessions_per_client_address(pop3: Server) -> None:
    pop3.profile.set("pop3.max_sessions_per_client", "2")
    clients = [await pop3.connect() for _ in range(2)]
    for client in clients:
        assert (await client.line()).startswith(b"+OK")
    extra = await pop3.connect()
    assert await extra.line() == b"-ERR [SYS/TEMP] too many POP3 sessions from your address\r\n"
    assert await extra.closed()


async def test_quit_reply_survives_data_pipelined_after_it(pop3: Server) -> None:
    client = await pop3.connect()
    await client.line()
    await client.stream.send_all(b"QUIT\r\n" + b"NOOP\r\n" * 1000)
    assert await client.line() == b"+OK signing off\r\n"
    assert await client.closed()


async def test_quit_with_nothing_after_it_closes_the_socket_at_once(pop3: Server) -> None:
    # No half-close and drain (up to CLOSE_DRAIN_S) after a plain QUIT: the socket is closed
    # as soon as +OK is written, so a word sent after it meets a reset, not a reader.
    client = await pop3.connect()
    await client.login()
    assert (await client.cmd("QUIT")).startswith(b"+OK signing off")
    assert await client.closed()
    sock = client.stream.socket  # type: ignore[attr-defined]
    with trio.fail_after(0.5):  # the drain would read this for a whole second
        with pytest.raises(OSError):
            while True:
                await sock.send(b"NOOP\r\n")
                await trio.sleep(0.01)


async def test_admission_is_bounded_by_the_ram_budget(board: Board) -> None:
    budget = RamBudget(SESSION_RAM + 100)
    service = Pop3Service(board, LiveProfile(board), budget)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(service.serve, "127.0.0.1", 0)
        first = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
        assert (await first.line()).startswith(b"+OK")
        second = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
        assert (await second.line()).startswith(b"-ERR [SYS/TEMP] out of memory")
        await first.cmd("QUIT")
        await wait_for(lambda: budget.used == 0)
        nursery.cancel_scope.cancel()


async def test_second_login_to_a_box_is_in_use(pop3: Server) -> None:
    first, second = await pop3.connect(), await pop3.connect()
    assert (await first.login()).startswith(b"+OK")
    assert await second.login() == b"-ERR [IN-USE] mailbox is in use by another session\r\n"
    assert (await second.login_again("bob", BOB_PASSWORD)).startswith(b"+OK bob")
    await first.aclose()  # a dropped connection releases the lock too
    await wait_for(lambda: len(pop3.service.sessions()) == 1)
    third = await pop3.connect()
    assert (await third.login()).startswith(b"+OK")


async def test_dropped_connection_commits_nothing(pop3: Server) -> None:
    client = await pop3.connect()
    await client.login()
    assert (await client.cmd("DELE 1")).startswith(b"+OK")
    assert (await client.cmd("DELE 2")).startswith(b"+OK")
    await client.aclose()
    await wait_for(lambda: not pop3.service.sessions())
    assert len(pop3.board.messages("alice")) == 3


async def test_quit_commits_deletions(pop3: Server) -> None:
    uids = [m.uid for m in pop3.board.messages("alice")]
    client = await pop3.connect()
    await client.login()
    await client.cmd("DELE 2")
    assert await client.cmd("QUIT") == b"+OK signing off (2 messages left)\r\n"
    assert [m.uid for m in pop3.board.messages("alice")] == [uids[0], uids[2]]


async def test_idle_session_is_logged_out_silently_without_update(
    pop3: Server, autojump_clock: trio.testing.MockClock
) -> None:
    client = await pop3.connect()
    await client.login()
    await client.cmd("DELE 1")
    start = trio.current_time()
    await trio.sleep(599)
    assert await client.cmd("NOOP") == b"+OK\r\n"  # any command resets the timer
    assert await client.closed()  # silent close, no reply
    # never early; at most IDLE_SLACK_S late (the deadline moves in steps, not per command)
    assert 599 + 600 <= trio.current_time() - start <= 599 + 600 + IDLE_SLACK_S + 0.1
    await wait_for(lambda: not pop3.service.sessions(), timeout=1000)
    assert len(pop3.board.messages("alice")) == 3


async def test_a_shorter_idle_limit_applies_from_the_next_command(
    pop3: Server, autojump_clock: trio.testing.MockClock
) -> None:
    client = await pop3.connect()
    await client.login()
    pop3.profile.set("pop3.idle_timeout_s", "30")  # from 600
    assert await client.cmd("NOOP") == b"+OK\r\n"
    start = trio.current_time()
    assert await client.closed()
    assert 30 <= trio.current_time() - start <= 30 + IDLE_SLACK_S + 0.1


async def test_unauthenticated_link_gets_the_preauth_timeout(
    pop3: Server, autojump_clock: trio.testing.MockClock
) -> None:
    client = await pop3.connect()
    await client.line()
    start = trio.current_time()
    assert await client.closed()
    assert trio.current_time() - start == pytest.approx(60, abs=1)


async def test_failed_login_delay_does_not_block_other_clients(pop3: Server) -> None:
    pop3.profile.set("pop3.auth_failure_delay_s", "0.5")
    slow, other = await pop3.connect(), await pop3.connect()
    await slow.line()
    await slow.cmd("USER alice")
    await other.login("bob", BOB_PASSWORD)
    await slow.stream.send_all(b"PASS wrong\r\n")
    start = trio.current_time()
    for _ in range(5):
        assert await other.cmd("NOOP") == b"+OK\r\n"
    assert trio.current_time() - start < 0.4
    assert (await slow.line()).startswith(b"-ERR [AUTH]")
    assert trio.current_time() - start >= 0.5


async def test_too_many_auth_failures_close_the_connection(pop3: Server) -> None:
    pop3.profile.set("pop3.max_auth_failures", "2")
    client = await pop3.connect()
    await client.line()
    for _ in range(2):
        await client.cmd("USER alice")
        assert (await client.cmd("PASS nope")).startswith(b"-ERR [AUTH]")
    assert await client.closed()


async def test_overlong_lines_get_err_with_bounded_memory(pop3: Server) -> None:
    client = await pop3.connect()
    await client.line()
    await client.stream.send_all(b"USER " + b"x" * 60_000 + b"\r\n")
    assert (await client.line()).startswith(b"-ERR line too long")
    assert (await client.login_again()).startswith(b"+OK alice")


async def test_a_line_that_never_ends_is_cut_off_and_others_are_served(
    pop3: Server, caplog: pytest.LogCaptureFixture
) -> None:
    # Public bug report: a client streaming one endless line was still connected after 4 MiB.
    caplog.set_level(logging.WARNING, logger="dpfw.auth")
    other = await pop3.connect()
    await other.line()
    streamer = await pop3.connect()
    await streamer.line()

    async def stream_without_line_end() -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for _ in range(1024):  # 4 MiB
                await streamer.stream.send_all(b"x" * 4096)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_without_line_end)
            assert (await streamer.line()).startswith(b"-ERR line too long")
            assert await streamer.line() == (
                b"-ERR line too long and still no line end; closing\r\n"
            )
            assert await streamer.line() == b""  # the server closed its side
            nursery.cancel_scope.cancel()
    await streamer.aclose()
    assert (await other.login_again()).startswith(b"+OK alice")
    await wait_for(lambda: len(pop3.service.sessions()) == 1)
    assert "event=limit rip=127.0.0.1 limit=line-length" in caplog.text


async def test_kill_ends_a_session_and_commits_nothing(pop3: Server) -> None:
    client = await pop3.connect()
    await client.login()
    await client.cmd("DELE 1")
    [info] = pop3.service.sessions()
    assert pop3.service.kill(info.id)
    assert not pop3.service.kill(info.id + 1000)
    assert await client.closed()
    await wait_for(lambda: not pop3.service.sessions())
    assert len(pop3.board.messages("alice")) == 3


async def test_drain_stops_accepting_and_lets_sessions_finish(pop3: Server) -> None:
    client = await pop3.connect()
    await client.login()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pop3.service.drain, 30.0)
        await trio.sleep(0.1)
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", pop3.port)
        await client.cmd("DELE 3")
        assert (await client.cmd("QUIT")).startswith(b"+OK")
    assert len(pop3.board.messages("alice")) == 2


async def test_drain_cancels_sessions_after_the_grace(
    pop3: Server, autojump_clock: trio.testing.MockClock
) -> None:
    client = await pop3.connect()
    await client.login()
    await client.cmd("DELE 1")
    start = trio.current_time()
    await pop3.service.drain(5.0)
    assert trio.current_time() - start == pytest.approx(5.0, abs=0.5)
    assert await client.closed()
    assert len(pop3.board.messages("alice")) == 3


async def test_a_failing_session_is_logged_and_the_server_goes_on(
    pop3: Server, caplog: pytest.LogCaptureFixture
) -> None:
    client = await pop3.connect()
    await client.login()
    await client.stream.send_all(b"RETR 1\r\n")
    pop3.profile.broken = True  # a bug: reading the profile fails in the middle of RETR
    with caplog.at_level(logging.ERROR, logger="firmware.pop3.server"):
        await client.line()
        await client.body()
        await client.stream.send_all(b"STAT\r\n")
        assert await client.closed()
        await wait_for(lambda: not pop3.service.sessions())
        refused = await pop3.connect()  # admission fails too: that connection alone is closed
        assert await refused.closed()
    assert "failed" in caplog.text
    assert "could not admit" in caplog.text
    pop3.profile.broken = False
    other = await pop3.connect()
    assert (await other.login()).startswith(b"+OK")  # the lock was released too


async def test_uidl_is_stable_across_a_reboot(image_path: Path) -> None:
    async def uidl(board: Board) -> bytes:
        service = Pop3Service(board, LiveProfile(board), RamBudget(1 << 24))
        async with trio.open_nursery() as nursery:
            port = await nursery.start(service.serve, "127.0.0.1", 0)
            client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
            await client.login()
            _, listing = await client.multi("UIDL")
            await client.cmd("DELE 1")
            await client.aclose()  # no QUIT: nothing committed
            nursery.cancel_scope.cancel()
        return listing

    board = make_board(image_path)
    try:
        before = await uidl(board)
    finally:
        board.close()
    board = open_board(image_path)
    try:
        assert await uidl(board) == before
        assert before.count(b"\r\n") == 4
    finally:
        board.close()


async def test_a_reply_larger_than_the_socket_buffers_waits_for_the_reader(pop3: Server) -> None:
    # A TOP body of 1.3 MB to a client whose receive buffer is 64 KiB: the session's direct
    # writes find the socket full and must wait (send_all) without losing or reordering octets.
    lines = b"".join(b".%060d\r\n" % n for n in range(20_000))  # every line stuffed on the wire
    pop3.board.deliver("bob", b"Subject: big\r\n\r\n" + lines)
    client = await pop3.connect()
    client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # type: ignore[attr-defined]
    assert (await client.login("bob", BOB_PASSWORD)).startswith(b"+OK")
    count = int((await client.cmd("STAT")).split()[1])
    head, body = await client.multi(f"TOP {count} 20000")
    assert head.startswith(b"+OK")
    stuffed = b"".join(b"..%060d\r\n" % n for n in range(20_000))
    assert body == b"Subject: big\r\n\r\n" + stuffed + b".\r\n"
    assert await client.cmd("NOOP") == b"+OK\r\n"
