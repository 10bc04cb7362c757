"""`python -m firmware.pop3` in a subprocess: a 50 MB message streams in bounded memory.

The server runs in its own process so its RSS is its own, measured from /proc while a client
reads the message over a real socket.
"""

from __future__ import annotations

import io
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from firmware.config.profile import factory
from firmware.device.boards import create_board
from tests.pop3.conftest import ADMIN_PASSWORD, BOB_PASSWORD, install_certificate, make_board

BIG = 50 * 1024 * 1024


def rss_kib(pid: int) -> int:
    """The process's anonymous resident memory: what it allocated, not the image pages that
    the plain-TCP RETR path maps and the kernel may keep resident (those are page cache)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"RssAnon:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1))


def big_message(size: int) -> bytes:
    """About `size` bytes of 76-character lines, one in 50 starting with a dot."""
    line = b"x" * 74 + b"\r\n"
    dotted = b"." + b"y" * 73 + b"\r\n"
    block = (line * 49 + dotted) * 100
    head = b"Subject: big scan\r\n\r\n"
    return head + block * (size // len(block))


@pytest.fixture
def big_image(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "big.img"
    profile = factory("DP-3530").with_value("pop3.plaintext_auth", "always")
    with create_board(path, profile, ADMIN_PASSWORD, size=128 * 1024 * 1024) as board:
        board.add_box("bob", BOB_PASSWORD)
        board.deliver("bob", b"Subject: small\r\n\r\nwarm-up\r\n")
        info = board.deliver("bob", io.BytesIO(big_message(BIG)))
    yield path, info.size


@pytest.fixture
def server(big_image: tuple[Path, int]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware.pop3", str(big_image[0])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        match = re.match(r"POP3 on 127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert match is not None
        yield proc, int(match.group(1))
    finally:
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM drains and exits cleanly


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            assert data, "server closed"
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def count_body(self) -> int:
        """Octets of a multi-line body after unstuffing, read in small pieces."""
        octets = 0
        pending = self.buf
        self.buf = b""
        while True:
            end = pending.find(b"\r\n.\r\n")
            if end >= 0:
                octets += self._unstuffed(pending[: end + 2])
                return octets
            cut = pending.rfind(b"\r\n")
            if cut >= 0:
                octets += self._unstuffed(pending[: cut + 2])
                pending = pending[cut + 2 :]
            data = self.sock.recv(65536)
            assert data, "server closed inside the body"
            pending = b"\r\n" + pending + data if cut >= 0 else pending + data
            if cut >= 0:
                octets -= 2  # the CRLF re-added only to find a dot at a line start

    @staticmethod
    def _unstuffed(lines: bytes) -> int:
        return len(lines) - lines.count(b"\r\n..") - (1 if lines.startswith(b"..") else 0)


def test_a_50_mb_retr_streams_with_rss_growth_under_3_mb(
    big_image: tuple[Path, int], server: tuple[subprocess.Popen[str], int]
) -> None:
    proc, port = server
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        r = Reader(sock)
        assert r.line().startswith(b"+OK")
        sock.sendall(f"USER bob\r\nPASS {BOB_PASSWORD}\r\nRETR 1\r\n".encode())
        assert r.line() == b"+OK send PASS"
        assert r.line().startswith(b"+OK bob has 2 messages")
        assert r.line().startswith(b"+OK")
        r.count_body()  # warm-up: the code paths and one chunk's buffers exist now
        baseline = rss_kib(proc.pid)
        peak = baseline
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_kib(proc.pid))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            sock.sendall(b"LIST 2\r\nRETR 2\r\n")
            size = int(r.line().split()[2])
            assert size == big_image[1]
            assert r.line() == b"+OK %d octets" % size
            assert r.count_body() == size
        finally:
            stop.set()
            sampler.join()
        sock.sendall(b"QUIT\r\n")
        assert r.line().startswith(b"+OK")
    growth = peak - baseline
    print(f"server RSS baseline {baseline} KiB, peak {peak} KiB, growth {growth} KiB")
    # Measured 1.0-2.0 MiB on a quiet machine (before and after the service moved under the
    # Device); it touched 2,048 under load. 3 MiB still fails a copy of even 6 % of the message.
    assert growth < 3072


def test_pop3s_port_serves_implicit_tls_with_the_image_certificate(
    image_path: Path, device_cert: trustme.LeafCert, client_context: ssl.SSLContext
) -> None:
    with make_board(image_path) as board:
        install_certificate(board, device_cert)
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware.pop3", str(image_path), "--pop3s-port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("POP3 on 127.0.0.1:")
        match = re.match(r"POP3S on 127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert match is not None
        raw = socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=10)
        with client_context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.recv(512).startswith(b"+OK DP-3530")
            tls.sendall(b"QUIT\r\n")
            assert tls.recv(512) == b"+OK signing off\r\n"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
