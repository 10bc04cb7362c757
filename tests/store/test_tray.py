"""The output tray as a record kind: durable, replayed, fsck-checked, compacted, cleared."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.device.boards import open_board
from firmware.errors import CorruptRecordError, StorageFullError
from firmware.store.board import Board


def _meta(uidl: str) -> dict[str, object]:
    return {"uidl": uidl, "from": "a@example.org", "subject": "fax", "pages": 1}


def test_tray_survives_reboot_and_is_hidden_from_boxes(board: Board, image: Path) -> None:
    entry = board.tray_print(_meta("u1"), b"II*\x00document")
    assert entry.number == 1 and not entry.corrupt
    assert [b.name for b in board.boxes()] == ["alice"]
    assert board.boxes()[0].messages == 0
    board.close()
    with open_board(image) as again:
        (e,) = again.tray()
        meta, doc = again.tray_read(e.seq)
        assert meta["uidl"] == "u1" and doc == b"II*\x00document"
        assert again.usage().live >= len(doc)


def test_clear_is_durable_and_frees_space_by_compaction(board: Board, image: Path) -> None:
    for i in range(5):
        board.tray_print(_meta(f"u{i}"), bytes(20_000))
    live = board.usage().live
    assert board.tray_clear() == 5
    assert board.usage().live < live and board.tray() == []
    board.compact()
    board.close()
    with open_board(image) as again:
        assert again.tray() == []


def test_compaction_moves_tray_records_intact(board: Board) -> None:
    board.deliver("alice", b"Subject: x\r\n\r\n" + b"x" * 30_000)
    board.tray_print(_meta("keep"), b"doc-bytes" * 1000)
    board.delete("alice", [m.uid for m in board.messages("alice")])
    board.compact()
    (e,) = board.tray()
    assert board.tray_read(e.seq) == (_meta("keep"), b"doc-bytes" * 1000)
    assert board.fsck().problems == []


def test_a_flipped_bit_is_found_by_fsck_and_refused(board: Board, image: Path) -> None:
    board.tray_print(_meta("u"), b"A" * 4000)
    (e,) = board.tray()
    board.close()
    with open_board(image) as b:
        position = b._index.msgs[e.seq].header.position
        raw = b.image.read(position + 200, 1)
        b.image.write(position + 200, bytes([raw[0] ^ 1]))
        report = b.fsck()
        assert [p.what for p in report.problems] == ["corrupt"]
        with pytest.raises(CorruptRecordError):
            b.tray_read(e.seq)


def test_storage_full_stores_nothing(board: Board) -> None:
    with pytest.raises(StorageFullError):
        board.tray_print(_meta("big"), bytes(2 << 20))
    assert board.tray() == []
