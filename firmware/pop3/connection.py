"""POP3 connections over bytes, both roles, in the style of h11: no sockets, no clock.

An adapter drives either role the same way:

    conn.receive_data(data)        # bytes read from the socket; b"" at end of file
    event = conn.next_event()      # an Event, NEED_DATA (read more) or PAUSED (act first)
    sock.send(conn.send(event))    # the wire form of what we say

`ServerConnection` turns client lines into `Command` / `BadCommand` / `SaslResponse` events
and checks that the application's replies fit the command (a `+OK` to RETR must start a
multi-line reply; a second reply is refused); it stuffs bodies and writes the terminator.
`ClientConnection` checks and writes commands (pipelining allowed where the outcome cannot
change what may follow), reads replies, knows which are multi-line, un-stuffs bodies and
reports `[CODE]`s and the greeting's APOP timestamp. Both follow `states.TABLE`.

Errors: `LocalProtocolError` (our caller broke the protocol), `RemoteProtocolError` (the peer
did; close the connection). Either leaves the connection in _S_ERROR.
"""

from __future__ import annotations

from typing import Final

from firmware.pop3 import syntax
from firmware.pop3.body import Stuffer, Unstuffer
from firmware.pop3.events import (
    NEED_DATA,
    PAUSED,
    BadCommand,
    Command,
    ConnectionClosed,
    Data,
    Event,
    MultilineEnd,
    MultilineStart,
    NextEvent,
    Problem,
    Reply,
    SaslContinuation,
    SaslResponse,
    TlsStart,
)
from firmware.pop3.states import (
    BAD,
    COMMAND_STATES,
    GREET,
    SASL_RESPONSE,
    TABLE,
    TLS_DONE,
    Row,
    State,
)
from firmware.pop3.wire_errors import LocalProtocolError, ProtocolError, RemoteProtocolError

# Enum members as module constants: an attribute of an Enum class costs ~130 ns per look-up
# in Python 3.11, and the per-command paths look several up.
_S_CLOSED: Final = State.CLOSED
_S_ERROR: Final = State.ERROR
_S_GREETING: Final = State.GREETING
_S_SASL: Final = State.SASL
_S_STLS: Final = State.STLS
_P_TOO_LONG: Final = Problem.TOO_LONG
_P_UNKNOWN: Final = Problem.UNKNOWN
_P_WRONG_STATE: Final = Problem.WRONG_STATE

MAX_DISCARD: Final = 16384
"""Octets of an over-long command line the server drops while waiting for its line end before
it gives up on the peer (RemoteProtocolError)."""

_DEFAULT_LIMITS: Final = (syntax.MAX_COMMAND_LINE, syntax.MAX_SASL_LINE, MAX_DISCARD)
_TOO_LONG: Final = BadCommand(_P_TOO_LONG, "", "line too long")
_CLOSED: Final = ConnectionClosed()
_END: Final = MultilineEnd()


class _Connection:
    """What both roles share: the receive buffer, end of file, the state, TLS."""

    __slots__ = ("_buf", "_eof", "_pos", "_tls_announced", "state", "tls_active")

    def __init__(self, *, tls_active: bool) -> None:
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._tls_announced = False
        self.state = _S_GREETING
        self.tls_active = tls_active

    # -- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes read from the peer; b"" means the peer closed its side (end of file).

        Raises LocalProtocolError for data after end of file.
        """
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data after end of file")
            return
        if not data:
            self._eof = True
            return
        if self._pos >= len(self._buf):
            self._buf, self._pos = bytes(data), 0
        else:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """(bytes received and not yet consumed, end of file seen)."""
        return self._buf[self._pos :], self._eof

    def _line(self, limit: int) -> bytes | None:
        """The next complete line (at most `limit` octets with its LF) without its line end."""
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n", pos, pos + limit)
        if end < 0:
            return None
        line = buf[pos:end]
        self._pos = end + 1
        if self._pos >= len(buf):
            self._buf, self._pos = b"", 0
        return line[:-1] if line.endswith(b"\r") else line

    def _over(self, limit: int) -> bool:
        return len(self._buf) - self._pos >= limit

    # -- TLS ---------------------------------------------------------------------------------

    def _tls_event(self) -> NextEvent:
        if self._tls_announced:
            return PAUSED
        if len(self._buf) > self._pos:
            raise self._fail(
                RemoteProtocolError("plaintext received after STLS, before the TLS handshake")
            )
        self._tls_announced = True
        return TlsStart()

    def tls_started(self) -> None:
        """The adapter finished the TLS handshake after TlsStart: back to AUTHORIZATION.

        From now on feed decrypted bytes. Raises LocalProtocolError when no TLS start was due,
        RemoteProtocolError when plaintext arrived before the handshake.
        """
        if self.state is not _S_STLS or not self._tls_announced:
            raise self._fail(LocalProtocolError(f"no TLS handshake is due in {self.state.value}"))
        if len(self._buf) > self._pos:
            raise self._fail(
                RemoteProtocolError("plaintext received after STLS, before the TLS handshake")
            )
        row = TABLE[_S_STLS][TLS_DONE]
        assert row.ok is not None
        self.state = row.ok
        self.tls_active = True
        self._tls_announced = False

    # -- errors ------------------------------------------------------------------------------

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self.state = _S_ERROR
        return error

    def _check_usable(self) -> None:
        if self.state is _S_ERROR:
            raise LocalProtocolError("the connection is in the ERROR state")


class ServerConnection(_Connection):
    """The server role of one POP3 connection (RFC 1939, 2449, 2595, 3206, 5034).

    Start by sending the greeting, a `Reply`. Then loop: `next_event()` gives one client
    event; answer each `Command`, `BadCommand` or `SaslResponse` with one reply (a `Reply`,
    a `MultilineStart` + `Data`... + `MultilineEnd`, or a `SaslContinuation`) before the next
    event is given (PAUSED until then). Pipelined commands wait in the buffer, in order.

    Limits: `line_limit` octets per command line (RFC 2449 §4: 255), `sasl_line_limit` inside
    an AUTH exchange; an over-long line is a BadCommand(TOO_LONG) as soon as the limit is
    crossed; if `max_discard` more octets come without a line end, RemoteProtocolError.
    """

    __slots__ = ("_body", "_discarded", "_pending", "_pending_multi", "_pending_row", "limits")

    def __init__(
        self,
        *,
        tls_active: bool = False,
        line_limit: int = syntax.MAX_COMMAND_LINE,
        sasl_line_limit: int = syntax.MAX_SASL_LINE,
        max_discard: int = MAX_DISCARD,
    ) -> None:
        super().__init__(tls_active=tls_active)
        limits = (line_limit, sasl_line_limit, max_discard)
        self.limits = _DEFAULT_LIMITS if limits == _DEFAULT_LIMITS else limits
        self._pending: Event | None = None  # the client event we owe a reply to
        self._pending_row: Row | None = None
        self._pending_multi = False
        self._body: Stuffer | None = None
        self._discarded = -1  # >= 0 while dropping the rest of an over-long line

    @property
    def pending(self) -> Event | None:
        """The client event the application has still to answer, or None."""
        return self._pending

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes from the client (b"" at end of file); see `_Connection.receive_data`."""
        if self._discarded >= 0 and data:
            end = data.find(b"\n")
            if end < 0 or self._discarded + end > self.limits[2]:
                self._discarded += len(data)  # past max_discard: fatal at next_event
                return
            self._discarded = -1
            data = data[end + 1 :]
            if not data:
                return
        super().receive_data(data)

    def next_event(self) -> NextEvent:
        """The next client event, NEED_DATA or PAUSED (a reply or the TLS handshake is owed).

        Raises RemoteProtocolError for plaintext after STLS and for an over-long line that
        does not end within `max_discard` octets.
        """
        state = self.state
        if self._pending is not None or state is _S_GREETING:
            return PAUSED
        if state is _S_ERROR:
            raise RemoteProtocolError("the connection is in the ERROR state")
        if state is _S_STLS:
            return self._tls_event()
        if state is _S_CLOSED:
            self._buf, self._pos = b"", 0
            return _CLOSED if self._eof else NEED_DATA
        if self._discarded > self.limits[2]:
            raise self._fail(
                RemoteProtocolError(
                    f"a line ran more than {self.limits[2]} octets past the line limit",
                    Reply(False, "line too long; closing"),
                )
            )
        limit = self.limits[1] if state is _S_SASL else self.limits[0]
        line = self._line(limit)
        if line is None:
            if self._over(limit):
                return self._too_long(state, limit)
            if self._eof:
                self.state = _S_CLOSED
                self._buf, self._pos = b"", 0
                return _CLOSED
            return NEED_DATA
        if state is _S_SASL:
            return self._owe(
                SaslResponse(line.decode(syntax.ENCODING, syntax.ERRORS)),
                TABLE[state][SASL_RESPONSE],
                False,
            )
        event = syntax.parse_command(line)
        rows = TABLE[state]
        if isinstance(event, Command):
            row = rows.get(event.keyword)
            if row is None:
                event = BadCommand(
                    _P_WRONG_STATE,
                    event.keyword,
                    f"{event.keyword} is not valid in the {state.value} state",
                )
            else:
                if row.during is not None:
                    self.state = row.during
                return self._owe(event, row, syntax.is_multiline(event))
        elif event.problem is not _P_UNKNOWN and event.keyword not in rows:
            event = BadCommand(
                _P_WRONG_STATE,
                event.keyword,
                f"{event.keyword} is not valid in the {state.value} state",
            )
        return self._owe(event, rows[BAD], False)

    def _too_long(self, state: State, limit: int) -> Event:
        """Report an over-long line once; drop it up to its LF, now or as it arrives.

        The octets dropped past the limit count the same whatever the chunking: more than
        `max_discard` of them is fatal at the next call.
        """
        buf, start = self._buf, self._pos + limit
        end = buf.find(b"\n", start)
        if end < 0:
            self._discarded = len(buf) - start
            self._buf, self._pos = b"", 0
        else:
            if end - start > self.limits[2]:
                self._discarded = end - start
            self._pos = end + 1
            if self._pos >= len(buf):
                self._buf, self._pos = b"", 0
        return self._owe(_TOO_LONG, TABLE[state][BAD], False)

    def _owe(self, event: Event, row: Row, multiline: bool) -> Event:
        self._pending = event
        self._pending_row = row
        self._pending_multi = multiline
        return event

    def send(self, event: Event) -> bytes:
        """The wire form of our next piece of reply (or b"" for ConnectionClosed).

        Accepts: the greeting `Reply` first; then, for each client event, one `Reply`, or
        `MultilineStart` (multi-line commands only) + `Data`... + `MultilineEnd`, or
        `SaslContinuation` (AUTH with a mechanism, SASL responses). `ConnectionClosed` at any
        time. Raises LocalProtocolError for anything else (the state is then ERROR), and
        RemoteProtocolError for a `+OK` to STLS while plaintext is buffered (the injection).
        """
        kind = type(event)
        if kind is Data:
            assert isinstance(event, Data)
            body = self._body
            if body is None or self.state is _S_ERROR:
                raise self._fail(LocalProtocolError("Data outside a multi-line reply"))
            if not event.wire:
                return body.feed(event.data)
            out = body.feed_wire(event.data)
            if out is None:
                raise self._fail(
                    LocalProtocolError("wire-form Data holds an unstuffed terminating '.' line")
                )
            return out
        self._check_usable()
        if kind is Reply:
            assert isinstance(event, Reply)
            return self._send_reply(event)
        if kind is MultilineEnd:
            if self._body is None:
                raise self._fail(LocalProtocolError("MultilineEnd outside a multi-line reply"))
            out = self._body.end()
            row = self._pending_row
            assert row is not None and row.listing is not None
            self._body = None
            self._done(row.listing)
            return out
        if kind is MultilineStart:
            assert isinstance(event, MultilineStart)
            row = self._answerable("MultilineStart")
            if not self._pending_multi or row.listing is None:
                raise self._fail(
                    LocalProtocolError(f"{_name(self._pending)} takes no multi-line reply")
                )
            line = self._status(b"+OK", event.text, event.code)
            self._body = Stuffer()
            return line
        if kind is SaslContinuation:
            assert isinstance(event, SaslContinuation)
            row = self._answerable("SaslContinuation")
            if row.cont is None or self._pending_multi:
                raise self._fail(
                    LocalProtocolError(f"{_name(self._pending)} takes no SASL continuation")
                )
            # RFC 5034 §4: continue-req = "+" SP [base64] CRLF: the space even when empty.
            line = self._status(b"+", event.text, None) if event.text else b"+ \r\n"
            self._done(row.cont)
            return line
        if kind is ConnectionClosed:
            self.state = _S_CLOSED
            self._pending = self._pending_row = self._body = None
            return b""
        raise self._fail(LocalProtocolError(f"a server does not send {kind.__name__}"))

    def body_sent_elsewhere(self, tail: bytes) -> None:
        """The adapter wrote wire-form body octets to the socket itself (RETR straight from
        the stored message); `tail`: their last octets (3 suffice), so that `MultilineEnd`
        still ends the body correctly. The adapter vouches that they were stuffed.

        Raises LocalProtocolError outside a multi-line reply.
        """
        if self._body is None or self.state is _S_ERROR:
            raise self._fail(LocalProtocolError("body octets outside a multi-line reply"))
        self._body.skip_wire(tail)

    def _send_reply(self, event: Reply) -> bytes:
        if self.state is _S_GREETING:
            greet = TABLE[_S_GREETING][GREET]
            line = self._status(b"+OK" if event.ok else b"-ERR", event.text, event.code)
            self.state = greet.ok if event.ok and greet.ok is not None else greet.err
            return line
        row = self._answerable("Reply")
        if not event.ok:
            line = self._status(b"-ERR", event.text, event.code)
            self._done(row.err)
            return line
        if self._pending_multi or row.ok is None:
            raise self._fail(
                LocalProtocolError(
                    f"+OK to {_name(self._pending)} must be a MultilineStart"
                    if self._pending_multi
                    else f"{_name(self._pending)} cannot be answered +OK"
                )
            )
        if row.ok is _S_STLS:
            if self.tls_active:
                raise self._fail(LocalProtocolError("+OK to STLS with TLS already active"))
            if len(self._buf) > self._pos:
                raise self._fail(
                    RemoteProtocolError("plaintext pipelined after STLS (command injection)")
                )
        line = self._status(b"+OK", event.text, event.code)
        self._done(row.ok)
        return line

    def _answerable(self, what: str) -> Row:
        row = self._pending_row
        if self._pending is None or row is None or self._body is not None:
            raise self._fail(
                LocalProtocolError(f"{what} with no client event to answer in {self.state.value}")
            )
        return row

    def _status(self, prefix: bytes, text: str, code: str | None) -> bytes:
        try:
            return syntax.format_status(prefix, text, code)
        except ValueError as exc:
            raise self._fail(LocalProtocolError(str(exc))) from None

    def _done(self, state: State) -> None:
        self.state = state
        self._pending = self._pending_row = None
        self._pending_multi = False


def _name(event: Event | None) -> str:
    if isinstance(event, Command | BadCommand):
        return event.keyword or "a bad command"
    if isinstance(event, SaslResponse):
        return "a SASL response"
    return "nothing"


class ClientConnection(_Connection):
    """The client role of one POP3 connection.

    First `next_event()` gives the greeting `Reply` (`apop_timestamp` is then set). Send
    `Command`s (and `SaslResponse`s after a `SaslContinuation`); each gets, in order, a
    `Reply`, a `MultilineStart` + `Data`... + `MultilineEnd`, or a `SaslContinuation`.
    Commands may be pipelined (RFC 2449 §6.6) except after AUTH, STLS and QUIT, which must be
    answered first. After the `+OK` to STLS, `next_event()` gives `TlsStart`: handshake, then
    `tls_started()`, then ask CAPA again (RFC 2595 §4).

    `reply_line_limit`: octets per status line (RFC 2449 §4: 512); a longer one is a
    RemoteProtocolError. Body lines are not limited: bodies stream in bounded memory.
    """

    __slots__ = ("_body", "_expected", "_pending", "apop_timestamp", "reply_line_limit")

    def __init__(
        self, *, tls_active: bool = False, reply_line_limit: int = syntax.MAX_REPLY_LINE
    ) -> None:
        super().__init__(tls_active=tls_active)
        self.reply_line_limit = reply_line_limit
        self.apop_timestamp: str | None = None
        # (trigger, event sent, multi-line expected) per command awaiting its reply
        self._pending: list[tuple[str, Event, bool]] = []  # short: a list beats a deque's 600 B
        self._expected = _S_GREETING  # the state once every pending command succeeds
        self._body: Unstuffer | None = None

    @property
    def pending(self) -> int:
        """Commands sent and not yet fully answered."""
        return len(self._pending)

    def send(self, event: Event) -> bytes:
        """The wire form of a `Command` or `SaslResponse` (b"" for `ConnectionClosed`).

        Raises LocalProtocolError when the command is unknown, malformed, not valid in the
        state the session will be in, or must wait for a reply first.
        """
        self._check_usable()
        if isinstance(event, Command):
            return self._send_command(event)
        if isinstance(event, SaslResponse):
            if self.state is not _S_SASL or self._pending:
                raise self._fail(
                    LocalProtocolError("a SASL response is sent only after a continuation")
                )
            if "\r" in event.text or "\n" in event.text:
                raise self._fail(LocalProtocolError("a SASL response must not hold CR or LF"))
            self._pending.append((SASL_RESPONSE, event, False))
            self._expected = _S_CLOSED  # nothing more until the server answers
            return event.text.encode(syntax.ENCODING, syntax.ERRORS) + b"\r\n"
        if isinstance(event, ConnectionClosed):
            self.state = _S_CLOSED
            self._pending.clear()
            return b""
        raise self._fail(LocalProtocolError(f"a client does not send {type(event).__name__}"))

    def tls_started(self) -> None:
        """The TLS handshake after TlsStart is done: AUTHORIZATION again (RFC 2595 §4)."""
        super().tls_started()
        self._expected = self.state

    def _send_command(self, command: Command) -> bytes:
        expected = self._expected
        if expected not in COMMAND_STATES:
            raise self._fail(
                LocalProtocolError(
                    f"{command.keyword} cannot be sent now: "
                    + (
                        "wait for the reply first"
                        if self._pending
                        else f"the session is in {self.state.value}"
                    )
                )
            )
        problem = syntax.command_error(command)
        if problem is not None:
            raise self._fail(LocalProtocolError(problem))
        row = TABLE[expected].get(command.keyword)
        if row is None:
            raise self._fail(
                LocalProtocolError(f"{command.keyword} is not valid in the {expected.value} state")
            )
        if command.keyword == "STLS" and self.tls_active:
            raise self._fail(LocalProtocolError("STLS with TLS already active (RFC 2595 §4)"))
        multiline = syntax.is_multiline(command)
        if row.cont is not None and not multiline:
            self._expected = _S_CLOSED  # AUTH: wait for the server
        elif command.keyword == "STLS":
            self._expected = _S_CLOSED  # RFC 2595 §4: nothing after STLS before TLS
        else:
            after = row.listing if multiline else row.ok
            assert after is not None
            self._expected = after
        self._pending.append((command.keyword, command, multiline))
        return syntax.format_command(command)

    def next_event(self) -> NextEvent:
        """The next server event, NEED_DATA, or PAUSED (the TLS handshake is due).

        Raises RemoteProtocolError for a line that is not a POP3 reply, a reply that does not
        fit the command (`+OK` to RETR without a body is impossible to tell, so a multi-line
        command's `+OK` always starts a body), an over-long status line, end of file inside a
        reply, or data after the `+OK` to STLS.
        """
        state = self.state
        if state is _S_ERROR:
            raise RemoteProtocolError("the connection is in the ERROR state")
        body = self._body
        if body is not None:
            return self._read_body(body)
        if state is _S_STLS:
            return self._tls_event()
        line = self._line(self.reply_line_limit)
        if line is None:
            if self._over(self.reply_line_limit):
                raise self._fail(
                    RemoteProtocolError(
                        f"reply line longer than {self.reply_line_limit} octets (RFC 2449 §4)"
                    )
                )
            if self._eof:
                if self._pending or state is _S_GREETING:
                    raise self._fail(RemoteProtocolError("connection closed inside a reply"))
                self.state = _S_CLOSED
                self._buf, self._pos = b"", 0
                return _CLOSED
            return NEED_DATA
        if state is _S_GREETING:
            return self._greeting(line)
        if not self._pending:
            if line.startswith(b"-ERR") and state is not _S_CLOSED:
                # A server's parting word (idle logout, shutdown): the session is over.
                code, text = syntax.parse_status(line[4:])
                self.state = self._expected = _S_CLOSED
                return Reply(False, text, code)
            raise self._fail(RemoteProtocolError(f"unsolicited line from the server: {line!r}"))
        trigger, sent, multiline = self._pending[0]
        row = TABLE[state].get(trigger)
        if line.startswith(b"+OK") and (len(line) == 3 or line[3] == 0x20):
            code, text = syntax.parse_status(line[3:])
            if multiline:
                if row is None or row.listing is None:
                    raise self._unfit(sent, "+OK")
                self._body = Unstuffer()
                return MultilineStart(text, code)
            if row is None or row.ok is None:
                raise self._unfit(sent, "+OK")
            self._answered(row.ok)
            return Reply(True, text, code)
        if line.startswith(b"-ERR") and (len(line) == 4 or line[4] == 0x20):
            code, text = syntax.parse_status(line[4:])
            self._answered(row.err if row is not None else state)
            return Reply(False, text, code)
        if line == b"+" or line.startswith(b"+ "):
            if row is None or row.cont is None or multiline:
                raise self._unfit(sent, "a SASL continuation")
            self._answered(row.cont)
            return SaslContinuation(line[2:].decode(syntax.ENCODING, syntax.ERRORS))
        raise self._fail(RemoteProtocolError(f"not a POP3 reply: {line[:80]!r}"))

    def _greeting(self, line: bytes) -> Event:
        greet = TABLE[_S_GREETING][GREET]
        if line.startswith(b"+OK") and (len(line) == 3 or line[3] == 0x20):
            code, text = syntax.parse_status(line[3:])
            self.apop_timestamp = syntax.apop_timestamp(text)
            assert greet.ok is not None
            self.state = self._expected = greet.ok
            return Reply(True, text, code)
        if line.startswith(b"-ERR"):
            code, text = syntax.parse_status(line[4:])
            self.state = self._expected = greet.err
            return Reply(False, text, code)
        raise self._fail(RemoteProtocolError(f"not a POP3 greeting: {line[:80]!r}"))

    def _read_body(self, body: Unstuffer) -> NextEvent:
        data, self._pos, done = body.read(self._buf, self._pos)
        if self._pos >= len(self._buf):
            self._buf, self._pos = b"", 0
        if data:
            if done:
                # Give the data now; the terminator was consumed, End comes next call.
                self._body = _FINISHED
            return Data(data)
        if done or body is _FINISHED:
            self._body = None
            trigger, _, _ = self._pending[0]
            row = TABLE[self.state][trigger]
            assert row.listing is not None
            self._answered(row.listing)
            return _END
        if self._eof:
            raise self._fail(RemoteProtocolError("connection closed inside a multi-line reply"))
        return NEED_DATA

    def _answered(self, state: State) -> None:
        del self._pending[0]
        self.state = state
        if not self._pending:
            self._expected = state

    def _unfit(self, sent: Event, what: str) -> RemoteProtocolError:
        error = RemoteProtocolError(f"{what} is not a valid answer to {_name(sent)} here")
        self._fail(error)
        return error


class _Finished(Unstuffer):
    """Marks a body whose terminator was read while its last data was being returned."""

    __slots__ = ()

    def read(self, buf: bytes, pos: int) -> tuple[bytes, int, bool]:
        return b"", pos, True


_FINISHED: Final = _Finished()
