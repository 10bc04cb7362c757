"""The events of the POP3 protocol library: what one side sends and the other receives.

Both roles speak in these objects. `ServerConnection.next_event()` returns the client's
`Command`, `BadCommand`, `SaslResponse`, `TlsStart` and `ConnectionClosed`;
`ServerConnection.send()` takes `Reply`, `MultilineStart`, `Data`, `MultilineEnd`,
`SaslContinuation` and `ConnectionClosed`. The client role is the mirror image. A client and a
server wired together see the same events on both ends (bodies may arrive in other chunks).

Text fields are `str`; on the wire they are UTF-8, and octets that are not UTF-8 survive the
round trip as lone surrogates (`surrogateescape`), so no octet a peer sent is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal


class Event:
    """Base class of every event (no fields)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Command(Event):
    """A client command (RFC 1939 §3, RFC 2449, RFC 2595, RFC 5034).

    `keyword` is upper case (`"RETR"`). Message numbers and the TOP line count are in
    `numbers` as ints, parsed from decimal digits of any length (range is the application's to
    judge: `RETR 0` parses); every other argument is in `args` as text: `USER name` ->
    args=("name",), `PASS` -> args=(the rest of the line, spaces included,), `APOP name digest`,
    `AUTH [mechanism [initial-response]]`. Examples: `Command("STAT")`,
    `Command("TOP", numbers=(1, 10))`, `Command("USER", ("scan01",))`.
    """

    keyword: str
    args: tuple[str, ...] = ()
    numbers: tuple[int, ...] = ()

    @property
    def number(self) -> int | None:
        """The first message number, or None when the command has none (`LIST`, `STAT`)."""
        return self.numbers[0] if self.numbers else None


class Problem(Enum):
    """Why a client line is not a command the server can act on; the server answers -ERR."""

    UNKNOWN = "unknown command"
    WRONG_STATE = "command not valid in this state"
    SYNTAX = "bad arguments"
    TOO_LONG = "line too long"


@dataclass(frozen=True, slots=True)
class BadCommand(Event):
    """A client line the server must refuse with `-ERR` (and then carry on).

    `keyword` is the upper-cased first word ("" when unknown or the line is too long);
    `detail` a short English reason the application may use in its reply text.
    """

    problem: Problem
    keyword: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Reply(Event):
    """A single-line status: `+OK text`, `-ERR text`, or with a response code
    `-ERR [SYS/TEMP] text` (RFC 2449 §8; codes of RFC 2449 and RFC 3206: `SYS/TEMP`,
    `SYS/PERM`, `IN-USE`, `LOGIN-DELAY`, `AUTH`). `code` is without brackets. Also the
    greeting (RFC 1939 §4) and every `-ERR`. Wire form at most 512 octets (RFC 2449 §4).
    """

    ok: bool
    text: str = ""
    code: str | None = None


@dataclass(frozen=True, slots=True)
class MultilineStart(Event):
    """The `+OK` first line of a multi-line reply (CAPA, LIST, UIDL, RETR, TOP, AUTH listing).

    Data events and one MultilineEnd follow. A failing multi-line command gets a `Reply`
    with ok=False instead.
    """

    text: str = ""
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Data(Event):
    """A piece of a multi-line reply's body (RFC 1939 §3), in any chunking.

    Received: the body octets with the byte-stuffing removed; lines end in CRLF as sent.
    Sent: `wire=False` (default) means raw octets the library byte-stuffs (a `.` at a line
    start gets a second `.`, across chunk boundaries too); `wire=True` means the octets are
    already stuffed (a stored message in wire form) and pass through unchanged, only checked
    not to contain a terminating `.` line.
    """

    data: bytes
    wire: bool = False


@dataclass(frozen=True, slots=True)
class MultilineEnd(Event):
    """The end of a multi-line reply: the library writes/reads the `.` line (RFC 1939 §3).
    A body that does not end in CRLF is given one before the terminator."""


@dataclass(frozen=True, slots=True)
class SaslContinuation(Event):
    """A server challenge in an AUTH exchange: `+ <base64>` (RFC 5034 §4); `text` is the
    base64 text as on the wire (may be empty); encoding and decoding are the application's."""

    text: str = ""


@dataclass(frozen=True, slots=True)
class SaslResponse(Event):
    """A client line inside an AUTH exchange (RFC 5034 §4): base64 text, or `*` to cancel."""

    text: str

    @property
    def cancelled(self) -> bool:
        """True for `*`, the client's cancellation of the exchange."""
        return self.text == "*"


@dataclass(frozen=True, slots=True)
class TlsStart(Event):
    """STLS was accepted (RFC 2595 §4): the adapter must run the TLS handshake now on the raw
    socket, then call `tls_started()`. No plaintext may be buffered at this point: the library
    refuses it (the STARTTLS command injection, CVE-2011-0411, RFC 7457 §2.2)."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed its side (received), or we are closing ours (sent)."""


class Signal(Enum):
    """What `next_event()` returns when there is no event to return."""

    NEED_DATA = "need data"
    """Feed more bytes with `receive_data()`."""
    PAUSED = "paused"
    """Our side must act first: send the reply owed, or finish the TLS handshake."""


NEED_DATA: Final = Signal.NEED_DATA
PAUSED: Final = Signal.PAUSED

NextEvent = Event | Literal[Signal.NEED_DATA, Signal.PAUSED]
"""The return type of `next_event()`."""
