"""A real board image and the few device attributes the console's admin layer reads.

`BenchDevice` is not a stand-in for any of our logic: it holds a real Board, a real RamBudget
and the factory profile, saves profiles through the real NVRAM path, and runs real scan jobs;
what it leaves out (the POP3 listener, the boot loop) the console only reads through
`device.pop3` (None here: "service not running") and the reboot/shutdown requests, which it
counts so tests can see them.
"""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from firmware.config.budget import RamBudget
from firmware.config.profile import Profile, Value, factory, running_after
from firmware.console.shell import ConsoleShell, StoreAction
from firmware.device.admin import DeviceAdmin
from firmware.device.device import Device, RunOptions
from firmware.pop3.server import Pop3Service
from firmware.scanner.feeder import ScanFeeder
from firmware.scanner.job import ScanRequest, ScanResult, run_scan_async
from firmware.store.board import Board
from firmware.store.worker import StoreWorker

ADMIN_PASSWORD = "admin-pw"
MIB = 1 << 20


class BenchDevice:
    def __init__(self, board: Board) -> None:
        self.board = board
        self.profile: Profile = board.profile
        self.budget = RamBudget(self.profile.int("memory.image_ram_mib") * MIB)
        self.pop3: Pop3Service | None = None
        self.started_at = time.monotonic() - 3725.0
        self.scans_done = 0
        self.scans_failed = 0
        self.boots = 1
        self.feeder: ScanFeeder | None = None
        self.pop3s_addresses: list[tuple[str, int]] = []
        self.log_lines: collections.deque[str] = collections.deque(maxlen=100)
        self.reboots = 0
        self.shutdowns = 0
        self.store_worker = StoreWorker()

    @property
    def next_profile(self) -> Profile:
        return self.board.profile

    def pending(self) -> list[tuple[str, Value, Value]]:
        return self.profile.diff(self.board.profile)

    def apply_profile(self, new: Profile) -> None:
        """As Device.apply_profile (no `--set` overrides here): live keys now, others at boot."""
        self.board.set_profile(new)
        self.profile = running_after(self.profile, new)

    def request_reboot(self) -> None:
        self.reboots += 1

    def request_shutdown(self) -> None:
        self.shutdowns += 1

    async def scan(self, request: ScanRequest) -> ScanResult:
        result = await run_scan_async(
            request, self.board, self.budget, self.profile, job_number=self.scans_done + 1
        )
        self.scans_done += 1
        return result


class Clock:
    """A clock the test moves by hand (the shell takes any `() -> float`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Term:
    """A terminal on the console: type bytes, read what the shell sends back as text."""

    def __init__(self, shell: ConsoleShell) -> None:
        self.shell = shell

    def type(self, data: bytes | str) -> str:
        raw = data.encode() if isinstance(data, str) else data
        return self.shell.feed(raw).decode("ascii")

    def run(self, line: str) -> str:
        """One command: the output between the echoed line and the next prompt."""
        out = self.type(line + "\r")
        action = self.shell.take_action()
        if isinstance(action, StoreAction):  # as the console port does, on the store worker
            admin = self.shell.admin
            report = trio.run(admin.compact if action.what == "compact" else admin.fsck)
            out += self.shell.finish_action(report).decode("ascii")
        elif action is not None:
            self.shell.finish_action("")  # scans and power are tested with take_action
        echo = line + "\r\n"
        assert out.startswith(echo), out
        out = out[len(echo) :]
        prompt = f"{self.shell.admin.prompt_name()}> "
        if out.endswith(prompt):
            out = out[: -len(prompt)]
        return out.replace("\r\n", "\n")

    def login(self, password: str = ADMIN_PASSWORD) -> str:
        return self.type(password + "\r")


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    board = Board.create(tmp_path / "board.img", factory("DP-3530"), ADMIN_PASSWORD, size=8 * MIB)
    try:
        yield board
    finally:
        board.close()


@pytest.fixture
def device(board: Board) -> BenchDevice:
    return BenchDevice(board)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def shell(device: BenchDevice, clock: Clock) -> ConsoleShell:
    return ConsoleShell(DeviceAdmin(device), clock=clock)


@pytest.fixture
def term(shell: ConsoleShell) -> Term:
    term = Term(shell)
    assert term.type(b"") == ""
    shell.connect()
    return term


@pytest.fixture
def admin_term(term: Term) -> Term:
    assert "logged in" in term.login()
    return term


# ----- a real running Device (POP3 and POP3S on loopback) for the security commands -----

BOX_PASSWORD = "alice-pw"


@pytest.fixture
async def live_device(tmp_path: Path) -> AsyncIterator[Device]:
    path = tmp_path / "live.img"
    profile = factory("DP-3530").with_value("pop3.plaintext_auth", "always")
    profile = profile.with_value("pop3.auth_failure_delay_s", "0")
    with Board.create(path, profile, ADMIN_PASSWORD, size=8 * MIB) as board:
        board.add_box("alice", BOX_PASSWORD)
    device = Device(RunOptions(image=path, pop3=("127.0.0.1", 0), pop3s=("127.0.0.1", 0)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(device.run)
        with trio.fail_after(20):
            while not device.pop3_addresses or device.pop3 is None:
                await trio.sleep(0.01)
        try:
            yield device
        finally:
            device.request_shutdown()


@pytest.fixture
async def live_term(live_device: Device) -> Term:
    """Logged in to the console of the running device."""
    term = Term(ConsoleShell(DeviceAdmin(live_device), clock=trio.current_time))
    term.shell.connect()
    assert "logged in" in term.login()
    return term
