"""The store worker: serialised off-loop operations, never abandoned, readers that never block
the loop, and a compaction that hands the board over between segments (real Board, real file).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from firmware.config.profile import factory
from firmware.device.boards import create_board
from firmware.errors import BoxError
from firmware.store.worker import StoreWorker
from tests.store.helpers import ADMIN

MIB = 1024 * 1024


def _wait(event: threading.Event) -> None:
    assert event.wait(10), "the other side never came"


async def test_operations_run_off_the_loop_one_at_a_time() -> None:
    worker = StoreWorker()
    loop_thread = threading.get_ident()
    running = 0
    most = 0
    threads: set[int] = set()

    def operation() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        threads.add(threading.get_ident())
        assert worker.lock.held
        time.sleep(0.01)
        running -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(worker.run, operation)
    assert most == 1
    assert loop_thread not in threads
    assert not worker.lock.held


async def test_errors_come_back_to_the_caller() -> None:
    def fails() -> None:
        raise BoxError("no box named 'x'")

    with pytest.raises(BoxError, match="no box"):
        await StoreWorker().run(fails)


async def test_a_cancelled_caller_waits_for_the_operation_to_finish() -> None:
    worker = StoreWorker()
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def operation() -> str:
        started.set()
        _wait(release)
        finished.append("done")
        return "result"

    returned: list[bool] = []

    async def caller(scope: trio.CancelScope) -> None:
        with scope:
            await worker.run(operation)
            await trio.lowlevel.checkpoint()  # the cancellation lands here, result discarded
        returned.append(scope.cancelled_caught)

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, scope)
        await trio.to_thread.run_sync(_wait, started)
        scope.cancel()
        await trio.sleep(0.05)
        assert not returned and not finished  # still waiting: the store is not left half-done
        release.set()
    assert finished == ["done"] and returned == [True]


async def test_a_reader_waits_for_the_worker_without_blocking_the_loop() -> None:
    worker = StoreWorker()
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def operation() -> None:
        started.set()
        _wait(release)
        order.append("operation done")

    async def reader() -> None:
        async with worker.reading():
            order.append("read")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run, operation)
        await trio.to_thread.run_sync(_wait, started)
        nursery.start_soon(reader)
        ticks = 0
        before = time.monotonic()
        while time.monotonic() - before < 0.1:  # the loop keeps running meanwhile
            await trio.sleep(0.005)
            ticks += 1
        assert ticks >= 5 and order == []
        release.set()
    assert order == ["operation done", "read"]


async def test_pause_lets_a_waiting_reader_in_between_steps() -> None:
    worker = StoreWorker()
    lock = worker.lock
    order: list[str] = []
    started = threading.Event()

    def long_operation() -> None:
        started.set()
        for step in range(3):
            deadline = time.monotonic() + 1  # a reader that barged in earlier: none comes
            while not lock.waiting and time.monotonic() < deadline:
                time.sleep(0.001)  # until the next reader waits
            order.append(f"step {step}")
            lock.pause()
        order.append("done")

    async def reader(n: int) -> None:
        async with worker.reading():
            order.append(f"read {n}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run, long_operation)
        await trio.to_thread.run_sync(_wait, started)
        for n in range(3):
            await reader(n)
    # Each reader got in while the operation was paused, before it went on to its end (a
    # reader may also slip in while the worker is still paused for an earlier one).
    assert order.index("step 0") < order.index("read 0") < order.index("step 1")
    assert order[-1] == "done" and sorted(order[:-1]) == sorted(
        [f"step {n}" for n in range(3)] + [f"read {n}" for n in range(3)]
    )


def test_pause_returns_at_once_when_nobody_waits() -> None:
    worker = StoreWorker()
    worker.lock.acquire()
    before = time.monotonic()
    worker.lock.pause()
    assert time.monotonic() - before < 0.01 and worker.lock.held
    worker.lock.release()


async def test_messages_read_on_the_loop_stay_whole_while_the_worker_compacts(
    tmp_path: Path,
) -> None:
    """Chunks read on the loop (as RETR pulls them) during a compaction on the worker, which
    moves and erases the records being read, are exactly the stored bytes."""
    board = create_board(tmp_path / "board.img", factory("DP-3530"), ADMIN, size=64 * MIB)
    try:
        worker = StoreWorker()
        board.between_steps = worker.lock.pause
        board.add_box("alice", "alice-pw")
        bodies = {}
        doomed = []
        for n in range(24):
            body = b"Subject: %d\r\n\r\n" % n + (b"%07d " % n) * 100_000 + b"\r\n"
            uid = board.deliver("alice", body).uid
            if n % 2:
                bodies[uid] = body
            else:
                doomed.append(uid)
        board.delete("alice", doomed)
        expected = {uid: b"".join(board.read_wire("alice", uid)) for uid in bodies}
        compacted = trio.Event()
        reads = 0

        async def compact() -> None:
            report = await worker.run(board.compact)
            assert report.records_moved >= 12
            compacted.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(compact)
            while not compacted.is_set():
                for uid, wire in expected.items():
                    async with worker.reading():
                        chunks = board.read_wire("alice", uid, chunk_size=65536)
                    got = b""
                    while True:
                        async with worker.reading():
                            chunk = next(chunks, None)
                        if chunk is None:
                            break
                        got += chunk
                        await trio.lowlevel.checkpoint()
                    assert got == wire
                    reads += 1
        assert reads >= 1
    finally:
        board.close()


async def test_password_checks_do_not_queue_behind_a_store_operation() -> None:
    """PBKDF2 runs on its own thread and limiter: a login is not held up by a compaction."""
    worker = StoreWorker()
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def long_operation() -> None:
        started.set()
        _wait(release)
        order.append("operation")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run, long_operation)
        await trio.to_thread.run_sync(_wait, started)
        assert await worker.verify(lambda: "checked") == "checked"
        order.append("verified")
        release.set()
    assert order == ["verified", "operation"]
