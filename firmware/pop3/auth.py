"""Authentication pieces that need no I/O: APOP timestamps and digests, name hygiene, the
legacy-secret policy, and the cache of successful password checks. The SASL mechanisms live in
firmware.security.sasl.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final, Protocol

from firmware.security.sasl import safe_hostname as safe_hostname

_counter = itertools.count(1)
_HEX32 = re.compile(r"[0-9a-f]{32}\Z")


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


# -- the legacy secret (APOP, CRAM-MD5) ---------------------------------------------------
#
# `pop3.apop` is the one device-wide switch for both legacy methods: the APOP timestamp in the
# greeting and CRAM-MD5 in CAPA SASL / AUTH. Both need the plaintext-equivalent secret of the
# box, which is kept only for boxes that were given one. So that what the device advertises
# works for the boxes it makes, a box created or given a new password while the switch is on
# gets a secret unless the administrator opts out; switching it on names the boxes without one.

LEGACY_METHODS: Final = "APOP/CRAM-MD5"
MAX_NAMED_BOXES: Final = 10
"""A warning names this many boxes without a legacy secret, then counts the rest."""


def keeps_legacy_secret(choice: bool | None, *, apop_on: bool, had: bool = False) -> bool:
    """Whether a box being created (or given a new password) keeps a legacy secret.

    `choice` is the administrator's explicit answer (`--legacy` True, `--no-legacy` False);
    None means the default: keep one when the box had one, or when the device offers APOP and
    CRAM-MD5 (`pop3.apop` on), so that every advertised method works for the box.
    """
    if choice is not None:
        return choice
    return had or apop_on


class _BoxSecret(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def has_legacy_secret(self) -> bool: ...


def boxes_without_legacy_secret(boxes: Iterable[_BoxSecret]) -> list[str]:
    """Names of the boxes (e.g. `Board.boxes()`) that cannot use APOP or CRAM-MD5."""
    return [box.name for box in boxes if not box.has_legacy_secret]


def legacy_warning(names: list[str], *, console: bool) -> str | None:
    """Three lines for an administrator who has APOP/CRAM-MD5 on while `names` keep no secret.

    None when every box has one. `console`: say the console's command to fix it, else the CLI's.
    """
    if not names:
        return None
    shown = ", ".join(
        "".join(c if c.isprintable() else "?" for c in name) for name in names[:MAX_NAMED_BOXES]
    )
    if len(names) > MAX_NAMED_BOXES:
        shown += f" and {len(names) - MAX_NAMED_BOXES} more"
    fix = "`box passwd NAME legacy`" if console else "`dpfw box passwd IMG NAME --legacy`"
    boxes = "box has" if len(names) == 1 else "boxes have"
    return (
        f"WARNING: pop3.apop is on, but {len(names)} {boxes} no {LEGACY_METHODS} secret\n"
        f"  and cannot log in with APOP or CRAM-MD5: {shown}\n"
        f"  (give one with {fix})"
    )


AUTH_CACHE_ENTRIES: Final = 1024


class _Keys(Protocol):
    @property
    def salt(self) -> bytes: ...
    @property
    def stored_key(self) -> bytes: ...


class AuthCache:
    """Successful USER/PASS checks kept in RAM, so a client that polls every minute does not
    cost a PBKDF2 derivation (4096 rounds, about 2 ms) each time; Dovecot's auth cache does
    the same.

    An entry is keyed by HMAC(per-boot random key, box NUL password), so the RAM never holds
    a password or a fast hash of one, and remembers the box's salt and StoredKey at the time:
    a changed password (new salt) misses and drops the entry. Only successes are cached, so
    guessing still pays full price. At most `max_entries`, least recently used dropped first.
    """

    __slots__ = ("_entries", "_key", "_max_entries")

    def __init__(self, max_entries: int = AUTH_CACHE_ENTRIES) -> None:
        self._key = secrets.token_bytes(32)
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _tag(self, box: str, password: str) -> bytes:
        message = box.encode("utf-8", "surrogatepass") + b"\0"
        return hmac.digest(self._key, message + password.encode("utf-8", "surrogatepass"), "sha256")

    def hit(self, box: str, password: str, creds: _Keys) -> bool:
        """True if this box and password were verified while the box had these keys."""
        tag = self._tag(box, password)
        known = self._entries.get(tag)
        if known is None:
            return False
        if not hmac.compare_digest(known, creds.salt + creds.stored_key):
            del self._entries[tag]  # the password was changed since
            return False
        self._entries.move_to_end(tag)
        return True

    def remember(self, box: str, password: str, creds: _Keys) -> None:
        """Record a successful verification of `password` against `creds`."""
        tag = self._tag(box, password)
        self._entries[tag] = creds.salt + creds.stored_key
        self._entries.move_to_end(tag)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
