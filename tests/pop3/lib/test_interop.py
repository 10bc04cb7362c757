"""The library's roles against real peers over real sockets on 127.0.0.1.

- `ClientConnection` behind a small trio adapter against the device's POP3 service (the
  current `Pop3Service`), in plain text and through STLS with a real TLS handshake: the
  adapter loop the Internet Fax poller and the load generator will use.
- `ServerConnection` behind a small trio adapter, serving an in-memory mailbox to Python's
  poplib (a real, independent client), bodies handed over in 7-octet raw chunks.
"""

from __future__ import annotations

import poplib
import ssl
from collections.abc import Iterator

import trio

from firmware.pop3.connection import ClientConnection, ServerConnection
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
    Reply,
    SaslResponse,
    TlsStart,
)
from firmware.pop3.states import State
from firmware.pop3.syntax import parse_capabilities
from tests.pop3.conftest import ALICE_PASSWORD, MESSAGES, Server
from tests.pop3.lib.wire import merge_data


class TrioClient:
    """The whole client adapter: `send` -> socket, socket -> `receive_data`, `next_event`."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = ClientConnection()

    async def next(self) -> Event:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif event is PAUSED:
                raise AssertionError("the client never owes anything but a TLS handshake")
            else:
                assert not isinstance(event, type(NEED_DATA))
                return event

    async def ask(self, command: Command) -> list[Event]:
        """One command and its whole reply (bodies joined into one Data)."""
        await self.stream.send_all(self.conn.send(command))
        events = [await self.next()]
        if isinstance(events[0], MultilineStart):
            while not isinstance(events[-1], MultilineEnd):
                events.append(await self.next())
        return merge_data(events)

    async def starttls(self, context: ssl.SSLContext) -> None:
        assert await self.ask(Command("STLS")) == [Reply(True, "begin TLS negotiation")]
        assert await self.next() == TlsStart()
        tls = trio.SSLStream(self.stream, context, server_hostname="localhost")
        await tls.do_handshake()
        self.stream = tls
        self.conn.tls_started()


def _ok(events: list[Event]) -> bool:
    return isinstance(events[0], Reply) and events[0].ok


def _state(client: TrioClient) -> State:
    return client.conn.state


def _body(events: list[Event]) -> bytes:
    assert isinstance(events[0], MultilineStart) and isinstance(events[-1], MultilineEnd)
    return b"".join(e.data for e in events if isinstance(e, Data))


async def test_client_role_against_the_device_service(pop3: Server) -> None:
    client = TrioClient(await trio.open_tcp_stream("127.0.0.1", pop3.port))
    greeting = await client.next()
    assert isinstance(greeting, Reply) and greeting.ok
    assert client.conn.apop_timestamp is not None and client.conn.apop_timestamp in greeting.text
    capa = parse_capabilities(_body(await client.ask(Command("CAPA"))))
    assert "PIPELINING" in capa and "RESP-CODES" in capa
    assert (await client.ask(Command("USER", ("alice",))))[0] == Reply(True, "send PASS")
    assert _ok(await client.ask(Command("PASS", (ALICE_PASSWORD,))))
    assert _state(client) is State.TRANSACTION
    stat = await client.ask(Command("STAT"))
    assert isinstance(stat[0], Reply) and stat[0].text.startswith("3 ")
    listing = _body(await client.ask(Command("LIST")))
    sizes = [int(line.split()[1]) for line in listing.splitlines()]
    for number, message in enumerate(MESSAGES, 1):
        body = _body(await client.ask(Command("RETR", numbers=(number,))))
        assert len(body) == sizes[number - 1]  # the device's sizes count what clients keep
        assert body.replace(b"\r\n", b"\n").rstrip(b"\n") == message.replace(b"\r\n", b"\n").rstrip(
            b"\n"
        )
    assert _body(await client.ask(Command("RETR", numbers=(2,)))) == MESSAGES[1]
    top = _body(await client.ask(Command("TOP", numbers=(2, 0))))
    assert top == MESSAGES[1].split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    missing = await client.ask(Command("RETR", numbers=(10**30,)))
    assert isinstance(missing[0], Reply) and not missing[0].ok
    # pipelined: three commands in one write, three replies in order
    wire = b"".join(client.conn.send(Command(k)) for k in ("NOOP", "STAT", "NOOP"))
    await client.stream.send_all(wire)
    replies = [await client.next() for _ in range(3)]
    assert [type(r) for r in replies] == [Reply, Reply, Reply]
    assert replies[1] == stat[0]
    assert _ok(await client.ask(Command("QUIT")))
    assert await client.next() == ConnectionClosed()


async def test_client_role_stls_and_sasl_against_the_device_service(
    tls_pop3: Server, client_context: ssl.SSLContext
) -> None:
    client = TrioClient(await trio.open_tcp_stream("127.0.0.1", tls_pop3.port))
    await client.next()
    await client.starttls(client_context)
    assert client.conn.tls_active and client.conn.state is State.AUTHORIZATION
    capa = parse_capabilities(_body(await client.ask(Command("CAPA"))))
    assert "STLS" not in capa and "PLAIN" in capa["SASL"]
    import base64

    await client.stream.send_all(client.conn.send(Command("AUTH", ("PLAIN",))))
    challenge = await client.next()
    assert challenge.__class__.__name__ == "SaslContinuation"
    token = base64.b64encode(b"\0alice\0" + ALICE_PASSWORD.encode()).decode()
    await client.stream.send_all(client.conn.send(SaslResponse(token)))
    done = await client.next()
    assert isinstance(done, Reply) and done.ok
    assert _state(client) is State.TRANSACTION
    assert _ok(await client.ask(Command("QUIT")))


# -- the server role under poplib ------------------------------------------------------------

MAILBOX = [
    b"Subject: one\r\n\r\nfirst\r\n",
    b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\n\r\n.\r\nend\r\n",
    b"",
]


def _chunks(data: bytes, size: int = 7) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def answer(event: Event, deleted: set[int]) -> list[Event]:
    """A toy application: the mailbox above, password `pw`; reply texts are ours."""
    if isinstance(event, BadCommand):
        return [Reply(False, event.detail)]
    assert isinstance(event, Command)
    keyword, number = event.keyword, event.number
    if number is not None and not 1 <= number <= len(MAILBOX):
        return [Reply(False, f"no message {number}")]
    if keyword == "USER":
        return [Reply(True)]
    if keyword == "PASS":
        return [Reply(True, "logged in")] if event.args == ("pw",) else [Reply(False, "no", "AUTH")]
    if keyword == "STAT":
        return [Reply(True, f"{len(MAILBOX)} {sum(map(len, MAILBOX))}")]
    if keyword in ("LIST", "UIDL") and number is None:
        column = [len(m) if keyword == "LIST" else f"u{i}" for i, m in enumerate(MAILBOX, 1)]
        lines = "".join(f"{i} {v}\r\n" for i, v in enumerate(column, 1)).encode()
        return [MultilineStart(), Data(lines), MultilineEnd()]
    if keyword == "LIST" and number is not None:
        return [Reply(True, f"{number} {len(MAILBOX[number - 1])}")]
    if keyword == "RETR" and number is not None:
        data = [Data(c) for c in _chunks(MAILBOX[number - 1])]
        return [MultilineStart(f"{len(MAILBOX[number - 1])} octets"), *data, MultilineEnd()]
    if keyword == "TOP" and number is not None:
        head = MAILBOX[number - 1].split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        return [MultilineStart(), Data(head), MultilineEnd()]
    if keyword == "DELE" and number is not None:
        deleted.add(number)
        return [Reply(True, f"message {number} deleted")]
    if keyword == "QUIT":
        return [Reply(True, f"bye, {len(deleted)} deleted")]
    return [Reply(True)]


async def serve_one(stream: trio.SocketStream) -> None:
    """The whole server adapter around ServerConnection."""
    conn = ServerConnection()
    deleted: set[int] = set()
    await stream.send_all(conn.send(Reply(True, "library test server <1.2@localhost>")))
    while conn.state is not State.CLOSED:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(await stream.receive_some(4096))
        elif isinstance(event, ConnectionClosed) or event is PAUSED:
            break
        else:
            await stream.send_all(b"".join(conn.send(r) for r in answer(event, deleted)))
    await stream.aclose()


def _poplib_session(port: int) -> list[object]:
    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    seen: list[object] = [pop.getwelcome()]
    seen.append(pop.user("box"))
    seen.append(pop.pass_("pw"))
    seen.append(pop.stat())
    seen.append(pop.list()[1])
    seen.append(pop.uidl()[1])
    seen.append([pop.retr(i)[1] for i in range(1, len(MAILBOX) + 1)])
    seen.append(pop.top(2, 0)[1])
    seen.append(pop.dele(1))
    try:
        pop.retr(9)
    except poplib.error_proto as exc:
        seen.append(exc.args[0])
    seen.append(pop.quit())
    return seen


async def test_server_role_serves_poplib(nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, serve_one, listeners)
    seen = await trio.to_thread.run_sync(_poplib_session, port)
    nursery.cancel_scope.cancel()
    assert seen[0] == b"+OK library test server <1.2@localhost>"
    assert seen[2] == b"+OK logged in"
    assert seen[3] == (3, sum(map(len, MAILBOX)))
    assert seen[4] == [b"%d %d" % (i, len(m)) for i, m in enumerate(MAILBOX, 1)]
    assert seen[5] == [b"1 u1", b"2 u2", b"3 u3"]
    # poplib un-stuffs and splits on line ends: every line of every message comes back
    assert seen[6] == [m.split(b"\r\n")[:-1] for m in MAILBOX]
    assert seen[7] == [b"Subject: dots", b""]
    assert seen[8] == b"+OK message 1 deleted"
    assert seen[9] == b"-ERR no message 9"
    assert seen[10] == b"+OK bye, 1 deleted"
