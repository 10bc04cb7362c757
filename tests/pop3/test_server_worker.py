"""The service's store effects go through the device's StoreWorker (real Board, real sockets).

While the worker is busy with something long (here: an operation the test holds), a QUIT's
commit waits for it on the worker and other sessions are answered meanwhile; on the loop, the
old code committed at once and held every session for the whole commit.
"""

from __future__ import annotations

import threading

import trio

from firmware.config.budget import RamBudget
from firmware.pop3.server import Pop3Service
from firmware.store.board import Board
from firmware.store.worker import StoreWorker
from tests.pop3.conftest import BOB_PASSWORD, LiveProfile, RawClient


def _wait(event: threading.Event) -> None:
    assert event.wait(10)


async def test_quit_commits_on_the_worker_while_other_sessions_are_answered(
    board: Board, live_profile: LiveProfile, nursery: trio.Nursery
) -> None:
    worker = StoreWorker()
    service = Pop3Service(board, live_profile, RamBudget(1 << 26), worker=worker)
    port = await nursery.start(service.serve, "127.0.0.1", 0)
    alice = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    bob = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    assert (await alice.login()).startswith(b"+OK alice has 3 messages")
    assert (await bob.login("bob", BOB_PASSWORD)).startswith(b"+OK bob has 0 messages")
    assert await alice.cmd("DELE 1") == b"+OK message 1 deleted\r\n"

    started, release = threading.Event(), threading.Event()

    def busy() -> None:  # a long store operation (a compaction on real flash)
        started.set()
        _wait(release)

    nursery.start_soon(worker.run, busy)
    await trio.to_thread.run_sync(_wait, started)
    quit_reply: list[bytes] = []

    async def quit_alice() -> None:
        quit_reply.append(await alice.cmd("QUIT"))

    nursery.start_soon(quit_alice)
    for _ in range(5):  # bob is answered while alice's commit waits for the worker
        assert await bob.cmd("NOOP") == b"+OK\r\n"
    assert quit_reply == [] and len(board.messages("alice")) == 3
    operations = worker.operations
    release.set()
    with trio.fail_after(10):
        while not quit_reply:
            await trio.sleep(0.01)
    assert quit_reply == [b"+OK signing off (2 messages left)\r\n"]
    assert len(board.messages("alice")) == 2
    assert worker.operations == operations  # the commit was already queued on the worker
