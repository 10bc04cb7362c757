"""Transports for the admin console: a pty, any pyserial port or URL, or the terminal.

Each transport is a small `Link` (wait for a peer, receive, send); one loop moves bytes
between a link and the sans-IO ConsoleShell and runs the shell's actions on the device.
Nothing here blocks the trio loop: a pty we own is read through trio's FdStream, pyserial
ports and stdin through worker threads with short timeouts. A vanished peer (closed pty,
unplugged adapter, dropped socket) logs the session out and waits for the next one; the
device never stops because of its console.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import struct
import sys
import termios
import tty
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from firmware.console.shell import (
    ASYNC_OPERATIONS,
    STORE_OPERATIONS,
    Action,
    AsyncAction,
    ConsoleShell,
    PowerAction,
    ScanAction,
)
from firmware.errors import DeviceError
from firmware.ops import render, system
from firmware.ops.context import OpsContext
from firmware.ops.scans import run_scan
from firmware.text import os_reason

if TYPE_CHECKING:
    import serial

    from firmware.device.device import Device

log = logging.getLogger("dpfw.console")

POLL_S = 0.25  # how often an idle link checks timers and peers
READ_MAX = 1024
SEND_TIMEOUT_S = 5.0  # a peer that takes nothing for this long is gone
DRAIN_S = 2.0  # longest wait for the peer to read its output before a reboot or shutdown
DRAIN_DWELL_S = 0.2
RETRY_MAX_S = 5.0  # longest wait between attempts to reopen a vanished port
_BAUD_FLAGS = {
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    57600: termios.B57600,
    115200: termios.B115200,
}


class PeerGone(Exception):
    """The other end of the console went away (closed, unplugged, disconnected)."""


class Link(Protocol):
    async def wait_peer(self) -> bool:
        """Return once a peer may be there; False if none ever will (stdin at EOF)."""
        ...

    async def receive(self) -> bytes:
        """Bytes from the peer, or b"" when nothing came within POLL_S; PeerGone if gone."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def drain(self) -> None:
        """Give the peer its output before the device resets (bounded wait)."""
        ...

    async def aclose(self) -> None: ...


class PtyLink:
    """A pseudo-terminal pair we own: the lab connects a terminal program to `path`."""

    def __init__(self, baud: int = 115200) -> None:
        master, slave = os.openpty()
        try:
            tty.setraw(slave)  # no kernel echo or CR/LF rewriting: the shell does the discipline
            attrs = termios.tcgetattr(slave)
            speed = _BAUD_FLAGS.get(baud, termios.B115200)
            attrs[4] = attrs[5] = speed
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
            self.path = os.ttyname(slave)
        finally:
            os.close(slave)  # only the peer holds the slave open, so its close is seen as EIO
        self._fd = master
        self._stream = trio.lowlevel.FdStream(master)

    def _peer_present(self) -> bool:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return not any(event & select.POLLHUP for _, event in poller.poll(0))

    async def wait_peer(self) -> bool:
        while not self._peer_present():
            await trio.sleep(POLL_S)
        return True

    async def receive(self) -> bytes:
        with trio.move_on_after(POLL_S):
            try:
                data = await self._stream.receive_some(READ_MAX)
            except trio.BrokenResourceError:
                raise PeerGone(f"{self.path} closed by the peer") from None
            if not data:
                raise PeerGone(f"{self.path} closed by the peer")
            return data
        return b""

    async def send(self, data: bytes) -> None:
        if not self._peer_present():
            raise PeerGone(f"{self.path} closed by the peer")
        with trio.move_on_after(SEND_TIMEOUT_S):
            try:
                await self._stream.send_all(data)
            except trio.BrokenResourceError:
                raise PeerGone(f"{self.path} closed by the peer") from None
            return
        raise PeerGone(f"{self.path}: the peer takes no output")

    async def drain(self) -> None:
        # A closing master discards what the peer has not read yet, and the kernel moves
        # written bytes to the peer's queue a little later: dwell, then wait until it is empty.
        with trio.move_on_after(DRAIN_S):
            await trio.sleep(DRAIN_DWELL_S)
            while self._peer_present() and self._unread_by_peer() > 0:
                await trio.sleep(0.02)

    def _unread_by_peer(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return 0
        try:
            raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        finally:
            os.close(fd)
        return int(struct.unpack("i", raw)[0])

    async def aclose(self) -> None:
        await self._stream.aclose()


class SerialLink:
    """Any pyserial port or URL (/dev/ttyS1, socket://host:port, rfc2217://host:port)."""

    def __init__(self, url: str, baud: int) -> None:
        global serial
        import serial

        self.url = url
        self.baud = baud
        self._port: serial.SerialBase | None = None

    async def wait_peer(self) -> bool:
        delay = POLL_S
        complained = False
        while True:
            try:
                self._port = await trio.to_thread.run_sync(self._open)
            except ValueError as exc:
                log.error("console: cannot use %s: %s", self.url, os_reason(exc))
                return False  # a malformed URL or setting will not fix itself
            except (serial.SerialException, OSError) as exc:
                if not complained:
                    log.warning(
                        "console: %s not available (%s); retrying", self.url, os_reason(exc)
                    )
                    complained = True
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            log.info("console: %s open at %d baud", self.url, self.baud)
            return True

    def _open(self) -> serial.SerialBase:
        return serial.serial_for_url(
            self.url, baudrate=self.baud, timeout=POLL_S, write_timeout=SEND_TIMEOUT_S
        )

    async def receive(self) -> bytes:
        port = self._require()
        try:
            return await trio.to_thread.run_sync(_read_some, port)
        except (serial.SerialException, OSError) as exc:
            await self._drop()
            raise PeerGone(f"{self.url}: {os_reason(exc)}") from None

    async def send(self, data: bytes) -> None:
        port = self._require()
        try:
            await trio.to_thread.run_sync(port.write, data)
        except (serial.SerialException, OSError) as exc:
            await self._drop()
            raise PeerGone(f"{self.url}: {os_reason(exc)}") from None

    async def drain(self) -> None:
        if self._port is not None:
            with trio.move_on_after(DRAIN_S), contextlib.suppress(serial.SerialException, OSError):
                await trio.to_thread.run_sync(self._port.flush, abandon_on_cancel=True)

    def _require(self) -> serial.SerialBase:
        if self._port is None:
            raise PeerGone(f"{self.url} is not open")
        return self._port

    async def _drop(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                await trio.to_thread.run_sync(port.close)

    async def aclose(self) -> None:
        await self._drop()


def _read_some(port: serial.SerialBase) -> bytes:
    """Up to POLL_S for a first byte, then whatever else is already waiting."""
    data: bytes = port.read(1)
    if data:
        waiting = int(getattr(port, "in_waiting", 0))  # every port class has it; SerialBase not
        if waiting:
            data += port.read(min(waiting, READ_MAX))
    return data


class StdioLink:
    """The terminal the device was started from (raw mode while the console runs)."""

    def __init__(self) -> None:
        self._in = sys.stdin.fileno()
        self._out = sys.stdout.fileno()
        self._saved: list[Any] | None = None
        self._eof = False
        self._started = False
        if os.isatty(self._in):
            self._saved = termios.tcgetattr(self._in)
            tty.setraw(self._in)

    async def wait_peer(self) -> bool:
        first, self._started = not self._started, True
        return first and not self._eof

    async def receive(self) -> bytes:
        data = await trio.to_thread.run_sync(self._read)
        if data is None:
            return b""
        if not data:
            self._eof = True
            raise PeerGone("stdin closed")
        return data

    def _read(self) -> bytes | None:
        ready, _, _ = select.select([self._in], [], [], POLL_S)
        return os.read(self._in, READ_MAX) if ready else None

    async def send(self, data: bytes) -> None:
        await trio.to_thread.run_sync(self._write, data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._out, view) :]

    async def drain(self) -> None:
        pass  # writes to stdout are done when os.write returns

    async def aclose(self) -> None:
        if self._saved is not None:
            termios.tcsetattr(self._in, termios.TCSADRAIN, self._saved)
            self._saved = None


async def serve_link(shell: ConsoleShell, link: Link) -> None:
    """Run console sessions over `link` until it can have no more peers (or cancellation)."""
    while await link.wait_peer():
        try:
            await link.send(shell.connect())
            await _converse(shell, link)
        except PeerGone as exc:
            log.info("console: %s", exc)
            shell.disconnect()


async def _converse(shell: ConsoleShell, link: Link) -> None:
    while True:
        data = await link.receive()
        # The shell runs operations synchronously: hold the board so none of them reads or
        # changes it while the store worker's thread is in the middle of a change.
        async with shell.ctx.reading():
            out = shell.feed(data) if data else shell.tick()
        if out:
            await link.send(out)
        while (action := shell.take_action()) is not None:  # held input may start another
            if isinstance(action, PowerAction):
                await link.drain()
            await link.send(await _perform(shell, action))


async def _answer(what: str, run: Callable[[], Awaitable[str]]) -> str:
    """The text of an operation the console awaited: its own, one `error:` line for a
    refusal, or a generic line (and the traceback in the log) for our own bug."""
    try:
        return await run()
    except DeviceError as exc:
        return "error: " + " ".join(str(exc).split())
    except Exception:
        log.exception("console: %s failed", what)
        return f"error: {what} failed with an internal error (logged)"


async def _perform(shell: ConsoleShell, action: Action) -> bytes:
    ctx = shell.ctx
    if isinstance(action, AsyncAction):
        args = action.args
        text = await _answer(action.what, lambda: ASYNC_OPERATIONS[action.what](ctx, *args))
        return shell.finish_action(text)
    if not isinstance(action, ScanAction | PowerAction):  # a StoreAction
        operation, show = STORE_OPERATIONS[action.what]

        async def stored() -> str:
            return show(await ctx.run_store(operation, ctx))

        return shell.finish_action(await _answer(action.what, stored))
    if isinstance(action, ScanAction):
        try:
            text = render.scan_done(await run_scan(ctx, action.request))
        except DeviceError as exc:
            text = "error: " + " ".join(str(exc).split())
        except Exception:
            log.exception("console: scan job failed")
            text = "error: the scan failed with an internal error (logged)"
        return shell.finish_action(text)
    if action.what == "reboot":
        system.reboot(ctx)
    else:
        system.shutdown(ctx)
    shell.finish_action("")
    return shell.power_done(action.what)


def open_link(spec: str, baud: int) -> Link:
    """The link a --console SPEC names (not "none")."""
    if spec == "pty":
        return PtyLink(baud)
    if spec == "stdio":
        return StdioLink()
    return SerialLink(spec, baud)


async def run_console(
    device: Device, spec: str, on_pty: Callable[[str], None] | None = None
) -> None:
    """The device's console task: `spec` is "pty", "stdio", "none" or a pyserial port/URL.
    `on_pty(path)` is told the pty's path once it exists (a fleet lists it in its status)."""
    if spec == "none":
        return
    shell = ConsoleShell(
        OpsContext.running(device), clock=trio.current_time, lockout=device.admin_lockout
    )
    baud = await _console_baud(device)
    try:
        link = open_link(spec, baud)
    except (OSError, termios.error) as exc:
        log.error("console: cannot open %s: %s; running without a console", spec, exc)
        return
    if isinstance(link, PtyLink):
        print(
            f"dpfw: console: {link.path} (screen {link.path} {baud})", file=sys.stderr, flush=True
        )
        log.info("console on %s", link.path)
        if on_pty is not None:
            on_pty(link.path)
    try:
        while True:
            try:
                await serve_link(shell, link)
                return
            except Exception:
                log.exception("console: internal error; the console restarts")
                shell.disconnect()
                await trio.sleep(1.0)
    finally:
        with trio.CancelScope(shield=True):
            await link.aclose()


async def _console_baud(device: Device) -> int:
    """console.baud of the profile in force (the device may still be booting)."""
    for _ in range(200):
        try:
            return device.profile.int("console.baud")
        except DeviceError:
            await trio.sleep(0.05)
    return 115200
