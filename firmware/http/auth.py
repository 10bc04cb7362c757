"""HTTP Basic authentication (RFC 7617) of the console's admin account.

The user is `admin`; the password is the console's, checked against the NVRAM credentials
(PBKDF2, in a worker thread so the loop keeps serving). Failures count in the device's one
`AdminLockout` with the console's: every third wrong password in a row locks admin logins
for 30 s, doubling to 900 s; while locked every request gets 429 with Retry-After, even with
the right password. Failures are written to the auth log (`service=http`), so the same
fail2ban filter that watches POP3 sees them.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable

import trio

from firmware.http.errors import ApiError
from firmware.security.abuse import AdminLockout
from firmware.security.authlog import log_event

log = logging.getLogger("dpfw.http")

ADMIN_USER = "admin"
REALM = 'Basic realm="dpfw admin", charset="UTF-8"'
_CHALLENGE = {"WWW-Authenticate": REALM}


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
) -> None:
    """Return if `header` carries the admin's credentials; raise ApiError 401 or 429.

    `check(password)` verifies the password, `count(ok)` feeds the metrics. Checks run one
    at a time under `one_at_a_time`, each after the lock-out is read again: otherwise a
    guesser sending 100 requests at once would have 100 guesses checked before the third
    failure locks anything.
    """
    creds = parse_basic(header)
    if creds is None:
        raise ApiError(401, "unauthorized", "authentication required", headers=_CHALLENGE)
    async with one_at_a_time:
        await _check(creds, peer, lockout, now, check, count)


async def _check(
    creds: tuple[str, str],
    peer: str,
    lockout: AdminLockout,
    now: Callable[[], float],
    check: Callable[[str], Awaitable[bool]],
    count: Callable[[bool], None],
) -> None:
    left = lockout.seconds_left(now())
    if left > 0:
        wait = int(left + 0.999)
        raise ApiError(
            429,
            "locked",
            f"admin logins locked after failed logins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
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
