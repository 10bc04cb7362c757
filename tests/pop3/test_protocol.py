"""Transcripts of the sans-IO POP3 core over a real Board on a tmp image.

Every command is tried in every state; hypothesis feeds arbitrary lines in each state and
checks the one invariant that matters: exactly one well-formed reply, or a defined close.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.config.budget import RamBudget
from firmware.pop3.auth import apop_digest
from firmware.pop3.events import Command, Reply
from firmware.pop3.locks import BoxLocks
from firmware.pop3.mailbox import BoardMailstore
from firmware.pop3.protocol import (
    MAX_BAD_COMMANDS,
    MAX_DISCARD,
    SASL_LINE_LIMIT,
    Answer,
    Body,
    Pop3Protocol,
    Pop3Stats,
    State,
)
from firmware.security.abuse import LoginGuard
from firmware.store.board import Board
from tests.pop3.conftest import ALICE_PASSWORD, BOB_PASSWORD, MESSAGES, LiveProfile
from tests.pop3.driver import Driver

REPLY_HEAD = re.compile(rb"((\+OK|-ERR)( [^\r\n]*)?|\+ [A-Za-z0-9+/]*={0,2})\r\n\Z")
RESP_CODE = re.compile(rb"^-ERR \[[A-Z0-9/-]+\]")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """Sessions sharing one board, one lock table, one budget and one clock."""

    def __init__(self, board: Board, profile: LiveProfile, budget: RamBudget | None = None):
        self.board = board
        self.store = BoardMailstore(board)
        self.profile = profile
        self.locks = BoxLocks()
        self.budget = budget or RamBudget(1 << 24)
        self.clock = Clock()
        self.stats = Pop3Stats()
        self._ids = iter(range(1, 10**6))

    def session(self) -> Session:
        protocol = Pop3Protocol(
            self.store,
            self.profile,
            self.locks,
            self.budget,
            session_id=next(self._ids),
            clock=self.clock,
            stats=self.stats,
        )
        return Session(protocol)


LINE_TOO_LONG: Final = b"x" * 300
"""A command line over the 255-octet limit (RFC 2449 §4); sent with its CRLF."""
LINE_NEVER_ENDS: Final = b"x" * (SASL_LINE_LIMIT + MAX_DISCARD + 1)
"""An over-long line that goes on past MAX_DISCARD with no line end; sent without CRLF."""


class Session:
    """A device session behind the protocol library: lines in, reply octets out."""

    def __init__(self, protocol: Pop3Protocol) -> None:
        self.p = protocol
        self.wire = Driver(protocol)
        self.greeting = self.wire.greeting

    @property
    def last(self) -> Answer | None:
        return self.wire.last

    def send(self, line: bytes | str) -> bytes:
        """The whole reply to one line (CRLF added) as the client would receive it."""
        raw = line.encode() if isinstance(line, str) else line
        if self.wire.tls_due:
            self.wire.tls_started()  # what the adapter does after the handshake
        before = len(self.wire.answers)
        data = raw if raw is LINE_NEVER_ENDS else raw + b"\r\n"
        reply = trio.run(self.wire.feed, data)
        head = reply[: reply.find(b"\n") + 1]
        assert REPLY_HEAD.match(head), head
        assert len(head) <= 512
        assert len(self.wire.answers) - before <= 1
        return reply

    def login(self, box: str = "alice", password: str = ALICE_PASSWORD) -> bytes:
        assert self.send(f"USER {box}").startswith(b"+OK")
        return self.send(f"PASS {password}")


def state_of(s: Session) -> State:
    """The session's state, read afresh (an assert on `s.p.state` would pin mypy's view)."""
    return s.p.state


def unstuff(body: bytes) -> bytes:
    """What an RFC 1939 client keeps of a multi-line body (terminator and stuffing removed)."""
    assert body.endswith(b"\r\n.\r\n") or body == b".\r\n", body[-20:]
    lines = body[: -len(b".\r\n")].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@pytest.fixture
def h(board: Board, live_profile: LiveProfile) -> Harness:
    return Harness(board, live_profile)


def logged_in(h: Harness) -> Session:
    s = h.session()
    assert s.login().startswith(b"+OK alice has 3 messages")
    return s


# -- greeting and CAPA ---------------------------------------------------------------------


def test_greeting_has_a_fresh_apop_timestamp_and_names_the_model(h: Harness) -> None:
    one, two = h.session().greeting, h.session().greeting
    for greeting in (one, two):
        assert re.fullmatch(
            rb"\+OK DP-3530 POP3 service ready <[^<>@ ]+@dp3530\.local>\r\n", greeting
        )
    assert one != two


def test_greeting_without_apop_has_no_timestamp(h: Harness) -> None:
    h.profile.set("pop3.apop", "false")
    s = h.session()
    assert b"<" not in s.greeting
    assert s.send("APOP alice 0123456789abcdef0123456789abcdef").startswith(b"-ERR")


def capabilities(s: Session) -> list[bytes]:
    reply = s.send("CAPA")
    head, _, body = reply.partition(b"\r\n")
    assert head == b"+OK capability list follows"
    return unstuff(body).split(b"\r\n")[:-1]


def test_capa_is_the_same_before_and_after_login(h: Harness) -> None:
    s = h.session()
    before = capabilities(s)
    s.login()
    assert capabilities(s) == before
    for cap in (b"TOP", b"UIDL", b"USER", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING"):
        assert cap in before
    assert b"IMPLEMENTATION dpfw DP-3530 firmware 1.00-sim" in before
    assert not any(c.startswith((b"EXPIRE", b"LOGIN-DELAY")) for c in before)


def test_capa_shows_expire_and_login_delay_when_set(h: Harness) -> None:
    h.profile.set("pop3.expire_days", "0")
    h.profile.set("pop3.login_delay_s", "900")
    caps = capabilities(h.session())
    assert b"EXPIRE 0" in caps
    assert b"LOGIN-DELAY 900" in caps


def test_tls_only_hides_user_and_refuses_user_pass(h: Harness) -> None:
    h.profile.set("pop3.plaintext_auth", "tls_only")
    s = h.session()
    assert b"USER" not in capabilities(s)
    assert s.send("USER alice").startswith(b"-ERR [AUTH]")
    assert s.send(f"PASS {ALICE_PASSWORD}").startswith(b"-ERR")
    assert s.p.state is State.AUTHORIZATION
    s.p.tls_active = True  # what the STLS issue will set after the handshake
    assert b"USER" in capabilities(s)
    assert s.login().startswith(b"+OK")


def test_capa_takes_no_arguments(h: Harness) -> None:
    assert h.session().send("CAPA x").startswith(b"-ERR")


# -- AUTHORIZATION -------------------------------------------------------------------------


def test_user_pass_with_spaces_in_the_password_and_any_keyword_case(h: Harness) -> None:
    s = h.session()
    assert s.send("uSeR alice") == b"+OK send PASS\r\n"
    assert s.send(f"pass {ALICE_PASSWORD}") == b"+OK alice has 3 messages (%d octets)\r\n" % sum(
        m.size for m in h.board.messages("alice")
    )
    assert s.p.state is State.TRANSACTION


def test_unknown_box_and_wrong_password_look_the_same(h: Harness) -> None:
    s = h.session()
    assert s.send("USER nosuch") == s.send("USER alice") == b"+OK send PASS\r\n"
    assert s.send("PASS whatever") == b"-ERR [AUTH] invalid mailbox name or password\r\n"
    s.send("USER alice")
    assert s.send("PASS wrong") == b"-ERR [AUTH] invalid mailbox name or password\r\n"
    assert s.last is not None and s.last.delay == 0.0


def test_failed_logins_are_delayed_more_each_time_and_close_after_the_limit(h: Harness) -> None:
    h.profile.set("pop3.auth_failure_delay_s", "1.5")
    h.profile.set("pop3.max_auth_failures", "3")
    s = h.session()
    for attempt, delay in zip(range(1, 4), (1.5, 3.0, 6.0), strict=True):
        s.send("USER alice")
        assert s.send("PASS nope").startswith(b"-ERR [AUTH]")
        assert s.last is not None
        assert s.last.delay == delay
        assert s.last.close == (attempt == 3)
    assert h.stats.logins_failed == 3


def test_a_wrong_password_then_the_right_one_logs_in(h: Harness) -> None:
    s = h.session()
    s.send("USER alice")
    s.send("PASS nope")
    assert s.login().startswith(b"+OK")


def test_pass_needs_user_first_and_user_needs_a_name(h: Harness) -> None:
    s = h.session()
    assert s.send(f"PASS {ALICE_PASSWORD}").startswith(b"-ERR")
    assert s.send("USER").startswith(b"-ERR")
    assert s.send("USER a b").startswith(b"-ERR")
    s.send("USER alice")
    # RFC 1939 §7: PASS takes a string. Without one the line is malformed (a bad command),
    # not a failed login: no [AUTH], no penalty, and the USER it followed is used up.
    assert s.send("PASS") == b"-ERR PASS takes a password (the rest of the line)\r\n"
    assert s.last is not None and s.last.delay == 0 and h.stats.logins_failed == 0
    assert s.send(f"PASS {ALICE_PASSWORD}") == b"-ERR send USER first\r\n"


def test_apop_logs_in_with_the_legacy_secret(h: Harness) -> None:
    s = h.session()
    timestamp = re.search(rb"<[^>]*>", s.greeting)
    assert timestamp is not None
    digest = apop_digest(timestamp.group().decode(), ALICE_PASSWORD)
    assert s.send(f"APOP alice {digest}").startswith(b"+OK alice has 3 messages")


def test_apop_with_a_wrong_digest_is_a_failed_login(h: Harness) -> None:
    s = h.session()
    timestamp = re.search(rb"<[^>]*>", s.greeting)
    assert timestamp is not None
    ts = timestamp.group().decode()
    expected = b"-ERR [AUTH] invalid mailbox name or password\r\n"
    h.profile.set("pop3.max_auth_failures", "10")
    assert s.send(f"APOP alice {apop_digest(ts, 'wrong')}") == expected
    assert s.send("APOP alice NOTHEX") == expected
    assert h.stats.logins_failed == 2
    assert s.send("APOP alice").startswith(b"-ERR APOP takes")


def test_apop_for_a_name_without_a_legacy_secret_says_so_and_is_not_counted(h: Harness) -> None:
    # bob keeps no legacy secret: APOP can never succeed for him, even with the right password.
    # He is told so, at once (no penalty), and it does not count towards a lock-out; an unknown
    # name gets the same reply, so the reply does not tell which boxes exist.
    guard = LoginGuard(5.0, clock=h.clock, lockout_failures=2)
    s = Session(
        Pop3Protocol(
            h.store, h.profile, h.locks, h.budget, session_id=98, clock=h.clock, guard=guard
        )
    )
    timestamp = re.search(rb"<[^>]*>", s.greeting)
    assert timestamp is not None
    ts = timestamp.group().decode()
    for _ in range(3):
        for name, password in (("bob", BOB_PASSWORD), ("nosuch", "x")):
            reply = s.send(f"APOP {name} {apop_digest(ts, password)}")
            assert reply == (
                b"-ERR [AUTH] no APOP/CRAM-MD5 secret is kept for %s; log in another way "
                b"(see CAPA)\r\n" % name.encode()
            )
            assert s.last is not None and s.last.delay == 0 and not s.last.close
    assert h.stats.logins_failed == 0
    assert not guard.lockout.locked_boxes()
    assert s.login("bob", BOB_PASSWORD).startswith(b"+OK bob has 0 messages")


def test_a_second_login_to_a_locked_box_is_in_use_until_the_first_ends(h: Harness) -> None:
    first = logged_in(h)
    second = h.session()
    assert second.login() == b"-ERR [IN-USE] mailbox is in use by another session\r\n"
    assert second.p.state is State.AUTHORIZATION
    assert first.send("NOOP") == b"+OK\r\n"
    assert second.login("bob", BOB_PASSWORD).startswith(b"+OK bob has 0 messages")
    first.p.end()
    third = h.session()
    assert third.login().startswith(b"+OK")


def test_login_delay_is_enforced_per_box(h: Harness) -> None:
    h.profile.set("pop3.login_delay_s", "60")
    first = logged_in(h)
    assert first.send("QUIT").startswith(b"+OK")
    h.clock.now += 59
    s = h.session()
    assert s.login() == (b"-ERR [LOGIN-DELAY] wait 60 seconds between logins to a box\r\n")
    assert s.login("bob", BOB_PASSWORD).startswith(b"+OK")  # another box is not paced
    h.clock.now += 1
    assert h.session().login().startswith(b"+OK")


@pytest.mark.parametrize(
    "command", ["STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 0", "UIDL"]
)
def test_transaction_commands_are_refused_before_login(h: Harness, command: str) -> None:
    reply = h.session().send(command)
    assert (
        reply
        == b"-ERR %s is not valid in the authorization state\r\n" % command.split()[0].encode()
    )


def test_quit_before_login_closes_and_changes_nothing(h: Harness, board: Board) -> None:
    s = h.session()
    s.send("USER alice")
    assert s.send("QUIT") == b"+OK signing off\r\n"
    assert s.last is not None and s.last.close
    assert s.p.state is State.CLOSED
    assert len(board.messages("alice")) == 3
    assert s.wire.closed  # the adapter closes; the core refuses anything more
    assert trio.run(s.p.answer, Command("NOOP")).first.text == "session is over"


# -- bad input ----------------------------------------------------------------------------


def test_unknown_and_too_long_lines_get_err_and_the_session_goes_on(h: Harness) -> None:
    s = h.session()
    assert s.send("XYZZY") == b"-ERR unknown command\r\n"
    assert s.send(LINE_TOO_LONG).startswith(b"-ERR line too long")
    assert s.send("") == b"-ERR unknown command\r\n"
    assert s.send(b"\xff\xfe\x00") == b"-ERR unknown command\r\n"
    assert s.login().startswith(b"+OK")


def test_twenty_bad_commands_in_a_row_close_the_connection(h: Harness) -> None:
    s = logged_in(h)
    for _ in range(MAX_BAD_COMMANDS - 1):
        s.send("RETR 99")
        assert s.last is not None and not s.last.close
    assert s.send("NOOP") == b"+OK\r\n"  # a good command resets the count
    for _ in range(MAX_BAD_COMMANDS - 1):
        s.send("BOGUS")
    assert s.send("LIST 0").startswith(b"-ERR too many bad commands")
    assert s.last is not None and s.last.close


# -- TRANSACTION --------------------------------------------------------------------------


def test_stat_list_and_retr_sizes_agree_with_what_a_client_receives(h: Harness) -> None:
    s = logged_in(h)
    infos = h.board.messages("alice")
    stat = s.send("STAT")
    assert stat == b"+OK 3 %d\r\n" % sum(m.size for m in infos)
    listing = s.send("LIST")
    assert listing.startswith(b"+OK 3 messages")
    lines = unstuff(listing.partition(b"\r\n")[2]).split(b"\r\n")[:-1]
    assert lines == [b"%d %d" % (n, m.size) for n, m in enumerate(infos, 1)]
    for n, info in enumerate(infos, 1):
        assert s.send(f"LIST {n}") == b"+OK %d %d\r\n" % (n, info.size)
        reply = s.send(f"RETR {n}")
        head, _, body = reply.partition(b"\r\n")
        assert head == b"+OK %d octets" % info.size
        assert len(unstuff(body)) == info.size


def test_retr_is_byte_stuffed_and_normalised_to_crlf(h: Harness) -> None:
    s = logged_in(h)
    body = s.send("RETR 2").partition(b"\r\n")[2]
    assert body == MESSAGES[1].replace(b"\r\n.", b"\r\n..") + b".\r\n"
    third = unstuff(s.send("RETR 3").partition(b"\r\n")[2])
    assert third == MESSAGES[2].replace(b"\n", b"\r\n") + b"\r\n"
    assert b"\r\n.\r\n" in third  # the lone "." line survives unstuffing


def test_uidl_lists_stable_printable_ids(h: Harness) -> None:
    s = logged_in(h)
    listing = unstuff(s.send("UIDL").partition(b"\r\n")[2]).split(b"\r\n")[:-1]
    uids = [line.split(b" ", 1)[1] for line in listing]
    assert len(set(uids)) == 3
    for n, uid in enumerate(uids, 1):
        assert re.fullmatch(rb"[\x21-\x7e]{1,70}", uid)
        assert s.send(f"UIDL {n}") == b"+OK %d %s\r\n" % (n, uid)


def test_top(h: Harness) -> None:
    s = logged_in(h)
    head = s.send("TOP 1 0")
    assert head.startswith(b"+OK")
    assert unstuff(head.partition(b"\r\n")[2]) == (
        b"From: scanner@dp3530.local\r\nSubject: one\r\n\r\n"
    )
    whole = unstuff(s.send("TOP 2 1000000000").partition(b"\r\n")[2])
    assert whole == MESSAGES[1]
    assert unstuff(s.send("TOP 2 2").partition(b"\r\n")[2]).endswith(b"\r\n\r\n.\r\n..\r\n")
    for bad in ("TOP 1 -1", "TOP 1", "TOP 1 x", "TOP 0 1", "TOP 4 0", "TOP"):
        assert s.send(bad).startswith(b"-ERR"), bad


@pytest.mark.parametrize("arg", ["0", "-1", "4", "x", "1x", "\u0661", "99999999999", ""])
def test_bad_message_numbers_get_err(h: Harness, arg: str) -> None:
    s = logged_in(h)
    for command in ("RETR", "DELE", "LIST", "UIDL", "TOP"):
        line = f"{command} {arg}" + (" 0" if command == "TOP" else "")
        if command in ("LIST", "UIDL") and not arg:
            continue
        assert s.send(line).startswith(b"-ERR"), line
    assert s.send("STAT").startswith(b"+OK 3 ")


def test_numbers_are_decimal_numbers_of_any_length(h: Harness) -> None:
    # Public bug reports: `TOP 1 1000000000000` and `TOP 1 0000000000002` were refused as
    # "not a non-negative decimal number". RFC 1939 §7 sets no upper bound on the count, and a
    # count beyond the body sends the whole message.
    s = logged_in(h)
    sizes = [m.size for m in h.board.messages("alice")]
    whole = unstuff(s.send("TOP 1 0").partition(b"\r\n")[2]) + b"first body\r\n"
    for count in ("1000000000000", "9" * 200, "00000000000000000001"):
        assert unstuff(s.send(f"TOP 1 {count}").partition(b"\r\n")[2]) == whole, count
    two = unstuff(s.send("TOP 2 0000000000002").partition(b"\r\n")[2])
    assert two.endswith(b"\r\n\r\n.\r\n..\r\n")
    assert s.send("LIST 0000000000002") == b"+OK 2 %d\r\n" % sizes[1]
    assert s.send("RETR 000003").startswith(b"+OK %d octets" % sizes[2])
    assert s.send("TOP 00001 1").startswith(b"+OK")
    assert s.send("UIDL 01").startswith(b"+OK 1 ")
    # Out of range: a true reply, whatever the length of the number.
    huge = "1" + "0" * 40
    for command in ("RETR", "DELE", "LIST", "UIDL"):
        assert s.send(f"{command} {huge}") == (
            b"-ERR no message %s; messages are 1 to 3\r\n" % huge.encode()
        )
    assert s.send(f"TOP {huge} 1") == b"-ERR no message %s; messages are 1 to 3\r\n" % (
        huge.encode()
    )
    assert s.send("RETR 0") == b"-ERR no message 0; messages are 1 to 3\r\n"
    # The library parses the arguments; a malformed one gets the command's usage.
    top = b"-ERR TOP takes a message number and a line count (0, 1, ...)\r\n"
    for bad in ("TOP 1 -1", "TOP 1 +1", "TOP 1 1x", "TOP 1 \u0662", "TOP 1 2 3"):
        assert s.send(bad) == top, bad
    for bad in ("RETR -1", "DELE x", "RETR 1 2", "DELE"):
        assert s.send(bad) == b"-ERR %s takes one message number (1, 2, ...)\r\n" % bad[:4].encode()
    for bad in ("LIST 1.0", "UIDL \u0661", "LIST 1 2"):
        assert s.send(bad) == (
            b"-ERR %s takes at most one message number (1, 2, ...)\r\n" % bad[:4].encode()
        )
    assert s.send("STAT") == b"+OK 3 %d\r\n" % sum(sizes)


def test_arguments_are_split_alike_for_every_command(h: Harness) -> None:
    s = h.session()
    timestamp = re.search(rb"<[^>]*>", s.greeting)
    assert timestamp is not None
    assert s.send("AUTH ").startswith(b"+OK SASL mechanisms follow")
    assert s.send("AUTH  PLAIN") == b"+ \r\n"
    assert s.send("*") == b"-ERR AUTH cancelled\r\n"
    digest = apop_digest(timestamp.group().decode(), ALICE_PASSWORD)
    assert s.send(f"APOP  alice  {digest}").startswith(b"+OK alice has 3")
    assert s.send("LIST  2 ").startswith(b"+OK 2 ")
    assert s.send("TOP  2  0").startswith(b"+OK")


def test_an_empty_box_says_there_are_no_messages(h: Harness) -> None:
    s = h.session()
    assert s.login("bob", BOB_PASSWORD).startswith(b"+OK bob has 0 messages")
    assert s.send("RETR 1") == b"-ERR no message 1; there are no messages\r\n"


def test_quit_with_an_argument_is_refused_and_commits_nothing(h: Harness, board: Board) -> None:
    # Public bug report: `QUIT x` committed and signed off, although commands that take no
    # arguments refuse them (docs/pop3.md).
    s = h.session()
    assert s.send("QUIT x") == b"-ERR QUIT takes no arguments\r\n"
    assert s.last is not None and not s.last.close and state_of(s) is State.AUTHORIZATION
    assert s.login().startswith(b"+OK alice has 3")
    assert s.send("DELE 1").startswith(b"+OK")
    assert s.send("QUIT now") == b"-ERR QUIT takes no arguments\r\n"
    assert s.last is not None and not s.last.close and state_of(s) is State.TRANSACTION
    assert len(board.messages("alice")) == 3
    assert s.send("QUIT ") == b"+OK signing off (2 messages left)\r\n"  # trailing space: none
    assert len(board.messages("alice")) == 2


@pytest.mark.parametrize("state", ["authorization", "in-sasl", "transaction"])
def test_a_line_that_never_ends_closes_the_session(h: Harness, state: str) -> None:
    # One bad command when the line crosses the limit (inside SASL: a failed login), then the
    # device's last word once MAX_DISCARD more octets came without a line end.
    s = session_in(h, state)
    first = (
        b"-ERR [AUTH] invalid mailbox name or password\r\n"
        if state == "in-sasl"
        else b"-ERR line too long; commands are at most 255 octets\r\n"
    )
    reply = b"".join(
        trio.run(s.wire.feed, LINE_NEVER_ENDS[at : at + 4096])
        for at in range(0, len(LINE_NEVER_ENDS), 4096)
    )
    assert reply == first + b"-ERR line too long and still no line end; closing\r\n"
    assert s.wire.closed
    s.p.end()
    assert h.locks.held() == 0


def test_a_long_line_that_ends_within_the_bound_is_one_bad_command(h: Harness) -> None:
    s = logged_in(h)
    line = b"x" * (255 + MAX_DISCARD - 2) + b"\r\nNOOP\r\n"
    reply = b"".join(
        trio.run(s.wire.feed, line[at : at + 1000]) for at in range(0, len(line), 1000)
    )
    assert reply == b"-ERR line too long; commands are at most 255 octets\r\n+OK\r\n"
    assert not s.wire.closed
    s.p.end()


def test_dele_marks_rset_unmarks_and_numbers_stay(h: Harness) -> None:
    s = logged_in(h)
    sizes = [m.size for m in h.board.messages("alice")]
    assert s.send("DELE 1") == b"+OK message 1 deleted\r\n"
    assert s.send("DELE 1") == b"-ERR message 1 is deleted\r\n"
    for command in ("RETR 1", "LIST 1", "UIDL 1", "TOP 1 0"):
        assert s.send(command) == b"-ERR message 1 is deleted\r\n"
    assert s.send("STAT") == b"+OK 2 %d\r\n" % (sizes[1] + sizes[2])
    listing = unstuff(s.send("LIST").partition(b"\r\n")[2])
    assert listing == b"2 %d\r\n3 %d\r\n" % (sizes[1], sizes[2])
    assert s.send("RSET") == b"+OK maildrop has 3 messages (%d octets)\r\n" % sum(sizes)
    assert s.send("RETR 1").startswith(b"+OK")


def test_noop_and_no_argument_commands(h: Harness) -> None:
    s = logged_in(h)
    assert s.send("NOOP") == b"+OK\r\n"
    for command in ("NOOP 1", "STAT 1", "RSET x"):
        assert s.send(command).startswith(b"-ERR")


@pytest.mark.parametrize("command", ["USER alice", f"PASS {ALICE_PASSWORD}", "APOP alice x"])
def test_auth_commands_are_refused_after_login(h: Harness, command: str) -> None:
    s = logged_in(h)
    assert s.send(command).startswith(b"-ERR %s is not valid" % command.split()[0].encode())


def test_quit_commits_the_deletions_in_one_step(h: Harness, board: Board) -> None:
    s = logged_in(h)
    uids = [m.uid for m in board.messages("alice")]
    s.send("DELE 1")
    s.send("DELE 3")
    assert s.send("QUIT") == b"+OK signing off (1 message left)\r\n"
    assert s.last is not None and s.last.close
    assert [m.uid for m in board.messages("alice")] == [uids[1]]
    assert h.locks.holder("alice") is None


def test_ending_without_quit_commits_nothing(h: Harness, board: Board) -> None:
    s = logged_in(h)
    s.send("DELE 1")
    s.send("RETR 2")
    s.p.end()
    assert len(board.messages("alice")) == 3
    assert h.locks.holder("alice") is None
    assert logged_in(h).send("STAT").startswith(b"+OK 3 ")


def test_expire_zero_deletes_retrieved_messages_at_update(h: Harness, board: Board) -> None:
    h.profile.set("pop3.expire_days", "0")
    s = logged_in(h)
    keep = board.messages("alice")[2].uid
    s.send("RETR 1")
    s.send("TOP 3 0")  # TOP is not a retrieval
    s.send("DELE 2")
    assert s.send("QUIT").startswith(b"+OK")
    assert [m.uid for m in board.messages("alice")] == [keep]


def test_rset_also_forgets_retrievals_under_expire_zero(h: Harness, board: Board) -> None:
    h.profile.set("pop3.expire_days", "0")
    s = logged_in(h)
    s.send("RETR 1")
    s.send("RSET")
    s.send("QUIT")
    assert len(board.messages("alice")) == 3


def test_out_of_ram_gives_sys_temp_and_the_session_goes_on(
    board: Board, live_profile: LiveProfile
) -> None:
    h = Harness(board, live_profile, RamBudget(1000))
    s = logged_in(h)
    assert s.send("RETR 1") == b"-ERR [SYS/TEMP] out of memory; try again later\r\n"
    assert s.send("STAT").startswith(b"+OK")
    assert h.budget.used == 0


def test_retr_returns_its_reservation(h: Harness) -> None:
    s = logged_in(h)
    reply = trio.run(s.p.answer, Command("RETR", numbers=(1,)))
    assert h.budget.used > 0
    assert reply.body is not None and reply.body.wire  # the stored wire form, already stuffed
    reply.body.close()
    assert h.budget.used == 0


def test_a_body_releases_once_and_closes_its_source() -> None:
    released: list[int] = []
    closed: list[int] = []

    def source() -> Iterator[bytes]:
        try:
            yield b"x\r\n"
            yield b"y\r\n"
        finally:
            closed.append(1)

    body = Body(source(), first=b"f", on_close=lambda: released.append(1))
    assert next(body) == b"f"
    assert next(body) == b"x\r\n"
    body.close()
    body.close()
    assert released == [1]
    assert closed == [1]
    assert list(body) == []


def test_retr_says_which_stored_message_it_sends_and_top_does_not(h: Harness, board: Board) -> None:
    s = logged_in(h)
    s.send("RETR 2")
    assert s.last is not None and s.last.stored == ("alice", board.messages("alice")[1].uid)
    s.send("TOP 2 0")
    assert s.last is not None and s.last.ok and s.last.stored is None
    s.send("LIST")
    assert s.last is not None and s.last.stored is None


def test_after_update_every_line_closes(h: Harness) -> None:
    s = logged_in(h)
    s.send("QUIT")
    assert s.wire.closed and trio.run(s.wire.feed, b"NOOP\r\n") == b""
    answer = trio.run(s.p.answer, Command("NOOP"))
    assert answer.first == Reply(False, "session is over") and answer.close


# -- properties ---------------------------------------------------------------------------

COMMAND_WORDS = [
    "USER",
    "PASS",
    "APOP",
    "STAT",
    "LIST",
    "RETR",
    "DELE",
    "NOOP",
    "RSET",
    "QUIT",
    "TOP",
    "UIDL",
    "CAPA",
    "STLS",
    "AUTH",
    "AUTH PLAIN",
    "AUTH SCRAM-SHA-256",
    "AUTH CRAM-MD5",
    "UTF8",
    "user",
    "list",
]

lines = st.one_of(
    st.binary(max_size=253).map(lambda b: b.replace(b"\n", b"")),
    st.tuples(
        st.sampled_from(COMMAND_WORDS),
        st.lists(
            st.one_of(st.integers(-3, 5).map(str), st.text(max_size=12), st.just("alice")),
            max_size=3,
        ),
    ).map(lambda t: " ".join([t[0], *t[1]]).encode("utf-8")[:253].replace(b"\n", b"")),
    st.just(LINE_TOO_LONG),
    st.just(LINE_NEVER_ENDS),
)


def session_in(h: Harness, state: str) -> Session:
    s = h.session()
    if state == "user-given":
        s.send("USER alice")
    elif state == "in-sasl":
        assert s.send("AUTH SCRAM-SHA-256") == b"+ \r\n"
    elif state in ("transaction", "transaction-deleted"):
        s.login()
        if state == "transaction-deleted":
            s.send("DELE 2")
    return s


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    state=st.sampled_from(
        ["authorization", "user-given", "in-sasl", "transaction", "transaction-deleted"]
    ),
    line=lines,
)
def test_any_line_in_any_state_gives_one_well_formed_reply(
    h: Harness, board: Board, state: str, line: bytes
) -> None:
    while len(board.messages("alice")) < 3:
        board.deliver("alice", MESSAGES[0])
    before = len(board.messages("alice"))
    s = session_in(h, state)
    try:
        reply = s.send(line)
        assert reply.startswith((b"+OK", b"-ERR", b"+ "))
        if reply.startswith(b"-ERR ["):
            assert RESP_CODE.match(reply), reply
        assert s.last is not None
        if s.last.body is not None:
            assert reply.endswith(b"\r\n.\r\n")
    finally:
        s.p.end()
    assert h.locks.held() == 0
    assert h.budget.used == 0
    committed = state == "transaction-deleted" and reply == b"+OK signing off (2 messages left)\r\n"
    # Only QUIT after the DELE commits anything, and then exactly that one message.
    assert len(board.messages("alice")) == before - committed


# -- chunk boundaries ---------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [65536, 2 * 65536])
@pytest.mark.parametrize("delta", [-4, -3, -2, -1, 0, 1, 2])
def test_stuffed_dot_lines_on_store_chunk_boundaries(
    h: Harness, board: Board, chunk: int, delta: int
) -> None:
    """A '.' line, a '..' line and a lone '.' placed so a chunk boundary cuts them anywhere."""
    filler_lines, rest = divmod(chunk + delta - 40, 80)
    head = b"Subject: boundary\r\n\r\n"
    filler = b"a" * 78 + b"\r\n"
    pad = b"b" * max(0, 40 - len(head) + rest - 2) + b"\r\n"
    tail = b".\r\n..\r\n.dot\r\n" + filler * 3 + b".\r\n"
    message = head + filler * filler_lines + pad + tail
    board.deliver("bob", message)
    s = h.session()
    assert s.login("bob", BOB_PASSWORD).startswith(b"+OK bob has 1 message (")
    size = int(s.send("LIST 1").split()[2])
    body = s.send("RETR 1").partition(b"\r\n")[2]
    assert unstuff(body) == message
    assert len(message) == size
    assert body.count(b"\r\n..\r\n") == 2 and body.count(b"\r\n...\r\n") == 1
    top = unstuff(s.send("TOP 1 100000").partition(b"\r\n")[2])
    assert top == message


# -- store failures -----------------------------------------------------------------------


def test_a_damaged_message_gets_sys_perm_and_the_others_still_read(
    h: Harness, board: Board, image_path: Path
) -> None:
    raw = bytearray(image_path.read_bytes())
    at = raw.find(b"first body")
    assert at > 0
    with image_path.open("r+b") as image:
        image.seek(at)
        image.write(b"FIRST BODY")
    s = logged_in(h)
    assert s.send("RETR 1").startswith(b"-ERR [SYS/PERM] message 1 is damaged")
    assert s.send("TOP 1 0").startswith(b"-ERR [SYS/PERM]")
    assert s.send("RETR 2").startswith(b"+OK")
    assert h.budget.used == 0
    assert s.send("DELE 1").startswith(b"+OK")  # a damaged message can still be removed
    assert s.send("QUIT").startswith(b"+OK")
    assert len(board.messages("alice")) == 2


def test_a_failed_commit_replies_err_removes_nothing_and_frees_the_lock(
    h: Harness, board: Board
) -> None:
    s = h.session()
    assert s.login("bob", BOB_PASSWORD).startswith(b"+OK")
    board.deliver("bob", MESSAGES[0])
    assert s.send("STAT") == b"+OK 0 0\r\n"  # the session's snapshot is fixed at login
    s2 = logged_in(h)
    s2.send("DELE 1")
    board.delete_box("alice", purge=True)  # the administrator removes the box under the session
    reply = s2.send("QUIT")
    assert reply.startswith(b"-ERR [SYS/TEMP] no messages removed")
    assert s2.last is not None and s2.last.close
    assert h.locks.holder("alice") is None
    assert h.stats.commits_failed == 1


# -- STLS and AUTH in the core ---------------------------------------------------------------


def test_stls_asks_the_adapter_for_tls_only_when_a_certificate_exists(h: Harness) -> None:
    s = h.session()
    assert s.send("STLS").startswith(b"-ERR STLS is not offered")
    assert b"STLS" not in s.send("CAPA")
    s.p.tls_available = True
    assert b"\r\nSTLS\r\n" in s.send("CAPA")
    s.send("USER alice")
    assert s.send("STLS") == b"+OK begin TLS negotiation\r\n"
    assert s.last is not None and s.last.starttls and not s.last.close
    s.p.tls_active = True  # what the adapter does after the handshake
    assert s.send(f"PASS {ALICE_PASSWORD}") == b"-ERR send USER first\r\n"  # nothing carried over
    assert b"STLS" not in s.send("CAPA")
    assert s.login().startswith(b"+OK alice")
    assert b"STLS" not in s.send("CAPA")


def test_the_line_limit_grows_only_while_an_exchange_waits(h: Harness) -> None:
    s = h.session()
    long = "A" * 1000  # base64 text, longer than a command line, shorter than SASL_LINE_LIMIT
    assert 255 < len(long) + 2 < SASL_LINE_LIMIT
    assert s.send(long) == b"-ERR line too long; commands are at most 255 octets\r\n"
    assert s.send("AUTH PLAIN") == b"+ \r\n"
    assert s.send(long).startswith(b"-ERR [AUTH]")  # read whole, as the response it is
    assert s.send(long).startswith(b"-ERR line too long")  # the exchange is over
    assert s.send("AUTH PLAIN") == b"+ \r\n"
    assert s.send("*") == b"-ERR AUTH cancelled\r\n"
    assert s.send(long).startswith(b"-ERR line too long")
    s.send("AUTH SCRAM-SHA-256")
    s.p.end()  # a session ended mid-exchange forgets it
    assert s.p.sasl is None


def test_sasl_capability_follows_the_policy_in_both_states(h: Harness) -> None:
    s = h.session()
    assert b"\r\nSASL SCRAM-SHA-256 PLAIN CRAM-MD5\r\n" in s.send("CAPA")
    h.profile.set("pop3.plaintext_auth", "tls_only")
    h.profile.set("pop3.apop", "false")
    assert b"\r\nSASL SCRAM-SHA-256\r\n" in s.send("CAPA")
    s.p.tls_active = True
    assert s.login().startswith(b"+OK alice")
    assert b"\r\nSASL SCRAM-SHA-256 PLAIN\r\n" in s.send("CAPA")


def test_a_locked_box_fails_like_a_wrong_password(h: Harness) -> None:
    guard = LoginGuard(0.0, clock=h.clock, lockout_failures=2)
    s = Session(  # the service shares one guard between its sessions
        Pop3Protocol(
            h.store, h.profile, h.locks, h.budget, session_id=99, clock=h.clock, guard=guard
        )
    )
    for _ in range(2):
        s.send("USER bob")
        s.send("PASS nope")
    s.send("USER bob")
    assert s.send(f"PASS {BOB_PASSWORD}") == b"-ERR [AUTH] invalid mailbox name or password\r\n"
    assert list(guard.lockout.locked_boxes()) == ["bob"]
