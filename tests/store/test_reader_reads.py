"""The read path's flash reads: a RETR of a small message is one pread, header check included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from firmware.errors import CorruptRecordError
from firmware.flash.image import FileOps
from firmware.store.board import Board

MSG = b"From: a@b\r\nSubject: s\r\n\r\n" + b"line\r\n" * 2000  # 12 KB: one chunk


class _CountingOps(FileOps):
    def __init__(self) -> None:
        self.preads = 0

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        self.preads += 1
        return os.pread(fd, length, offset)


def test_a_checked_read_of_a_small_message_is_one_pread(board: Board) -> None:
    info = board.deliver("alice", MSG)
    assert b"".join(board.read_wire("alice", info.uid)) == MSG  # first read: CRC checked
    ops = _CountingOps()
    board.image.ops = ops
    chunks = board.read_wire("alice", info.uid)  # header check and first chunk
    assert ops.preads == 1
    assert b"".join(chunks) == MSG
    assert ops.preads == 1


def test_a_header_changed_on_flash_after_boot_is_refused(board: Board, image: Path) -> None:
    info = board.deliver("alice", MSG)
    board.deliver("alice", MSG)
    assert b"".join(board.read_wire("alice", info.uid)) == MSG
    # A byte of the record header's arrival time (head offset 44): its CRC now fails.
    offset = board.geometry.data_offset + 44
    with open(image, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(CorruptRecordError, match=info.uid):
        board.read_wire("alice", info.uid)
    assert board.messages("alice")[0].corrupt


def test_a_small_message_damaged_before_its_first_read_is_refused(
    board: Board, image: Path
) -> None:
    """Its CRC is checked on the bytes of that same read (no second read of the payload)."""
    info = board.deliver("alice", MSG)
    board.deliver("alice", MSG)
    with open(image, "r+b") as f:
        f.seek(board.geometry.data_offset + 5000)
        byte = f.read(1)
        f.seek(board.geometry.data_offset + 5000)
        f.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(CorruptRecordError, match=info.uid):
        board.read_wire("alice", info.uid)
