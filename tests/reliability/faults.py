"""A fault-injecting stand-in for the image's raw file calls (`firmware.flash.image.FileOps`).

It wraps the real os calls on the real image file and, when armed, makes them misbehave the
way storage does: short writes, ENOSPC, EIO from a write, a read or an fsync, and a torn write
(part of the last record's header reaches the file, then the power goes).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from firmware.flash.image import FileOps
from firmware.flash.layout import RECORD_MAGIC

if TYPE_CHECKING:
    from typing_extensions import Buffer  # typeshed's name for what os.pwrite takes


class PowerCut(BaseException):
    """The power went in the middle of a write: nothing after it runs (not an Exception, so
    no handler in the store can mistake it for an I/O error and carry on)."""


@dataclass
class Plan:
    """What to break. Counters are in calls or bytes from the moment the plan is armed."""

    max_write: int | None = None  # every pwrite writes at most this many bytes (short writes)
    write_errno: int | None = None  # pwrite fails with this errno ...
    write_after_bytes: int = 0  # ... once this many bytes were written while armed
    sync_errno: int | None = None  # fdatasync fails with this errno
    read_errno: int | None = None  # pread fails with this errno
    tear_header_at: int | None = None  # a record header write stops after this many bytes


class FaultyOps(FileOps):
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.written = 0
        self.faults = 0

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        if self.plan.read_errno is not None:
            self.faults += 1
            raise OSError(self.plan.read_errno, os.strerror(self.plan.read_errno))
        return os.pread(fd, n, offset)

    def pwrite(self, fd: int, data: Buffer, offset: int) -> int:
        view = memoryview(data)
        plan = self.plan
        if plan.tear_header_at is not None and bytes(view[:4]) == RECORD_MAGIC:
            self.faults += 1
            os.pwrite(fd, view[: plan.tear_header_at], offset)
            raise PowerCut(f"torn after {plan.tear_header_at} header bytes")
        if plan.write_errno is not None and self.written + len(view) > plan.write_after_bytes:
            room = max(0, plan.write_after_bytes - self.written)
            if room:  # what fits goes out first, as a file system does before ENOSPC
                n = os.pwrite(fd, view[:room], offset)
                self.written += n
                return n
            self.faults += 1
            raise OSError(plan.write_errno, os.strerror(plan.write_errno))
        if plan.max_write is not None:
            view = view[: plan.max_write]
        n = os.pwrite(fd, view, offset)
        self.written += n
        return n

    def fdatasync(self, fd: int) -> None:  # type: ignore[override]
        if self.plan.sync_errno is not None:
            self.faults += 1
            raise OSError(self.plan.sync_errno, os.strerror(self.plan.sync_errno))
        os.fdatasync(fd)


ENOSPC = errno.ENOSPC
EIO = errno.EIO
