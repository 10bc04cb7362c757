"""Authentication pieces that need no I/O: APOP timestamps and digests, name hygiene.

Kept as pure functions so the SASL mechanisms of a later issue (PLAIN, CRAM-MD5,
SCRAM-SHA-256) can join them here and be tested with known-answer vectors.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re

_counter = itertools.count(1)
_HEX32 = re.compile(r"[0-9a-f]{32}\Z")
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


def safe_hostname(hostname: str) -> str:
    """`hostname` reduced to letters, digits, dots and dashes (at most 64 characters).

    The name goes into the greeting's timestamp; poplib finds that timestamp with a greedy
    `<.*>`, so nothing after it may contain '<' or '>', and spaces would break the msg-id.
    """
    cleaned = _HOST_UNSAFE.sub("", hostname)[:64]
    return cleaned or "localhost"


def make_apop_timestamp(hostname: str) -> str:
    """A msg-id `<pid.counter.random@host>` that no other greeting of this device repeats."""
    return f"<{os.getpid()}.{next(_counter)}.{os.urandom(8).hex()}@{safe_hostname(hostname)}>"


def apop_digest(timestamp: str, secret: str) -> str:
    """The lower-case hex MD5 of timestamp + secret that RFC 1939 §7 defines for APOP."""
    return hashlib.md5((timestamp + secret).encode("utf-8"), usedforsecurity=False).hexdigest()


def apop_matches(timestamp: str, secret: str | None, digest: str) -> bool:
    """True if `digest` proves knowledge of `secret`; compared in constant time."""
    expected = apop_digest(timestamp, secret if secret is not None else "")
    ok = hmac.compare_digest(expected.encode("ascii"), digest.lower().encode("ascii", "replace"))
    return ok and secret is not None and _HEX32.match(digest.lower()) is not None
