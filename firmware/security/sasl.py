"""Server-side SASL mechanisms (PLAIN, SCRAM-SHA-256, CRAM-MD5) as sans-IO step machines.

The POP3 core owns the RFC 5034 framing (`+ ` continuation lines, `*` to cancel, `+OK`/`-ERR`);
a mechanism only turns decoded client messages into the next Step:

    mech = new_mechanism("SCRAM-SHA-256", offered=..., credentials_for=board.box_credentials, ...)
    step = mech.start(initial_response_or_None)
    while isinstance(step, Challenge):
        send `+ ` + encode(step.data); read a line; `*` -> -ERR (core); else
        step = mech.step(decode_response(line))
    Success(box) -> lock the box, `+OK`;  Failure(reason, box) -> log, delay, `-ERR [AUTH]`

SCRAM's server-final `v=...` (or `e=...`) arrives as a last Challenge, as RFC 5034 §4 asks; the
client answers it with an empty line and only then does the mechanism say Success or Failure.
Unknown boxes and wrong passwords look the same on the wire (and take similar time).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from firmware.errors import DeviceError
from firmware.security.credentials import (
    StoredCredentials,
    derive_keys,
    stored_key,
    verify_password,
)
from firmware.security.saslprep import SaslPrepError, saslprep

# A decoded client message larger than this fails the exchange (RFC 5034 §4 lets us bound
# it; the largest honest one, a SCRAM client-final, is about 120 octets plus extensions).
MAX_RESPONSE_OCTETS = 4096
# The longest base64 line the core must be ready to read for a continuation response.
MAX_RESPONSE_LINE = 4 * ((MAX_RESPONSE_OCTETS + 2) // 3)
# RFC 4616 §2: servers MUST accept each of authzid, authcid and passwd up to 255 octets.
MAX_PLAIN_FIELD_OCTETS = 255
# RFC 7677 / 5802 §5.1: at least 4096 PBKDF2 iterations.
MIN_ITERATIONS = 4096

# Failure reasons: short, stable tokens for the auth log (never shown to the client).
BAD_CREDENTIALS = "bad-credentials"
MALFORMED = "malformed"
OVERSIZED = "oversized"
AUTHZID_REFUSED = "authzid-refused"
CHANNEL_BINDING = "channel-binding-unsupported"
EXTENSION = "extension-unsupported"
NO_LEGACY_SECRET = "no-legacy-secret"
UNEXPECTED_INITIAL_RESPONSE = "unexpected-initial-response"


class SaslEncodingError(DeviceError):
    """A continuation line or initial response that is not strict base64 (RFC 5034 §4)."""


class MechanismFinished(RuntimeError):
    """Our bug: a mechanism was stepped after it had already said Success or Failure."""


# -- RFC 5034 / 4648 encoding helpers --------------------------------------------------------

# Whole quanta, then at most one padded one: binascii's strict mode still lets "QUJD=" through.
_STRICT_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def _b64_strict(data: bytes | str) -> bytes | None:
    """Decode RFC 4648 base64 with nothing tolerated, or None."""
    if isinstance(data, str):
        if not data.isascii():
            return None
        data = data.encode("ascii")
    if not _STRICT_BASE64.fullmatch(data):
        return None
    return binascii.a2b_base64(data)


def encode(data: bytes) -> bytes:
    """Base64 of a challenge; the empty challenge is the empty string (`+ ` on the wire)."""
    return base64.b64encode(data)


def decode_response(line: bytes) -> bytes:
    """Decode a client continuation line (no CRLF): strict base64, empty line = empty message.

    Characters outside the alphabet, '=' anywhere but the end, or a bad length are refused
    rather than skipped (RFC 5034 §4, RFC 4648 §3.3).
    """
    if len(line) > MAX_RESPONSE_LINE:
        raise SaslEncodingError(f"response of {len(line)} characters is longer than allowed")
    decoded = _b64_strict(line)
    if decoded is None:
        raise SaslEncodingError("response is not valid base64 (RFC 4648 alphabet and padding)")
    return decoded


def decode_initial_response(argument: bytes) -> bytes:
    """Decode the initial-response argument of AUTH: a lone "=" means an empty message."""
    if argument == b"=":
        return b""
    if not argument:
        raise SaslEncodingError("empty initial response (send '=' for an empty one)")
    return decode_response(argument)


def is_cancel(line: bytes) -> bool:
    """The client's `*` line, which aborts the exchange (the core answers -ERR)."""
    return line == b"*"


# -- What the mechanisms see of a box's credentials -----------------------------------------


CredentialsLookup = Callable[[str], StoredCredentials | None]


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) for a password, per RFC 5802 §3 with SHA-256 (RFC 7677).

    The password is SASLprep'ed first, as every SCRAM client does (Normalize(password));
    the derivation is firmware.security.credentials.derive_keys.
    """
    return derive_keys(saslprep(password), salt, iterations)


def password_matches(creds: StoredCredentials, password: str) -> bool:
    """Recompute StoredKey from a cleartext password and compare in constant time.

    firmware.security.credentials.verify_password: the SASLprep'ed form first, the password
    as typed too when it differs, so records made without SASLprep keep working.
    """
    return verify_password(creds, password)


# -- Steps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """Send `+ base64(data)` and feed the client's decoded answer to `step`."""

    data: bytes


@dataclass(frozen=True)
class Success:
    """Authenticated as `box`."""

    box: str


@dataclass(frozen=True)
class Failure:
    """Authentication failed; `reason` is for the log, `box` the claimed name if one was read."""

    reason: str
    box: str | None = None


Step = Challenge | Success | Failure


class SaslMechanism(Protocol):
    """A server-side mechanism: one object per AUTH exchange."""

    @property
    def name(self) -> str: ...
    def start(self, initial: bytes | None) -> Step: ...
    def step(self, response: bytes) -> Step: ...


class _State(enum.Enum):
    NEW = enum.auto()
    WAIT_MESSAGE = enum.auto()  # PLAIN/CRAM: the one client message; SCRAM: client-first
    WAIT_FINAL = enum.auto()  # SCRAM client-final
    WAIT_ACK = enum.auto()  # SCRAM: the empty answer to v=...
    WAIT_ERROR_ACK = enum.auto()  # SCRAM: the answer to e=...
    DONE = enum.auto()


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _prepared(text: str) -> str | None:
    try:
        return saslprep(text)
    except SaslPrepError:
        return None


# A fixed, per-process key so the fake salt of an unknown user is stable within a run
# (a client asking twice sees the same salt, as for a real box) but unpredictable.
_FAKE_SALT_KEY = secrets.token_bytes(32)
# A throwaway record used to spend the same PBKDF2 time on unknown users as on real ones.
_DUMMY_SALT = secrets.token_bytes(16)


class Plain:
    """PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, checked against StoredKey."""

    name = "PLAIN"

    def __init__(self, credentials_for: CredentialsLookup) -> None:
        self._credentials_for = credentials_for
        self._state = _State.NEW

    def start(self, initial: bytes | None) -> Step:
        if self._state is not _State.NEW:
            raise MechanismFinished("PLAIN started twice")
        if initial is None:
            self._state = _State.WAIT_MESSAGE
            return Challenge(b"")
        return self._verify(initial)

    def step(self, response: bytes) -> Step:
        if self._state is not _State.WAIT_MESSAGE:
            raise MechanismFinished(f"PLAIN stepped in state {self._state.name}")
        return self._verify(response)

    def _verify(self, message: bytes) -> Step:
        self._state = _State.DONE
        if len(message) > 3 * MAX_PLAIN_FIELD_OCTETS + 2:
            return Failure(OVERSIZED)
        fields = message.split(b"\0")
        if len(fields) != 3:
            return Failure(MALFORMED)
        if any(len(field) > MAX_PLAIN_FIELD_OCTETS for field in fields):
            return Failure(OVERSIZED)
        authzid, authcid, passwd = (_utf8(field) for field in fields)
        if authzid is None or authcid is None or passwd is None or not authcid or not passwd:
            return Failure(MALFORMED)
        box = _prepared(authcid)
        if not box:
            return Failure(MALFORMED)
        if authzid and _prepared(authzid) != box:
            return Failure(AUTHZID_REFUSED, box)
        creds = self._credentials_for(box)
        if creds is None:
            scram_keys("x", _DUMMY_SALT, MIN_ITERATIONS)  # same work as a real check
            return Failure(BAD_CREDENTIALS, box)
        if not password_matches(creds, passwd):
            return Failure(BAD_CREDENTIALS, box)
        return Success(box)


_SCRAM_PRINTABLE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # RFC 5802 "printable": no comma
_SCRAM_EXTENSION = re.compile(r"[A-Za-z]=.*")


def _scram_unescape(saslname: str) -> str | None:
    """RFC 5802 §5.1 saslname: '=2C' is ',' and '=3D' is '='; any other '=' is an error."""
    if "," in saslname:
        return None
    parts = saslname.split("=")
    out = [parts[0]]
    for part in parts[1:]:
        if part[:2] == "2C":
            out.append("," + part[2:])
        elif part[:2] == "3D":
            out.append("=" + part[2:])
        else:
            return None
    return "".join(out)


def _default_nonce() -> str:
    return secrets.token_urlsafe(24)  # A-Z a-z 0-9 - _: all SCRAM-printable


class ScramSha256:
    """SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding (no -PLUS is offered)."""

    name = "SCRAM-SHA-256"

    def __init__(
        self,
        credentials_for: CredentialsLookup,
        *,
        nonce: Callable[[], str] = _default_nonce,
        fake_iterations: int = MIN_ITERATIONS,
    ) -> None:
        """`nonce` makes the server nonce part injectable (RFC test vectors);
        `fake_iterations` is what an unknown user is told, so set it to the count real
        boxes use, or the iteration count gives away which boxes exist."""
        self._credentials_for = credentials_for
        self._nonce = nonce
        self._fake_iterations = fake_iterations
        self._state = _State.NEW
        self._box: str | None = None
        self._creds: StoredCredentials | None = None
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._combined_nonce = ""
        self._error_reason = ""

    def start(self, initial: bytes | None) -> Step:
        if self._state is not _State.NEW:
            raise MechanismFinished("SCRAM-SHA-256 started twice")
        if initial is None:
            self._state = _State.WAIT_MESSAGE
            return Challenge(b"")
        return self._client_first(initial)

    def step(self, response: bytes) -> Step:
        state = self._state
        if state is _State.WAIT_MESSAGE:
            return self._client_first(response)
        if state is _State.WAIT_FINAL:
            return self._client_final(response)
        if state is _State.WAIT_ACK:
            self._state = _State.DONE
            if response:
                return Failure(MALFORMED, self._box)
            assert self._box is not None
            return Success(self._box)
        if state is _State.WAIT_ERROR_ACK:
            self._state = _State.DONE
            return Failure(self._error_reason, self._box)
        raise MechanismFinished(f"SCRAM-SHA-256 stepped in state {state.name}")

    def _fail(self, reason: str) -> Failure:
        self._state = _State.DONE
        return Failure(reason, self._box)

    def _server_error(self, value: str, reason: str) -> Challenge:
        """Deliver `e=value` in the server-final message; the exchange fails after it."""
        self._state = _State.WAIT_ERROR_ACK
        self._error_reason = reason
        return Challenge(b"e=" + value.encode("ascii"))

    def _client_first(self, message: bytes) -> Step:
        if len(message) > MAX_RESPONSE_OCTETS:
            return self._fail(OVERSIZED)
        text = _utf8(message)
        if text is None:
            return self._fail(MALFORMED)
        parts = text.split(",")
        if len(parts) < 4:
            return self._fail(MALFORMED)
        flag, authzid_attr, *bare = parts
        if flag.startswith("p="):
            return self._fail(CHANNEL_BINDING)
        if flag not in ("n", "y"):  # "y": client could bind, but we offer no -PLUS: fine
            return self._fail(MALFORMED)
        authzid = None
        if authzid_attr:
            if not authzid_attr.startswith("a="):
                return self._fail(MALFORMED)
            authzid = _scram_unescape(authzid_attr[2:])
            if not authzid:
                return self._fail(MALFORMED)
        if any(attr.startswith("m=") for attr in bare):
            return self._fail(EXTENSION)  # RFC 5802 §5.1: any `m` MUST fail the exchange
        if not bare[0].startswith("n=") or not bare[1].startswith("r="):
            return self._fail(MALFORMED)
        username = _scram_unescape(bare[0][2:])
        client_nonce = bare[1][2:]
        if not username or not _SCRAM_PRINTABLE.fullmatch(client_nonce):
            return self._fail(MALFORMED)
        if not all(_SCRAM_EXTENSION.fullmatch(ext) for ext in bare[2:]):
            return self._fail(MALFORMED)
        box = _prepared(username)
        if not box:
            return self._fail(MALFORMED)
        self._box = box
        if authzid is not None and _prepared(authzid) != box:
            return self._fail(AUTHZID_REFUSED)

        creds = self._credentials_for(box)
        self._creds = creds
        if creds is None:
            salt = hmac.digest(_FAKE_SALT_KEY, box.encode(), "sha256")[:16]
            iterations = self._fake_iterations
        else:
            salt, iterations = creds.salt, creds.iterations
        server_nonce = self._nonce()
        assert _SCRAM_PRINTABLE.fullmatch(server_nonce), "server nonce must be SCRAM-printable"
        self._combined_nonce = client_nonce + server_nonce
        self._gs2_header = f"{flag},{authzid_attr},"
        self._client_first_bare = ",".join(bare)
        self._server_first = (
            f"r={self._combined_nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        )
        self._state = _State.WAIT_FINAL
        return Challenge(self._server_first.encode("ascii"))

    def _client_final(self, message: bytes) -> Step:
        if len(message) > MAX_RESPONSE_OCTETS:
            return self._server_error("other-error", OVERSIZED)
        text = _utf8(message)
        if text is None:
            return self._server_error("invalid-encoding", MALFORMED)
        parts = text.split(",")
        if (
            len(parts) < 3
            or not parts[0].startswith("c=")
            or not parts[1].startswith("r=")
            or not parts[-1].startswith("p=")
            or not all(_SCRAM_EXTENSION.fullmatch(ext) for ext in parts[2:-1])
        ):
            return self._server_error("invalid-encoding", MALFORMED)
        if any(ext.startswith("m=") for ext in parts[2:-1]):
            # RFC 5802 §5.1: an `m` attribute anywhere MUST fail; §7 names the error.
            return self._server_error("extensions-not-supported", EXTENSION)
        if _b64_strict(parts[0][2:]) != self._gs2_header.encode("utf-8"):
            return self._server_error("channel-bindings-dont-match", MALFORMED)
        if not hmac.compare_digest(parts[1][2:].encode(), self._combined_nonce.encode()):
            return self._server_error("other-error", MALFORMED)
        proof = _b64_strict(parts[-1][2:])
        if proof is None or len(proof) != hashlib.sha256().digest_size:
            return self._server_error("invalid-encoding", MALFORMED)

        without_proof = ",".join(parts[:-1])
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        creds = self._creds
        if creds is None:
            return self._server_error("invalid-proof", BAD_CREDENTIALS)
        client_signature = hmac.digest(creds.stored_key, auth_message, "sha256")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(stored_key(client_key), creds.stored_key):
            return self._server_error("invalid-proof", BAD_CREDENTIALS)
        server_signature = hmac.digest(creds.server_key, auth_message, "sha256")
        self._state = _State.WAIT_ACK
        return Challenge(b"v=" + base64.b64encode(server_signature))


_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


def safe_hostname(hostname: str) -> str:
    """`hostname` reduced to letters, digits, dots and dashes (at most 64 characters).

    The one cleaning of a host name for a msg-id (RFC 5322 §3.6.4 shape): the APOP greeting's
    timestamp (RFC 1939 §7) and the CRAM-MD5 challenge (RFC 2195 §2). poplib finds the
    timestamp with a greedy `<.*>`, so nothing after it may contain '<' or '>', and spaces
    would break the msg-id. An empty result becomes "localhost".
    """
    cleaned = _HOST_UNSAFE.sub("", hostname)[:64]
    return cleaned or "localhost"


def _default_cram_challenge(hostname: str) -> bytes:
    host = safe_hostname(hostname)
    return f"<{secrets.randbelow(10**12)}.{time.time_ns()}@{host}>".encode("ascii")


_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{32}")


class CramMd5:
    """CRAM-MD5 (RFC 2195): legacy, needs the plaintext-equivalent secret; offer only if enabled.

    A name without a legacy secret (unknown, or a box made without one) fails with
    NO_LEGACY_SECRET, which the POP3 core reports plainly and does not count as a failed login.
    """

    name = "CRAM-MD5"

    def __init__(
        self,
        credentials_for: CredentialsLookup,
        hostname: str,
        *,
        challenge: Callable[[], bytes] | None = None,
    ) -> None:
        """`challenge` replaces the unique `<random.time_ns@hostname>` (RFC test vectors)."""
        self._credentials_for = credentials_for
        self._make_challenge = challenge or (lambda: _default_cram_challenge(hostname))
        self._state = _State.NEW
        self._challenge = b""

    def start(self, initial: bytes | None) -> Step:
        if self._state is not _State.NEW:
            raise MechanismFinished("CRAM-MD5 started twice")
        if initial is not None:  # server-first mechanism: an initial response is an error
            self._state = _State.DONE
            return Failure(UNEXPECTED_INITIAL_RESPONSE)
        self._challenge = self._make_challenge()
        self._state = _State.WAIT_MESSAGE
        return Challenge(self._challenge)

    def step(self, response: bytes) -> Step:
        if self._state is not _State.WAIT_MESSAGE:
            raise MechanismFinished(f"CRAM-MD5 stepped in state {self._state.name}")
        self._state = _State.DONE
        if len(response) > MAX_PLAIN_FIELD_OCTETS + 33:
            return Failure(OVERSIZED)
        text = _utf8(response)
        if text is None:
            return Failure(MALFORMED)
        user, space, digest = text.rpartition(" ")
        box = _prepared(user) if space else None
        if not box or not _HEX_DIGEST.fullmatch(digest):
            return Failure(MALFORMED)
        creds = self._credentials_for(box)
        if creds is None or creds.legacy_secret is None:
            # An unknown name and a box without a secret look alike: neither can succeed.
            return Failure(NO_LEGACY_SECRET, box)
        expected = hmac.new(creds.legacy_secret.encode(), self._challenge, "md5").hexdigest()
        if not hmac.compare_digest(expected, digest.lower()):
            return Failure(BAD_CREDENTIALS, box)
        return Success(box)


# -- Which mechanisms, and making one ------------------------------------------------------

ALL_MECHANISMS = ("SCRAM-SHA-256", "PLAIN", "CRAM-MD5")


def offered_mechanisms(*, tls_active: bool, plaintext_auth: str, legacy: bool) -> tuple[str, ...]:
    """The `SASL` capability list, strongest first (RFC 7677 asks SCRAM-SHA-256 be preferred).

    PLAIN follows `pop3.plaintext_auth` like USER/PASS ("tls_only": only inside TLS, RFC 4616
    §4); CRAM-MD5 only when the device keeps legacy secrets (`pop3.apop`).
    """
    names = ["SCRAM-SHA-256"]
    if tls_active or plaintext_auth == "always":
        names.append("PLAIN")
    if legacy:
        names.append("CRAM-MD5")
    return tuple(names)


def new_mechanism(
    name: str,
    *,
    offered: Collection[str],
    credentials_for: CredentialsLookup,
    hostname: str,
    fake_iterations: int = MIN_ITERATIONS,
) -> SaslMechanism | None:
    """A fresh mechanism for `AUTH name`, or None if it is not offered (the core says -ERR).

    Mechanism names compare case-insensitively, as clients send them in any case.
    """
    wanted = name.upper()
    if wanted not in offered:
        return None
    if wanted == "PLAIN":
        return Plain(credentials_for)
    if wanted == "SCRAM-SHA-256":
        return ScramSha256(credentials_for, fake_iterations=fake_iterations)
    if wanted == "CRAM-MD5":
        return CramMd5(credentials_for, hostname)
    return None
