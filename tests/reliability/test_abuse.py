"""Load and abuse against a real `dpfw run`: a connection flood of 10x the session bound,
slowloris clients, clients that never read their RETR data, clients that vanish mid-command.

In every case the device keeps serving within its bounds, its RSS stays bounded, its
descriptors come back, and well-behaved sessions within the bound still complete.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.device.boards import open_board
from tests.reliability.harness import (
    Device,
    add_boxes,
    login,
    message_digest,
    new_image,
    open_fds,
    raw_connect,
    read_line,
    rss_kib,
    wait_until,
)

BOUND = 8
BOXES = [f"u{i}" for i in range(1, 5)]
BIG = 4 << 20  # bytes of the message non-reading clients ask for
RSS_SLACK_KIB = 24 * 1024  # what abuse may add to the device's RSS at most


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    image = new_image(tmp_path / "abuse.img", size="64MiB")
    add_boxes(image, BOXES, messages=3)
    add_boxes(image, ["big"])

    with open_board(image) as board:
        line = b"x" * 98 + b"\r\n"
        board.deliver("big", b"Subject: big\r\n\r\n" + line * (BIG // 100))
    dev = Device(
        image,
        "--set",
        f"pop3.max_sessions={BOUND}",
        "--set",
        f"pop3.max_sessions_per_client={BOUND}",
        "--set",
        "pop3.preauth_timeout_s=4",
        "--set",
        "pop3.idle_timeout_s=4",
    )
    dev.wait_booted()
    warm_up(dev.pop3_port)
    try:
        yield dev
    finally:
        dev.kill()


def warm_up(port: int) -> None:
    """One long RETR first: the service opens the image once for direct copies and keeps it;
    descriptor baselines are taken after that."""
    assert full_session(port, "big") == 1
    time.sleep(0.3)


def full_session(port: int, box: str, source: str = "127.0.0.1") -> int:
    """Log in, RETR every message, QUIT; the number of messages read."""
    client = login(port, box, f"{box}-pw", source)
    count, _ = client.stat()
    for n in range(1, count + 1):
        _, lines, _ = client.retr(n)
        assert message_digest(lines)
    assert client.quit().startswith(b"+OK")
    return count


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def settled_fds(dev: Device, baseline: int) -> bool:
    return wait_until(lambda: len(open_fds(dev.pid)) <= baseline, timeout=10)


def test_a_flood_of_ten_times_the_bound_leaves_room_for_real_sessions(device: Device) -> None:
    port = device.pop3_port
    base_fds, base_rss = len(open_fds(device.pid)), rss_kib(device.pid)
    flood: list[socket.socket] = []
    refused = 0
    for i in range(10 * BOUND):
        s = raw_connect(port, f"127.0.0.{2 + i % 10}")
        flood.append(s)
    # Every flood connection got either a greeting (admitted) or [SYS/TEMP] / a close.
    greeted = 0
    for s in flood:
        line = read_line(s)
        if line.startswith(b"+OK"):
            greeted += 1
        else:
            assert line == b"" or b"[SYS/TEMP]" in line, line
            refused += 1
    assert greeted >= BOUND and refused >= 9 * BOUND - BOUND
    time.sleep(1.1)  # flood connections are now old enough to be evicted for real users
    for i, box in enumerate(BOXES):
        assert full_session(port, box, f"127.0.1.{i + 1}") == 3
    assert len(open_fds(device.pid)) <= base_fds + BOUND + 2
    assert rss_kib(device.pid) - base_rss < RSS_SLACK_KIB
    close_all(flood)
    assert settled_fds(device, base_fds), open_fds(device.pid)
    assert device.alive() and not device.unexpected_log_lines()


def test_slowloris_clients_cannot_hold_the_device(device: Device) -> None:
    port = device.pop3_port
    base_fds = len(open_fds(device.pid))
    slow = [raw_connect(port, f"127.0.0.{2 + i}") for i in range(BOUND)]
    for s in slow:
        assert read_line(s).startswith(b"+OK")
    stop = threading.Event()
    command = b"USER someone-who-types-very-slowly\r\n"

    def drip(s: socket.socket) -> None:
        for byte in command:  # one byte a second, bounded by the command's length
            if stop.wait(1.0):
                return
            try:
                s.sendall(bytes([byte]))
            except OSError:
                return

    threads = [threading.Thread(target=drip, args=(s,), daemon=True) for s in slow]
    for t in threads:
        t.start()
    time.sleep(1.2)
    started = time.monotonic()
    for i, box in enumerate(BOXES):  # all slots are dripping: real users still get in
        assert full_session(port, box, f"127.0.1.{i + 1}") == 3
    assert time.monotonic() - started < 10
    # The pre-login limit (4 s) ends every slow link that did not finish its command.
    assert wait_until(lambda: len(open_fds(device.pid)) <= base_fds, timeout=12)
    stop.set()
    close_all(slow)
    assert device.alive() and not device.unexpected_log_lines()


def test_clients_that_never_read_their_retr_cost_a_bounded_amount(device: Device) -> None:
    port = device.pop3_port
    base_fds, base_rss = len(open_fds(device.pid)), rss_kib(device.pid)
    stuck = []
    for i in range(BOUND // 2):
        s = raw_connect(port, f"127.0.2.{i + 1}")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert read_line(s).startswith(b"+OK")
        # The "big" box can be held by one session only; the others stall on [IN-USE] or on
        # a 4 MiB RETR of their own box's small messages: use big once, then the others.
        box = "big" if i == 0 else BOXES[i - 1]
        s.sendall(f"USER {box}\r\nPASS {box}-pw\r\nRETR 1\r\nRETR 2\r\nRETR 3\r\n".encode())
        stuck.append(s)
    time.sleep(1.0)
    assert rss_kib(device.pid) - base_rss < RSS_SLACK_KIB
    # The remaining slots still serve complete sessions while the readers are stuck.
    assert full_session(port, BOXES[3], "127.0.3.1") == 3
    # The idle limit (4 s, restarted only by progress) ends the stuck sessions; nothing leaks.
    assert wait_until(lambda: len(open_fds(device.pid)) <= base_fds, timeout=12), open_fds(
        device.pid
    )
    close_all(stuck)
    assert full_session(port, "big", "127.0.3.2") == 1
    assert device.alive() and not device.unexpected_log_lines()


def _reset(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the rudest way a client can vanish."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@pytest.mark.parametrize(
    "script",
    [
        b"US",  # half a keyword
        b"USER u1\r\nPA",  # half a PASS
        b"USER u1\r\nPASS u1-pw\r\nDELE 1\r\nDELE 2\r\n",  # deletions without QUIT
        b"USER u1\r\nPASS u1-pw\r\nRETR 1\r\n",  # gone while the message streams
        b"USER u1\r\nPASS u1-pw\r\nDELE 3\r\nQU",  # half a QUIT: nothing is committed
        b"\xff" * 300,  # a binary line too long
    ],
)
def test_clients_that_disconnect_mid_command_commit_nothing(device: Device, script: bytes) -> None:
    port = device.pop3_port
    base_fds = len(open_fds(device.pid))
    for round_ in range(30):
        s = raw_connect(port, f"127.0.4.{1 + round_ % 8}")
        read_line(s)
        s.sendall(script)
        if round_ % 2:
            time.sleep(0.02)
        if round_ % 3:
            _reset(s)
        else:
            s.close()
    client = login(port, "u1", "u1-pw")
    count, _ = client.stat()
    client.quit()
    assert count == 3  # no DELE of a session without an answered QUIT took effect
    assert settled_fds(device, base_fds), open_fds(device.pid)
    assert device.alive() and not device.unexpected_log_lines()
