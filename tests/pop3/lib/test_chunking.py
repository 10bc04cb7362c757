"""Byte boundaries: commands and replies split at every position read the same."""

from __future__ import annotations

import pytest

from firmware.pop3.body import Stuffer, Unstuffer
from firmware.pop3.connection import ClientConnection, ServerConnection
from firmware.pop3.events import (
    NEED_DATA,
    PAUSED,
    Command,
    Data,
    Event,
    MultilineEnd,
    MultilineStart,
    Reply,
    SaslResponse,
)
from tests.pop3.lib.wire import drain, merge_data

COMMANDS = (
    b"USER box\r\nPASS a b c \r\nSTAT\r\nLIST\r\nLIST 1\r\nRETR 1\r\nTOP 1 5\r\n"
    b"UIDL 2\r\nDELE 1\r\nRSET\r\nNOOP\r\nquit\n"
)
BODY = b".a\r\n..\r\n.\r\n\r\n.\n\r.\r\nx\r\n.\r\r\n..\r\nend"
WIRE_BODY = b"..a\r\n...\r\n..\r\n\r\n..\n\r.\r\nx\r\n..\r\r\n...\r\nend\r\n.\r\n"


def _serve(server: ServerConnection) -> list[Event]:
    """Answer every command +OK (bodies for the multi-line ones); return the events."""
    seen: list[Event] = []
    while True:
        event = server.next_event()
        if event is NEED_DATA or event is PAUSED:
            return seen
        seen.append(event)
        assert isinstance(event, Command)
        if event.keyword in {"RETR", "TOP"} or (event.keyword == "LIST" and not event.numbers):
            server.send(MultilineStart())
            server.send(MultilineEnd())
        else:
            server.send(Reply(True))


def _server_events(chunks: list[bytes]) -> list[Event]:
    server = ServerConnection()
    server.send(Reply(True))
    events: list[Event] = []
    for chunk in chunks:
        server.receive_data(chunk)
        events += _serve(server)
    return events


def test_commands_split_at_every_boundary() -> None:
    whole = _server_events([COMMANDS])
    assert len(whole) == 12 and whole[1] == Command("PASS", ("a b c ",))
    for cut in range(1, len(COMMANDS)):
        assert _server_events([COMMANDS[:cut], COMMANDS[cut:]]) == whole, cut
    assert _server_events([bytes([b]) for b in COMMANDS]) == whole


def test_body_stuffing_split_at_every_boundary() -> None:
    def send(chunks: list[bytes]) -> bytes:
        stuffer = Stuffer()
        return b"".join(stuffer.feed(c) for c in chunks) + stuffer.end()

    assert send([BODY]) == WIRE_BODY
    for cut in range(len(BODY) + 1):
        assert send([BODY[:cut], BODY[cut:]]) == WIRE_BODY, cut
    assert send([bytes([b]) for b in BODY]) == WIRE_BODY


def test_wire_form_split_at_every_boundary() -> None:
    stored = WIRE_BODY[: -len(b".\r\n")]
    for cut in range(len(stored) + 1):
        stuffer = Stuffer()
        pieces = [stuffer.feed_wire(c) for c in (stored[:cut], stored[cut:])]
        assert None not in pieces
        assert b"".join(p for p in pieces if p is not None) + stuffer.end() == WIRE_BODY, cut


def _client_events(chunks: list[bytes]) -> list[Event]:
    client = ClientConnection()
    client.receive_data(b"+OK hi\r\n")
    drain(client)
    client.send(Command("USER", ("box",)))
    client.send(Command("PASS", ("pw",)))
    client.send(Command("RETR", numbers=(1,)))
    client.send(Command("LIST", numbers=(1,)))
    events: list[Event] = []
    for chunk in chunks:
        client.receive_data(chunk)
        events += drain(client)
    return merge_data(events)


REPLIES = b"+OK\r\n+OK [X/Y] in\r\n+OK 30 octets\r\n" + WIRE_BODY + b"-ERR [SYS/TEMP] busy\r\n"
EXPECTED = [
    Reply(True),
    Reply(True, "in", "X/Y"),
    MultilineStart("30 octets"),
    Data(BODY + b"\r\n"),
    MultilineEnd(),
    Reply(False, "busy", "SYS/TEMP"),
]


def test_replies_split_at_every_boundary() -> None:
    assert _client_events([REPLIES]) == EXPECTED
    for cut in range(1, len(REPLIES)):
        assert _client_events([REPLIES[:cut], REPLIES[cut:]]) == EXPECTED, cut
    assert _client_events([bytes([b]) for b in REPLIES]) == EXPECTED


@pytest.mark.parametrize("size", [0, 1, 2, 3])
def test_unstuffer_holds_back_only_a_possible_terminator(size: int) -> None:
    """After `\\r\\n.` or `\\r\\n.\\r` the reader waits; nothing else is held back."""
    reader = Unstuffer()
    data = b"ab\r\n.\r\n"[: 4 + size] if size else b"ab\r\n"
    got, pos, done = reader.read(data, 0)
    assert got == b"ab\r\n"
    assert (pos, done) == ((7, True) if size == 3 else (4, False))


def test_sasl_response_split_at_every_boundary() -> None:
    line = b"dGVzdAB0ZXN0AHRlc3Q=\r\n"
    for cut in range(1, len(line)):
        server = ServerConnection()
        server.send(Reply(True))
        server.receive_data(b"AUTH PLAIN\r\n")
        drain(server)
        from firmware.pop3.events import SaslContinuation

        server.send(SaslContinuation())
        server.receive_data(line[:cut])
        first = drain(server)
        server.receive_data(line[cut:])
        assert first + drain(server) == [SaslResponse("dGVzdAB0ZXN0AHRlc3Q=")]
