"""The two error kinds, over-long lines, the STLS injection, end of file, syntax."""

from __future__ import annotations

import pytest

from firmware.pop3.connection import MAX_DISCARD, ClientConnection, ServerConnection
from firmware.pop3.events import (
    NEED_DATA,
    PAUSED,
    BadCommand,
    Command,
    ConnectionClosed,
    Data,
    MultilineEnd,
    MultilineStart,
    Problem,
    Reply,
    SaslContinuation,
    SaslResponse,
    TlsStart,
)
from firmware.pop3.states import State
from firmware.pop3.wire_errors import LocalProtocolError, RemoteProtocolError
from tests.pop3.lib.wire import drain, exchange, greeted_pair, logged_in_pair

TOO_LONG = BadCommand(Problem.TOO_LONG, "", "line too long")


def _state(conn: ServerConnection | ClientConnection) -> State:
    return conn.state  # read afresh (mypy keeps an earlier narrowing of the attribute)


def _server(state: State = State.AUTHORIZATION) -> ServerConnection:
    server, _client = greeted_pair() if state is State.AUTHORIZATION else logged_in_pair()
    return server


# -- syntax ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (b"QUIT x", BadCommand(Problem.SYNTAX, "QUIT", "QUIT takes no arguments")),
        (b"CAPA  \t", Command("CAPA")),
        (b"stls now", BadCommand(Problem.SYNTAX, "STLS", "STLS takes no arguments")),
        (b"user", BadCommand(Problem.SYNTAX, "USER", "USER takes a mailbox name")),
        (b"USER a b", BadCommand(Problem.SYNTAX, "USER", "USER takes a mailbox name")),
        (
            b"PASS",
            BadCommand(Problem.SYNTAX, "PASS", "PASS takes a password (the rest of the line)"),
        ),
        (b"PASS  two  spaces ", Command("PASS", (" two  spaces ",))),
        (b"APOP box", BadCommand(Problem.SYNTAX, "APOP", "APOP takes a mailbox name and a digest")),
        (
            b"AUTH PLAIN = x",
            BadCommand(
                Problem.SYNTAX, "AUTH", "AUTH takes an optional mechanism and initial response"
            ),
        ),
        (b"AUTH PLAIN =", Command("AUTH", ("PLAIN", "="))),
        (b"XTND", BadCommand(Problem.UNKNOWN, "", "unknown command")),
        (b"", BadCommand(Problem.UNKNOWN, "", "unknown command")),
        (b"\xff\xfe", BadCommand(Problem.UNKNOWN, "", "unknown command")),
        (b"Capa", Command("CAPA")),
    ],
)
def test_authorization_syntax(line: bytes, event: object) -> None:
    server = _server()
    server.receive_data(line + b"\r\n")
    assert server.next_event() == event


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (b"RETR 1", Command("RETR", numbers=(1,))),
        (b"RETR 0", Command("RETR", numbers=(0,))),  # range is the application's
        (b"RETR " + b"9" * 240, Command("RETR", numbers=(int("9" * 240),))),
        (b"RETR 0007", Command("RETR", numbers=(7,))),
        (b"RETR -1", BadCommand(Problem.SYNTAX, "RETR", "RETR takes a message number")),
        (b"RETR +1", BadCommand(Problem.SYNTAX, "RETR", "RETR takes a message number")),
        (b"RETR \xd9\xa1", BadCommand(Problem.SYNTAX, "RETR", "RETR takes a message number")),
        (b"RETR \xc2\xb2", BadCommand(Problem.SYNTAX, "RETR", "RETR takes a message number")),
        (b"RETR", BadCommand(Problem.SYNTAX, "RETR", "RETR takes a message number")),
        (b"RETR 1 2", BadCommand(Problem.SYNTAX, "RETR", "RETR takes a message number")),
        (b"LIST", Command("LIST")),
        (b"LIST 12345678901234567890", Command("LIST", numbers=(12345678901234567890,))),
        (b"UIDL x", BadCommand(Problem.SYNTAX, "UIDL", "UIDL takes an optional message number")),
        (b"TOP 1 0", Command("TOP", numbers=(1, 0))),
        (
            b"TOP 1",
            BadCommand(Problem.SYNTAX, "TOP", "TOP takes a message number and a line count"),
        ),
        (b"TOP 1 " + b"5" * 200, Command("TOP", numbers=(1, int("5" * 200)))),
        (b"NOOP 1", BadCommand(Problem.SYNTAX, "NOOP", "NOOP takes no arguments")),
        (b"RSET x", BadCommand(Problem.SYNTAX, "RSET", "RSET takes no arguments")),
        (b"STAT x", BadCommand(Problem.SYNTAX, "STAT", "STAT takes no arguments")),
        (b"QUIT x", BadCommand(Problem.SYNTAX, "QUIT", "QUIT takes no arguments")),
        (
            b"USER x",
            BadCommand(Problem.WRONG_STATE, "USER", "USER is not valid in the transaction state"),
        ),
        (
            b"AUTH",
            BadCommand(Problem.WRONG_STATE, "AUTH", "AUTH is not valid in the transaction state"),
        ),
    ],
)
def test_transaction_syntax(line: bytes, event: object) -> None:
    server = _server(State.TRANSACTION)
    server.receive_data(line + b"\r\n")
    assert server.next_event() == event


def test_wrong_state_is_reported_even_with_bad_arguments() -> None:
    server = _server()
    server.receive_data(b"RETR x\r\n")
    assert server.next_event() == BadCommand(
        Problem.WRONG_STATE, "RETR", "RETR is not valid in the authorization state"
    )


# -- over-long lines -------------------------------------------------------------------------


def test_a_255_octet_line_is_a_command_and_256_is_too_long() -> None:
    server = _server()
    server.receive_data(b"USER " + b"a" * 248 + b"\r\n")  # 255 with CRLF (RFC 2449 §4)
    assert server.next_event() == Command("USER", ("a" * 248,))
    server.send(Reply(True))
    server.receive_data(b"USER " + b"a" * 249 + b"\r\n")
    assert server.next_event() == TOO_LONG


def test_an_over_long_line_is_reported_before_its_end_and_the_rest_dropped() -> None:
    server = _server()
    server.receive_data(b"USER " + b"a" * 300)
    assert server.next_event() == TOO_LONG
    server.send(Reply(False, "line too long"))
    server.receive_data(b"b" * 1000)
    assert server.next_event() is NEED_DATA
    server.receive_data(b"cc\r\nNOOP")
    assert server.next_event() is NEED_DATA
    server.receive_data(b"\r\nQUIT\r\n")
    assert server.next_event() == BadCommand(
        Problem.WRONG_STATE, "NOOP", "NOOP is not valid in the authorization state"
    )
    server.send(Reply(False))
    assert server.next_event() == Command("QUIT")


def test_an_endless_line_is_fatal_with_a_reply_hint() -> None:
    server = _server()
    server.receive_data(b"x" * 256)
    assert server.next_event() == TOO_LONG
    server.send(Reply(False))
    for _ in range(MAX_DISCARD // 1000 + 1):
        server.receive_data(b"x" * 1000)
    with pytest.raises(RemoteProtocolError) as caught:
        server.next_event()
    assert caught.value.reply == Reply(False, "line too long; closing")
    assert server.state is State.ERROR


def test_sasl_lines_may_be_longer_but_are_bounded() -> None:
    server, client = greeted_pair()
    exchange(server, client, Command("AUTH", ("SCRAM-SHA-256",)), SaslContinuation())
    server.receive_data(b"A" * 5000 + b"\r\n")
    assert server.next_event() == SaslResponse("A" * 5000)
    server.send(SaslContinuation("eA=="))
    server.receive_data(b"A" * 6000 + b"\r\n")
    assert server.next_event() == TOO_LONG
    server.send(Reply(False, "too long", "AUTH"))
    assert server.state is State.AUTHORIZATION


def test_client_refuses_an_over_long_status_line() -> None:
    client = ClientConnection()
    client.receive_data(b"+OK " + b"x" * 600)
    with pytest.raises(RemoteProtocolError, match="512"):
        client.next_event()


# -- STLS and the command injection (CVE-2011-0411, RFC 7457 §2.2) ---------------------------


def test_plaintext_pipelined_after_stls_is_refused() -> None:
    server = _server()
    server.receive_data(b"STLS\r\nUSER evil\r\n")
    assert server.next_event() == Command("STLS")
    with pytest.raises(RemoteProtocolError, match="injection"):
        server.send(Reply(True, "begin TLS"))
    assert server.state is State.ERROR


def test_plaintext_after_stls_is_fine_when_stls_is_refused() -> None:
    server = _server()
    server.receive_data(b"STLS\r\nUSER box\r\n")
    assert server.next_event() == Command("STLS")
    server.send(Reply(False, "no certificate"))
    assert server.next_event() == Command("USER", ("box",))


def test_plaintext_arriving_before_the_handshake_is_refused() -> None:
    server = _server()
    server.receive_data(b"STLS\r\n")
    server.next_event()
    server.send(Reply(True))
    server.receive_data(b"USER evil\r\n")
    with pytest.raises(RemoteProtocolError, match="plaintext"):
        server.next_event()


def test_plaintext_fed_between_tls_start_and_tls_started_is_refused() -> None:
    server = _server()
    server.receive_data(b"STLS\r\n")
    server.next_event()
    server.send(Reply(True))
    assert server.next_event() == TlsStart()
    assert server.next_event() is PAUSED
    server.receive_data(b"USER evil\r\n")
    with pytest.raises(RemoteProtocolError, match="plaintext"):
        server.tls_started()


def test_client_refuses_data_after_the_stls_ok() -> None:
    _, client = greeted_pair()
    client.send(Command("STLS"))
    client.receive_data(b"+OK begin\r\n+OK injected\r\n")
    assert client.next_event() == Reply(True, "begin")
    with pytest.raises(RemoteProtocolError, match="plaintext"):
        client.next_event()


def test_client_may_not_pipeline_after_stls_or_auth_nor_stls_twice() -> None:
    _, client = greeted_pair()
    client.send(Command("STLS"))
    with pytest.raises(LocalProtocolError, match="wait"):
        client.send(Command("CAPA"))
    _, client = greeted_pair()
    client.send(Command("AUTH", ("PLAIN",)))
    with pytest.raises(LocalProtocolError, match="wait"):
        client.send(Command("QUIT"))
    server, client = greeted_pair()
    exchange(server, client, Command("STLS"), Reply(True))
    client.tls_started()
    with pytest.raises(LocalProtocolError, match="already"):
        client.send(Command("STLS"))


def test_server_may_not_accept_stls_twice() -> None:
    server, client = greeted_pair()
    exchange(server, client, Command("STLS"), Reply(True))
    assert server.next_event() == TlsStart()
    server.tls_started()
    server.receive_data(b"STLS\r\n")
    assert server.next_event() == Command("STLS")
    with pytest.raises(LocalProtocolError, match="already"):
        server.send(Reply(True))


def test_tls_started_only_when_due() -> None:
    server = _server()
    with pytest.raises(LocalProtocolError):
        server.tls_started()


# -- local errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "events",
    [
        [Reply(True)],  # nothing to answer
        [Data(b"x")],
        [MultilineEnd()],
        [MultilineStart()],
        [SaslContinuation()],
        [Command("NOOP")],  # a server does not send commands
    ],
    ids=str,
)
def test_server_local_errors_without_a_command(events: list[object]) -> None:
    server = _server()
    with pytest.raises(LocalProtocolError):
        for event in events:
            server.send(event)  # type: ignore[arg-type]
    assert server.state is State.ERROR
    with pytest.raises(LocalProtocolError):
        server.send(Reply(False))


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        (b"RETR 1", [Reply(True)]),  # a +OK to RETR is multi-line
        (b"STAT", [MultilineStart()]),
        (b"STAT", [Reply(True), Reply(True)]),  # one reply per command
        (b"STAT", [Reply(True, "a\r\nb")]),
        (b"STAT", [Reply(True, "x" * 510)]),
        (b"STAT", [Reply(False, "no", "BAD]CODE")]),
        (b"STAT", [Reply(False, "[SYS/TEMP] in the text")]),
        (b"RETR 1", [MultilineStart(), Data(b"a\r\n.\r\nRETR 2\r\n", wire=True)]),
        (b"RETR 1", [MultilineStart(), Data(b"a\r\n.", wire=True), Data(b"\r\n", wire=True)]),
        (b"NOOP x", [Reply(True)]),  # a BadCommand gets -ERR only
    ],
    ids=str,
)
def test_server_local_errors_in_replies(command: bytes, answer: list[object]) -> None:
    server = _server(State.TRANSACTION)
    server.receive_data(command + b"\r\n")
    server.next_event()
    with pytest.raises(LocalProtocolError):
        for event in answer:
            server.send(event)  # type: ignore[arg-type]
    assert server.state is State.ERROR


@pytest.mark.parametrize(
    "command",
    [
        Command("RETR"),
        Command("RETR", ("1",)),
        Command("RETR", numbers=(-1,)),
        Command("USER", ("two words",)),
        Command("USER"),
        Command("PASS", ("a\r\nDELE 1",)),
        Command("XTND"),
        Command("retr", numbers=(1,)),
        Command("STAT"),  # not before login
    ],
    ids=str,
)
def test_client_local_errors(command: Command) -> None:
    _, client = greeted_pair()
    with pytest.raises(LocalProtocolError):
        client.send(command)
    assert client.state is State.ERROR


def test_client_waits_for_the_greeting_and_stops_after_quit() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError):
        client.send(Command("CAPA"))
    _, client = greeted_pair()
    client.send(Command("QUIT"))
    with pytest.raises(LocalProtocolError):
        client.send(Command("NOOP"))


# -- remote errors and end of file -----------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\n",
        b"+OKAY\r\n",
        b"+ challenge\r\n",  # a continuation to STAT
        b"+OK\r\n+OK\r\n",  # one reply too many
    ],
)
def test_client_remote_errors(wire: bytes) -> None:
    _, client = logged_in_pair()
    client.send(Command("STAT"))
    client.receive_data(wire)
    with pytest.raises(RemoteProtocolError):
        drain(client)
    assert client.state is State.ERROR


def test_client_end_of_file_inside_a_body_is_an_error() -> None:
    _, client = logged_in_pair()
    client.send(Command("RETR", numbers=(1,)))
    client.receive_data(b"+OK\r\npart of a message\r\n.")
    client.receive_data(b"")
    assert client.next_event() == MultilineStart()
    assert client.next_event() == Data(b"part of a message\r\n")
    with pytest.raises(RemoteProtocolError, match="closed"):
        client.next_event()


def test_client_end_of_file_after_quit_is_closed() -> None:
    server, client = logged_in_pair()
    exchange(server, client, Command("QUIT"), Reply(True))
    client.receive_data(b"")
    assert client.next_event() == ConnectionClosed()
    assert client.state is State.CLOSED


def test_client_reads_an_unsolicited_err_as_the_end() -> None:
    _, client = logged_in_pair()
    client.receive_data(b"-ERR [SYS/TEMP] idle for too long\r\n")
    assert client.next_event() == Reply(False, "idle for too long", "SYS/TEMP")
    assert client.state is State.CLOSED


def test_server_end_of_file_closes_without_update() -> None:
    server = _server(State.TRANSACTION)
    server.receive_data(b"DELE 1\r\nNOO")
    server.receive_data(b"")
    assert server.next_event() == Command("DELE", numbers=(1,))
    server.send(Reply(True))
    assert server.next_event() == ConnectionClosed()
    assert server.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"more")


def test_server_quit_goes_through_update() -> None:
    server = _server(State.TRANSACTION)
    server.receive_data(b"QUIT\r\n")
    assert server.next_event() == Command("QUIT")
    assert server.state is State.UPDATE
    server.send(Reply(False, "no messages removed", "SYS/TEMP"))
    assert _state(server) is State.CLOSED


def test_greeting_err_closes_both_roles() -> None:
    server, client = ServerConnection(), ClientConnection()
    client.receive_data(server.send(Reply(False, "too many sessions", "SYS/TEMP")))
    assert client.next_event() == Reply(False, "too many sessions", "SYS/TEMP")
    assert server.state is client.state is State.CLOSED


def test_response_codes_are_parsed_only_when_well_formed() -> None:
    _, client = logged_in_pair()
    for _ in range(3):
        client.send(Command("NOOP"))
    client.receive_data(b"+OK [a b] x\r\n+OK [] y\r\n-ERR [SYS/PERM]\r\n")
    assert drain(client) == [
        Reply(True, "[a b] x"),
        Reply(True, "[] y"),
        Reply(False, "", "SYS/PERM"),
    ]


def test_no_data_after_an_error() -> None:
    server = _server(State.TRANSACTION)
    server.receive_data(b"RETR 1\r\n")
    server.next_event()
    server.send(MultilineStart())
    with pytest.raises(LocalProtocolError):
        server.send(Data(b"a\r\n.\r\n", wire=True))
    with pytest.raises(LocalProtocolError):
        server.send(Data(b"more"))


def test_client_stops_reading_a_body_after_an_error() -> None:
    _, client = logged_in_pair()
    client.send(Command("RETR", numbers=(1,)))
    client.receive_data(b"+OK\r\nabc\r\n")
    assert client.next_event() == MultilineStart()
    with pytest.raises(LocalProtocolError):
        client.send(Command("NOOP", ("x",)))
    with pytest.raises(RemoteProtocolError, match="ERROR"):
        client.next_event()


def test_capabilities_parse() -> None:
    from firmware.pop3.syntax import parse_capabilities

    body = b"TOP\r\nSASL SCRAM-SHA-256 PLAIN\r\nresp-codes\r\nEXPIRE 0\r\n"
    assert parse_capabilities(body) == {
        "TOP": (),
        "SASL": ("SCRAM-SHA-256", "PLAIN"),
        "RESP-CODES": (),
        "EXPIRE": ("0",),
    }


def test_a_command_pipelined_behind_an_over_long_line_survives() -> None:
    """The rest of an over-long line is dropped up to its LF, not the commands after it."""
    server = _server()
    server.receive_data(b"USER " + b"a" * 300 + b"\r\nCAPA\r\nQUIT\r\n")
    assert server.next_event() == TOO_LONG
    server.send(Reply(False, "line too long"))
    assert server.next_event() == Command("CAPA")


LONG_THEN_NOOP = b"x" * 300 + b"\r\nNOOP\r\n"
ENDLESS = b"x" * (255 + MAX_DISCARD + 1) + b"\r\nNOOP\r\n"


def _events_for(chunks: list[bytes]) -> list[object]:
    server = _server(State.TRANSACTION)
    seen: list[object] = []
    try:
        for chunk in chunks:
            server.receive_data(chunk)
            while (event := server.next_event()) is not NEED_DATA:
                seen.append(event)
                server.send(Reply(False) if isinstance(event, BadCommand) else Reply(True))
    except RemoteProtocolError:
        seen.append("fatal")
    return seen


def test_over_long_lines_read_the_same_at_every_boundary() -> None:
    assert _events_for([LONG_THEN_NOOP]) == [TOO_LONG, Command("NOOP")]
    for cut in range(1, len(LONG_THEN_NOOP)):
        chunks = [LONG_THEN_NOOP[:cut], LONG_THEN_NOOP[cut:]]
        assert _events_for(chunks) == [TOO_LONG, Command("NOOP")], cut


def test_a_line_too_long_to_drop_is_fatal_at_every_boundary() -> None:
    assert _events_for([ENDLESS]) == [TOO_LONG, "fatal"]
    for cut in (1, 200, 255, 256, 1000, 255 + MAX_DISCARD, 255 + MAX_DISCARD + 1, len(ENDLESS) - 8):
        assert _events_for([ENDLESS[:cut], ENDLESS[cut:]]) == [TOO_LONG, "fatal"], cut
    # exactly max_discard octets (CR included) past the limit before the LF: dropped, not fatal
    just = b"x" * (255 + MAX_DISCARD - 1) + b"\r\nNOOP\r\n"
    assert _events_for([just]) == [TOO_LONG, Command("NOOP")]
    assert _events_for([just[:300], just[300:]]) == [TOO_LONG, Command("NOOP")]


def test_body_sent_elsewhere_keeps_the_terminator_right() -> None:
    for tail, end in ((b"ab\r\n", b".\r\n"), (b"ab", b"\r\n.\r\n"), (b"\n", b"\r\n.\r\n")):
        server = _server(State.TRANSACTION)
        server.receive_data(b"RETR 1\r\n")
        server.next_event()
        server.send(MultilineStart())
        server.send(Data(b"Subject: x\r\n", wire=True))
        server.body_sent_elsewhere(tail)
        assert server.send(MultilineEnd()) == end
    server = _server(State.TRANSACTION)
    with pytest.raises(LocalProtocolError):
        server.body_sent_elsewhere(b"x")
