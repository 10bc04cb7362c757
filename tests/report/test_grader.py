"""The sans-IO grader: observations in, counters and graded items out (firmware/pop3/report.py)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from firmware.pop3.events import (
    BadCommand,
    Command,
    MultilineStart,
    Problem,
    Reply,
    SaslContinuation,
    SaslResponse,
)
from firmware.pop3.report import (
    HISTORY,
    MAX_BOXES,
    OTHER_BOXES,
    ClientBook,
    ClientCard,
    cards_from_json,
    cards_to_json,
    host_of,
    render_junit,
    render_markdown,
)

OK = Reply(True, "fine")
BODY = MultilineStart("follows")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verdicts(card: ClientCard | None) -> dict[str, str]:
    assert card is not None
    return {item.name: item.verdict for item in card.items}


def session(
    book: ClientBook,
    sid: int,
    commands: list[tuple[str, object]],
    *,
    peer: str = "10.0.0.1:4000",
    ending: str = "client",
    box: str = "alice",
    pipelined: bool = False,
    **offer: object,
) -> None:
    """Open a session, run (keyword, reply) pairs (the box counts as logged in after an +OK
    PASS), close it."""
    book.opened(sid, peer, **offer)  # type: ignore[arg-type]
    logged = None
    for keyword, reply in commands:
        assert isinstance(reply, Reply | MultilineStart | SaslContinuation)
        numbers = (1,) if keyword in ("RETR", "DELE") else ()
        args = ("alice",) if keyword == "USER" else ("secret",) if keyword == "PASS" else ()
        if keyword == "PASS" and isinstance(reply, Reply) and reply.ok:
            logged = box
        book.exchange(sid, Command(keyword, args, numbers), reply, pipelined, logged)
    book.closed(sid, ending)


LOGIN = [("USER", OK), ("PASS", OK)]


def test_a_careful_client_passes_every_item_it_was_graded_on() -> None:
    clock = Clock()
    book = ClientBook(clock=clock)
    for sid in (1, 2):
        session(
            book,
            sid,
            [("CAPA", BODY), ("STLS", OK), *LOGIN, ("UIDL", BODY), ("RETR", BODY), ("QUIT", OK)],
            stls=True,
            pipelined=sid == 2,
        )
    grades = verdicts(book.card("10.0.0.1"))
    assert grades["capa"] == "pass"
    assert grades["uidl"] == "pass"
    assert grades["quit"] == "pass"
    assert grades["pipelining"] == "pass"
    # STLS was offered but the handshake was never reported: credentials went in clear.
    assert grades["tls"] == "fail"
    assert grades["retry"] == grades["login-delay"] == grades["certificate"] == "not-seen"


def test_tls_before_login_passes() -> None:
    book = ClientBook(clock=Clock())
    book.opened(1, "10.0.0.1:1", stls=True)
    book.exchange(1, Command("STLS"), OK, False, None)
    book.tls(1)
    book.exchange(1, Command("USER", ("alice",)), OK, False, None)
    book.exchange(1, Command("PASS", ("pw",)), OK, False, "alice")
    book.closed(1, "client")
    assert verdicts(book.card("10.0.0.1"))["tls"] == "pass"
    card = book.card("10.0.0.1")
    assert card is not None and card.counters["tls_sessions"] == 1


def test_leaving_mail_without_uidl_fails_and_deleting_it_passes() -> None:
    book = ClientBook(clock=Clock())
    session(book, 1, [*LOGIN, ("RETR", BODY), ("QUIT", OK)], peer="10.0.0.1")
    session(book, 2, [*LOGIN, ("RETR", BODY), ("DELE", OK), ("QUIT", OK)], peer="10.0.0.2")
    assert verdicts(book.card("10.0.0.1"))["uidl"] == "fail"
    assert verdicts(book.card("10.0.0.2"))["uidl"] == "pass"


def test_a_drop_with_deletions_pending_fails_and_rset_clears_them() -> None:
    book = ClientBook(clock=Clock())
    session(book, 1, [*LOGIN, ("DELE", OK)], peer="10.0.0.1")
    session(book, 2, [*LOGIN, ("DELE", OK), ("RSET", OK)], peer="10.0.0.2")
    session(book, 3, [*LOGIN, ("DELE", OK)], peer="10.0.0.3", ending="device")
    one, two, three = (book.card(f"10.0.0.{n}") for n in (1, 2, 3))
    assert verdicts(one)["quit"] == "fail"
    assert one is not None and one.counters["dropped_pending"] == 1
    assert verdicts(two)["quit"] == "warn"  # dropped, but nothing was pending
    assert verdicts(three)["quit"] == "not-seen"  # the device ended it: not the client's doing
    assert three is not None and three.counters["ended_by_device"] == 1


def test_retrying_at_once_after_in_use_is_hammering_and_waiting_is_backing_off() -> None:
    clock = Clock()
    book = ClientBook(clock=clock)
    in_use = Reply(False, "busy", "IN-USE")
    session(book, 1, [("USER", OK), ("PASS", in_use), ("QUIT", OK)], peer="10.0.0.1")
    clock.now += 0.2
    session(book, 2, [*LOGIN, ("QUIT", OK)], peer="10.0.0.1")
    session(book, 3, [("USER", OK), ("PASS", in_use), ("QUIT", OK)], peer="10.0.0.2")
    clock.now += 30
    session(book, 4, [*LOGIN, ("QUIT", OK)], peer="10.0.0.2")
    assert verdicts(book.card("10.0.0.1"))["retry"] == "fail"
    assert verdicts(book.card("10.0.0.2"))["retry"] == "pass"


def test_an_admission_refusal_counts_as_sys_temp() -> None:
    clock = Clock()
    book = ClientBook(clock=clock)
    book.refused("10.0.0.1:5", "SYS/TEMP")
    book.refused("10.0.0.1:6", "SYS/TEMP")  # again 0 s later: hammering
    card = book.card("10.0.0.1")
    assert card is not None and card.counters["refused"] == 2
    assert verdicts(card)["retry"] == "fail"


def test_login_delay_refusals_grade_the_client() -> None:
    book = ClientBook(clock=Clock())
    delay = Reply(False, "wait", "LOGIN-DELAY")
    session(book, 1, [("CAPA", BODY), ("USER", OK), ("PASS", delay)], login_delay=60)
    session(book, 2, [("CAPA", BODY), *LOGIN, ("QUIT", OK)], peer="10.0.0.2", login_delay=60)
    assert verdicts(book.card("10.0.0.1"))["login-delay"] == "fail"
    assert verdicts(book.card("10.0.0.2"))["login-delay"] == "pass"


def test_pipelining_without_it_being_offered_is_a_warning() -> None:
    book = ClientBook(clock=Clock())
    session(book, 1, [*LOGIN, ("STAT", OK), ("QUIT", OK)], pipelined=True)
    grades = verdicts(book.card("10.0.0.1"))
    assert grades["pipelining"] == "warn"
    assert grades["capa"] == "warn"


def test_secrets_never_enter_the_book() -> None:
    book = ClientBook(clock=Clock())
    book.opened(1, "10.0.0.1:1")
    book.exchange(1, Command("PASS", ("hunter2-secret",)), Reply(False, "no"), False, None)
    book.exchange(1, Command("APOP", ("alice", "c0ffee-digest")), Reply(False, "no"), False, None)
    book.exchange(1, Command("AUTH", ("PLAIN", "AGFsaWNlAHB3")), SaslContinuation(""), False, None)
    book.exchange(1, SaslResponse("c2VjcmV0LXNhc2w="), Reply(False, "no"), False, None)
    book.exchange(1, BadCommand(Problem.SYNTAX, "PASS"), Reply(False, "usage"), False, None)
    book.closed(1, "client")
    text = json.dumps([c.to_json() for c in book.cards()])
    for secret in ("hunter2", "c0ffee", "AGFsaWNl", "c2VjcmV0"):
        assert secret not in text
    card = book.card("10.0.0.1")
    assert card is not None and card.counters["login_failures"] == 3


def test_memory_is_bounded() -> None:
    clock = Clock()
    book = ClientBook(max_clients=3, clock=clock)
    for n in range(5):
        clock.now += 1
        session(book, n, [("NOOP", OK)], peer=f"10.0.0.{n}:1")
    assert book.addresses() == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    for sid in range(HISTORY + 5):
        session(book, 100 + sid, [("NOOP", OK)], peer="10.0.0.4")
    card = book.card("10.0.0.4")
    assert card is not None and len(card.history) == HISTORY
    for n in range(MAX_BOXES + 3):
        session(book, 1000 + n, [*LOGIN, ("QUIT", OK)], peer="10.0.0.9", box=f"box{n}")
    card = book.card("10.0.0.9")
    assert card is not None and len(card.boxes) == MAX_BOXES + 1
    assert card.boxes[-1].box == OTHER_BOXES and card.boxes[-1].sessions == 3


def test_a_bad_certificate_then_a_command_fails_and_a_refused_handshake_passes() -> None:
    clock = Clock()
    book = ClientBook(clock=clock)
    for sid, peer, went_on in ((1, "10.0.0.1", True), (2, "10.0.0.2", False)):
        book.opened(sid, peer, tls=True)
        book.fault_met(peer, None, "tls-expired-cert", clock.now, session=sid)
        if went_on:
            book.tls(sid)
            book.exchange(sid, Command("CAPA"), BODY, False, None)
        else:
            book.tls_failed(sid)
        book.closed(sid, "client")
    bad, good = book.card("10.0.0.1"), book.card("10.0.0.2")
    assert verdicts(bad)["certificate"] == "fail"
    assert verdicts(bad)["fault:tls-expired-cert"] == "fail"
    assert verdicts(good)["certificate"] == "pass"


def test_fault_reactions() -> None:
    clock = Clock()
    book = ClientBook(clock=clock)
    # retr-break: the client comes back and fetches again.
    book.opened(1, "10.0.0.1:1")
    book.exchange(1, Command("USER", ("a",)), OK, False, None)
    book.exchange(1, Command("PASS", ("p",)), OK, False, "alice")
    book.fault_met("10.0.0.1:1", "alice", "retr-break", clock.now, session=1, command="RETR")
    book.exchange(1, Command("RETR", (), (1,)), BODY, False, "alice")
    book.closed(1, "client")
    assert verdicts(book.card("10.0.0.1"))["fault:retr-break"] == "not-seen"
    clock.now += 5
    session(book, 2, [*LOGIN, ("RETR", BODY), ("QUIT", OK)], peer="10.0.0.1")
    assert verdicts(book.card("10.0.0.1"))["fault:retr-break"] == "pass"
    # reply-error [SYS/TEMP] on RETR: RETR again at once is hammering.
    book.opened(3, "10.0.0.2:1")
    book.fault_met(
        "10.0.0.2", None, "reply-error", clock.now, session=3, command="RETR", code="SYS/TEMP"
    )
    temp = Reply(False, "later", "SYS/TEMP")
    book.exchange(3, Command("RETR", (), (1,)), temp, False, "alice")
    book.exchange(3, Command("RETR", (), (1,)), temp, False, "alice")
    card = book.card("10.0.0.2")
    assert verdicts(card)["fault:reply-error [SYS/TEMP]"] == "fail"
    assert verdicts(card)["retry"] == "fail"
    # drop-after-greeting: coming back passes.
    book.fault_met("10.0.0.3", None, "drop-after-greeting", clock.now)
    clock.now += 2
    session(book, 4, [("QUIT", OK)], peer="10.0.0.3")
    assert verdicts(book.card("10.0.0.3"))["fault:drop-after-greeting"] == "pass"


def test_host_of() -> None:
    assert host_of("127.0.0.1:40000") == "127.0.0.1"
    assert host_of("[::1]:40000") == "::1"
    assert host_of("::1") == "::1"
    assert host_of("dp.lan") == "dp.lan"


def sample_cards() -> list[ClientCard]:
    book = ClientBook(clock=Clock())
    session(book, 1, [*LOGIN, ("RETR", BODY), ("QUIT", OK)], peer="10.0.0.1")
    session(
        book,
        2,
        [("CAPA", BODY), *LOGIN, ("RETR", BODY), ("DELE", OK), ("QUIT", OK)],
        peer="10.0.0.2",
    )
    return book.cards()


def test_junit_has_one_suite_per_client_and_a_failure_where_an_item_fails() -> None:
    cards = sample_cards()
    root = ET.fromstring(render_junit(cards))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["client 10.0.0.1", "client 10.0.0.2"]
    first, second = suites
    assert len(first.findall("testcase")) == len(cards[0].items) == int(first.get("tests", "0"))
    failed = [c.get("name") for c in first.findall("testcase") if c.find("failure") is not None]
    assert failed == ["used UIDL to avoid re-downloading"]
    assert first.get("failures") == "1" and second.get("failures") == "0"
    assert root.get("failures") == "1"
    skipped = [c for c in second.findall("testcase") if c.find("skipped") is not None]
    assert len(skipped) == int(second.get("skipped", "0")) > 0


def test_junit_escapes_what_xml_would_choke_on() -> None:
    book = ClientBook(clock=Clock())
    book.fault_met("10.0.0.1", None, 'odd<&">action', 0.0)
    ET.fromstring(render_junit(book.cards()))  # parses


def test_markdown_has_a_row_per_item() -> None:
    cards = sample_cards()
    text = render_markdown(cards)
    assert "## 10.0.0.1: FAIL" in text and "## 10.0.0.2: " in text
    rows = [line for line in text.splitlines() if line.startswith("| used UIDL")]
    assert len(rows) == 2 and "| FAIL |" in rows[0] and "| PASS |" in rows[1]
    assert "No client has connected yet." in render_markdown([])


def test_json_round_trip_and_bad_files() -> None:
    cards = sample_cards()
    written, back = cards_from_json(json.loads(json.dumps(cards_to_json(cards, 5.0))))
    assert written == 5.0 and back == cards
    for bad, why in (
        ([], "not a dpfw-clients report file"),
        ({"format": "dpfw-clients", "version": 9}, "version 9"),
        ({"format": "dpfw-clients", "version": 1, "clients": [{}]}, "without 'address'"),
    ):
        try:
            cards_from_json(bad)
        except ValueError as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")


def test_retr_of_another_message_after_sys_temp_is_no_retry_but_another_login_is() -> None:
    clock = Clock()
    book = ClientBook(clock=clock)
    temp = Reply(False, "out of memory", "SYS/TEMP")
    book.opened(1, "10.0.0.1:1")
    book.exchange(1, Command("RETR", (), (1,)), temp, False, "alice")
    book.exchange(1, Command("RETR", (), (2,)), temp, False, "alice")  # another message
    card = book.card("10.0.0.1")
    assert card is not None and card.counters["retries_hammered"] == 0
    book.exchange(1, Command("RETR", (), (2,)), temp, False, "alice")  # the same one again
    card = book.card("10.0.0.1")
    assert card is not None and card.counters["retries_hammered"] == 1
    # [IN-USE] to AUTH, then USER/PASS at once (fetchmail's fallback): a retry.
    in_use = Reply(False, "busy", "IN-USE")
    book.opened(2, "10.0.0.2:1")
    book.exchange(2, Command("AUTH", ("CRAM-MD5",)), SaslContinuation("x"), False, None)
    book.exchange(2, SaslResponse("resp"), in_use, False, None)
    book.exchange(2, Command("USER", ("alice",)), OK, False, None)
    book.closed(2, "client")
    assert verdicts(book.card("10.0.0.2"))["retry"] == "fail"
    card = book.card("10.0.0.2")
    assert card is not None
    assert card.history == ["session 2: AUTH CRAM-MD5 <sasl>! USER [dropped]"]


@dataclass(frozen=True)
class FaultEvent:
    """The shape of the faults plan's record (branch faults: firmware/faults/plan.py)."""

    fault: int
    action: str
    time: float
    session: int | None = None
    peer: str | None = None
    box: str | None = None
    command: str | None = None


def test_on_fault_takes_a_fault_plans_record() -> None:
    clock = Clock()
    book = ClientBook(clock=clock)
    book.on_fault(FaultEvent(1, "flash-full", clock.now))  # no peer: nobody's fault
    assert book.cards() == []
    book.on_fault(FaultEvent(2, "drop-after-greeting", clock.now, 7, "10.0.0.5:999", None))
    clock.now += 3
    session(book, 8, [("QUIT", OK)], peer="10.0.0.5:1000")
    card = book.card("10.0.0.5")
    assert card is not None and card.counters["faults_met"] == 1
    assert verdicts(card)["fault:drop-after-greeting"] == "pass"
