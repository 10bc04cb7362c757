"""The console transports with real clients: pyserial on a real pty, and a socket:// port."""

from __future__ import annotations

import os
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
import serial
import trio

from firmware.console.linedisc import MAX_LINE
from firmware.console.port import PtyLink, run_console, serve_link
from firmware.console.shell import ConsoleShell
from firmware.device.boards import saved_profile
from firmware.device.device import Device
from firmware.ops.context import OpsContext
from tests.console.conftest import ADMIN_PASSWORD

WAIT_S = 10.0


class Client:
    """A pyserial client, driven from a worker thread so the device's trio loop keeps running."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port: serial.SerialBase | None = None

    async def open(self) -> None:
        self.port = await trio.to_thread.run_sync(
            lambda: serial.serial_for_url(self.url, baudrate=115200, timeout=WAIT_S)
        )

    async def close(self) -> None:
        if self.port is not None:
            await trio.to_thread.run_sync(self.port.close)
            self.port = None

    async def expect(self, marker: str) -> str:
        """Read until `marker`; the text read, or a failure showing what did come."""
        port = self.port
        assert port is not None
        raw: bytes = await trio.to_thread.run_sync(port.read_until, marker.encode())
        text = raw.decode("ascii")
        assert text.endswith(marker), f"expected {marker!r}, got {text!r}"
        return text

    async def send(self, text: str) -> None:
        port = self.port
        assert port is not None
        await trio.to_thread.run_sync(port.write, text.encode())

    async def login(self) -> None:
        await self.send("\r")
        await self.expect("Password: ")
        await self.send(ADMIN_PASSWORD + "\r")
        await self.expect("DP-3530> ")

    async def run(self, line: str) -> str:
        await self.send(line + "\r")
        return (await self.expect("DP-3530> ")).replace("\r\n", "\n")


async def wait_for(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT_S):
        while not predicate():
            await trio.sleep(0.02)


@pytest.fixture
async def pty_console(device: Device) -> AsyncIterator[tuple[PtyLink, ConsoleShell]]:
    link = PtyLink()
    shell = ConsoleShell(OpsContext.running(device), clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_link, shell, link)
        try:
            yield link, shell
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await link.aclose()


async def test_pyserial_on_a_pty_logs_in_and_runs_commands(
    pty_console: tuple[PtyLink, ConsoleShell], device: Device
) -> None:
    link, _ = pty_console
    client = Client(link.path)
    await client.open()
    try:
        await client.login()
        out = await client.run("status")
        assert re.search(r"model\s+DP-3530", out)
        out = await client.run("profile set pop3.max_sessions 3")
        assert "pop3.max_sessions = 3 (saved; applied now)" in out
        assert saved_profile(device.board).int("pop3.max_sessions") == 3
        out = await client.run("profile export")
        assert out.count("\n") > 30  # a long answer arrives whole
        out = await client.run("fsck")  # a StoreAction: run by the port, then the prompt
        assert re.search(r"fsck: \d+ records? checked, all clean", out), out
        assert "compact: " in await client.run("compact")
        await client.send("statx\x7fus\r")  # line editing over the wire
        assert "uptime" in await client.expect("DP-3530> ")
    finally:
        await client.close()


async def test_line_noise_over_the_pty_leaves_the_console_usable(
    pty_console: tuple[PtyLink, ConsoleShell],
) -> None:
    link, shell = pty_console
    client = Client(link.path)
    await client.open()
    try:
        await client.login()
        noise = bytes(b for b in random.Random(7).randbytes(64 * 1024) if b not in b"\r\n\x04")
        noise += b"x" * (MAX_LINE + 50)  # ends with a full line, so we know all was read
        port = client.port
        assert isinstance(port, serial.Serial)

        def spray() -> None:  # like a terminal: keeps reading the echo while it writes
            for start in range(0, len(noise), 512):
                port.write(noise[start : start + 512])
                time.sleep(0.002)
                port.read(port.in_waiting)

        await trio.to_thread.run_sync(spray)
        await wait_for(lambda: shell.editor.pending == MAX_LINE)
        assert shell.buffered <= MAX_LINE
        await trio.sleep(0.3)  # the last echo reaches the client, then is dropped
        await trio.to_thread.run_sync(port.reset_input_buffer)
        await client.send("\x03")
        await client.expect("^C\r\nDP-3530> ")
        assert "uptime" in await client.run("status")
    finally:
        await client.close()


async def test_closing_the_client_logs_out_and_a_new_client_gets_a_login(
    pty_console: tuple[PtyLink, ConsoleShell],
) -> None:
    link, shell = pty_console
    client = Client(link.path)
    await client.open()
    await client.login()
    assert shell.logged_in
    await client.close()
    await wait_for(lambda: not shell.logged_in)
    again = Client(link.path)
    await again.open()
    try:
        await again.send("status\r")  # not logged in: this is taken as a (wrong) password
        await again.expect("Password: ")
        await again.send(ADMIN_PASSWORD + "\r")
        await again.expect("DP-3530> ")
        assert "uptime" in await again.run("status")
    finally:
        await again.close()


async def test_run_console_on_a_pty_prints_its_path_and_serves(
    device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_console, device, "pty")
        found: list[str] = []

        def announced() -> bool:
            found.extend(
                re.findall(r"console: (/dev/\S+) \(screen \1 115200\)", capsys.readouterr().err)
            )
            return bool(found)

        await wait_for(announced)
        client = Client(found[0])
        await client.open()
        try:
            await client.login()
            assert "DP-6030" in await client.run("profile list")
        finally:
            await client.close()
        nursery.cancel_scope.cancel()


async def test_console_none_returns_at_once(device: Device) -> None:
    with trio.fail_after(1):
        await run_console(device, "none")


async def test_a_socket_url_reconnects_after_the_peer_drops(device: Device) -> None:
    """`--console socket://HOST:PORT`: a terminal server that drops and comes back."""
    listener = socket.create_server(("127.0.0.1", 0))
    host, port = listener.getsockname()[:2]
    listener.close()  # nothing listens yet: the console must keep retrying, not fail

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_console, device, f"socket://{host}:{port}")
        await trio.sleep(0.3)
        listeners = await trio.open_tcp_listeners(port, host=host)
        for attempt in range(2):
            with trio.fail_after(WAIT_S):
                stream = await listeners[0].accept()
            received = b""
            await stream.send_all(b"\r")
            with trio.fail_after(WAIT_S):
                while not received.endswith(b"Password: "):
                    received += await stream.receive_some(1024)
            await stream.send_all(ADMIN_PASSWORD.encode() + b"\rstatus\r")
            received = b""
            with trio.fail_after(WAIT_S):
                while b"scans" not in received:
                    received += await stream.receive_some(1024)
            assert b"model      DP-3530" in received, attempt
            await stream.aclose()  # the terminal server drops the line
        nursery.cancel_scope.cancel()
        for listener_ in listeners:
            await listener_.aclose()


async def test_a_bad_url_ends_the_console_not_the_device(device: Device) -> None:
    with trio.fail_after(5):
        await run_console(device, "nosuchscheme://x")


async def test_a_tty_device_path_is_opened_with_pyserial(device: Device) -> None:
    """`--console /dev/ttyX`: here the tty is one side of a pty pair the test holds."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    wire = trio.lowlevel.FdStream(master)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_console, device, path)
            received = b""
            with trio.fail_after(WAIT_S):
                while not received.endswith(b"Password: "):
                    await wire.send_all(b"\r")
                    with trio.move_on_after(0.3):
                        try:
                            received += await wire.receive_some(1024)
                        except trio.BrokenResourceError:  # EIO until the console opens the tty
                            await trio.sleep(0.3)
                await wire.send_all(ADMIN_PASSWORD.encode() + b"\rbox list\r")
                received = b""
                while not received.endswith(b"no boxes\r\nDP-3530> "):
                    received += await wire.receive_some(1024)
            nursery.cancel_scope.cancel()
    finally:
        await wire.aclose()
