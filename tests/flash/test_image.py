"""The image file: refusing foreign, corrupt and newer images; NVRAM slots; the ring; the lock."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from firmware.errors import ImageError, ImageInUseError, StorageFullError
from firmware.flash.image import MIN_IMAGE_SIZE, FileOps, Geometry, Image
from firmware.flash.layout import FORMAT_VERSION, SUPERBLOCK_MAGIC


def make(path: Path, size: int = 1 << 20, nvram: bytes = b"first") -> Image:
    return Image.create(path, size, nvram)


def test_create_then_open(tmp_path: Path) -> None:
    path = tmp_path / "i.img"
    make(path).close()
    image, nvram = Image.open(path)
    with pytest.raises(ImageInUseError, match="in use by PID"):
        Image.open(path)
    image.close()
    assert nvram == b"first"
    assert image.geometry.image_size == 1 << 20
    assert path.stat().st_size == 1 << 20


def test_create_refuses_existing_and_bad_sizes(tmp_path: Path) -> None:
    path = tmp_path / "i.img"
    path.write_bytes(b"x")
    with pytest.raises(ImageError, match="already exists"):
        make(path)
    with pytest.raises(ImageError, match="not allowed"):
        make(tmp_path / "small.img", size=MIN_IMAGE_SIZE - 1)
    assert not (tmp_path / "small.img").exists()


def test_geometry_fits() -> None:
    for size in (MIN_IMAGE_SIZE, 8 << 20, 256 << 20, 3 << 30):
        g = Geometry.for_size(size)
        assert g.nvram_offset + 2 * g.nvram_slot_size <= g.data_offset
        assert g.data_offset % g.block_size == 0
        assert g.data_offset + g.capacity <= size


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.img"
    path.write_bytes(b"%PDF-1.4\n" + bytes(1 << 20))
    with pytest.raises(ImageError, match="not a dpfw board image"):
        Image.open(path)
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="not a dpfw board image"):
        Image.open(empty)


def test_corrupt_superblock_is_refused_not_repaired(tmp_path: Path) -> None:
    path = tmp_path / "i.img"
    make(path).close()
    raw = bytearray(path.read_bytes())
    raw[20] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageError, match="superblock CRC mismatch"):
        Image.open(path)
    assert path.read_bytes() == bytes(raw)


def test_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "i.img"
    make(path).close()
    raw = bytearray(path.read_bytes())
    raw[len(SUPERBLOCK_MAGIC) : len(SUPERBLOCK_MAGIC) + 2] = struct.pack(">H", FORMAT_VERSION + 1)
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageError, match=f"format version {FORMAT_VERSION + 1}, newer"):
        Image.open(path)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "i.img"
    make(path).close()
    with open(path, "r+b") as f:
        f.truncate(1 << 19)
    with pytest.raises(ImageError, match="does not fit"):
        Image.open(path)


def test_nvram_alternates_slots_and_survives_a_torn_write(tmp_path: Path) -> None:
    path = tmp_path / "i.img"
    image = make(path)
    image.write_nvram(b"second")
    image.write_nvram(b"third")
    assert image.nvram_slots == [3, 2]
    g = image.geometry
    image.close()
    # tear the newest generation (slot 0): the older slot wins
    with open(path, "r+b") as f:
        f.seek(g.nvram_offset + 20)
        f.write(b"\xff\xff")
    image, nvram = Image.open(path)
    assert nvram == b"second"
    assert image.nvram_slots == [None, 2]
    image.write_nvram(b"fourth")  # goes into the torn slot, not over the good one
    image.close()
    image, nvram = Image.open(path)
    assert (nvram, image.nvram_slots) == (b"fourth", [3, 2])
    image.close()


def test_both_nvram_slots_bad(tmp_path: Path) -> None:
    path = tmp_path / "i.img"
    image = make(path)
    g = image.geometry
    image.close()
    with open(path, "r+b") as f:
        f.seek(g.nvram_offset)
        f.write(bytes(2 * g.nvram_slot_size))
    with pytest.raises(ImageError, match="neither NVRAM slot"):
        Image.open(path)


def test_nvram_full(tmp_path: Path) -> None:
    image = make(tmp_path / "i.img", size=MIN_IMAGE_SIZE)
    with pytest.raises(StorageFullError, match="NVRAM full"):
        image.write_nvram(bytes(image.geometry.nvram_slot_size))
    image.close()


def test_ring_wraps_and_erases(tmp_path: Path) -> None:
    image = make(tmp_path / "i.img")
    cap = image.capacity
    data = bytes(range(256)) * 8
    image.write(cap - 1000, data)  # crosses the end of the data area
    assert image.read(cap - 1000, len(data)) == data
    assert image.read(2 * cap - 1000, len(data)) == data  # the same place one lap later
    assert image.read(0, 1048) == data[1000:]
    image.erase(cap - 10, 20)
    assert image.read(cap - 12, 24) == data[988:990] + bytes(20) + data[1010:1012]
    image.close()


def test_trace_sees_every_write_and_sync(tmp_path: Path) -> None:
    image = make(tmp_path / "i.img")
    seen: list[str] = []
    image.trace = lambda kind, off, data: seen.append(kind)
    image.write(0, b"abc")
    image.erase(0, 3)
    image.sync()
    image.write_nvram(b"x")
    assert seen == ["write", "erase", "sync", "write", "sync"]
    image.close()


def test_an_unreadable_nvram_slot_is_an_error_not_an_older_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slot 1 holds the newer generation; if reading it fails with EIO, booting slot 0's older
    one would let the next NVRAM write land on slot 1 and lose the newer generation for good."""
    path = tmp_path / "i.img"
    image = make(path)
    image.write_nvram(b"second")  # into slot 1
    slot1 = image.geometry.nvram_offset + image.geometry.nvram_slot_size
    image.close()
    real = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        if offset == slot1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd, n, offset)

    monkeypatch.setattr(FileOps, "pread", staticmethod(pread))
    with pytest.raises(ImageError, match="read of NVRAM slot 1 failed: Input/output error"):
        Image.open(path)
    monkeypatch.undo()
    image, nvram = Image.open(path)
    image.close()
    assert nvram == b"second"
