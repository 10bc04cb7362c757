"""Abuse controls for the POP3 adapter: pure bookkeeping with an injected clock.

Nothing here sleeps or closes anything; the trio adapter asks and acts:

- LoginPenalty   how long to wait before answering a failed login from an address
- BoxLockout     whether a box is locked after many failures (from any address)
- ClientSessions how many sessions one address holds, against pop3.max_sessions_per_client
- PreauthEvictor which not-yet-logged-in connection to drop when every session slot is taken

Every table is bounded, so a flood of addresses or names cannot grow memory without limit.
Clients are keyed by `client_key(ip)`: an IPv6 client counts per /64, since one host
usually owns a whole /64.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

Clock = Callable[[], float]

PENALTY_CAP_S = 15.0  # as Dovecot: 2, 4, 8, 15 s
PENALTY_FORGET_S = 3600.0  # an address with no failure for an hour starts afresh
PENALTY_MAX_ENTRIES = 4096

LOCKOUT_FAILURES = 10  # failures of one box ...
LOCKOUT_WINDOW_S = 600.0  # ... within 10 minutes ...
LOCKOUT_S = 900.0  # ... lock it for 15 minutes
LOCKOUT_MAX_ENTRIES = 1024


@functools.lru_cache(maxsize=4096)
def client_key(address: str) -> str:
    """The key one client is counted under: the IPv4 address, or the IPv6 /64 prefix.

    Cached: every POP3 connection asks three times (admission count, acquire, release), and
    parsing an address with `ipaddress` costs ~3 us; the answer never changes.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # not an IP (a test transport, a UNIX socket): count it as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class _Penalty:
    failures: int
    last: float


class LoginPenalty:
    """Per-client delay after failed logins: base, 2*base, 4*base ... up to a cap.

    Reset by a successful login; forgotten after `forget_after_s` without failures.
    `base_delay_s` is pop3.auth_failure_delay_s and may be changed while running.
    """

    def __init__(
        self,
        base_delay_s: float,
        *,
        cap_s: float = PENALTY_CAP_S,
        forget_after_s: float = PENALTY_FORGET_S,
        max_entries: int = PENALTY_MAX_ENTRIES,
        clock: Clock = time.monotonic,
    ) -> None:
        self.base_delay_s = base_delay_s
        self.cap_s = cap_s
        self._forget_after_s = forget_after_s
        self._max_entries = max_entries
        self._clock = clock
        self._table: OrderedDict[str, _Penalty] = OrderedDict()  # oldest failure first

    def __len__(self) -> int:
        return len(self._table)

    def _expire(self, now: float) -> None:
        while self._table:
            key, entry = next(iter(self._table.items()))
            if now - entry.last < self._forget_after_s:
                break
            del self._table[key]

    def failures(self, address: str) -> int:
        """Recent failures counted against this client."""
        self._expire(self._clock())
        entry = self._table.get(client_key(address))
        return entry.failures if entry else 0

    def delay_for(self, failures: int) -> float:
        """The delay after the n-th consecutive failure (n >= 1)."""
        if failures <= 0 or self.base_delay_s <= 0:
            return 0.0
        return min(self.cap_s, self.base_delay_s * (1 << min(failures - 1, 32)))

    def failure(self, address: str) -> float:
        """Count a failed login; return the seconds to wait before answering it."""
        now = self._clock()
        self._expire(now)
        key = client_key(address)
        entry = self._table.pop(key, None) or _Penalty(0, now)
        entry.failures += 1
        entry.last = now
        self._table[key] = entry  # now the newest
        while len(self._table) > self._max_entries:
            self._table.popitem(last=False)
        return self.delay_for(entry.failures)

    def success(self, address: str) -> None:
        """A login from this client worked: forget its failures."""
        self._table.pop(client_key(address), None)


class BoxLockout:
    """Locks a box that fails `max_failures` logins within `window_s`, for `lock_s`.

    This stops a guesser who spreads over many addresses, at a price: anyone can lock a box
    by failing on purpose. Locks end by themselves; `unlock` is the administrator's way out.
    """

    def __init__(
        self,
        *,
        max_failures: int = LOCKOUT_FAILURES,
        window_s: float = LOCKOUT_WINDOW_S,
        lock_s: float = LOCKOUT_S,
        max_entries: int = LOCKOUT_MAX_ENTRIES,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self.max_failures = max_failures
        self.window_s = window_s
        self.lock_s = lock_s
        self._max_entries = max_entries
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}

    def _lock_active(self, box: str, now: float) -> bool:
        until = self._locked_until.get(box)
        if until is None:
            return False
        if now >= until:
            del self._locked_until[box]
            return False
        return True

    def is_locked(self, box: str) -> bool:
        """True while logins to `box` are refused whatever the password."""
        return self._lock_active(box, self._clock())

    def failure(self, box: str) -> bool:
        """Count a failed login to `box`; True when this failure locks it."""
        now = self._clock()
        if self._lock_active(box, now):
            return False  # failing on a locked box does not extend the lock
        times = self._failures.pop(box, None) or deque(maxlen=self.max_failures)
        times.append(now)
        while times and now - times[0] > self.window_s:
            times.popleft()
        if len(times) >= self.max_failures:
            self._locked_until[box] = now + self.lock_s
            while len(self._locked_until) > self._max_entries:  # keep the newest locks
                del self._locked_until[min(self._locked_until, key=self._locked_until.__getitem__)]
            return True
        self._failures[box] = times
        while len(self._failures) > self._max_entries:
            self._failures.popitem(last=False)
        return False

    def success(self, box: str) -> None:
        """A correct login to an unlocked box clears its failure count."""
        self._failures.pop(box, None)

    def unlock(self, box: str) -> bool:
        """Lift a lock and forget the box's failures; True if it was locked."""
        self._failures.pop(box, None)
        return self._locked_until.pop(box, None) is not None

    def locked_boxes(self) -> dict[str, float]:
        """Locked box -> seconds until it unlocks, by name (for `status`)."""
        now = self._clock()
        for box in [b for b, until in self._locked_until.items() if now >= until]:
            del self._locked_until[box]
        return {box: self._locked_until[box] - now for box in sorted(self._locked_until)}


class ClientSessions:
    """Open sessions per client, bounded by pop3.max_sessions_per_client (changeable live)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def __len__(self) -> int:
        """Clients with at least one session."""
        return len(self._open)

    def count(self, address: str) -> int:
        return self._open.get(client_key(address), 0)

    def acquire(self, address: str) -> bool:
        """Take a session slot for this client; False when it already holds `limit`."""
        key = client_key(address)
        held = self._open.get(key, 0)
        if held >= self.limit:
            return False
        self._open[key] = held + 1
        return True

    def release(self, address: str) -> None:
        """Give a slot back (every session that acquired one, on every exit path)."""
        key = client_key(address)
        held = self._open.get(key, 0)
        if held <= 0:
            raise RuntimeError(f"session slot of {key} released more often than acquired")
        if held == 1:
            del self._open[key]
        else:
            self._open[key] = held - 1


Conn = TypeVar("Conn", bound=Hashable)


class PreauthEvictor(Generic[Conn]):
    """Connections not yet logged in, oldest first: who makes room when all slots are taken.

    The adapter adds a connection when it is admitted, discards it at login or close, and
    when a new client finds every session taken, cancels `oldest()` and admits the new one.
    So idle or slow pre-login connections cannot starve real users; logged-in ones are
    never evicted.
    """

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._since: OrderedDict[Conn, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._since)

    def __contains__(self, conn: object) -> bool:
        return conn in self._since

    def add(self, conn: Conn) -> None:
        """A connection was admitted and has not logged in yet."""
        self._since.pop(conn, None)
        self._since[conn] = self._clock()

    def discard(self, conn: Conn) -> None:
        """The connection logged in or closed (harmless if already gone)."""
        self._since.pop(conn, None)

    def oldest(self, *, min_age_s: float = 0.0) -> Conn | None:
        """The longest-waiting pre-login connection, if it has waited at least `min_age_s`."""
        if not self._since:
            return None
        conn, since = next(iter(self._since.items()))
        return conn if self._clock() - since >= min_age_s else None

    def evict(self, *, min_age_s: float = 0.0) -> Conn | None:
        """`oldest()` and forget it: the one the adapter should now cancel."""
        conn = self.oldest(min_age_s=min_age_s)
        if conn is not None:
            del self._since[conn]
        return conn


class LoginGuard:
    """LoginPenalty and BoxLockout together, as the POP3 core asks at every login.

    One per service (shared by all sessions):

        if (reason := guard.refusal(box)) is not None:   # locked: fail without checking
            ...
        delay = guard.failed(peer, box)   # on failure: wait this long, then -ERR
        guard.succeeded(peer, box)        # on success
    """

    def __init__(
        self,
        base_delay_s: float,
        *,
        clock: Clock = time.monotonic,
        lockout_failures: int = LOCKOUT_FAILURES,
        lockout_window_s: float = LOCKOUT_WINDOW_S,
        lockout_s: float = LOCKOUT_S,
    ) -> None:
        self.penalty = LoginPenalty(base_delay_s, clock=clock)
        self.lockout = BoxLockout(
            max_failures=lockout_failures, window_s=lockout_window_s, lock_s=lockout_s, clock=clock
        )

    def refusal(self, box: str | None) -> str | None:
        """The reason "box-locked" while logins to `box` are refused, else None."""
        return "box-locked" if box and self.lockout.is_locked(box) else None

    def failed(self, address: str, box: str | None) -> float:
        """Count a failed login; the seconds to wait before answering -ERR."""
        if box:
            self.lockout.failure(box)
        return self.penalty.failure(address)

    def succeeded(self, address: str, box: str) -> None:
        """A login worked: clear the client's penalty and the box's failure count."""
        self.penalty.success(address)
        self.lockout.success(box)


ADMIN_FAILURES_PER_LOCK = 3  # wrong admin passwords in a row before admin logins lock
ADMIN_LOCK_BASE_S = 30.0  # the first lock-out; each further one doubles ...
ADMIN_LOCK_MAX_S = 900.0  # ... up to 15 minutes


class AdminLockout:
    """The admin account's lock-out, shared by every front-end that logs the admin in.

    One per device (`Device.admin_lockout`): the serial console and the HTTP API count their
    failures together, so a guesser gains nothing by switching between them. Every
    `ADMIN_FAILURES_PER_LOCK`-th wrong password in a row locks admin logins for a time that
    doubles with each lock-out (30 s, 60 s ... 900 s); while locked, even the right password
    is refused. A good password clears the counts. Times are the caller's clock (seconds);
    nothing here sleeps.
    """

    def __init__(
        self,
        *,
        failures_per_lock: int = ADMIN_FAILURES_PER_LOCK,
        base_s: float = ADMIN_LOCK_BASE_S,
        max_s: float = ADMIN_LOCK_MAX_S,
    ) -> None:
        if failures_per_lock < 1:
            raise ValueError("failures_per_lock must be at least 1")
        self.failures_per_lock = failures_per_lock
        self.base_s = base_s
        self.max_s = max_s
        self.failures = 0  # wrong passwords since the last good one
        self.lockouts = 0  # lock-outs since the last good password
        self.locked_until = 0.0

    def seconds_left(self, now: float) -> float:
        """Seconds until admin logins are accepted again; 0.0 when not locked."""
        return max(0.0, self.locked_until - now)

    def failure(self, now: float) -> float:
        """Count a wrong password at `now`; return the lock-out it starts in seconds (0.0:
        none yet)."""
        self.failures += 1
        if self.failures % self.failures_per_lock:
            return 0.0
        self.lockouts += 1
        span: float = min(self.base_s * float(2 ** min(self.lockouts - 1, 32)), self.max_s)
        self.locked_until = now + span
        return span

    def success(self) -> None:
        """The right password, accepted: forget the failures and lock-outs."""
        self.failures = self.lockouts = 0
