"""The example sessions of RFC 1939, 2449, 2595 and 5034, replayed through both roles.

Each transcript is the exact wire text of the RFC example. The server role must turn the
client's octets into the listed events and the listed reply events into the server's octets;
the client role must produce the client's octets and read the server's octets back into the
same events. Message bodies are ours (the RFC elides them) and hold lines starting with '.'.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

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
from firmware.pop3.states import State
from tests.pop3.lib.wire import drain, merge_data


@dataclass(frozen=True)
class Step:
    sent: Command | SaslResponse | None  # None: the TLS handshake after STLS
    client_wire: bytes
    answer: tuple[Event, ...]
    server_wire: bytes


TLS = Step(None, b"", (), b"")

MESSAGE_1 = b"From: a@b\r\nSubject: one\r\n\r\n.signature\r\n..two dots\r\n"
MESSAGE_2 = b"Subject: two\r\n\r\nhello\r\n.\r\nnot the end\r\n"

RFC1939_SESSION = (
    # RFC 1939 §10, with APOP as in the RFC
    (
        Reply(True, "POP3 server ready <1896.697170952@dbc.mtview.ca.us>"),
        b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n",
    ),
    [
        Step(
            Command("APOP", ("mrose", "c4c9334bac560ecc979e58001b3e22fb")),
            b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n",
            (Reply(True, "mrose's maildrop has 2 messages (320 octets)"),),
            b"+OK mrose's maildrop has 2 messages (320 octets)\r\n",
        ),
        Step(Command("STAT"), b"STAT\r\n", (Reply(True, "2 320"),), b"+OK 2 320\r\n"),
        Step(
            Command("LIST"),
            b"LIST\r\n",
            (
                MultilineStart("2 messages (320 octets)"),
                Data(b"1 120\r\n2 200\r\n"),
                MultilineEnd(),
            ),
            b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n",
        ),
        Step(
            Command("RETR", numbers=(1,)),
            b"RETR 1\r\n",
            (MultilineStart("120 octets"), Data(MESSAGE_1), MultilineEnd()),
            b"+OK 120 octets\r\nFrom: a@b\r\nSubject: one\r\n\r\n..signature\r\n"
            b"...two dots\r\n.\r\n",
        ),
        Step(
            Command("DELE", numbers=(1,)),
            b"DELE 1\r\n",
            (Reply(True, "message 1 deleted"),),
            b"+OK message 1 deleted\r\n",
        ),
        Step(
            Command("RETR", numbers=(2,)),
            b"RETR 2\r\n",
            (MultilineStart("200 octets"), Data(MESSAGE_2), MultilineEnd()),
            b"+OK 200 octets\r\nSubject: two\r\n\r\nhello\r\n..\r\nnot the end\r\n.\r\n",
        ),
        Step(
            Command("DELE", numbers=(2,)),
            b"DELE 2\r\n",
            (Reply(True, "message 2 deleted"),),
            b"+OK message 2 deleted\r\n",
        ),
        Step(
            Command("QUIT"),
            b"QUIT\r\n",
            (Reply(True, "dewey POP3 server signing off (maildrop empty)"),),
            b"+OK dewey POP3 server signing off (maildrop empty)\r\n",
        ),
    ],
    State.CLOSED,
)

RFC1939_COMMANDS = (
    # RFC 1939 §§5-7 and §11 examples, strung together into one session
    (Reply(True, "POP3 server ready"), b"+OK POP3 server ready\r\n"),
    [
        Step(
            Command("USER", ("frated",)),
            b"USER frated\r\n",
            (Reply(False, "sorry, no mailbox for frated here"),),
            b"-ERR sorry, no mailbox for frated here\r\n",
        ),
        Step(
            Command("USER", ("mrose",)),
            b"USER mrose\r\n",
            (Reply(True, "mrose is a real hoopy frood"),),
            b"+OK mrose is a real hoopy frood\r\n",
        ),
        Step(
            Command("PASS", ("secret",)),
            b"PASS secret\r\n",
            (Reply(False, "maildrop already locked"),),
            b"-ERR maildrop already locked\r\n",
        ),
        Step(
            Command("PASS", ("secret",)),
            b"PASS secret\r\n",
            (Reply(True, "mrose's maildrop has 2 messages (320 octets)"),),
            b"+OK mrose's maildrop has 2 messages (320 octets)\r\n",
        ),
        Step(
            Command("LIST", numbers=(2,)), b"LIST 2\r\n", (Reply(True, "2 200"),), b"+OK 2 200\r\n"
        ),
        Step(
            Command("LIST", numbers=(3,)),
            b"LIST 3\r\n",
            (Reply(False, "no such message, only 2 messages in maildrop"),),
            b"-ERR no such message, only 2 messages in maildrop\r\n",
        ),
        Step(Command("NOOP"), b"NOOP\r\n", (Reply(True),), b"+OK\r\n"),
        Step(
            Command("DELE", numbers=(1,)),
            b"DELE 1\r\n",
            (Reply(True, "message 1 deleted"),),
            b"+OK message 1 deleted\r\n",
        ),
        Step(
            Command("DELE", numbers=(1,)),
            b"DELE 1\r\n",
            (Reply(False, "message 1 already deleted"),),
            b"-ERR message 1 already deleted\r\n",
        ),
        Step(
            Command("RSET"),
            b"RSET\r\n",
            (Reply(True, "maildrop has 2 messages (320 octets)"),),
            b"+OK maildrop has 2 messages (320 octets)\r\n",
        ),
        Step(
            Command("TOP", numbers=(1, 10)),
            b"TOP 1 10\r\n",
            (MultilineStart(), Data(b"From: a@b\r\n\r\n.x\r\n"), MultilineEnd()),
            b"+OK\r\nFrom: a@b\r\n\r\n..x\r\n.\r\n",
        ),
        Step(
            Command("TOP", numbers=(100, 3)),
            b"TOP 100 3\r\n",
            (Reply(False, "no such message"),),
            b"-ERR no such message\r\n",
        ),
        Step(
            Command("UIDL"),
            b"UIDL\r\n",
            (
                MultilineStart(),
                Data(b"1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n"),
                MultilineEnd(),
            ),
            b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n",
        ),
        Step(
            Command("UIDL", numbers=(2,)),
            b"UIDL 2\r\n",
            (Reply(True, "2 QhdPYR:00WBw1Ph7x7"),),
            b"+OK 2 QhdPYR:00WBw1Ph7x7\r\n",
        ),
        Step(
            Command("UIDL", numbers=(3,)),
            b"UIDL 3\r\n",
            (Reply(False, "no such message, only 2 messages in maildrop"),),
            b"-ERR no such message, only 2 messages in maildrop\r\n",
        ),
        Step(
            Command("QUIT"),
            b"QUIT\r\n",
            (Reply(False, "some deleted messages not removed", "SYS/TEMP"),),
            b"-ERR [SYS/TEMP] some deleted messages not removed\r\n",
        ),
    ],
    State.CLOSED,
)

RFC2449_CAPA = (
    # RFC 2449 §5 CAPA example and §8 response codes
    (Reply(True, "POP3 server ready"), b"+OK POP3 server ready\r\n"),
    [
        Step(
            Command("CAPA"),
            b"CAPA\r\n",
            (
                MultilineStart("Capability list follows"),
                Data(b"TOP\r\nUSER\r\nSASL CRAM-MD5 KERBEROS_V4\r\nRESP-CODES\r\n"),
                Data(b"LOGIN-DELAY 900\r\nPIPELINING\r\nEXPIRE 60\r\nUIDL\r\n"),
                Data(b"IMPLEMENTATION Shlemazle-Plotz-v302\r\n"),
                MultilineEnd(),
            ),
            b"+OK Capability list follows\r\nTOP\r\nUSER\r\nSASL CRAM-MD5 KERBEROS_V4\r\n"
            b"RESP-CODES\r\nLOGIN-DELAY 900\r\nPIPELINING\r\nEXPIRE 60\r\nUIDL\r\n"
            b"IMPLEMENTATION Shlemazle-Plotz-v302\r\n.\r\n",
        ),
        Step(Command("USER", ("mrose",)), b"USER mrose\r\n", (Reply(True),), b"+OK\r\n"),
        Step(
            Command("PASS", ("tanstaaf",)),
            b"PASS tanstaaf\r\n",
            (Reply(False, "Maildrop locked by another session", "IN-USE"),),
            b"-ERR [IN-USE] Maildrop locked by another session\r\n",
        ),
        Step(Command("USER", ("mrose",)), b"USER mrose\r\n", (Reply(True),), b"+OK\r\n"),
        Step(
            Command("PASS", ("tanstaaf",)),
            b"PASS tanstaaf\r\n",
            (Reply(False, "login delay", "LOGIN-DELAY"),),
            b"-ERR [LOGIN-DELAY] login delay\r\n",
        ),
        Step(
            Command("PASS", ("tanstaaf",)),
            b"PASS tanstaaf\r\n",
            (Reply(False, "invalid password", "AUTH"),),
            b"-ERR [AUTH] invalid password\r\n",
        ),
        Step(Command("QUIT"), b"QUIT\r\n", (Reply(True),), b"+OK\r\n"),
    ],
    State.CLOSED,
)

RFC5034_AUTH = (
    # RFC 5034 §6 examples: GSSAPI with continuations and an empty response, PLAIN with an
    # initial response, and a cancelled exchange
    (Reply(True, "POP3 server ready"), b"+OK POP3 server ready\r\n"),
    [
        Step(Command("AUTH", ("GSSAPI",)), b"AUTH GSSAPI\r\n", (SaslContinuation(),), b"+ \r\n"),
        Step(
            SaslResponse("YIIB+wYJKoZIhvcSAQICAQBuggHqMIIB5qADAgEFoQMCAQ6iBw=="),
            b"YIIB+wYJKoZIhvcSAQICAQBuggHqMIIB5qADAgEFoQMCAQ6iBw==\r\n",
            (SaslContinuation("YGgGCSqGSIb3EgECAgIAb1kwV6ADAgEFoQMCAQ+iSzBJoAMC"),),
            b"+ YGgGCSqGSIb3EgECAgIAb1kwV6ADAgEFoQMCAQ+iSzBJoAMC\r\n",
        ),
        Step(
            SaslResponse(""),
            b"\r\n",
            (SaslContinuation("YDMGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzBeBiVHe"),),
            b"+ YDMGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzBeBiVHe\r\n",
        ),
        Step(
            SaslResponse("*"),
            b"*\r\n",
            (Reply(False, "AUTH cancelled"),),
            b"-ERR AUTH cancelled\r\n",
        ),
        Step(
            Command("AUTH"),
            b"AUTH\r\n",
            (
                MultilineStart("SASL mechanisms follow"),
                Data(b"PLAIN\r\nGSSAPI\r\n"),
                MultilineEnd(),
            ),
            b"+OK SASL mechanisms follow\r\nPLAIN\r\nGSSAPI\r\n.\r\n",
        ),
        Step(
            Command("AUTH", ("PLAIN", "dGVzdAB0ZXN0AHRlc3Q=")),
            b"AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n",
            (Reply(True, "Maildrop locked and ready"),),
            b"+OK Maildrop locked and ready\r\n",
        ),
        Step(Command("QUIT"), b"QUIT\r\n", (Reply(True),), b"+OK\r\n"),
    ],
    State.CLOSED,
)

RFC2595_STLS = (
    # RFC 2595 §4 example: CAPA, STLS, the handshake, CAPA again (now with USER)
    (Reply(True, "POP3 server ready"), b"+OK POP3 server ready\r\n"),
    [
        Step(
            Command("CAPA"),
            b"CAPA\r\n",
            (MultilineStart(), Data(b"STLS\r\n"), MultilineEnd()),
            b"+OK\r\nSTLS\r\n.\r\n",
        ),
        Step(
            Command("STLS"),
            b"STLS\r\n",
            (Reply(True, "Begin TLS negotiation"),),
            b"+OK Begin TLS negotiation\r\n",
        ),
        TLS,
        Step(
            Command("CAPA"),
            b"CAPA\r\n",
            (MultilineStart(), Data(b"USER\r\n"), MultilineEnd()),
            b"+OK\r\nUSER\r\n.\r\n",
        ),
        Step(
            Command("STLS"),
            b"STLS\r\n",
            (Reply(False, "TLS already active"),),
            b"-ERR TLS already active\r\n",
        ),
    ],
    State.AUTHORIZATION,
)

TRANSCRIPTS = {
    "rfc1939-session": RFC1939_SESSION,
    "rfc1939-commands": RFC1939_COMMANDS,
    "rfc2449-capa-codes": RFC2449_CAPA,
    "rfc5034-auth": RFC5034_AUTH,
    "rfc2595-stls": RFC2595_STLS,
}


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_server_role(name: str) -> None:
    (greeting, greeting_wire), steps, final = TRANSCRIPTS[name]
    server = ServerConnection()
    assert server.send(greeting) == greeting_wire
    for step in steps:
        if step.sent is None:
            assert server.next_event() == TlsStart()
            server.tls_started()
            continue
        server.receive_data(step.client_wire)
        assert drain(server) == [step.sent]
        assert b"".join(server.send(e) for e in step.answer) == step.server_wire
    assert server.state is final


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_client_role(name: str) -> None:
    (greeting, greeting_wire), steps, final = TRANSCRIPTS[name]
    client = ClientConnection()
    client.receive_data(greeting_wire)
    assert drain(client) == [greeting]
    tls_due = False
    for step in steps:
        if step.sent is None:
            assert tls_due  # TlsStart came right after the +OK to STLS
            client.tls_started()
            continue
        if step.sent.__class__ is Command and step.sent.keyword == "STLS" and client.tls_active:
            continue  # the client refuses a second STLS itself (test_errors covers it)
        assert client.send(step.sent) == step.client_wire
        client.receive_data(step.server_wire)
        got = drain(client)
        tls_due = got[-1:] == [TlsStart()]
        assert merge_data(got[: len(got) - tls_due]) == merge_data(list(step.answer))
    assert client.state is final


def test_apop_timestamp_from_the_rfc1939_greeting() -> None:
    client = ClientConnection()
    client.receive_data(b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n")
    drain(client)
    assert client.apop_timestamp == "<1896.697170952@dbc.mtview.ca.us>"


def test_pipelined_rfc1939_session_in_one_segment() -> None:
    """RFC 2449 §6.6: every command of the §10 session sent at once; the server hands them
    out one at a time, each after the previous reply, and the client reads them in order."""
    (greeting, _greeting_wire), steps, _ = RFC1939_SESSION
    server, client = ServerConnection(), ClientConnection()
    client.receive_data(server.send(greeting))
    drain(client)
    wire = b"".join(client.send(s.sent) for s in steps if s.sent is not None)
    assert wire == b"".join(s.client_wire for s in steps)
    server.receive_data(wire)
    replies = b""
    for step in steps:
        assert drain(server) == [step.sent]
        replies += b"".join(server.send(e) for e in step.answer)
    assert replies == b"".join(s.server_wire for s in steps)
    client.receive_data(replies)
    expected: list[Event] = [e for s in steps for e in s.answer]
    assert merge_data(drain(client)) == merge_data(expected)
    assert server.state is client.state is State.CLOSED
