"""Cooperative pauses in the store's long loops, so the event loop gets the GIL in time.

The store worker (firmware/store/worker.py) runs Board operations on a thread while the trio
loop serves POP3 sessions on another. Both need the GIL. A loop that makes a system call every
few microseconds (a compaction's preads and pwrites) releases the GIL at each call and takes it
straight back: the waiting loop thread is woken each time, finds the GIL taken again and starts
its switch-interval wait from zero (CPython's `take_gil`), so it may wait for the whole
operation. `give_way` breaks that: called once per step of a long loop, it sleeps PAUSE_S (long
enough for a waiting thread to wake and take the GIL) once GIVE_WAY_AFTER_S of work has passed
since the last pause. It does nothing on a thread that has not asked for it (`paced`): the
command-line tools and the tests' direct Board calls are not slowed down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

GIVE_WAY_AFTER_S: Final = 0.002
"""Work (seconds) after which `give_way` pauses: the loop's worst extra wait, roughly."""
PAUSE_S: Final = 0.0001
"""The pause: a GIL waiter is woken in tens of microseconds (futex wake-up, 2-CPU VM)."""


class _Pacing(threading.local):
    on = False
    since = 0.0  # time.perf_counter() at the last pause
    pauses = 0  # pauses taken on this thread, ever (for tests)


_pacing = _Pacing()


def give_way() -> None:
    """Between two steps of a long store loop: pause PAUSE_S if GIVE_WAY_AFTER_S has passed.

    About 0.1 us when not due; a no-op unless the calling thread is inside `paced()`.
    """
    state = _pacing
    if state.on:
        now = time.perf_counter()
        if now - state.since >= GIVE_WAY_AFTER_S:
            time.sleep(PAUSE_S)
            state.pauses += 1
            state.since = time.perf_counter()


@contextmanager
def paced() -> Iterator[None]:
    """Let `give_way` pause on this thread for the duration (the store worker's operations)."""
    state = _pacing
    was = state.on
    state.on = True
    state.since = time.perf_counter()
    try:
        yield
    finally:
        state.on = was


def pauses() -> int:
    """How many pauses `give_way` has taken on the calling thread."""
    return _pacing.pauses
