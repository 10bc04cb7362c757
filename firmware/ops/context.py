"""What every operation runs over: a running Device, or a board image opened offline."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, TypeVar

from firmware.config.profile import Profile, Value
from firmware.device import boards
from firmware.errors import DeviceError

if TYPE_CHECKING:
    from firmware.device.device import Device
    from firmware.pop3.server import Pop3Service
    from firmware.store.board import Board


T = TypeVar("T")


class OpsContext:
    """One target of the administrative operations.

    `OpsContext.running(device)`: the live device; its board, running and saved profiles,
    POP3 service and counters are read at each call, so a reboot in between is seen (and
    while the device boots, each read raises DeviceError "not running").
    `OpsContext.offline(board)`: a board the CLI opened; nothing runs, so there are no
    sessions, no locks and no pending changes, and a profile change applies at next boot.
    """

    def __init__(self, *, device: Device | None = None, board: Board | None = None) -> None:
        if (device is None) == (board is None):
            raise ValueError("OpsContext needs a device or a board, not both")
        self.device = device
        self._board = board
        self._log: Sequence[str] = ()  # offline, nothing logs to a device

    @classmethod
    def running(cls, device: Device) -> OpsContext:
        return cls(device=device)

    @classmethod
    def offline(cls, board: Board) -> OpsContext:
        return cls(board=board)

    @property
    def live(self) -> bool:
        """True on a running device (profile changes to live keys apply at once)."""
        return self.device is not None

    @property
    def board(self) -> Board:
        """The board image; DeviceError while a running device reboots."""
        if self.device is not None:
            return self.device.board
        assert self._board is not None
        return self._board

    @property
    def profile(self) -> Profile:
        """The profile in force (offline: the saved one)."""
        return self.device.profile if self.device is not None else boards.saved_profile(self.board)

    @property
    def saved_profile(self) -> Profile:
        """What runs after the next boot (a running device's `--set` overrides on top)."""
        return (
            self.device.next_profile
            if self.device is not None
            else boards.saved_profile(self.board)
        )

    def pending(self) -> list[tuple[str, Value, Value]]:
        """(key, running, saved) for each saved change waiting for a reboot; offline none."""
        return self.device.pending() if self.device is not None else []

    def save_profile(self, new: Profile) -> None:
        """Save `new` to NVRAM (a running device also puts its live keys in force)."""
        if self.device is not None:
            self.device.apply_profile(new)
        else:
            boards.save_profile(self.board, new)

    @property
    def pop3(self) -> Pop3Service | None:
        """The running POP3 service, or None (offline, or not started)."""
        return self.device.pop3 if self.device is not None else None

    def locked_boxes(self) -> dict[str, float]:
        """Box name -> seconds of lock-out left; offline nothing is locked."""
        pop3 = self.pop3
        return pop3.locked_boxes() if pop3 is not None else {}

    @property
    def log_lines(self) -> Sequence[str]:
        """The device's recent log lines, oldest first (firmware.device.device.LogLines)."""
        return self.device.log_lines if self.device is not None else self._log

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.device.started_at if self.device is not None else 0.0

    async def run_store(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` where store work belongs: on a running device that has a store worker
        (`Device.store_worker`, firmware/store/worker.py) on that worker's thread, so the
        trio loop serving POP3 never waits on the image; otherwise here and now. Front-ends
        await long operations (fsck, compact) through this; `fn` is any operation of this
        package, e.g. `await ctx.run_store(storage.compact, ctx)`."""
        if self.device is None:
            return fn(*args)
        result: T = await self.device.store_worker.run(fn, *args)
        return result

    def reading(self) -> AbstractAsyncContextManager[None]:
        """Hold the board while a front-end runs synchronous operations on the event loop
        (`async with ctx.reading(): ...`), so they never see the store worker's thread half
        way through a change ("dictionary changed size during iteration"). It never blocks
        the loop (firmware/store/worker.py `reading`); offline it holds nothing."""
        if self.device is None:
            return contextlib.nullcontext()
        return self.device.store_worker.reading()

    def require_device(self, what: str) -> Device:
        """The running device, or DeviceError naming `what` needs one."""
        if self.device is None:
            raise DeviceError(f"{what}: needs the running device (`dpfw run`)")
        return self.device
