"""The console over a real running Device (POP3 and POP3S on loopback) on a real board image.

Every shell test drives the same operations (firmware.ops) a serial administrator drives:
no stand-in for the device. Tests that only need the sans-IO shell with no services use
`OpsContext.offline(board)` (tests/ops covers that context).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from firmware.config.profile import factory
from firmware.console.shell import STORE_OPERATIONS, ConsoleShell, StoreAction
from firmware.device.boards import create_board, open_board
from firmware.device.device import Device, RunOptions
from firmware.ops import system
from firmware.ops.context import OpsContext

ADMIN_PASSWORD = "admin-pw"
BOX_PASSWORD = "alice-pw"
MIB = 1 << 20


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
        if isinstance(action, StoreAction):  # as the port does (tests/console/test_port.py)
            operation, show = STORE_OPERATIONS[action.what]
            out += self.shell.finish_action(show(operation(self.shell.ctx))).decode("ascii")
        elif action is not None:
            self.shell.finish_action("")  # scans and power are tested with take_action
        echo = line + "\r\n"
        assert out.startswith(echo), out
        out = out[len(echo) :]
        prompt = f"{system.prompt_name(self.shell.ctx)}> "
        if out.endswith(prompt):
            out = out[: -len(prompt)]
        return out.replace("\r\n", "\n")

    def login(self, password: str = ADMIN_PASSWORD) -> str:
        return self.type(password + "\r")


async def wait_booted(device: Device, boots: int = 1) -> None:
    """Until the device's `boots`-th boot serves POP3 (its boot counter, then its event)."""
    with trio.fail_after(20):
        while device.boots < boots:
            await trio.sleep(0.01)
        await device.wait_booted()


@contextlib.asynccontextmanager
async def running_device(options: RunOptions) -> AsyncIterator[Device]:
    """A Device booted from `options` (serving POP3), shut down when the block ends."""
    device = Device(options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(device.run)
        await wait_booted(device)
        try:
            yield device
        finally:
            device.request_shutdown()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "board.img"
    create_board(path, factory("DP-3530"), ADMIN_PASSWORD, size=8 * MIB).close()
    return path


@pytest.fixture
async def device(image: Path) -> AsyncIterator[Device]:
    """The device booted from `image`, POP3 on a free loopback port, no console of its own."""
    async with running_device(RunOptions(image=image, pop3=("127.0.0.1", 0))) as device:
        yield device


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def offline_shell(image: Path, clock: Clock) -> Iterator[ConsoleShell]:
    """The shell over the board alone (OpsContext.offline): for hypothesis, which runs many
    examples in one sync test."""
    with open_board(image) as board:
        yield ConsoleShell(OpsContext.offline(board), clock=clock)


@pytest.fixture
def offline_term(offline_shell: ConsoleShell) -> Term:
    """Logged in to the shell over the board alone: no POP3 service, nothing pending."""
    term = Term(offline_shell)
    offline_shell.connect()
    assert "logged in" in term.login()
    return term


@pytest.fixture
def shell(device: Device, clock: Clock) -> ConsoleShell:
    return ConsoleShell(OpsContext.running(device), clock=clock)


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


# ----- POP3S too, plaintext logins and no failure delay, for the security commands -----


@pytest.fixture
async def live_device(tmp_path: Path) -> AsyncIterator[Device]:
    path = tmp_path / "live.img"
    profile = factory("DP-3530").with_value("pop3.plaintext_auth", "always")
    profile = profile.with_value("pop3.auth_failure_delay_s", "0")
    with create_board(path, profile, ADMIN_PASSWORD, size=8 * MIB) as board:
        board.add_box("alice", BOX_PASSWORD)
    options = RunOptions(image=path, pop3=("127.0.0.1", 0), pop3s=("127.0.0.1", 0))
    async with running_device(options) as device:
        yield device


@pytest.fixture
async def live_term(live_device: Device) -> Term:
    """Logged in to the console of the running device."""
    term = Term(ConsoleShell(OpsContext.running(live_device), clock=trio.current_time))
    term.shell.connect()
    assert "logged in" in term.login()
    return term
