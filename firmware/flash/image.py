"""The board image file: superblock, the two NVRAM slots, the data area as a ring, the lock.

This is the thin I/O adapter under the store. The data area is addressed by *logical* offsets
that only grow; the physical place is `data_offset + logical % capacity`, so the log wraps
around the erase blocks without ever reusing an address (records carry their logical offset).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from construct import ConstructError

from firmware.errors import ImageError, ImageInUseError, StorageFullError
from firmware.flash.layout import (
    FORMAT_VERSION,
    NVRAM_MAGIC,
    NVRAM_VERSION,
    SUPERBLOCK_AREA,
    SUPERBLOCK_MAGIC,
    NvramSlot,
    Superblock,
    SuperblockPrefix,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MIN_IMAGE_SIZE = 256 * 1024
MAX_IMAGE_SIZE = 1 << 40
_NVRAM_HEADER = NvramSlot.build({"body": {"value": {"version": 0, "sequence": 0, "data": b""}}})


@dataclass(frozen=True)
class Geometry:
    """Where everything lives, as the superblock says."""

    image_size: int
    block_size: int
    nvram_offset: int
    nvram_slot_size: int
    data_offset: int
    block_count: int
    created: float
    image_id: bytes
    format_version: int = FORMAT_VERSION

    @property
    def capacity(self) -> int:
        """Bytes in the data area (the ring)."""
        return self.block_size * self.block_count

    @classmethod
    def for_size(cls, size: int) -> Geometry:
        """A layout for an image of `size` bytes: small images get small blocks and slots."""
        if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
            raise ImageError(
                f"image size {size} bytes is not allowed; expected {MIN_IMAGE_SIZE} bytes "
                f"to {MAX_IMAGE_SIZE >> 30} GiB"
            )
        block = 128 * 1024 if size >= 16 << 20 else 16 * 1024
        slot = min(1 << 20, max(32 * 1024, size // 64 // 4096 * 4096))
        data_offset = -(-(SUPERBLOCK_AREA + 2 * slot) // block) * block
        count = (size - data_offset) // block
        if count < 4:
            raise ImageError(f"image size {size} bytes leaves no room for the data area")
        return cls(
            size, block, SUPERBLOCK_AREA, slot, data_offset, count, time.time(), os.urandom(16)
        )


def _punch_hole_fn() -> object | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_fallocate = _punch_hole_fn()


def _lock_holder(path: Path) -> str:
    """The PID holding a flock on `path`, from /proc/locks (Linux), or 'another process'."""
    try:
        st = os.stat(path)
        ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == ident:
                    return f"PID {parts[4]}"
    except OSError:
        pass
    return "another process"


class FileOps:
    """The raw calls an open image makes on its file, gathered so that reliability tests can
    swap in a fault-injecting one (short writes, ENOSPC, EIO). The default is the os module's
    functions themselves: the hot path pays one attribute lookup.
    """

    pread = staticmethod(os.pread)
    pwrite = staticmethod(os.pwrite)
    fdatasync = staticmethod(os.fdatasync)


class Image:
    """One open board image, locked against every other opener."""

    def __init__(self, path: Path, fd: int, geometry: Geometry) -> None:
        self.path = path
        self.geometry = geometry
        self._fd = fd
        self.ops = FileOps()  # tests replace it to inject storage faults
        # Observer of every write, erase and sync, in order (crash-consistency tests replay
        # prefixes of it): ("write", offset, data), ("erase", offset, length), ("sync", 0, None).
        self.trace: Callable[[str, int, bytes | int | None], None] | None = None
        self.nvram_sequence = 0  # of the generation in force
        self.nvram_slots: list[int | None] = [None, None]  # sequence held by each slot

    # -- opening -----------------------------------------------------------------------------

    @staticmethod
    def _lock(path: Path, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ImageInUseError(f"{path} is in use by {_lock_holder(path)}") from None
            raise ImageError(f"{path}: cannot lock: {exc.strerror}") from None

    @classmethod
    def create(cls, path: Path, size: int, nvram: bytes) -> Image:
        """A new sparse image with a superblock and NVRAM slot 0; refuses an existing file."""
        geometry = Geometry.for_size(size)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ImageError(f"{path} already exists; refusing to overwrite it") from None
        except OSError as exc:
            raise ImageError(f"{path}: cannot create: {exc.strerror}") from None
        cls._lock(path, fd)
        image = cls(path, fd, geometry)
        try:
            image._call("create", os.ftruncate, fd, size)
            image._pwrite_all(
                Superblock.build(
                    {
                        "body": {
                            "value": {
                                "format_version": FORMAT_VERSION,
                                "flags": 0,
                                "image_size": size,
                                "block_size": geometry.block_size,
                                "nvram_offset": geometry.nvram_offset,
                                "nvram_slot_size": geometry.nvram_slot_size,
                                "data_offset": geometry.data_offset,
                                "block_count": geometry.block_count,
                                "created": geometry.created,
                                "image_id": geometry.image_id,
                            }
                        }
                    }
                ),
                0,
            )
            image._write_slot(0, 1, nvram)
            image.nvram_sequence = 1
            image.nvram_slots = [1, None]
            image._call("fsync", os.fsync, fd)
            _fsync_dir(path)
        except BaseException:
            image.close()
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            raise
        return image

    @classmethod
    def open(cls, path: Path) -> tuple[Image, bytes]:
        """Open, lock and check an image; returns it and the newest valid NVRAM contents."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise ImageError(f"{path}: no such board image") from None
        except OSError as exc:
            raise ImageError(f"{path}: cannot open: {exc.strerror}") from None
        cls._lock(path, fd)
        try:
            geometry = cls._read_superblock(path, fd)
            image = cls(path, fd, geometry)
            nvram = image._read_nvram()
        except BaseException:
            os.close(fd)
            raise
        return image, nvram

    @staticmethod
    def _read_superblock(path: Path, fd: int) -> Geometry:
        try:
            raw = os.pread(fd, SUPERBLOCK_AREA, 0)
            size = os.fstat(fd).st_size
        except OSError as exc:
            raise _os_error(path, "read of the superblock", exc) from None
        try:
            prefix = SuperblockPrefix.parse(raw)
        except (ConstructError, ValueError, TypeError):
            prefix = None
        if prefix is None or prefix.magic != SUPERBLOCK_MAGIC:
            raise ImageError(f"{path} is not a dpfw board image (no superblock magic)")
        if prefix.format_version > FORMAT_VERSION:
            raise ImageError(
                f"{path} has image format version {prefix.format_version}, newer than this "
                f"firmware supports ({FORMAT_VERSION}); refusing to open it"
            )
        try:
            sb = Superblock.parse(raw).body.value
        except (ConstructError, ValueError, TypeError):
            raise ImageError(
                f"{path}: superblock CRC mismatch; the image is corrupt and is not repaired "
                "automatically"
            ) from None
        geometry = Geometry(
            int(sb.image_size),
            int(sb.block_size),
            int(sb.nvram_offset),
            int(sb.nvram_slot_size),
            int(sb.data_offset),
            int(sb.block_count),
            float(sb.created),
            bytes(sb.image_id),
            int(sb.format_version),
        )
        end = geometry.data_offset + geometry.capacity
        if (
            size != geometry.image_size
            or geometry.block_size == 0
            or geometry.nvram_offset < SUPERBLOCK_AREA
            or geometry.nvram_offset + 2 * geometry.nvram_slot_size > geometry.data_offset
            or end > size
        ):
            raise ImageError(
                f"{path}: superblock geometry does not fit the file ({size} bytes, superblock "
                f"says {geometry.image_size}); refusing to open it"
            )
        return geometry

    # -- NVRAM ---------------------------------------------------------------------------------

    def _slot_offset(self, slot: int) -> int:
        return self.geometry.nvram_offset + slot * self.geometry.nvram_slot_size

    def _read_slot(self, slot: int) -> tuple[int, bytes] | None:
        # A slot that cannot be read is an error, not an invalid slot: falling back to the other
        # slot would boot an older generation and the next write would overwrite the newer one.
        raw = self._call(
            f"read of NVRAM slot {slot}",
            self.ops.pread,
            self._fd,
            self.geometry.nvram_slot_size,
            self._slot_offset(slot),
        )
        try:
            parsed = NvramSlot.parse(raw).body.value
        except (ConstructError, ValueError, TypeError):
            return None
        if parsed.version > NVRAM_VERSION:
            raise ImageError(
                f"{self.path}: NVRAM slot {slot} has version {parsed.version}, newer than this "
                f"firmware supports ({NVRAM_VERSION})"
            )
        return int(parsed.sequence), bytes(parsed.data)

    def _read_nvram(self) -> bytes:
        slots = [self._read_slot(0), self._read_slot(1)]
        self.nvram_slots = [s[0] if s else None for s in slots]
        valid = [s for s in slots if s is not None]
        if not valid:
            raise ImageError(f"{self.path}: neither NVRAM slot is valid; refusing to open it")
        for i, s in enumerate(slots):
            if s is None and any(v is not None for v in self.nvram_slots):
                log.debug("%s: NVRAM slot %d holds no valid generation", self.path, i)
        sequence, data = max(valid)
        self.nvram_sequence = sequence
        return data

    def _write_slot(self, slot: int, sequence: int, data: bytes) -> None:
        raw = NvramSlot.build(
            {
                "body": {
                    "value": {
                        "magic": NVRAM_MAGIC,
                        "version": NVRAM_VERSION,
                        "sequence": sequence,
                        "data": data,
                    }
                }
            }
        )
        if len(raw) > self.geometry.nvram_slot_size:
            raise StorageFullError(
                f"NVRAM full: {len(raw)} bytes needed, a slot holds "
                f"{self.geometry.nvram_slot_size}; remove boxes or settings"
            )
        self._pwrite_all(raw, self._slot_offset(slot))

    def write_nvram(self, data: bytes) -> None:
        """Write a new generation into the slot not holding the current one; durable on return."""
        sequence = self.nvram_sequence + 1
        current = (
            self.nvram_slots.index(self.nvram_sequence)
            if self.nvram_sequence in (self.nvram_slots)
            else 1
        )
        slot = 1 - current
        try:
            self._write_slot(slot, sequence, data)
            self.sync()
        except StorageFullError:
            raise  # refused before anything was written
        except BaseException:
            # Reported as failed, so the new generation must not win at the next boot: wipe
            # the slot's start (its magic) and sync again; the old slot stays in force.
            with contextlib.suppress(Exception):
                self._pwrite_all(bytes(64), self._slot_offset(slot))
                self.sync()
            raise
        self.nvram_sequence = sequence
        self.nvram_slots[slot] = sequence

    # -- the data area -------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.geometry.capacity

    def _segments(self, logical: int, length: int) -> list[tuple[int, int]]:
        """(physical offset, length) pieces of a logical range, split where the ring wraps."""
        cap = self.geometry.capacity
        pieces = []
        while length > 0:
            at = logical % cap
            n = min(length, cap - at)
            pieces.append((self.geometry.data_offset + at, n))
            logical += n
            length -= n
        return pieces

    def read(self, logical: int, length: int) -> bytes:
        """Bytes of the data area at a logical offset."""
        try:
            parts = [self.ops.pread(self._fd, n, off) for off, n in self._segments(logical, length)]
        except OSError as exc:
            raise self._io_error("read", exc) from None
        data = b"".join(parts)
        if len(data) != length:
            raise ImageError(f"{self.path}: short read at data offset {logical}")
        return data

    def write(self, logical: int, data: bytes | bytearray | memoryview) -> None:
        """Write bytes into the data area at a logical offset (not yet durable)."""
        view = memoryview(data)
        done = 0
        for off, n in self._segments(logical, len(view)):
            self._pwrite_all(view[done : done + n], off)
            done += n

    def erase(self, logical: int, length: int) -> None:
        """Zero a range of the data area: punch a hole where the file system can, else write."""
        for off, n in self._segments(logical, length):
            if self.trace is not None:
                self.trace("erase", off, n)
            if _fallocate is not None:
                rc = _fallocate(  # type: ignore[operator]
                    self._fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, off, n
                )
                if rc == 0:
                    continue
            zero = bytes(min(n, 1 << 20))
            done = 0
            while done < n:
                step = min(len(zero), n - done)
                self._pwrite_raw(zero[:step], off + done)
                done += step

    def sync(self) -> None:
        """Make everything written so far durable."""
        if self.trace is not None:
            self.trace("sync", 0, None)
        try:
            self.ops.fdatasync(self._fd)
        except OSError as exc:
            raise self._io_error("fsync", exc) from None

    def _pwrite_all(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        if self.trace is not None:
            self.trace("write", offset, bytes(data))
        self._pwrite_raw(data, offset)

    def _pwrite_raw(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            try:
                n = self.ops.pwrite(self._fd, view, offset)
            except OSError as exc:
                raise self._io_error("write", exc) from None
            view = view[n:]
            offset += n

    def _io_error(self, what: str, exc: OSError) -> ImageError | StorageFullError:
        """The host file system failed us: say so, as the device's own kind of error."""
        return _os_error(self.path, what, exc)

    def _call(self, what: str, fn: Callable[..., _T], *args: Any) -> _T:
        """`fn(*args)` with an OSError turned into the device's own error (see `_os_error`)."""
        try:
            return fn(*args)
        except OSError as exc:
            raise self._io_error(what, exc) from None

    def close(self) -> None:
        """Release the lock and the file. Everything was synced before; a failing close(2)
        (EIO from a network file system) is logged, not raised: there is nothing to retry."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.close(fd)
            except OSError as exc:
                log.warning("%s: close failed: %s", self.path, exc.strerror)


def _os_error(path: Path, what: str, exc: OSError) -> ImageError | StorageFullError:
    """An OSError on the image file as the device's own error: ENOSPC/EDQUOT are
    `StorageFullError`, anything else (EIO, ENXIO, EISDIR, ...) `ImageError`
    ("IMG: read failed: Input/output error")."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(
            f"storage full: the file system holding {path} is full ({what} failed)"
        )
    return ImageError(f"{path}: {what} failed: {exc.strerror or exc}")


def _fsync_dir(path: Path) -> None:
    try:
        dfd = os.open(path.parent if str(path.parent) else Path("."), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError as exc:
        raise _os_error(path, "fsync of the directory", exc) from None
    finally:
        with contextlib.suppress(OSError):
            os.close(dfd)
