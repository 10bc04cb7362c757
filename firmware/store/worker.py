"""The store worker: the one way a running device reaches its Board, off the event loop.

A Board call may append and fsync (a delivery, a QUIT's deletions), copy hundreds of MiB
(compaction) or re-read the whole log (fsck): seconds on a real board's flash. On the trio
thread that would stall every POP3 session and the console for as long. So the running device
never calls a mutating Board method itself: it awaits `StoreWorker.run(fn, *args)`, which runs
`fn(*args)` in a worker thread, one operation at a time (a `trio.CapacityLimiter(1)`: the
board has one flash controller, and the Board is not written to be re-entered).

Readers on the event loop (a RETR pulling its next 64 KiB chunk, a plain-TCP RETR copying
from the mapped image) hold the board only for a short synchronous step, under the same
`BoardLock`: `async with worker.reading(): ...`. The lock is never waited for on the loop:
when the worker holds it, the reader sleeps briefly and tries again, so other sessions run.
Long operations hand the board over between steps: the Board calls `BoardLock.pause()`
between compaction segments (`Board.between_steps`), which lets readers that are waiting have
their turn, so a RETR goes on during a long compaction instead of stalling behind it. And the
worker gives the lock back while it waits for a flash sync (`StoreWorker.attach`), which
changes nothing a reader can see. Every operation runs `paced()` (firmware/store/pace.py):
the store's long loops then pause briefly every few milliseconds, so the event loop thread
gets the GIL in time to answer its sessions.

Password checks (PBKDF2, 4096 rounds, milliseconds each) need no board lock: credentials are
an immutable snapshot of NVRAM. They run on their own thread and limiter (`verify`), so a
login neither blocks the loop nor waits behind a compaction.

A cancelled caller does not abandon an operation: trio's `to_thread.run_sync` then waits for
the thread to finish (the store is never left half-done with nobody watching) and the result
is discarded; the cancellation takes effect at the caller's next checkpoint.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Final, TypeVar

import trio

from firmware.errors import NotRunningError
from firmware.flash.image import FileOps, Image
from firmware.store.pace import paced

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

T = TypeVar("T")

READ_RETRY_S: Final = 0.0005
"""First wait of a loop-side reader that found the board busy; doubles up to READ_RETRY_MAX_S."""
READ_RETRY_MAX_S: Final = 0.004
PAUSE_MAX_S: Final = 0.05
"""The longest a paused worker waits for readers to take their turn (a reader that gave up)."""


class BoardLock:
    """Mutual exclusion between the store worker and short loop-side reads of the Board.

    Not a plain `threading.Lock`: the loop side must never block on it (`try_acquire` only),
    and the worker must be able to let waiting readers in between the steps of a long
    operation (`pause`), which an unfair lock does not guarantee.
    """

    __slots__ = ("_cond", "_grants", "_held", "_owner", "_wanted")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._held = False
        self._owner: int | None = None  # the thread holding the lock
        self._wanted = 0  # loop-side readers waiting for a turn
        self._grants = 0  # turns taken by loop-side readers, ever

    @property
    def held(self) -> bool:
        return self._held

    def held_here(self) -> bool:
        """True if the calling thread holds the lock."""
        return self._held and self._owner == threading.get_ident()

    @property
    def waiting(self) -> int:
        """Loop-side readers waiting for the lock now."""
        return self._wanted

    def try_acquire(self) -> bool:
        """Take the lock if it is free (loop side: never waits); True if taken."""
        with self._cond:
            if self._held:
                return False
            self._held = True
            self._owner = threading.get_ident()
            self._grants += 1
            return True

    def acquire(self) -> None:
        """Take the lock, waiting as long as needed (the worker thread only)."""
        with self._cond:
            while self._held:
                self._cond.wait()
            self._held = True
            self._owner = threading.get_ident()

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._owner = None
            self._cond.notify_all()

    def want(self) -> None:
        """A loop-side reader waits for the lock (a paused worker gives way to it)."""
        with self._cond:
            self._wanted += 1

    def unwant(self) -> None:
        with self._cond:
            self._wanted -= 1

    def pause(self) -> None:
        """From the holder (the worker) between steps: let waiting readers have one turn each.

        Returns at once when nobody waits; otherwise releases, waits until every reader that
        was waiting has taken a turn (or PAUSE_MAX_S passed), and takes the lock back.
        """
        with self._cond:
            if not self._wanted:
                return
            target = self._grants + self._wanted
            owner, self._owner = self._owner, None
            self._held = False
            self._cond.notify_all()
            deadline = time.monotonic() + PAUSE_MAX_S
            while self._held or (self._wanted and self._grants < target):
                left = deadline - time.monotonic()
                if left <= 0 and not self._held:
                    break
                self._cond.wait(max(left, 0.001))
            self._held = True
            self._owner = owner


_M_ARENA_MAX: Final = -8  # glibc's mallopt() parameter number


@functools.cache
def one_malloc_arena() -> bool:
    """Make every thread allocate from glibc's main arena; True if that could be set.

    Each new thread otherwise gets an arena of its own, which keeps the MiB-sized buffers a
    store operation read with (a CRC check of a large message) resident after they are
    freed: a 50 MB RETR showed 2.3 MiB more RSS than on the loop thread, 1.0 MiB with one
    arena. The threads here never allocate in parallel (the GIL, one limiter each), so one
    arena costs nothing. Only glibc has mallopt(M_ARENA_MAX); elsewhere this does nothing.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(ctypes.c_int(_M_ARENA_MAX), ctypes.c_int(1)))


SWITCH_INTERVAL_S: Final = 0.001
"""How often a thread that runs Python code offers the GIL to the others (Python's default 5 ms)."""


def favour_the_event_loop() -> None:
    """Let the event loop get the GIL back within 1 ms while store work runs on a thread.

    A worker running Python code (a compaction relocating thousands of small records, a scan
    building its message) keeps the GIL for up to the switch interval; the loop needs it
    several times to answer one NOOP (wake, read, reply), so with Python's default 5 ms an
    idle session's NOOP took up to 30-40 ms during a compaction or a scan, and 17-23 ms with
    1 ms (`tools/bench latency`, busy 2-CPU VM). 0.2 ms gave no consistent gain once the
    store's long loops pause (firmware/store/pace.py) and compaction copies in large pieces
    (docs/benchmarks.md, latency). Process-wide; only lowers the interval.
    """
    if sys.getswitchinterval() > SWITCH_INTERVAL_S:
        sys.setswitchinterval(SWITCH_INTERVAL_S)


class _SyncOutsideLock(FileOps):
    """An image's file calls, with `fdatasync` run outside the board lock when the calling
    thread holds it (the worker, in the middle of an operation); see `StoreWorker.attach`."""

    __slots__ = ("_inner", "_lock")

    def __init__(self, inner: FileOps, lock: BoardLock) -> None:
        self._inner = inner
        self._lock = lock

    def pread(self, fd: int, length: int, offset: int, /) -> bytes:
        return self._inner.pread(fd, length, offset)

    def pwrite(self, fd: int, data: ReadableBuffer, offset: int, /) -> int:
        return self._inner.pwrite(fd, data, offset)

    def fdatasync(self, fd: int, /) -> None:  # type: ignore[override]
        lock = self._lock
        if not lock.held_here():
            self._inner.fdatasync(fd)
            return
        lock.release()
        try:
            self._inner.fdatasync(fd)
        finally:
            lock.acquire()


class StoreWorker:
    """Runs Board operations on a worker thread, one at a time; see the module docstring."""

    __slots__ = ("_auth_limiter", "_halted", "_limiter", "_reading", "lock", "operations")

    def __init__(self) -> None:
        one_malloc_arena()
        self.lock = BoardLock()
        self._reading = _Reading(self.lock)
        self._limiter = trio.CapacityLimiter(1)
        self._auth_limiter = trio.CapacityLimiter(1)
        self.operations = 0  # store operations run, for tests and the console
        self._halted = False

    def halt(self) -> None:
        """The power is off: from now on `run` refuses every operation that has not started
        (NotRunningError), so nothing is committed after the instant of a power cut. One
        already running on the thread finishes, as a write in flight would. `resume` at the
        next boot."""
        self._halted = True

    def resume(self) -> None:
        self._halted = False

    def attach(self, image: Image) -> None:
        """Let loop-side readers of `image` in while an operation waits for a flash sync.

        An fdatasync takes milliseconds (4 ms median on the development VM) and changes no
        state a reader sees: every Board operation syncs what it wrote *before* it changes
        the index or erases anything (a record is not in the index until its header is
        durable; compaction's copies are synced before the anchor moves and the originals
        are erased). So the worker gives the board lock back for the sync and takes it again
        after. Held through it, every login and RETR waited for every QUIT's commit and
        every delivery: fetch-and-delete sessions and mail delivery serialised on the flash.
        Idempotent; tests that swap `image.ops` for a faulty one drop it (and only lose this).
        """
        if not isinstance(image.ops, _SyncOutsideLock):
            image.ops = _SyncOutsideLock(image.ops, self.lock)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on the worker thread, holding the board; its result or its exception.

        Operations are serialised (CapacityLimiter(1)) and hold the BoardLock throughout,
        except where the Board pauses between steps. Not abandoned on cancellation.
        """
        return await self._run(fn, args, halted_too=False)

    async def finish(self, fn: Callable[..., T], *args: object) -> T:
        """Like `run`, even after `halt`: what the device does once its power is gone (let
        go of the image as a crash would), after any operation still running."""
        return await self._run(fn, args, halted_too=True)

    async def _run(self, fn: Callable[..., T], args: tuple[object, ...], *, halted_too: bool) -> T:
        lock = self.lock

        def call() -> T:
            lock.acquire()
            try:
                if self._halted and not halted_too:
                    raise NotRunningError("the device lost power; nothing was done")
                with paced():
                    return fn(*args)
            finally:
                lock.release()

        self.operations += 1
        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def verify(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on the password thread (PBKDF2, SASL steps): no board lock, not behind
        store operations, one at a time. `fn` may only read credentials (immutable)."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self._auth_limiter)

    def reading(self) -> AbstractAsyncContextManager[None]:
        """Hold the board for a short synchronous read on the event loop.

        `async with worker.reading(): ...` never blocks the loop: while the worker holds the
        board, it sleeps a little and retries (the worker gives way between the steps of a
        long operation). Nothing inside should await: the worker may be waiting.
        """
        return self._reading


class _Reading:
    """`StoreWorker.reading()`: a plain class, not @asynccontextmanager, as it runs once per
    RETR chunk and mapped write (a few microseconds less each); the state is in the lock, so
    one instance serves every reader."""

    __slots__ = ("_lock",)

    def __init__(self, lock: BoardLock) -> None:
        self._lock = lock

    async def __aenter__(self) -> None:
        lock = self._lock
        if lock.try_acquire():
            return
        lock.want()
        try:
            delay = READ_RETRY_S
            while not lock.try_acquire():
                await trio.sleep(delay)
                delay = min(delay * 2, READ_RETRY_MAX_S)
        finally:
            lock.unwant()

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
