"""Storage faults under the committed store, injected through the image's `FileOps` seam.

For every operation that writes (deliver, delete batch, NVRAM update, compaction) and every
fault (ENOSPC, EIO on write, EIO on fsync, short writes running into ENOSPC): the operation
gets a clean `DeviceError` (StorageFullError or ImageError, nothing else), what the board
shows is unchanged, the image reopens to the same state with a clean fsck, and the same
operation succeeds once the fault is gone. Short writes alone are no fault at all. A torn
write at the last record (the power goes half-way through its header) is discarded at the
next boot and nothing before it is touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from firmware.config.budget import RamBudget
from firmware.device.boards import open_board, saved_profile
from firmware.errors import DeviceError, ImageError, StorageFullError
from firmware.pop3.locks import BoxLocks
from firmware.pop3.mailbox import BoardMailstore
from firmware.pop3.protocol import Pop3Protocol
from firmware.store.board import Board
from tests.pop3.driver import Driver
from tests.reliability.faults import EIO, ENOSPC, FaultyOps, Plan, PowerCut
from tests.reliability.harness import new_image

BOXES = ("alice", "bob")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = new_image(tmp_path / "faults.img", size="4MiB")
    with open_board(path) as board:
        for box in BOXES:
            board.add_box(box, f"{box}-pw")
            for i in range(6):
                board.deliver(box, b"Subject: %d\r\n\r\n" % i + b"body line\r\n" * (300 * i + 1))
        board.delete("alice", [m.uid for m in board.messages("alice")[:3]])
    return path


@dataclass(frozen=True)
class Snapshot:
    boxes: tuple[str, ...]
    messages: tuple[tuple[str, str, str], ...]  # box, uid, sha256 of the wire bytes
    settings: tuple[tuple[str, str], ...]
    live: int


def snapshot(board: Board) -> Snapshot:
    messages = []
    for box in board.box_names():
        for msg in board.messages(box):
            digest = hashlib.sha256(b"".join(board.read_wire(box, msg.uid))).hexdigest()
            messages.append((box, msg.uid, digest))
    return Snapshot(
        tuple(board.box_names()),
        tuple(messages),
        tuple(sorted(board.settings().items())),
        board.usage().live,
    )


Operation = Callable[[Board], object]

OPERATIONS: dict[str, Operation] = {
    "deliver": lambda b: b.deliver("bob", b"Subject: new\r\n\r\n" + b"x" * 20_000 + b"\r\n"),
    "delete": lambda b: b.delete("bob", [m.uid for m in b.messages("bob")[:2]]),
    "nvram": lambda b: b.set_setting("lab.note", "written under a fault"),
    "add-box": lambda b: b.add_box("carol", "carol-pw"),
    "compact": lambda b: b.compact(),
}

FAULTS: dict[str, tuple[Plan, type[DeviceError]]] = {
    "enospc": (Plan(write_errno=ENOSPC), StorageFullError),
    "eio-write": (Plan(write_errno=EIO), ImageError),
    # 16-byte writes, then the file system fills up 50 bytes in: inside the first header.
    "short-then-enospc": (
        Plan(max_write=16, write_errno=ENOSPC, write_after_bytes=50),
        StorageFullError,
    ),
    "eio-fsync": (Plan(sync_errno=EIO), ImageError),
}


def armed(board: Board, plan: Plan) -> FaultyOps:
    ops = FaultyOps(plan)
    board.image.ops = ops
    return ops


def disarm(board: Board) -> None:
    board.image.ops = FaultyOps(Plan())


def cases() -> list[object]:
    out: list[object] = []
    for operation in OPERATIONS:
        for fault in FAULTS:
            out.append(pytest.param(operation, fault, id=f"{operation}-{fault}"))
    return out


@pytest.mark.parametrize(("operation", "fault"), cases())
def test_a_storage_fault_fails_the_operation_cleanly_and_changes_nothing(
    image: Path, operation: str, fault: str
) -> None:
    plan, expected = FAULTS[fault]
    run = OPERATIONS[operation]
    with open_board(image) as board:
        before = snapshot(board)
        ops = armed(board, plan)
        with pytest.raises(DeviceError) as caught:
            run(board)
        assert isinstance(caught.value, expected), repr(caught.value)
        assert ops.faults >= 1
        disarm(board)
        assert snapshot(board) == before  # what the running device shows
    with open_board(image) as board:  # what the next boot finds
        assert snapshot(board) == before
        assert board.fsck().clean
        run(board)  # the fault is gone: the same operation now works
        after = snapshot(board)
    with open_board(image) as board:
        assert snapshot(board) == after and board.fsck().clean


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_short_writes_are_no_fault(image: Path, operation: str) -> None:
    with open_board(image) as board:
        armed(board, Plan(max_write=7))
        OPERATIONS[operation](board)
        expected = snapshot(board)
    with open_board(image) as board:
        assert snapshot(board) == expected and board.fsck().clean


def test_a_read_error_fails_the_read_and_nothing_else(image: Path) -> None:
    with open_board(image) as board:
        before = snapshot(board)
        uid = board.messages("bob")[0].uid
        armed(board, Plan(read_errno=EIO))
        with pytest.raises(ImageError, match="read failed"):
            b"".join(board.read_wire("bob", uid))
        assert board.messages("bob")[0].uid == uid
        disarm(board)
        assert snapshot(board) == before


@pytest.mark.parametrize("cut_at", [1, 4, 20, 40, 67])
@pytest.mark.parametrize("operation", ["deliver", "delete"])
def test_a_torn_last_record_is_discarded_at_boot(image: Path, operation: str, cut_at: int) -> None:
    with open_board(image) as board:
        before = snapshot(board)
        armed(board, Plan(tear_header_at=cut_at))
        with pytest.raises(PowerCut):
            OPERATIONS[operation](board)
        board.image.close()  # the process is gone; its lock goes with it
    with open_board(image, repair=False) as board:
        assert snapshot(board) == before
        assert board.fsck().clean
    with open_board(image) as board:  # a real boot erases the torn tail ...
        assert snapshot(board) == before
        OPERATIONS[operation](board)  # ... and the log goes on from there
        after = snapshot(board)
    with open_board(image) as board:
        assert snapshot(board) == after
        assert not [p for p in board.fsck().problems if p.what == "torn"]


# ----- the same faults as a POP3 client sees them -------------------------------------------


def pop3_session(board: Board) -> Driver:
    protocol = Pop3Protocol(
        BoardMailstore(board),
        lambda: saved_profile(board),
        BoxLocks(),
        RamBudget(1 << 24),
        session_id=1,
        clock=lambda: 1000.0,
    )
    wire = Driver(protocol)
    for line in (b"USER bob", b"PASS bob-pw"):
        assert trio.run(wire.feed, line + b"\r\n").startswith(b"+OK")
    return wire


@pytest.mark.parametrize("errno_", [ENOSPC, EIO])
def test_quit_under_a_write_fault_says_sys_temp_and_removes_nothing(
    image: Path, errno_: int
) -> None:
    with open_board(image) as board:
        before = snapshot(board)
        session = pop3_session(board)
        assert trio.run(session.feed, b"DELE 1\r\nDELE 2\r\n") == (
            b"+OK message 1 deleted\r\n+OK message 2 deleted\r\n"
        )
        armed(board, Plan(write_errno=errno_))
        reply = trio.run(session.feed, b"QUIT\r\n")
        assert reply.startswith(b"-ERR [SYS/"), reply
        disarm(board)
        assert snapshot(board) == before
    with open_board(image) as board:
        assert snapshot(board) == before


def test_retr_under_a_read_fault_is_an_err_before_any_byte(image: Path) -> None:
    with open_board(image) as board:
        session = pop3_session(board)
        armed(board, Plan(read_errno=EIO))
        reply = trio.run(session.feed, b"RETR 1\r\n")
        assert reply.startswith(b"-ERR"), reply
        disarm(board)
        assert trio.run(session.feed, b"RETR 1\r\n").startswith(b"+OK")  # the session goes on
