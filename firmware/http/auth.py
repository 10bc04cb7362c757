"""HTTP Basic authentication (RFC 7617) of the console's admin account.

The user is `admin`; the password is the console's, checked against the NVRAM credentials
(PBKDF2, in a worker thread so the loop keeps serving). Failures count in the device's one
`AdminLockout` with the console's: every third wrong password in a row locks admin logins
for 30 s, doubling to 900 s; while locked every request gets 429 with Retry-After, even with
the right password. Failures are written to the auth log (`service=http`), so the same
fail2ban filter that watches POP3 sees them.

A PBKDF2 check per request would cap the API at a few hundred requests a second and queue
every request behind one lock. `VerifiedCache` remembers credentials that passed: the key is
HMAC-SHA256 of `user:password` under a random key made at start (the password itself is
never kept), each entry bound to the admin credentials' generation (`stamp`: the NVRAM
generation and the boot, so a password change from the console, the API or a reboot drops
every entry) and kept at most `CACHE_TTL_S`. A request whose credentials are in the cache
skips the check and its lock; the lock-out is read first all the same (429 while locked).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import trio

from firmware.http.errors import ApiError
from firmware.security.abuse import AdminLockout
from firmware.security.authlog import log_event

log = logging.getLogger("dpfw.http")

ADMIN_USER = "admin"
REALM = 'Basic realm="dpfw admin", charset="UTF-8"'
_CHALLENGE = {"WWW-Authenticate": REALM}
CACHE_TTL_S = 300.0  # a verified password is trusted this long without another PBKDF2
CACHE_SIZE = 16  # credentials remembered (the admin has one password; a few in flight)


class VerifiedCache:
    """Credentials verified recently, keyed by HMAC-SHA256(random key, "user:password").

    `hit(creds, stamp, now)` is True for credentials added with the same `stamp` less than
    `ttl` seconds before `now`; anything else (a new stamp, an old entry) misses. Never holds
    a password: only its keyed hash, useless without the process's random key."""

    def __init__(self, ttl: float = CACHE_TTL_S, size: int = CACHE_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[object, float]] = OrderedDict()

    def _mac(self, creds: tuple[str, str]) -> bytes:
        user, password = creds
        text = f"{user}:{password}".encode("utf-8", "surrogatepass")
        return hmac.new(self._key, text, hashlib.sha256).digest()

    def hit(self, creds: tuple[str, str], stamp: object, now: float) -> bool:
        mac = self._mac(creds)
        entry = self._entries.get(mac)
        if entry is None:
            return False
        if entry[0] != stamp or now - entry[1] >= self.ttl:
            del self._entries[mac]
            return False
        return True

    def add(self, creds: tuple[str, str], stamp: object, now: float) -> None:
        for mac in [m for m, (s, _) in self._entries.items() if s != stamp]:
            del self._entries[mac]  # verified against credentials that are gone
        self._entries[self._mac(creds)] = (stamp, now)
        self._entries.move_to_end(self._mac(creds))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header; None if there is none.
    ApiError 401 for a header that is not well-formed Basic credentials (RFC 7617 §2)."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise ApiError(401, "unauthorized", "use HTTP Basic authentication", headers=_CHALLENGE)
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise ApiError(
            401, "unauthorized", "the Basic credentials are not base64 UTF-8", headers=_CHALLENGE
        ) from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise ApiError(
            401, "unauthorized", "the Basic credentials lack 'user:password'", headers=_CHALLENGE
        )
    return user, password


async def authenticate(
    header: str | None,
    peer: str,
    lockout: AdminLockout,
    now: Callable[[], float],
    check: Callable[[str], Awaitable[bool]],
    count: Callable[[bool], None],
    one_at_a_time: trio.Lock,
    cache: VerifiedCache | None = None,
    stamp: Callable[[], object] = lambda: None,
) -> None:
    """Return if `header` carries the admin's credentials; raise ApiError 401 or 429.

    `check(password)` verifies the password, `count(ok)` feeds the metrics. Checks run one
    at a time under `one_at_a_time`, each after the lock-out is read again: otherwise a
    guesser sending 100 requests at once would have 100 guesses checked before the third
    failure locks anything. With a `cache`, credentials verified under the same `stamp()`
    (the admin credentials' generation) pass without a check, after the lock-out is read;
    a hit does not reset the failure count (only a real check does).
    """
    creds = parse_basic(header)
    if creds is None:
        raise ApiError(401, "unauthorized", "authentication required", headers=_CHALLENGE)
    if cache is not None:
        _refuse_if_locked(lockout, now())
        if cache.hit(creds, stamp(), now()):
            count(True)
            return
    async with one_at_a_time:
        current = stamp()  # before the check: a change during it must not be cached as new
        await _check(creds, peer, lockout, now, check, count)
        if cache is not None:
            cache.add(creds, current, now())


def _refuse_if_locked(lockout: AdminLockout, now: float) -> None:
    left = lockout.seconds_left(now)
    if left > 0:
        wait = int(left + 0.999)
        raise ApiError(
            429,
            "locked",
            f"admin logins locked after failed logins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )


async def _check(
    creds: tuple[str, str],
    peer: str,
    lockout: AdminLockout,
    now: Callable[[], float],
    check: Callable[[str], Awaitable[bool]],
    count: Callable[[bool], None],
) -> None:
    _refuse_if_locked(lockout, now())
    user, password = creds
    good = user == ADMIN_USER and await check(password)
    count(good)
    if good:
        lockout.success()
        return
    span = lockout.failure(now())
    log_event(
        "auth-fail",
        peer,
        user=user[:64],
        mech="HTTP-BASIC",
        reason="bad-credentials",
        service="http",
    )
    message = "wrong user or password"
    if span:
        message += f"; {lockout.failures} failed logins: admin logins locked for {span:.0f} s"
    raise ApiError(401, "unauthorized", message, headers=_CHALLENGE)
