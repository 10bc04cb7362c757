"""Every state x every command, for both roles, against the RFCs written out by hand.

`EXPECTED_VALID` and `EXPECTED_ANSWERS` below are written from the RFCs, not derived from
`firmware.pop3.states.TABLE`: a wrong row in the table makes these tests fail. A second test
checks the table itself against the same expectations, so the two cannot drift apart.
"""

from __future__ import annotations

import pytest

from firmware.pop3.connection import ClientConnection, ServerConnection
from firmware.pop3.events import (
    NEED_DATA,
    PAUSED,
    BadCommand,
    Command,
    Data,
    Event,
    MultilineEnd,
    MultilineStart,
    Problem,
    Reply,
    SaslContinuation,
    SaslResponse,
)
from firmware.pop3.states import TABLE, State, valid_commands
from firmware.pop3.syntax import GRAMMAR
from firmware.pop3.wire_errors import LocalProtocolError, RemoteProtocolError
from tests.pop3.lib.wire import drain, exchange, greeted_pair

A, T, S, X = State.AUTHORIZATION, State.TRANSACTION, State.SASL, State.CLOSED

# RFC 1939 §4 and §7 (USER, PASS, APOP, QUIT), RFC 2449 §5 (CAPA in both states),
# RFC 2595 §4 (STLS only before login), RFC 5034 §4 (AUTH only before login),
# RFC 1939 §5 and §7 (STAT, LIST, RETR, DELE, NOOP, RSET, TOP, UIDL, QUIT after login).
EXPECTED_VALID: dict[State, set[str]] = {
    A: {"USER", "PASS", "APOP", "AUTH", "STLS", "CAPA", "QUIT"},
    T: {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "CAPA", "QUIT"},
}

# One well-formed instance of every command; LIST, UIDL and AUTH in both shapes.
SAMPLES: dict[str, Command] = {
    "USER": Command("USER", ("box",)),
    "PASS": Command("PASS", ("pass word",)),
    "APOP": Command("APOP", ("box", "c4c9334bac560ecc979e58001b3e22fb")),
    "AUTH": Command("AUTH", ("PLAIN",)),
    "AUTH-list": Command("AUTH"),
    "STLS": Command("STLS"),
    "CAPA": Command("CAPA"),
    "QUIT": Command("QUIT"),
    "STAT": Command("STAT"),
    "LIST": Command("LIST"),
    "LIST-n": Command("LIST", numbers=(1,)),
    "RETR": Command("RETR", numbers=(1,)),
    "DELE": Command("DELE", numbers=(1,)),
    "NOOP": Command("NOOP"),
    "RSET": Command("RSET"),
    "TOP": Command("TOP", numbers=(1, 0)),
    "UIDL": Command("UIDL"),
    "UIDL-n": Command("UIDL", numbers=(1,)),
}
assert {c.keyword for c in SAMPLES.values()} == set(GRAMMAR)

OK, MULTI, ERR, CONT = "+OK", "+OK multi-line", "-ERR", "+ continuation"

# state -> sample -> {answer kind: state after it}; kinds missing are protocol errors.
# RFC 1939 §§5-7 (which replies are multi-line, QUIT ends the session either way),
# RFC 2449 §5 (CAPA multi-line), RFC 2595 §4 (+OK to STLS: handshake), RFC 5034 §4 (AUTH:
# +OK logs in, + continues, -ERR stays in AUTHORIZATION; bare AUTH: mechanism listing).
EXPECTED_ANSWERS: dict[State, dict[str, dict[str, State]]] = {
    A: {
        "USER": {OK: A, ERR: A},
        "PASS": {OK: T, ERR: A},
        "APOP": {OK: T, ERR: A},
        "AUTH": {OK: T, ERR: A, CONT: S},
        "AUTH-list": {MULTI: A, ERR: A},
        "STLS": {OK: State.STLS, ERR: A},
        "CAPA": {MULTI: A, ERR: A},
        "QUIT": {OK: X, ERR: X},
    },
    T: {
        "STAT": {OK: T, ERR: T},
        "LIST": {MULTI: T, ERR: T},
        "LIST-n": {OK: T, ERR: T},
        "RETR": {MULTI: T, ERR: T},
        "DELE": {OK: T, ERR: T},
        "NOOP": {OK: T, ERR: T},
        "RSET": {OK: T, ERR: T},
        "TOP": {MULTI: T, ERR: T},
        "UIDL": {MULTI: T, ERR: T},
        "UIDL-n": {OK: T, ERR: T},
        "CAPA": {MULTI: T, ERR: T},
        "QUIT": {OK: X, ERR: X},
    },
}
SASL_ANSWERS = {OK: T, ERR: A, CONT: S}  # RFC 5034 §4, after a client response
BAD_ANSWERS = {A: {ERR: A}, T: {ERR: T}, S: {ERR: A}}  # a refused line: -ERR only

ANSWER_EVENTS: dict[str, list[Event]] = {
    OK: [Reply(True, "fine")],
    MULTI: [MultilineStart("follows"), Data(b"x\r\n"), MultilineEnd()],
    ERR: [Reply(False, "no")],
    CONT: [SaslContinuation("eA==")],
}


def _pair_in(state: State) -> tuple[ServerConnection, ClientConnection]:
    if state is State.GREETING:
        return ServerConnection(), ClientConnection()
    server, client = greeted_pair()
    if state is T or state is State.UPDATE:
        exchange(server, client, Command("USER", ("box",)), Reply(True))
        exchange(server, client, Command("PASS", ("pw",)), Reply(True))
    if state is S:
        exchange(server, client, Command("AUTH", ("PLAIN",)), SaslContinuation())
    if state is State.STLS:
        exchange(server, client, Command("STLS"), Reply(True))
    if state is X:
        exchange(server, client, Command("QUIT"), Reply(True))
    if state is State.UPDATE:
        server.receive_data(client.send(Command("QUIT")))
        assert drain(server) == [Command("QUIT")]
    assert server.state is state
    return server, client


ALL_STATES = [s for s in State if s is not State.ERROR]
LINES = {**{k: c for k, c in SAMPLES.items()}, "XTND": None}


def _wire(sample: str) -> bytes:
    command = SAMPLES.get(sample)
    if command is None:
        return b"XTND XLST\r\n"
    return " ".join([command.keyword, *command.args, *map(str, command.numbers)]).encode() + b"\r\n"


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.value)
@pytest.mark.parametrize("sample", LINES)
def test_server_accepts_exactly_the_rfc_commands(state: State, sample: str) -> None:
    server, _ = _pair_in(state)
    server.receive_data(_wire(sample))
    if state in EXPECTED_VALID:
        event = server.next_event()
        command = SAMPLES.get(sample)
        if command is None:
            assert event == BadCommand(Problem.UNKNOWN, "", "unknown command")
        elif command.keyword in EXPECTED_VALID[state]:
            assert event == command
        else:
            assert isinstance(event, BadCommand)
            assert (event.problem, event.keyword) == (Problem.WRONG_STATE, command.keyword)
        assert server.next_event() is PAUSED  # one reply is owed first
    elif state is S:
        assert server.next_event() == SaslResponse(_wire(sample)[:-2].decode())
    elif state is State.STLS:
        with pytest.raises(RemoteProtocolError, match="plaintext"):
            server.next_event()
    elif state is X:
        assert server.next_event() is NEED_DATA
    else:  # GREETING, UPDATE: the server has to speak first
        assert server.next_event() is PAUSED


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.value)
@pytest.mark.parametrize("sample", SAMPLES)
def test_client_sends_exactly_the_rfc_commands(state: State, sample: str) -> None:
    _, client = _pair_in(state)
    command = SAMPLES[sample]
    if command.keyword in EXPECTED_VALID.get(state, set()):
        assert client.send(command) == _wire(sample)
    else:
        with pytest.raises(LocalProtocolError):
            client.send(command)
        assert client.state is State.ERROR


CASES = [
    (state, sample, kind)
    for state, samples in EXPECTED_ANSWERS.items()
    for sample in samples
    for kind in ANSWER_EVENTS
]


@pytest.mark.parametrize(("state", "sample", "kind"), CASES, ids=str)
def test_server_answer_shapes(state: State, sample: str, kind: str) -> None:
    server, _ = _pair_in(state)
    server.receive_data(_wire(sample))
    server.next_event()
    expected = EXPECTED_ANSWERS[state][sample].get(kind)
    if expected is None:
        with pytest.raises(LocalProtocolError):
            for event in ANSWER_EVENTS[kind]:
                server.send(event)
        assert server.state is State.ERROR
    else:
        for event in ANSWER_EVENTS[kind]:
            server.send(event)
        assert server.state is expected


def _answer_wire(kind: str) -> bytes:
    return {
        OK: b"+OK fine\r\n",
        MULTI: b"+OK follows\r\nx\r\n.\r\n",
        ERR: b"-ERR no\r\n",
        CONT: b"+ eA==\r\n",
    }[kind]


@pytest.mark.parametrize(("state", "sample", "kind"), CASES, ids=str)
def test_client_answer_shapes(state: State, sample: str, kind: str) -> None:
    _, client = _pair_in(state)
    client.send(SAMPLES[sample])
    client.receive_data(_answer_wire(kind))
    answers = EXPECTED_ANSWERS[state][sample]
    multiline = MULTI in answers
    if kind == OK and multiline:
        # `+OK` to a multi-line command always starts a body: the client waits for it.
        assert isinstance(client.next_event(), MultilineStart)
        assert client.next_event() is NEED_DATA
        return
    if kind == MULTI and not multiline:
        # the first line is a complete single-line +OK; the rest is unsolicited
        assert client.next_event() == Reply(True, "follows")
        with pytest.raises(RemoteProtocolError):
            drain(client)
        return
    expected = answers.get(kind)
    if expected is None:
        with pytest.raises(RemoteProtocolError):
            drain(client)
        assert client.state is State.ERROR
    else:
        drain(client)
        assert client.state is expected


@pytest.mark.parametrize("kind", ANSWER_EVENTS)
def test_sasl_response_answers(kind: str) -> None:
    server, client = _pair_in(S)
    server.receive_data(client.send(SaslResponse("eA==")))
    assert server.next_event() == SaslResponse("eA==")
    expected = SASL_ANSWERS.get(kind)
    wire = b""
    if expected is None:
        with pytest.raises(LocalProtocolError):
            for event in ANSWER_EVENTS[kind]:
                server.send(event)
        return
    for event in ANSWER_EVENTS[kind]:
        wire += server.send(event)
    client.receive_data(wire)
    drain(client)
    assert server.state is client.state is expected


@pytest.mark.parametrize("state", [A, T, S], ids=lambda s: s.value)
@pytest.mark.parametrize("kind", ANSWER_EVENTS)
def test_bad_command_answers(state: State, kind: str) -> None:
    server, _ = _pair_in(state)
    server.receive_data(b"x" * 300 + b"\r\n" if state is not S else b"x" * 6000 + b"\r\n")
    assert server.next_event() == BadCommand(Problem.TOO_LONG, "", "line too long")

    def send() -> object:
        return [server.send(e) for e in ANSWER_EVENTS[kind]]

    expected = BAD_ANSWERS[state].get(kind)
    if expected is None:
        with pytest.raises(LocalProtocolError):
            send()
    else:
        send()
        assert server.state is expected


def test_the_table_matches_the_rfc_expectations() -> None:
    """The table itself, read back into the same shape as the hand-written expectations."""
    for state, valid in EXPECTED_VALID.items():
        assert valid_commands(state) == valid
    for state in (State.GREETING, State.SASL, State.STLS, State.UPDATE, X, State.ERROR):
        assert valid_commands(state) == set()
    from firmware.pop3.syntax import is_multiline

    for state, samples in EXPECTED_ANSWERS.items():
        for sample, answers in samples.items():
            command = SAMPLES[sample]
            row = TABLE[state][command.keyword]
            multi = is_multiline(command)
            derived = {ERR: row.err}
            if multi and row.listing is not None:
                derived[MULTI] = row.listing
            if not multi and row.ok is not None:
                derived[OK] = row.ok
            if not multi and row.cont is not None:
                derived[CONT] = row.cont
            assert derived == answers, (state, sample)


def test_the_table_has_no_unreachable_answers() -> None:
    """A row allows a single-line +OK only for commands that can take one (and so on)."""
    from firmware.pop3.syntax import is_multiline

    for state, samples in EXPECTED_ANSWERS.items():
        for keyword in {SAMPLES[s].keyword for s in samples}:
            shapes = {is_multiline(SAMPLES[s]) for s in samples if SAMPLES[s].keyword == keyword}
            row = TABLE[state][keyword]
            assert (row.ok is not None) == (False in shapes and OK in _answers(state, keyword))
            assert (row.listing is not None) == (True in shapes)


def _answers(state: State, keyword: str) -> set[str]:
    return {
        kind
        for sample, answers in EXPECTED_ANSWERS[state].items()
        if SAMPLES[sample].keyword == keyword
        for kind in answers
    }
