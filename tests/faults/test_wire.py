"""Each POP3 fault met by a real client (poplib), the client-visible effect checked, and the
device still serving everyone else; the stored copy never changes."""

from __future__ import annotations

import poplib
import time

import pytest
import trio

from tests.faults.conftest import Lab


async def test_retr_break_after_half_the_body(lab: Lab) -> None:
    whole = await trio.to_thread.run_sync(lab.retr, 3)
    fault = lab.fault(action="retr-break", box="alice", after_percent=50, times=1)

    def broken() -> None:
        pop = lab.login()
        with pytest.raises(poplib.error_proto, match="EOF"):
            pop.retr(3)  # the connection closes mid-body: no terminating "."

    await trio.to_thread.run_sync(broken)
    assert lab.fired(fault.id) == 1
    await trio.to_thread.run_sync(lab.serves_others)
    # Spent (times=1): the same message comes whole again, and nothing was deleted.
    assert await trio.to_thread.run_sync(lab.retr, 3) == whole


async def test_retr_break_cuts_at_the_octet(lab: Lab) -> None:
    # A raw socket counts what arrives: the +OK line, then exactly after_octets body octets.
    lab.fault(action="retr-break", after_octets=100, command="RETR")

    def raw() -> bytes:
        import socket

        with socket.create_connection(("127.0.0.1", lab.port), timeout=15) as sock:
            sock.sendall(b"USER alice\r\nPASS alice-lab\r\n")
            got = b""
            while got.count(b"\r\n") < 3:
                got += sock.recv(4096)
            sock.sendall(b"RETR 1\r\n")
            got = b""
            while chunk := sock.recv(4096):
                got += chunk
            return got

    got = await trio.to_thread.run_sync(raw)
    head, _, body = got.partition(b"\r\n")
    assert head.startswith(b"+OK ") and len(body) == 100


async def test_stall_before_end(lab: Lab) -> None:
    whole = await trio.to_thread.run_sync(lab.retr, 1)
    lab.fault(action="stall-before-end", seconds=1.0, box="alice", times=1)
    started = time.monotonic()
    assert await trio.to_thread.run_sync(lab.retr, 1) == whole  # late, but whole
    assert time.monotonic() - started >= 1.0
    await trio.to_thread.run_sync(lab.serves_others)


async def test_flip_byte_changes_only_the_wire_copy(lab: Lab) -> None:
    whole = await trio.to_thread.run_sync(lab.retr, 3)
    fault = lab.fault(action="flip-byte", box="alice", at_percent=50, times=1)
    damaged = await trio.to_thread.run_sync(lab.retr, 3)
    assert len(damaged) == len(whole)
    diff = [i for i, (a, b) in enumerate(zip(whole, damaged, strict=True)) if a != b]
    assert len(diff) == 1 and damaged[diff[0]] == whole[diff[0]] ^ 0xFF
    assert lab.fired(fault.id) == 1
    assert await trio.to_thread.run_sync(lab.retr, 3) == whole  # the stored copy is intact


@pytest.mark.parametrize("code", ["SYS/TEMP", "IN-USE", "LOGIN-DELAY", "AUTH"])
async def test_reply_error_instead_of_the_real_reply(lab: Lab, code: str) -> None:
    lab.fault(action="reply-error", command="PASS", box="alice", code=code, times=1)

    def refused() -> None:
        pop = poplib.POP3("127.0.0.1", lab.port, timeout=15)
        pop.user("alice")
        with pytest.raises(poplib.error_proto) as caught:
            pop.pass_("alice-lab")
        assert caught.value.args[0].startswith(f"-ERR [{code}] fault injected".encode())
        pop.pass_("alice-lab")  # the session goes on: the next PASS is answered for real
        assert pop.stat()[0] == 3
        pop.quit()

    await trio.to_thread.run_sync(refused)
    await trio.to_thread.run_sync(lab.serves_others)


async def test_reply_error_to_quit_commits_nothing(lab: Lab) -> None:
    lab.fault(action="reply-error", command="QUIT", code="SYS/TEMP", text="try later", times=1)

    def quit_refused() -> None:
        pop = lab.login()
        pop.dele(1)
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP\] try later"):
            pop.quit()

    await trio.to_thread.run_sync(quit_refused)
    assert len(await trio.to_thread.run_sync(lab.uidl)) == 3


async def test_drop_after_greeting(lab: Lab) -> None:
    lab.fault(action="drop-after-greeting", nth_session=1)

    def dropped() -> None:
        pop = poplib.POP3("127.0.0.1", lab.port, timeout=15)
        assert pop.getwelcome().startswith(b"+OK")
        with pytest.raises((poplib.error_proto, OSError)):
            pop.user("alice")

    await trio.to_thread.run_sync(dropped)
    await trio.to_thread.run_sync(lab.serves_others)  # the second session is served


async def test_drop_after_pass_commits_nothing(lab: Lab) -> None:
    lab.fault(action="drop-after-reply", command="PASS", box="alice", times=1)

    def dropped() -> None:
        pop = poplib.POP3("127.0.0.1", lab.port, timeout=15)
        pop.user("alice")
        assert pop.pass_("alice-lab").startswith(b"+OK")
        with pytest.raises((poplib.error_proto, OSError)):
            pop.dele(1)
            pop.quit()

    await trio.to_thread.run_sync(dropped)
    assert len(await trio.to_thread.run_sync(lab.uidl)) == 3  # the box lock was given back


async def test_delay_greeting_and_reply(lab: Lab) -> None:
    lab.fault(action="delay", at="greeting", seconds=0.6, times=1)
    lab.fault(action="delay", command="STAT", seconds=0.6, times=1)

    def timed() -> tuple[float, float]:
        started = time.monotonic()
        pop = poplib.POP3("127.0.0.1", lab.port, timeout=15)
        greeted = time.monotonic() - started
        pop.user("alice")
        pop.pass_("alice-lab")
        started = time.monotonic()
        assert pop.stat()[0] == 3
        stat = time.monotonic() - started
        pop.quit()
        return greeted, stat

    greeted, stat = await trio.to_thread.run_sync(timed)
    assert greeted >= 0.6 and stat >= 0.6


async def test_bandwidth_limits_a_session(lab: Lab) -> None:
    big = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 200  # ~14.4 kB
    await lab.device.store_worker.run(lab.device.board.deliver, "bob", big)
    lab.fault(action="bandwidth", client="127.0.0.1", bytes_per_s=10000, times=1)

    def timed() -> float:
        pop = lab.login("bob")
        started = time.monotonic()
        lines = pop.retr(4)[1]
        took = time.monotonic() - started
        pop.quit()
        assert len(lines) == 2 + 200
        return took

    assert await trio.to_thread.run_sync(timed) >= 1.3  # 14.4 kB at 10 kB/s
    assert await trio.to_thread.run_sync(timed) < 1.0  # times=1: the next session is not


async def test_vanish_between_sessions(lab: Lab) -> None:
    before = await trio.to_thread.run_sync(lab.uidl)
    fault = lab.fault(action="vanish", box="alice", message=1, times=1)
    after = await trio.to_thread.run_sync(lab.uidl)
    assert after == before[1:]  # as if another client had deleted message 1
    assert await trio.to_thread.run_sync(lab.uidl) == before[1:]  # gone for later sessions
    assert lab.fired(fault.id) == 1
    assert len(await trio.to_thread.run_sync(lab.uidl, "bob")) == 3
    lab.device.faults.clear(fault.id)
    assert await trio.to_thread.run_sync(lab.uidl) == before  # never deleted from the store


async def test_unreadable_answers_sys_perm(lab: Lab) -> None:
    whole = await trio.to_thread.run_sync(lab.retr, 2)
    fault = lab.fault(action="unreadable", box="alice", message=2)

    def refused() -> None:
        pop = lab.login()
        with pytest.raises(poplib.error_proto) as caught:
            pop.retr(2)
        assert caught.value.args[0].startswith(b"-ERR [SYS/PERM] message 2 is damaged: ")
        assert b"fails its CRC" in caught.value.args[0]
        assert len(pop.retr(1)[1]) > 3  # the other messages are readable
        pop.quit()

    await trio.to_thread.run_sync(refused)
    await trio.to_thread.run_sync(lab.serves_others)
    lab.device.faults.clear(fault.id)
    assert await trio.to_thread.run_sync(lab.retr, 2) == whole


async def test_retr_break_on_top_never_sends_the_end(lab: Lab) -> None:
    # TOP's body is shorter than the message the percentage is of: it is cut before the ".".
    lab.fault(action="retr-break", command="TOP", after_percent=90, times=1)

    def top() -> None:
        pop = lab.login()
        with pytest.raises(poplib.error_proto, match="EOF"):
            pop.top(3, 0)

    await trio.to_thread.run_sync(top)
    await trio.to_thread.run_sync(lab.serves_others)
