"""Per-box exclusive access and login pacing shared by all sessions of one service.

Plain dictionaries, no trio: every session runs in the same trio thread, so an acquire is
atomic, and the core can be tested without an event loop.
"""

from __future__ import annotations


class BoxLocks:
    """Who holds each box (RFC 1939 §4 exclusive-access lock) and when each box last logged in.

    LOGIN-DELAY (RFC 2449 §6.5) is paced per box: the time of the last successful login is
    kept for every box that ever logged in, which is bounded by the number of boxes.
    """

    __slots__ = ("_holders", "_last_login")

    def __init__(self) -> None:
        self._holders: dict[str, int] = {}
        self._last_login: dict[str, float] = {}

    def acquire(self, box: str, session_id: int) -> bool:
        """Take `box` for `session_id`; False if another session holds it."""
        holder = self._holders.setdefault(box, session_id)
        return holder == session_id

    def release(self, box: str, session_id: int) -> None:
        """Give `box` back if `session_id` holds it; anything else is left alone."""
        if self._holders.get(box) == session_id:
            del self._holders[box]

    def holder(self, box: str) -> int | None:
        """The session holding `box`, if any."""
        return self._holders.get(box)

    def held(self) -> int:
        """How many boxes are locked now."""
        return len(self._holders)

    def seconds_since_login(self, box: str, now: float) -> float | None:
        """Seconds since the last successful login to `box`, or None if there was none."""
        last = self._last_login.get(box)
        return None if last is None else now - last

    def note_login(self, box: str, now: float) -> None:
        """Record a successful login to `box` at `now` (for LOGIN-DELAY)."""
        self._last_login[box] = now
