"""Helpers for the protocol library tests: drive a connection with bytes, collect events."""

from __future__ import annotations

from firmware.pop3.connection import ClientConnection, ServerConnection
from firmware.pop3.events import (
    NEED_DATA,
    PAUSED,
    Command,
    ConnectionClosed,
    Data,
    Event,
    MultilineEnd,
    MultilineStart,
    NextEvent,
    Reply,
    SaslContinuation,
)


def drain(conn: ServerConnection | ClientConnection) -> list[Event]:
    """Every event available now (stops at NEED_DATA, PAUSED or after ConnectionClosed)."""
    events: list[Event] = []
    while True:
        event: NextEvent = conn.next_event()
        if event is NEED_DATA or event is PAUSED:
            return events
        assert not isinstance(event, type(NEED_DATA))
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


def merge_data(events: list[Event]) -> list[Event]:
    """Events with consecutive Data joined into one (chunking is not part of the meaning)."""
    merged: list[Event] = []
    for event in events:
        if isinstance(event, Data):
            if merged and isinstance(merged[-1], Data):
                merged[-1] = Data(merged[-1].data + event.data)
            elif event.data:
                merged.append(Data(event.data))
        else:
            merged.append(event)
    return merged


def greeted_pair(text: str = "ready <1.2@host>") -> tuple[ServerConnection, ClientConnection]:
    """A server and a client past the greeting, both in AUTHORIZATION."""
    server, client = ServerConnection(), ClientConnection()
    client.receive_data(server.send(Reply(True, text)))
    assert drain(client) == [Reply(True, text)]
    return server, client


def exchange(
    server: ServerConnection, client: ClientConnection, command: Command, *answer: Event
) -> list[Event]:
    """Client sends `command`, the server receives it and sends `answer`; returns what the
    client received (Data merged)."""
    server.receive_data(client.send(command))
    assert drain(server) == [command]
    wire = b"".join(server.send(event) for event in answer)
    client.receive_data(wire)
    return merge_data(drain(client))


def logged_in_pair() -> tuple[ServerConnection, ClientConnection]:
    """A pair in TRANSACTION after USER/PASS."""
    server, client = greeted_pair()
    exchange(server, client, Command("USER", ("box",)), Reply(True))
    exchange(server, client, Command("PASS", ("secret",)), Reply(True))
    assert server.state is client.state
    return server, client


def body_events(text: str, *chunks: bytes) -> list[Event]:
    """A multi-line +OK with `chunks` of raw body."""
    return [MultilineStart(text), *(Data(c) for c in chunks), MultilineEnd()]


def sasl_pair() -> tuple[ServerConnection, ClientConnection]:
    """A pair inside an AUTH exchange (state SASL)."""
    server, client = greeted_pair()
    got = exchange(server, client, Command("AUTH", ("PLAIN",)), SaslContinuation(""))
    assert got == [SaslContinuation("")]
    return server, client
