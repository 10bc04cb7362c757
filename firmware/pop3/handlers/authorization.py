"""AUTHORIZATION commands: USER, PASS, APOP (RFC 1939 §7), STLS (RFC 2595), AUTH (RFC 5034).

Each handler declares the CAPA lines it adds (RFC 2449 §6); the password checks themselves
run where the maildrop runs them (off the event loop on the device: firmware/store/worker.py).
"""

from __future__ import annotations

from firmware.pop3.auth import apop_matches
from firmware.pop3.events import Command, MultilineStart
from firmware.pop3.protocol import Answer, Handler, Pop3Protocol, State, fixed_body, ok
from firmware.security.sasl import (
    MALFORMED,
    SaslEncodingError,
    decode_initial_response,
    new_mechanism,
)

_AUTHORIZATION = frozenset({State.AUTHORIZATION})
_PLAINTEXT_REFUSED = "USER/PASS are refused without TLS on this device"
_MECHANISMS_HEAD = MultilineStart("SASL mechanisms follow")
_SEND_PASS = Answer(ok("send PASS"))


def _user(s: Pop3Protocol, command: Command) -> Answer:
    if not s.plaintext_allowed():
        return s.bad(_PLAINTEXT_REFUSED, "AUTH")
    s.user_name = command.args[0]
    return _SEND_PASS


async def _pass(s: Pop3Protocol, command: Command) -> Answer:
    name, s.user_name = s.user_name, None
    if name is None:
        return s.bad("send USER first")
    if not s.plaintext_allowed():
        return s.bad(_PLAINTEXT_REFUSED, "AUTH")
    password = command.args[0]

    async def check() -> bool:
        return await s.store.check_password(name, password)

    return await s.login(name, "PASS", check)


async def _apop(s: Pop3Protocol, command: Command) -> Answer:
    s.user_name = None
    if s.timestamp is None or not s.profile().bool("pop3.apop"):
        return s.bad("APOP is not offered on this device")
    name, digest = command.args
    timestamp = s.timestamp
    secret = s.store.apop_secret(name)
    if secret is None:
        return s.no_legacy_secret(name, "APOP")

    async def check() -> bool:
        return apop_matches(timestamp, secret, digest)  # one MD5: on the loop

    return await s.login(name, "APOP", check)


def _stls(s: Pop3Protocol, command: Command) -> Answer:
    if s.tls_active:
        return s.bad("TLS is already active")
    if not s.tls_available:
        return s.bad("STLS is not offered: the device has no TLS certificate")
    s.user_name = None  # RFC 2595 §4: nothing said before TLS carries over
    return Answer(ok("begin TLS negotiation"), starttls=True)


async def _auth(s: Pop3Protocol, command: Command) -> Answer:
    """RFC 5034 AUTH; with no argument, list the mechanisms (what Outlook asks)."""
    s.user_name = None
    offered = s.mechanisms()
    args = command.args
    if not args:
        names = [name.encode("ascii") + b"\r\n" for name in offered]
        return Answer(_MECHANISMS_HEAD, fixed_body(names))
    mechanism = new_mechanism(
        args[0],
        offered=offered,
        credentials_for=s.store.credentials,
        hostname=s.profile().str("identity.hostname"),
    )
    if mechanism is None:
        if args[0].upper() == "PLAIN":
            return s.bad("PLAIN is refused without TLS on this device", "AUTH")
        return s.bad(f"mechanism not offered; try {' '.join(offered)}")
    initial: bytes | None = None
    if len(args) == 2:
        try:
            initial = decode_initial_response(args[1].encode("utf-8"))
        except SaslEncodingError:
            return s.login_failed(None, mechanism.name, MALFORMED)
    start = mechanism.start
    return await s.sasl_next(mechanism, await s.store.sasl_step(lambda: start(initial)))


def _user_capabilities(s: Pop3Protocol) -> list[bytes]:
    return [b"USER\r\n"] if s.plaintext_allowed() else []


def _stls_capabilities(s: Pop3Protocol) -> list[bytes]:
    offered = s.state is State.AUTHORIZATION and s.tls_available and not s.tls_active
    return [b"STLS\r\n"] if offered else []


def _auth_capabilities(s: Pop3Protocol) -> list[bytes]:
    return [("SASL " + " ".join(s.mechanisms()) + "\r\n").encode("ascii")]


USER = Handler("USER", _AUTHORIZATION, _user, "USER takes one mailbox name", _user_capabilities)
PASS = Handler("PASS", _AUTHORIZATION, _pass, "PASS takes a password (the rest of the line)")
# APOP is offered by the greeting's timestamp, not by CAPA.
APOP = Handler("APOP", _AUTHORIZATION, _apop, "APOP takes a mailbox name and a digest")
STLS = Handler("STLS", _AUTHORIZATION, _stls, "STLS takes no arguments", _stls_capabilities)
AUTH = Handler(
    "AUTH",
    _AUTHORIZATION,
    _auth,
    "AUTH takes a mechanism and an optional initial response",
    _auth_capabilities,
)
