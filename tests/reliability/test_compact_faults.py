"""A committed operation stays committed when the automatic compaction after it fails.

Found by `test_fiu_device.py`: a QUIT was answered `-ERR [SYS/TEMP] no messages removed:
... write failed` although its deletion record had been committed; the write that failed
was the automatic compaction's, after the commit. The same held for deliveries (stored, but
reported as failed) and the Internet Fax tray. Now the failed compaction is logged and left
for later; the operation reports what it did.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest

from firmware.device.boards import open_board
from firmware.errors import DeviceError, StorageFullError
from tests.reliability.faults import EIO, FaultyOps, Plan
from tests.reliability.harness import new_image


def body(n: int) -> bytes:
    return b"Subject: %d\r\n\r\n" % n + b"compaction fault line\r\n" * 2000


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = new_image(tmp_path / "compact.img", size="1MiB")
    with open_board(path) as board:
        board.add_box("alice", "alice-pw")
    return path


def test_a_quit_whose_deletion_committed_is_not_reported_failed(
    image: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_board(image) as board:
        uids: list[str] = []
        with contextlib.suppress(StorageFullError):
            while True:  # until the flash is full: the next deletion compacts
                uids.append(board.deliver("alice", body(len(uids))).uid)
        board.image.ops = FaultyOps(Plan(write_errno=EIO, write_after_bytes=4096))
        with caplog.at_level(logging.WARNING, "firmware.store.board"):
            board.delete("alice", uids[::2])  # must not raise; compaction must copy the rest
            kept = uids[1::2]
        assert "automatic compaction stopped" in caplog.text, caplog.text
        board.image.ops = FaultyOps(Plan())
        assert [m.uid for m in board.messages("alice")] == kept
    with open_board(image, repair=False) as board:
        assert board.fsck().clean
        assert [m.uid for m in board.messages("alice")] == kept


class SyncFailsAfter(FaultyOps):
    """fdatasync works `ok` times, then fails with EIO (after copies were written)."""

    def __init__(self, ok: int) -> None:
        super().__init__(Plan())
        self.ok = ok
        self.failed = 0

    def fdatasync(self, fd: int) -> None:  # type: ignore[override]
        if self.ok > 0:
            self.ok -= 1
            return super().fdatasync(fd)
        self.failed += 1
        raise OSError(EIO, "Input/output error")


def test_the_store_goes_on_after_a_compaction_that_failed_between_copies(image: Path) -> None:
    """Found by `test_fiu_device.py` once the index became columnar: the copies a failed
    compaction had written past the log's end were in no extent, and the next record
    appended after them was refused ("extent ... does not follow the log's end"): every
    delivery, QUIT and tray write failed from then on. Those copies are now dead space."""
    with open_board(image) as board:
        uids = [board.deliver("alice", body(n)).uid for n in range(6)]
        board.delete("alice", uids[::2])
        board.image.ops = SyncFailsAfter(0)  # the copies are written, their sync fails
        with pytest.raises(DeviceError, match="fsync failed"):
            board.compact()
        assert board.image.ops.failed
        board.image.ops = FaultyOps(Plan())
        kept = uids[1::2]
        kept.append(board.deliver("alice", b"Subject: after\r\n\r\nstill stored\r\n").uid)
        board.delete("alice", kept[:1])
        kept = kept[1:]
        board.compact()
        assert [m.uid for m in board.messages("alice")] == kept
    with open_board(image, repair=False) as board:
        assert board.fsck().clean
        assert [m.uid for m in board.messages("alice")] == kept
