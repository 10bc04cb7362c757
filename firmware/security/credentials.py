"""Box and console-admin credentials as NVRAM keeps them.

We keep SCRAM-SHA-256 keys (RFC 5802/7677), never the password, so a copied image does not give
away passwords; USER/PASS recomputes StoredKey from the offered password and compares in constant
time. APOP and CRAM-MD5 need a plaintext-equivalent secret: it is kept only when a box asks for it.

Passwords go through SASLprep (RFC 4013) before PBKDF2, as SCRAM clients prepare theirs
(RFC 5802 §2.2 Normalize), so "I<SOFT HYPHEN>X" and "IX", or "é" typed composed or decomposed,
are one password on every path: USER/PASS, PLAIN, SCRAM and the console.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Protocol

from firmware.errors import DeviceError
from firmware.security.saslprep import SaslPrepError, saslprep

MIN_ITERATIONS = 4096  # RFC 7677: at least 4096
SALT_BYTES = 16
MIN_PASSWORD = 4  # characters, counted after SASLprep
MAX_PASSWORD = 64
PASSWORD_RULE = f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"


@dataclass(frozen=True)
class Credentials:
    """What NVRAM keeps for a box or the console admin."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes
    legacy_secret: str | None = None  # only when APOP/CRAM-MD5 is enabled for the box


class StoredCredentials(Protocol):
    """What a password check and the SASL mechanisms read of a record (Credentials fits)."""

    @property
    def salt(self) -> bytes: ...
    @property
    def iterations(self) -> int: ...
    @property
    def stored_key(self) -> bytes: ...
    @property
    def server_key(self) -> bytes: ...
    @property
    def legacy_secret(self) -> str | None: ...


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """SaltedPassword := Hi(password, salt, i), i.e. PBKDF2-HMAC-SHA-256 (RFC 5802 §3)."""
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)


def client_key(salted: bytes) -> bytes:
    """ClientKey := HMAC(SaltedPassword, "Client Key")."""
    return hmac.digest(salted, b"Client Key", "sha256")


def server_key(salted: bytes) -> bytes:
    """ServerKey := HMAC(SaltedPassword, "Server Key")."""
    return hmac.digest(salted, b"Server Key", "sha256")


def stored_key(client: bytes) -> bytes:
    """StoredKey := H(ClientKey)."""
    return hashlib.sha256(client).digest()


def derive_keys(prepared: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) of an already SASLprep'ed password (RFC 5802 §3, RFC 7677).

    The one SCRAM key derivation: new records, password checks and SCRAM exchanges use it.
    """
    salted = salted_password(prepared, salt, iterations)
    return stored_key(client_key(salted)), server_key(salted)


def make_credentials(
    password: str, *, legacy: bool = False, iterations: int = MIN_ITERATIONS
) -> Credentials:
    """Fresh salt, SCRAM keys; the plaintext-equivalent secret only when `legacy`.

    The keys come from the SASLprep'ed password (stored-string profile: unassigned code
    points refused, since a later Unicode could map them differently). The legacy secret is
    the password as typed: APOP and CRAM-MD5 clients digest it unprepared.
    """
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"iterations must be at least {MIN_ITERATIONS}, not {iterations}")
    prepared = prepare_password(password)  # the policy is the callers' (check_new_password)
    salt = os.urandom(SALT_BYTES)
    stored, server = derive_keys(prepared, salt, iterations)
    return Credentials(
        salt=salt,
        iterations=iterations,
        stored_key=stored,
        server_key=server,
        legacy_secret=password if legacy else None,
    )


def check_new_password(password: str) -> str:
    """The one password policy: SASLprep (RFC 4013) accepts it and leaves 4 to 64 characters.

    Every path where a person sets a password calls it: console `passwd` and `box add|passwd`
    and `dpfw box add|passwd` (firmware.ops), `dpfw image create`. `make_credentials`
    does not, so records and fixtures made before the policy still load. Returns the prepared
    password; raises DeviceError with one line: "the password cannot be used: ..." or
    PASSWORD_RULE.
    """
    if len(password) > 4 * MAX_PASSWORD:
        raise DeviceError(PASSWORD_RULE)  # no SASLprep work for pasted novels
    prepared = prepare_password(password)
    if not MIN_PASSWORD <= len(prepared) <= MAX_PASSWORD:
        raise DeviceError(PASSWORD_RULE)
    return prepared


def check_password_policy(password: str, what: str) -> None:
    """check_new_password as one line for `what` (`box add: ...; nothing changed`)."""
    try:
        check_new_password(password)
    except DeviceError as exc:
        raise DeviceError(f"{what}: {exc}; nothing changed") from None


def prepare_password(password: str) -> str:
    """The password as SCRAM keys are made from it; DeviceError if SASLprep refuses it."""
    try:
        prepared = saslprep(password, allow_unassigned=False)
    except SaslPrepError as exc:
        raise DeviceError(f"the password cannot be used: {exc}") from None
    if password and not prepared:
        raise DeviceError("the password cannot be used: it is empty after SASLprep (RFC 4013)")
    return prepared


def verify_password(creds: StoredCredentials, password: str) -> bool:
    """True when `password` yields the stored StoredKey (constant-time compare).

    The SASLprep'ed form (query profile) is tried first; the password as typed as well when
    it differs or SASLprep refuses it, so records made before passwords were prepared keep
    working. An ASCII password costs one PBKDF2, as before.
    """
    candidates = [password]
    try:
        prepared = saslprep(password, allow_unassigned=True)
    except SaslPrepError:
        prepared = password
    if prepared != password:
        candidates.insert(0, prepared)
    return any(_matches(creds, text) for text in candidates)


def _matches(creds: StoredCredentials, password: str) -> bool:
    stored, _server = derive_keys(password, creds.salt, creds.iterations)
    return hmac.compare_digest(stored, creds.stored_key)
