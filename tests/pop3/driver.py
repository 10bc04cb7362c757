"""A device POP3 session behind the protocol library, bytes in and bytes out, no sockets.

`Driver` wires a `Pop3Protocol` to a real `ServerConnection` the way the trio adapter does
(firmware/pop3/server.py), minus sockets, timers and TLS records: what a client would receive
for what it sends. Used by the protocol, handler and reliability tests.
"""

from __future__ import annotations

from firmware.pop3 import syntax
from firmware.pop3.connection import ServerConnection
from firmware.pop3.events import (
    NEED_DATA,
    BadCommand,
    Command,
    ConnectionClosed,
    Data,
    MultilineEnd,
    SaslResponse,
    TlsStart,
)
from firmware.pop3.protocol import MAX_DISCARD, SASL_LINE_LIMIT, Answer, Pop3Protocol
from firmware.pop3.wire_errors import RemoteProtocolError


class Driver:
    """One connection: `await feed(bytes)` returns every reply octet the device sends back.

    `answers` holds every `Answer` the device gave, `closed` says the device ended the
    connection (a closing answer, the endless line, plaintext after STLS), `tls_due` that an
    STLS was accepted: call `tls_started()` to go on as if the handshake was done.
    """

    def __init__(self, protocol: Pop3Protocol, *, tls_active: bool = False) -> None:
        self.p = protocol
        self.conn = ServerConnection(
            tls_active=tls_active, sasl_line_limit=SASL_LINE_LIMIT, max_discard=MAX_DISCARD
        )
        self.greeting = self.conn.send(protocol.greeting())
        self.answers: list[Answer] = []
        self.closed = False
        self.tls_due = False

    @property
    def last(self) -> Answer | None:
        return self.answers[-1] if self.answers else None

    def tls_started(self) -> None:
        assert self.tls_due
        self.tls_due = False
        self.conn.tls_started()
        self.p.tls_active = True

    async def feed(self, data: bytes) -> bytes:
        """Give the device `data` (b"" for end of file); what it answers, in order."""
        out = b""
        if self.closed:
            return out
        self.conn.receive_data(data)
        while not self.closed and not self.tls_due:
            try:
                event = self.conn.next_event()
            except RemoteProtocolError:
                out += syntax.format_status(b"-ERR", self.p.endless_line().text, None)
                self.closed = True
                break
            if event is NEED_DATA:
                break
            if isinstance(event, TlsStart):
                self.tls_due = True
                break
            if isinstance(event, ConnectionClosed):
                self.closed = True
                break
            assert isinstance(event, Command | BadCommand | SaslResponse), event
            answer = await self.p.answer(event)
            self.answers.append(answer)
            out += await self._write(answer)
        return out

    async def _write(self, answer: Answer) -> bytes:
        try:
            out = self.conn.send(answer.first)
        except RemoteProtocolError:  # +OK to STLS with plaintext behind it
            self.closed = True
            return b""
        body = answer.body
        if body is not None:
            try:
                while True:
                    if answer.guard is None:
                        chunk = next(body, None)
                    else:
                        async with answer.guard():
                            chunk = next(body, None)
                    if chunk is None:
                        break
                    out += self.conn.send(Data(chunk, wire=body.wire))
                out += self.conn.send(MultilineEnd())
            finally:
                body.close()
        if answer.close:
            self.conn.send(ConnectionClosed())
            self.closed = True
        return out
