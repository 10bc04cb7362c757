"""A real Pop3Service on 127.0.0.1:0 over a real Board on a tmp image, and a raw client.

Sync fixtures build the image (trio fixtures must be function-scoped and cannot be shared with
sync tests); the async `pop3` fixture serves it for one test and cancels the server after.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

from firmware.config.budget import RamBudget
from firmware.config.profile import Profile, factory
from firmware.device.boards import create_board, save_profile, saved_profile
from firmware.pop3.server import Pop3Service
from firmware.security.tls import context_from_settings, settings_for
from firmware.store.board import Board

ADMIN_PASSWORD = "admin-test-pw"
ALICE_PASSWORD = "alice secret  pw"  # spaces on purpose: PASS takes the rest of the line
BOB_PASSWORD = "bob-pw"
IMAGE_SIZE = 16 * 1024 * 1024

MESSAGES = [
    b"From: scanner@dp3530.local\r\nSubject: one\r\n\r\nfirst body\r\n",
    b"From: scanner@dp3530.local\r\nSubject: dots\r\n\r\n.\r\n..\r\n.x\r\nend\r\n",
    b"Subject: bare LF\n\nline 1\nline 2\n.\nlast line without newline",
]


class LiveProfile:
    """The board's stored profile, read on every use as the device does; `set` changes it the
    way the console's `set` does (a validated NVRAM update), so the service sees it at once."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.broken = False  # a test can make reading the profile fail, like a bug would

    def __call__(self) -> Profile:
        if self.broken:
            raise RuntimeError("the profile cannot be read")
        return saved_profile(self.board)

    def set(self, key: str, value: str) -> None:
        save_profile(self.board, saved_profile(self.board).with_value(key, value, "test"))


def board_settings() -> Profile:
    """DP-3530 factory settings with USER/PASS allowed without TLS, no failure delay, and the
    legacy methods (APOP, CRAM-MD5) on, which the factory leaves off: alice keeps a legacy
    secret, bob does not (tests/pop3/test_defaults.py covers factory images as shipped)."""
    profile = factory("DP-3530").with_value("pop3.plaintext_auth", "always")
    profile = profile.with_value("pop3.apop", "true")
    return profile.with_value("pop3.auth_failure_delay_s", "0")


def make_board(path: Path) -> Board:
    """A fresh image: alice (APOP-capable) with MESSAGES, bob with none."""
    board = create_board(path, board_settings(), ADMIN_PASSWORD, size=IMAGE_SIZE)
    board.add_box("alice", ALICE_PASSWORD, legacy=True)
    board.add_box("bob", BOB_PASSWORD)
    for message in MESSAGES:
        board.deliver("alice", message)
    return board


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    return tmp_path / "board.img"


@pytest.fixture
def board(image_path: Path) -> Iterator[Board]:
    board = make_board(image_path)
    try:
        yield board
    finally:
        board.close()


@pytest.fixture
def live_profile(board: Board) -> LiveProfile:
    return LiveProfile(board)


@dataclass
class Server:
    service: Pop3Service
    port: int
    board: Board
    profile: LiveProfile
    budget: RamBudget
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    pop3s_port: int = 0  # the implicit-TLS listener, when the fixture has one

    async def connect(self, *, source: str | None = None) -> RawClient:
        """A raw client; `source` binds the client's address (e.g. 127.0.0.2, also loopback)."""
        return RawClient(await trio.open_tcp_stream("127.0.0.1", self.port, local_address=source))


@pytest.fixture
async def pop3(
    board: Board, live_profile: LiveProfile, nursery: trio.Nursery
) -> AsyncIterator[Server]:
    budget = RamBudget(64 * 1024 * 1024)
    service = Pop3Service(board, live_profile, budget)
    port = await nursery.start(service.serve, "127.0.0.1", 0)
    yield Server(service, port, board, live_profile, budget)
    nursery.cancel_scope.cancel()


# -- TLS: a test CA (trustme) that signs the device certificate for localhost/127.0.0.1 -----


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def device_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    return tls_ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")


@pytest.fixture(scope="session")
def ca_file(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def client_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """What a careful client uses: verification and host name checks on, our CA trusted."""
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    return context


def install_certificate(board: Board, cert: trustme.LeafCert) -> ssl.SSLContext:
    """Store `cert` in the board's NVRAM as `dpfw tls import` does; the device's context."""
    key_pem = cert.private_key_pem.bytes().decode()
    cert_pem = cert.cert_chain_pems[0].bytes().decode()
    for key, value in settings_for(cert_pem, key_pem).items():
        board.set_setting(key, value)
    context = context_from_settings(board.settings())
    assert context is not None
    return context


@pytest.fixture
async def tls_pop3(
    board: Board, live_profile: LiveProfile, nursery: trio.Nursery, device_cert: trustme.LeafCert
) -> AsyncIterator[Server]:
    """The service with the device certificate: STLS on `port`, implicit TLS on `pop3s_port`."""
    budget = RamBudget(64 * 1024 * 1024)
    service = Pop3Service(board, live_profile, budget, tls=install_certificate(board, device_cert))
    port = await nursery.start(service.serve, "127.0.0.1", 0)
    pop3s_port = await nursery.start(
        lambda task_status: service.serve(
            "127.0.0.1", 0, implicit_tls=True, task_status=task_status
        )
    )
    yield Server(service, port, board, live_profile, budget, pop3s_port=pop3s_port)
    nursery.cancel_scope.cancel()


class RawClient:
    """A byte-exact POP3 client for tests: one line out, one reply (or body) back."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buf = b""

    @property
    def buffered(self) -> bytes:
        """Received bytes not yet handed out."""
        return self._buf

    async def starttls(self, context: ssl.SSLContext, hostname: str = "localhost") -> None:
        """Wrap the connection in TLS (after +OK to STLS, or at once for POP3S)."""
        assert not self._buf, f"plaintext left before TLS: {self._buf!r}"
        tls = trio.SSLStream(self.stream, context, server_hostname=hostname)
        await tls.do_handshake()
        self.stream = tls

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self._buf += data
        return bool(data)

    async def line(self) -> bytes:
        """The next reply line with its CRLF; b"" at EOF."""
        while b"\r\n" not in self._buf:
            if not await self._fill():
                rest, self._buf = self._buf, b""
                return rest
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line + b"\r\n"

    async def body(self) -> bytes:
        """The rest of a multi-line reply, up to and including CRLF.CRLF (still stuffed)."""
        while True:
            end = (b"\r\n" + self._buf).find(b"\r\n.\r\n")
            if end >= 0:
                end += 3  # in self._buf coordinates, past ".\r\n"
                body, self._buf = self._buf[:end], self._buf[end:]
                return body
            if not await self._fill():
                raise AssertionError(f"connection closed inside a multi-line reply: {self._buf!r}")

    async def cmd(self, command: str | bytes) -> bytes:
        raw = command.encode() if isinstance(command, str) else command
        await self.stream.send_all(raw + b"\r\n")
        return await self.line()

    async def multi(self, command: str) -> tuple[bytes, bytes]:
        head = await self.cmd(command)
        assert head.startswith(b"+OK"), head
        return head, await self.body()

    async def closed(self) -> bool:
        """True if the server closed the connection (reads EOF)."""
        try:
            return not self._buf and not await self._fill()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return True

    async def login(self, box: str = "alice", password: str = ALICE_PASSWORD) -> bytes:
        greeting = await self.line()
        assert greeting.startswith(b"+OK"), greeting
        assert (await self.cmd(f"USER {box}")).startswith(b"+OK")
        return await self.cmd(f"PASS {password}")

    async def login_again(self, box: str = "alice", password: str = ALICE_PASSWORD) -> bytes:
        """USER/PASS on a connection whose greeting was already read."""
        assert (await self.cmd(f"USER {box}")).startswith(b"+OK")
        return await self.cmd(f"PASS {password}")

    async def aclose(self) -> None:
        await self.stream.aclose()


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """pytest-trio's virtual clock, but one that jumps only after 50 ms of real idleness.

    Store operations and password checks run on worker threads (firmware/store/worker.py);
    trio counts a task waiting for a thread as blocked, so a clock that jumps at once would
    skip a whole idle timeout while PBKDF2 runs. A jump now waits until no thread has
    answered for 50 ms.
    """
    return trio.testing.MockClock(autojump_threshold=0.05)
