"""Who gets a POP3 session slot: the device's admission policy, sans I/O.

`Admission` decides for each new connection: admit it, admit it after evicting the oldest
connection that has not logged in (all slots are taken), or refuse it with a
`-ERR [SYS/TEMP]` reply (RFC 3206 §4: a temporary condition; the client may retry). It keeps
the open sessions, the per-client counts and the pre-login queue; it reserves the session's
RAM from the budget. No sockets, no tasks, no logging: the adapter (firmware/pop3/server.py)
applies the decision (sends the refusal, cancels the victim, starts the session) and reports
logins and ends back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from firmware.config.budget import RamBudget, Reservation
from firmware.errors import MemoryFullError
from firmware.security.abuse import ClientSessions, PreauthEvictor

SESSION_RAM: Final = 8192
"""Bytes each session reserves from the RAM budget for its receive and line buffers."""

EVICT_MIN_AGE_S: Final = 1.0
"""A pre-login connection younger than this is not evicted (a client still being served)."""

SYS_TEMP: Final = "SYS/TEMP"


@dataclass(frozen=True, slots=True)
class Admit:
    """Start a session numbered `session_id`, holding `reservation` until it ends.

    `evict`: the id of an open pre-login session to end first (its slot is this one's), or
    None.
    """

    session_id: int
    reservation: Reservation
    evict: int | None = None


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the connection: send `-ERR [code] text` and close.

    `limit`: which limit said no, for the auth log (`sessions`, `per-client`, `memory`).
    """

    limit: str
    text: str
    code: str = SYS_TEMP


Decision = Admit | Refuse


class Admission:
    """The open sessions and the rule that admits new ones (pop3.max_sessions,
    pop3.max_sessions_per_client, the RAM budget, eviction of the oldest pre-login session).

    `clock`: seconds, monotonic (the age of a pre-login connection).
    """

    __slots__ = ("_budget", "_clients", "_evictor", "_hosts", "_next_id")

    def __init__(self, budget: RamBudget, *, clock: Callable[[], float]) -> None:
        self._budget = budget
        self._clients = ClientSessions(1)
        self._evictor: PreauthEvictor[int] = PreauthEvictor(clock=clock)
        self._hosts: dict[int, str] = {}  # open session id -> client address
        self._next_id = 1

    @property
    def open_sessions(self) -> int:
        return len(self._hosts)

    def pre_login(self) -> int:
        """Open sessions that have not logged in (the ones eviction may end)."""
        return len(self._evictor)

    def decide(self, host: str, *, max_sessions: int, per_client: int) -> Decision:
        """The decision for a new connection from `host` under the present limits.

        An Admit is already counted (slot, per-client count, pre-login queue, RAM); the
        adapter must call `closed(session_id)` when that session ends, whatever happens. An
        evicted session stays counted until its own `closed`; it is out of the pre-login queue
        at once, so it is not chosen twice.
        """
        self._clients.limit = per_client
        evict: int | None = None
        if len(self._hosts) >= max_sessions:
            if self._clients.count(host) >= per_client:
                return Refuse("sessions", "too many POP3 sessions; try again later")
            evict = self._evictor.evict(min_age_s=EVICT_MIN_AGE_S)
            if evict is None:
                return Refuse("sessions", "too many POP3 sessions; try again later")
        elif self._clients.count(host) >= per_client:
            return Refuse("per-client", "too many POP3 sessions from your address")
        try:
            reservation = self._budget.reserve(SESSION_RAM, "POP3 session")
        except MemoryFullError:
            return Refuse("memory", "out of memory; try again later")
        session_id = self._next_id
        self._next_id += 1
        self._hosts[session_id] = host
        self._clients.acquire(host)
        self._evictor.add(session_id)
        return Admit(session_id, reservation, evict)

    def logged_in(self, session_id: int) -> None:
        """The session logged in: it is never evicted."""
        self._evictor.discard(session_id)

    def closed(self, session_id: int) -> None:
        """The session ended (every exit path): its slot and per-client count are free.
        Its RAM reservation is the adapter's to release."""
        host = self._hosts.pop(session_id, None)
        if host is not None:
            self._clients.release(host)
        self._evictor.discard(session_id)
