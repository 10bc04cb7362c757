"""Property: a client and a server object talking through memory agree on every octet.

Hypothesis drives random sessions: any command valid in the current state with random
arguments, any answer the protocol allows with random texts and response codes, random bodies
(lines starting with '.', bare CR and LF, empty bodies, no final CRLF) given raw or already
stuffed, in random chunks, with both byte streams cut at random places and commands pipelined.
The client must read back exactly the events the server sent, every body octet identical
(plus the CRLF a body without one gets), and both ends must agree on the state throughout.
"""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.pop3.connection import ClientConnection, ServerConnection
from firmware.pop3.events import (
    Command,
    Data,
    Event,
    MultilineEnd,
    MultilineStart,
    Reply,
    SaslContinuation,
    SaslResponse,
    TlsStart,
)
from firmware.pop3.states import TABLE, State, valid_commands
from firmware.pop3.syntax import GRAMMAR, Args, is_multiline
from tests.pop3.lib.wire import drain, merge_data

TEXT = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=40
).filter(lambda t: not t.startswith("["))
WORD = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20).filter(
    lambda w: not any(c.isspace() for c in w)
)
CODE = st.none() | st.sampled_from(
    ["SYS/TEMP", "SYS/PERM", "IN-USE", "LOGIN-DELAY", "AUTH", "X-VENDOR/SUB/LEVEL"]
)
NUMBER = st.integers(0, 10**40)
PIECES = [b".", b"..", b"\r", b"\n", b"\r\n", b"x", b".\r\n", b"\n.\n", b"\r\n.\r\n", b" "]
BODY = st.lists(st.sampled_from(PIECES) | st.binary(max_size=8), max_size=30).map(b"".join)


def reference_stuff(body: bytes) -> bytes:
    """RFC 1939 §3 byte-stuffing written the slow, obvious way: line by line."""
    lines = re.split(rb"(?<=\n)", body)
    return b"".join(b"." + line if line.startswith(b".") else line for line in lines)


def cut(data: st.DataObject, blob: bytes) -> list[bytes]:
    """`blob` in random pieces (the network's chunking)."""
    points = sorted(data.draw(st.sets(st.integers(0, len(blob)), max_size=6)))
    bounds = [0, *points, len(blob)]
    return [blob[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def draw_command(data: st.DataObject, state: State, tls: bool) -> Command:
    keywords = valid_commands(state) - ({"STLS"} if tls else set())
    keyword = data.draw(st.sampled_from(sorted(keywords)))
    spec = GRAMMAR[keyword]
    if spec is Args.NONE:
        return Command(keyword)
    if spec is Args.NUMBER:
        return Command(keyword, numbers=(data.draw(NUMBER),))
    if spec is Args.OPT_NUMBER:
        return Command(keyword, numbers=tuple(data.draw(st.lists(NUMBER, max_size=1))))
    if spec is Args.NUMBER_COUNT:
        return Command(keyword, numbers=(data.draw(NUMBER), data.draw(NUMBER)))
    if spec is Args.NAME:
        return Command(keyword, (data.draw(WORD),))
    if spec is Args.REST:
        return Command(keyword, (data.draw(TEXT.filter(bool)),))
    if spec is Args.NAME_DIGEST:
        return Command(keyword, (data.draw(WORD), data.draw(WORD)))
    return Command(keyword, tuple(data.draw(st.lists(WORD, max_size=2))))


def draw_answer(data: st.DataObject, state: State, trigger: str, multiline: bool) -> list[Event]:
    row = TABLE[state][trigger]
    kinds = ["err"]
    if multiline and row.listing is not None:
        kinds.append("multi")
    if not multiline and row.ok is not None:
        kinds.append("ok")
    if not multiline and row.cont is not None:
        kinds.append("cont")
    kind = data.draw(st.sampled_from(kinds))
    if kind == "err":
        return [Reply(False, data.draw(TEXT), data.draw(CODE))]
    if kind == "ok":
        return [Reply(True, data.draw(TEXT), data.draw(CODE))]
    if kind == "cont":
        return [SaslContinuation(data.draw(st.from_regex(r"[A-Za-z0-9+/=]{0,40}", fullmatch=True)))]
    body = data.draw(BODY)
    wire = data.draw(st.booleans())
    chunks = cut(data, reference_stuff(body) if wire else body)
    return [
        MultilineStart(data.draw(TEXT), data.draw(CODE)),
        *(Data(c, wire=wire) for c in chunks),
        MultilineEnd(),
    ]


def expected_at_client(answer: list[Event]) -> list[Event]:
    """What the client must read: the same events, the body un-stuffed and CRLF-terminated."""
    if not isinstance(answer[0], MultilineStart):
        return answer
    stuffed = b"".join(e.data for e in answer if isinstance(e, Data))
    wire = any(e.wire for e in answer if isinstance(e, Data))
    body = reference_unstuff(stuffed) if wire else stuffed
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return [answer[0], *([Data(body)] if body else []), MultilineEnd()]


def reference_unstuff(wire: bytes) -> bytes:
    lines = re.split(rb"(?<=\n)", wire)
    return b"".join(line[1:] if line.startswith(b".") else line for line in lines)


def deliver(data: st.DataObject, blob: bytes, to: ServerConnection | ClientConnection) -> None:
    for piece in cut(data, blob):  # never b"": that is end of file
        to.receive_data(piece)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_client_and_server_agree_on_every_octet(data: st.DataObject) -> None:
    server, client = ServerConnection(), ClientConnection()
    greeting = Reply(True, data.draw(TEXT), None)
    deliver(data, server.send(greeting), client)
    assert drain(client) == [greeting]
    for _ in range(data.draw(st.integers(1, 15))):
        state = client.state
        assert server.state is state
        if state is State.STLS:
            assert server.next_event() == TlsStart()
            server.tls_started()
            client.tls_started()
            continue
        if state is State.CLOSED:
            break
        batch: list[Command | SaslResponse] = []
        if state is State.SASL:
            batch.append(SaslResponse(data.draw(TEXT)))
        else:
            # pipeline up to four commands while the outcome cannot change what follows
            expected_state = state
            for _ in range(data.draw(st.integers(1, 4))):
                command = draw_command(data, expected_state, client.tls_active)
                batch.append(command)
                if command.keyword in {"QUIT", "STLS", "AUTH", "USER", "PASS", "APOP"}:
                    break
        deliver(data, b"".join(client.send(c) for c in batch), server)
        replies = b""
        expected: list[Event] = []
        for sent in batch:
            at = server.state
            got = drain(server)
            assert got == [sent]
            if isinstance(sent, SaslResponse):
                answer = draw_answer(data, at, "<sasl-response>", False)
            else:
                at = State.TRANSACTION if at is State.UPDATE else at
                answer = draw_answer(data, at, sent.keyword, is_multiline(sent))
            replies += b"".join(server.send(e) for e in answer)
            expected += expected_at_client(answer)
        deliver(data, replies, client)
        received = drain(client)
        if received[-1:] == [TlsStart()]:
            received.pop()
            assert client.state is State.STLS
        assert merge_data(received) == merge_data(expected)
        assert client.pending == 0
    assert server.state is client.state or client.state is State.STLS


@settings(max_examples=300, deadline=None)
@given(st.data(), BODY, st.booleans())
def test_one_body_any_chunking(data: st.DataObject, body: bytes, wire: bool) -> None:
    server, client = ServerConnection(), ClientConnection()
    client.receive_data(server.send(Reply(True)))
    drain(client)
    for command in (Command("USER", ("a",)), Command("PASS", ("b",))):
        server.receive_data(client.send(command))
        drain(server)
        client.receive_data(server.send(Reply(True)))
        drain(client)
    server.receive_data(client.send(Command("RETR", numbers=(1,))))
    drain(server)
    source = reference_stuff(body) if wire else body
    answer = [MultilineStart(), *(Data(c, wire) for c in cut(data, source)), MultilineEnd()]
    out = b"".join(server.send(e) for e in answer)
    terminated = body if not body or body.endswith(b"\r\n") else body + b"\r\n"
    assert out == b"+OK\r\n" + reference_stuff(terminated) + b".\r\n"
    deliver(data, out, client)
    got = merge_data(drain(client))
    assert got == [MultilineStart(), *([Data(terminated)] if terminated else []), MultilineEnd()]
