"""The POP3 session states and the one transition table both roles follow.

RFC 1939 §3: a session greets, authorizes, transacts and updates. Around that, RFC 5034 adds
an AUTH exchange (SASL) and RFC 2595 a TLS handshake after STLS (STLS); both are explicit
sub-states here. The table knows nothing of roles: `ServerConnection` and `ClientConnection`
look up the same row for the same trigger, the server when it sends a reply, the client when
it receives it, so the two cannot disagree about where a session is.

A trigger is a command keyword or one of the pseudo-triggers GREET (the greeting),
SASL_RESPONSE (a client line inside an AUTH exchange), BAD (a line the server refuses) and
TLS_DONE (the handshake after STLS finished). A `Row` says which state each kind of answer
leads to; None means that answer is not allowed.
"""

from __future__ import annotations

from enum import Enum
from typing import Final, NamedTuple


class State(Enum):
    """Where a session is (the same value on both ends once every reply is read)."""

    # Members are singletons compared by identity: hash them by identity too, in C (Enum's
    # own __hash__ hashes the name in Python, and TABLE is looked up per command).
    __hash__ = object.__hash__

    GREETING = "greeting"  # before the server's first line
    AUTHORIZATION = "authorization"  # RFC 1939 §4
    SASL = "sasl"  # RFC 5034 §4: AUTH exchange, waiting for the client's response
    STLS = "stls"  # RFC 2595 §4: +OK to STLS sent/read, TLS handshake due
    TRANSACTION = "transaction"  # RFC 1939 §5
    UPDATE = "update"  # RFC 1939 §6: server, between QUIT and its reply
    CLOSED = "closed"
    ERROR = "error"  # after a LocalProtocolError or RemoteProtocolError

    # Members are singletons compared by identity: hash them by identity too, in C, since
    # every event looks a state up in the table (Enum's own __hash__ is Python code).
    __hash__ = object.__hash__


GREET: Final = "<greeting>"
SASL_RESPONSE: Final = "<sasl-response>"
BAD: Final = "<bad-command>"
TLS_DONE: Final = "<tls-done>"


class Row(NamedTuple):
    """Next states after a trigger, by the kind of answer.

    ok: a single-line `+OK`; listing: a multi-line `+OK ... .`; err: `-ERR`;
    cont: a SASL `+ ` continuation; during: the state while the answer is owed (UPDATE).
    """

    ok: State | None
    listing: State | None
    err: State
    cont: State | None = None
    during: State | None = None


_A: Final = State.AUTHORIZATION
_T: Final = State.TRANSACTION
_X: Final = State.CLOSED

_STAY_A: Final = Row(_A, None, _A)
_STAY_T: Final = Row(_T, None, _T)
_LIST_T: Final = Row(None, _T, _T)
_BOTH_T: Final = Row(_T, _T, _T)

TABLE: Final[dict[State, dict[str, Row]]] = {
    State.GREETING: {GREET: Row(_A, None, _X)},
    _A: {
        "USER": _STAY_A,
        "PASS": Row(_T, None, _A),
        "APOP": Row(_T, None, _A),
        # AUTH mechanism: +OK logs in, + continues; bare AUTH: the mechanism listing.
        "AUTH": Row(_T, _A, _A, cont=State.SASL),
        "STLS": Row(State.STLS, None, _A),
        "CAPA": Row(None, _A, _A),
        "QUIT": Row(_X, None, _X),
        BAD: Row(None, None, _A),
    },
    State.SASL: {
        SASL_RESPONSE: Row(_T, None, _A, cont=State.SASL),
        BAD: Row(None, None, _A),
    },
    State.STLS: {TLS_DONE: Row(_A, None, _X)},
    _T: {
        "STAT": _STAY_T,
        "LIST": _BOTH_T,
        "RETR": _LIST_T,
        "DELE": _STAY_T,
        "NOOP": _STAY_T,
        "RSET": _STAY_T,
        "TOP": _LIST_T,
        "UIDL": _BOTH_T,
        "CAPA": _LIST_T,
        "QUIT": Row(_X, None, _X, during=State.UPDATE),
        BAD: Row(None, None, _T),
    },
    State.UPDATE: {},
    State.CLOSED: {},
    State.ERROR: {},
}
"""state -> trigger -> Row. A command keyword missing from a state's row set is not valid in
that state (the server answers it as a BadCommand, the client refuses to send it)."""

COMMAND_STATES: Final = frozenset({State.AUTHORIZATION, State.TRANSACTION})
"""States in which the client sends command lines (in SASL it sends responses)."""


def row(state: State, trigger: str) -> Row | None:
    """The Row for `trigger` in `state`, or None when the trigger is not valid there."""
    return TABLE[state].get(trigger)


def valid_commands(state: State) -> frozenset[str]:
    """The command keywords valid in `state` (pseudo-triggers left out)."""
    return frozenset(k for k in TABLE[state] if not k.startswith("<"))
