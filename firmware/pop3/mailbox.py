"""The one way the POP3 core reaches stored mail: a small interface and its Board binding.

The protocol core only sees `Mailstore`, so it stays free of files and flash; the Board-backed
implementation below is the only place that knows how credentials and messages are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import trio

from firmware.pop3.auth import AuthCache
from firmware.security.credentials import Credentials, make_credentials, verify_password
from firmware.store.worker import StoreWorker

if TYPE_CHECKING:
    from firmware.store.board import Board

T = TypeVar("T")


class MessageRef(Protocol):
    """What the core needs to know about one message before reading it."""

    @property
    def uid(self) -> str: ...

    @property
    def size(self) -> int: ...


class Mailstore(Protocol):
    """Mailbox operations used by a POP3 session; DeviceError subclasses signal failures.

    Every call that may touch flash or spend CPU is a coroutine: on the device it runs on the
    store worker (firmware/store/worker.py), so the event loop never waits for an fsync, a
    compaction or PBKDF2. `credentials` and `apop_secret` only read the NVRAM snapshot.
    """

    async def check_password(self, box: str, password: str) -> bool:
        """True only if `box` exists and `password` is its password."""
        ...

    def credentials(self, box: str) -> Credentials | None:
        """What NVRAM keeps for `box` (SCRAM keys, maybe a legacy secret), or None: for SASL."""
        ...

    def apop_secret(self, box: str) -> str | None:
        """The shared secret APOP digests are made with, or None (no box, or no secret)."""
        ...

    async def sasl_step(self, step: Callable[[], T]) -> T:
        """Run one SASL step (it may verify a password) where password checks run."""
        ...

    async def messages(self, box: str) -> Sequence[MessageRef]:
        """The box's messages in arrival order, as the session will number them."""
        ...

    async def read_wire(self, box: str, uid: str, chunk_size: int) -> Opened:
        """The message byte-stuffed with CRLF line ends, without the final '.' line.

        Checked and its first chunk read before returning (CorruptRecordError here, before
        anything was sent); the rest is pulled chunk by chunk inside `reading()`.
        """
        ...

    async def read_top(self, box: str, uid: str, lines: int, chunk_size: int) -> Opened:
        """Headers, the blank line and the first `lines` body lines, in the same wire form."""
        ...

    def reading(self) -> AbstractAsyncContextManager[None]:
        """Hold the store while pulling the next chunk of an opened message (a short,
        synchronous read: `async with store.reading(): next(chunks)`)."""
        ...

    async def delete(self, box: str, uids: Sequence[str]) -> None:
        """Remove all of `uids` in one atomic, durable step, or none of them."""
        ...


@dataclass(frozen=True, slots=True)
class Opened:
    """A message opened for reading: the first chunk (b"" if empty) and the rest."""

    first: bytes
    rest: Iterator[bytes]


def _open(chunks: Iterator[bytes]) -> Opened:
    return Opened(next(chunks, b""), chunks)


INLINE_OPEN: Final = 256 * 1024
"""Messages up to this size (octets) are opened on the loop: their CRC check reads at most
this much from the page cache (~0.1 ms); larger ones are opened on the store worker."""


class _Deletion:
    __slots__ = ("box", "done", "error", "uids")

    def __init__(self, box: str, uids: Sequence[str]) -> None:
        self.box = box
        self.uids = list(uids)
        self.done = False
        self.error: BaseException | None = None


class GroupCommit:
    """QUITs' deletions committed together: one delete record and one fsync for all the
    sessions that reach QUIT while the previous commit is under way.

    Each session's deletions stay atomic and are durable before its `commit` returns (and so
    before its +OK): `Board.delete_many` writes one record for the batch and syncs it. A
    flash sync costs milliseconds and the worker runs one operation at a time, so one fsync
    per QUIT capped fetch-and-delete sessions at 1/fsync (~200/s on the development VM);
    batched, the cap is the batch size over that. The first waiter with nobody committing
    leads the next batch (its commit is shielded: the worker finishes it anyway, and the
    others wait for its outcome); the rest wait for that batch to end and look again.
    """

    __slots__ = ("_board", "_committing", "_queue", "_worker", "batches")

    def __init__(self, board: Board, worker: StoreWorker) -> None:
        self._board = board
        self._worker = worker
        self._queue: list[_Deletion] = []
        self._committing: trio.Event | None = None
        self.batches = 0  # store operations run, for tests

    async def commit(self, box: str, uids: Sequence[str]) -> None:
        """Remove `uids` from `box` atomically and durably (DeviceError: none removed)."""
        mine = _Deletion(box, uids)
        self._queue.append(mine)
        while not mine.done:
            if self._committing is None:
                await self._lead()
            else:
                await self._committing.wait()
        if mine.error is not None:
            raise mine.error

    async def _lead(self) -> None:
        batch, self._queue = self._queue, []
        committing = self._committing = trio.Event()
        self.batches += 1
        unfinished = RuntimeError("the deletions' commit did not finish")
        results: Sequence[BaseException | None] = [unfinished] * len(batch)
        try:
            with trio.CancelScope(shield=True):
                results = await self._worker.run(
                    self._board.delete_many, [(d.box, d.uids) for d in batch]
                )
        except Exception as exc:  # the record could not be written: nothing was removed
            results = [exc] * len(batch)
        finally:
            for deletion, error in zip(batch, results, strict=True):
                deletion.error = error
                deletion.done = True
            self._committing = None
            committing.set()


@cache
def _decoy_credentials() -> Credentials:
    return make_credentials("decoy password that no one can send")


class BoardMailstore:
    """`Mailstore` over the device's Board (firmware.store.board), through its StoreWorker.

    What writes or may take long runs on a thread: committing deletions (an fsync, maybe a
    compaction) on the worker; password checks (PBKDF2) on the worker's password thread; and
    opening a message larger than INLINE_OPEN octets (its first read checks the CRC of the
    whole record). Short reads run on the loop under the worker's board lock, taken without
    ever blocking the loop (`StoreWorker.reading`): the maildrop listing (RAM only), opening a
    small message, each later chunk of a message, an auth-cache hit (one HMAC). A thread hop
    costs about 0.2 ms of CPU; doing these on the worker halved sessions/s in
    `tools/bench pop3`.
    """

    __slots__ = ("_board", "_deletions", "auth_cache", "worker")

    def __init__(self, board: Board, worker: StoreWorker | None = None) -> None:
        self._board = board
        self.worker = worker if worker is not None else StoreWorker()
        self.worker.attach(board.image)  # logins and RETRs go on while a commit syncs
        self.auth_cache = AuthCache()
        self._deletions = GroupCommit(board, self.worker)

    async def check_password(self, box: str, password: str) -> bool:
        creds = self._board.box_credentials(box)
        if creds is not None and self.auth_cache.hit(box, password, creds):
            return True
        return await self.worker.verify(self._check_password, box, password)

    def _check_password(self, box: str, password: str) -> bool:
        creds = self._board.box_credentials(box)
        if creds is None:
            # Spend the same work as for a real box, so timing does not tell names apart.
            verify_password(_decoy_credentials(), password)
            return False
        if not verify_password(creds, password):
            return False
        self.auth_cache.remember(box, password, creds)
        return True

    def credentials(self, box: str) -> Credentials | None:
        return self._board.box_credentials(box)

    def apop_secret(self, box: str) -> str | None:
        creds = self._board.box_credentials(box)
        return None if creds is None else creds.legacy_secret

    async def sasl_step(self, step: Callable[[], T]) -> T:
        return await self.worker.verify(step)

    async def messages(self, box: str) -> Sequence[MessageRef]:
        async with self.worker.reading():
            return self._board.listing(box)  # two array copies, whatever the box holds

    async def _open(self, box: str, uid: str, opener: Callable[[], Iterator[bytes]]) -> Opened:
        async with self.worker.reading():
            small = self._board.message(box, uid).size <= INLINE_OPEN
            if small:
                return _open(opener())
        return await self.worker.run(lambda: _open(opener()))

    async def read_wire(self, box: str, uid: str, chunk_size: int) -> Opened:
        board = self._board
        return await self._open(box, uid, lambda: board.read_wire(box, uid, chunk_size=chunk_size))

    async def read_top(self, box: str, uid: str, lines: int, chunk_size: int) -> Opened:
        board = self._board
        return await self._open(
            box, uid, lambda: board.read_top(box, uid, lines, chunk_size=chunk_size)
        )

    def reading(self) -> AbstractAsyncContextManager[None]:
        return self.worker.reading()

    @property
    def image_path(self) -> Path:
        """The board image file, which holds every message in its wire form."""
        return self._board.path

    def wire_extents(self, box: str, uid: str, start: int) -> list[tuple[int, int]]:
        """Where the wire bytes from `start` to the end lie in the image file, right now.

        Only for a message whose RETR has already read (and checked) its first chunk through
        `read_wire`, and only while holding the worker's board lock (`worker.reading()`)
        until the bytes have been copied: a compaction may move the record and erase its
        old place as soon as the lock is free.
        """
        return self._board.wire_extents(box, uid, start, check=False)

    async def delete(self, box: str, uids: Sequence[str]) -> None:
        await self._deletions.commit(box, uids)
