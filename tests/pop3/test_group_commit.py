"""QUITs that arrive together commit their deletions in one record and one fsync (real Board).

Each session's deletions stay atomic and are durable before its QUIT is answered; one
session's bad request or cancellation does not touch the others'.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from firmware.device.boards import open_board
from firmware.errors import BoxError, ImageError
from firmware.flash.image import FileOps
from firmware.pop3.mailbox import BoardMailstore
from firmware.store.board import Board
from firmware.store.worker import StoreWorker

if TYPE_CHECKING:
    from _typeshed import HasFileno

BOXES = [f"box{i}" for i in range(5)]


class _CountingOps(FileOps):
    def __init__(self) -> None:
        self.syncs = 0

    def fdatasync(self, fd: int | HasFileno) -> None:
        self.syncs += 1
        os.fdatasync(fd)


def _fill(board: Board) -> dict[str, list[str]]:
    uids = {}
    for name in BOXES:
        board.add_box(name, f"{name}-pw")
        uids[name] = [board.deliver(name, b"Subject: %d\r\n\r\nx\r\n" % i).uid for i in range(3)]
    return uids


def test_delete_many_is_one_record_and_one_sync(board: Board, image_path: Path) -> None:
    uids = _fill(board)
    ops = _CountingOps()
    board.image.ops = ops
    results = board.delete_many(
        [("box0", uids["box0"][:2]), ("box1", ["no-such-uid"]), ("box2", uids["box2"])]
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], BoxError)  # refused alone: nothing of box1 removed
    assert ops.syncs == 1
    board.close()
    again = open_board(image_path)
    try:
        left = {name: [m.uid for m in again.messages(name)] for name in BOXES[:3]}
    finally:
        again.close()
    assert left == {"box0": uids["box0"][2:], "box1": uids["box1"], "box2": []}


def _wait(event: threading.Event) -> None:
    assert event.wait(10)


async def test_quits_during_a_commit_share_the_next_one(board: Board, image_path: Path) -> None:
    uids = _fill(board)
    worker = StoreWorker()
    store = BoardMailstore(board, worker)
    started, release = threading.Event(), threading.Event()

    def busy() -> None:  # the worker is busy (a compaction, another session's commit)
        started.set()
        _wait(release)

    done: list[str] = []

    async def quit_(name: str) -> None:
        await store.delete(name, uids[name][:1])
        done.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run, busy)
        await trio.to_thread.run_sync(_wait, started)
        for name in BOXES:
            nursery.start_soon(quit_, name)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []  # nothing is answered before its commit
        release.set()
    assert sorted(done) == BOXES
    # box0's QUIT led a commit of its own (it found nobody committing); the four that
    # arrived while it waited for the worker went together in the next.
    assert store._deletions.batches == 2
    board.close()
    again = open_board(image_path)
    try:
        assert all([m.uid for m in again.messages(n)] == uids[n][1:] for n in BOXES)
    finally:
        again.close()


async def test_a_cancelled_leader_still_commits_for_everyone(board: Board) -> None:
    uids = _fill(board)
    worker = StoreWorker()
    store = BoardMailstore(board, worker)
    started, release = threading.Event(), threading.Event()

    def busy() -> None:
        started.set()
        _wait(release)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run, busy)
        await trio.to_thread.run_sync(_wait, started)
        leader = trio.CancelScope()

        async def lead() -> None:
            with leader:
                await store.delete("box0", uids["box0"])

        nursery.start_soon(lead)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(store.delete, "box1", uids["box1"])
        await trio.testing.wait_all_tasks_blocked()
        leader.cancel()  # the session was killed while its commit waited for the worker
        release.set()
    # The leader's batch (box0) was committed anyway; box1, queued behind it, too.
    assert board.messages("box0") == [] and board.messages("box1") == []


async def test_a_failed_commit_fails_its_whole_batch_and_removes_nothing(board: Board) -> None:
    uids = _fill(board)
    store = BoardMailstore(board, StoreWorker())

    class _NoSync(FileOps):
        def fdatasync(self, fd: int | HasFileno) -> None:
            raise OSError(5, "Input/output error")

    board.image.ops = _NoSync()
    with pytest.raises(ImageError, match="Input/output error"):
        await store.delete("box0", uids["box0"])
    board.image.ops = FileOps()
    assert len(board.messages("box0")) == 3
    await store.delete("box0", uids["box0"][:1])  # the next commit works
    assert len(board.messages("box0")) == 2


class _SlowSync(FileOps):
    """An fdatasync that waits until the test lets it finish (a slow flash)."""

    def __init__(self) -> None:
        self.entered, self.finish = threading.Event(), threading.Event()

    def fdatasync(self, fd: int | HasFileno) -> None:
        self.entered.set()
        _wait(self.finish)
        os.fdatasync(fd)


async def test_reads_go_on_while_a_commit_waits_for_its_sync(board: Board) -> None:
    """The worker gives the board lock back for an fdatasync: a login's listing and a RETR's
    open (loop-side reads under the lock) do not wait for another session's commit."""
    uids = _fill(board)
    slow = _SlowSync()
    board.image.ops = slow
    worker = StoreWorker()
    store = BoardMailstore(board, worker)  # attaches: syncs run outside the board lock
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.delete, "box0", uids["box0"])
        await trio.to_thread.run_sync(_wait, slow.entered)
        assert not worker.lock.held  # given back for the sync
        with trio.fail_after(5):
            listing = await store.messages("box1")
            opened = await store.read_wire("box1", uids["box1"][0], 65536)
        assert len(listing) == 3 and opened.first.startswith(b"Subject: 0")
        assert len(board.messages("box0")) == 3  # not committed until the sync returns
        slow.finish.set()
    assert board.messages("box0") == []
    assert not worker.lock.held
