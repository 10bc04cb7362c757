"""The client report card: what each POP3 client did, graded against the RFCs (sans-IO).

The service (firmware/pop3/server.py) tells a `ClientBook` what happens, one method call per
event: `opened` (a session was accepted: its id, the client's address, what the device
offers), `tls` / `tls_failed` (a handshake ended), `exchange` (one client command or SASL line
and the first line of the device's answer; whether the command came pipelined; the session's
box), `refused` (a connection refused at admission with a response code) and `closed` (the
session ended, and how). A fault plan adds `fault_met` notes. Nothing here reads a socket or
a clock other than the `clock` given (seconds since the epoch).

Secrets never enter the book: a command is kept as its keyword only (never PASS's argument,
an APOP digest or a SASL line), a box as the name the session logged in to.

The book keeps, per client address (the host, without port), counters (sessions, commands,
messages retrieved and deleted, ...), per-box counters, a short history of its sessions and
what it did after each fault it met, and grades these items (each a `Item`: pass, warn, fail
or not-seen, one line of reason, the RFC section):

    capa         asked CAPA (RFC 2449 §5)
    uidl         left mail on the server only with UIDL to avoid re-downloading (RFC 1939 §7)
    quit         ended with QUIT, not a drop with deletions pending (RFC 1939 §6)
    pipelining   pipelined when PIPELINING was offered (RFC 2449 §6.6)
    retry        backed off after [IN-USE] / [SYS/TEMP] (RFC 2449 §8.1.1, RFC 3206 §4)
    login-delay  honoured LOGIN-DELAY (RFC 2449 §6.5, §8.1.2)
    tls          used TLS before sending credentials when offered (RFC 2595 §4, RFC 8314 §3)
    certificate  did not go on after a certificate that should fail verification
                 (RFC 2595 §2.4, RFC 6125 §6); only when a fault presented one
    fault:ACTION how it reacted to each fault it met (docs/report-card.md)

Memory is bounded: at most `max_clients` addresses (the least recently seen is evicted), per
client at most HISTORY session summaries, MAX_BOXES boxes and MAX_FAULTS fault actions.

`render_markdown` and `render_junit` are pure functions of a list of `ClientCard`; the JSON
form (`ClientCard.to_json`, `cards_from_json`) is what `dpfw report` reads from the file a
running device writes beside its image.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from firmware.pop3.events import (
    BadCommand,
    Command,
    MultilineStart,
    Reply,
    SaslContinuation,
    SaslResponse,
)
from firmware.text import plural

Verdict = Literal["pass", "warn", "fail", "not-seen"]
VERDICTS: Final[tuple[Verdict, ...]] = ("pass", "warn", "fail", "not-seen")
_RANK: Final = {"not-seen": 0, "pass": 1, "warn": 2, "fail": 3}

MAX_CLIENTS: Final = 256
"""Client addresses kept; the one seen least recently goes first."""
HISTORY: Final = 20
"""Session summaries kept per client (the latest)."""
MAX_BOXES: Final = 32
"""Boxes counted per client; sessions to more boxes are counted under OTHER_BOXES."""
OTHER_BOXES: Final = "(other boxes)"
MAX_FAULTS: Final = 32
"""Fault actions graded per client."""
SUMMARY_KEYWORDS: Final = 24
"""Command keywords kept per session summary (runs count as one: "RETR x3")."""
HAMMER_S: Final = 1.0
"""A retry sooner than this after [IN-USE] / [SYS/TEMP] (or a fault asking to wait) is hammering."""
FORMAT: Final = "dpfw-clients"
FORMAT_VERSION: Final = 1

_LOGIN: Final = frozenset({"PASS", "APOP", "AUTH"})
_LOGIN_ALL: Final = frozenset({"USER", "PASS", "APOP", "AUTH"})
_NOTED: Final = frozenset(
    {"PASS", "APOP", "AUTH", "CAPA", "UIDL", "RETR", "DELE", "TOP", "RSET", "QUIT"}
)
"""Commands the grades count (the rest only enter the session's summary)."""
_REVEALING: Final = frozenset({"PLAIN", "LOGIN"})
"""SASL mechanisms that send the password itself (RFC 4616, the LOGIN draft)."""
_TEMP_CODES: Final = frozenset({"IN-USE", "SYS/TEMP"})
_RESULT_FIELDS: Final = ("met", "pass", "warn", "fail")

COUNTERS: Final = (
    "sessions",  # sessions opened
    "refused",  # connections refused at admission (-ERR [SYS/TEMP] before any session)
    "commands",  # command lines (and SASL lines)
    "pipelined",  # commands sent before the previous reply was read
    "command_sessions",  # sessions that sent at least one command
    "capa_sessions",  # sessions that asked CAPA
    "logins",  # successful logins
    "login_failures",  # -ERR to PASS / APOP / AUTH
    "retrieved",  # RETR +OK
    "top",  # TOP +OK
    "deleted",  # DELE +OK
    "retr_sessions",  # sessions with at least one RETR
    "kept_sessions",  # sessions that retrieved more than they deleted (left mail on the server)
    "kept_uidl_sessions",  # ... of which asked UIDL
    "quit",  # sessions ended by the client's QUIT
    "dropped",  # sessions the client left without QUIT (EOF, reset, idle timeout)
    "dropped_pending",  # ... with deletions that were therefore not committed
    "ended_by_device",  # sessions the device ended (eviction, kill, shutdown, limits)
    "tls_sessions",  # sessions in TLS (STLS or POP3S)
    "tls_failures",  # handshakes that failed
    "tls_logins",  # login attempts inside TLS
    "plain_logins_tls_offered",  # password in clear text (USER/PASS, AUTH PLAIN or LOGIN)
    # while STLS was offered
    "cr_logins_tls_offered",  # challenge-response (APOP, CRAM-MD5, SCRAM) without TLS while
    # STLS was offered: the password stays secret, the mail does not
    "plain_logins_no_tls",  # login attempts in clear text, the device offering no TLS
    "pipelining_offered",  # sessions whose CAPA listed PIPELINING
    "temp_replies",  # -ERR [IN-USE] / [SYS/TEMP] received (replies and refusals)
    "retries_backed_off",  # next attempts HAMMER_S or more after such a reply
    "retries_hammered",  # next attempts sooner than HAMMER_S
    "login_delay_offered",  # sessions whose CAPA advertised LOGIN-DELAY n > 0
    "login_delay_refusals",  # -ERR [LOGIN-DELAY]: a login too soon
    "faults_met",  # fault notes (fault_met)
)

RFC: Final = {
    "capa": "RFC 2449 sec. 5",
    "uidl": "RFC 1939 sec. 7",
    "quit": "RFC 1939 sec. 6",
    "pipelining": "RFC 2449 sec. 6.6",
    "retry": "RFC 2449 sec. 8.1.1, RFC 3206 sec. 4",
    "login-delay": "RFC 2449 sec. 6.5, sec. 8.1.2",
    "tls": "RFC 2595 sec. 4, RFC 8314 sec. 3",
    "certificate": "RFC 2595 sec. 2.4, RFC 6125 sec. 6",
    "fault": "docs/report-card.md",
}
TITLES: Final = {
    "capa": "used CAPA",
    "uidl": "used UIDL to avoid re-downloading",
    "quit": "ended with QUIT",
    "pipelining": "pipelined when offered",
    "retry": "backed off after [IN-USE] / [SYS/TEMP]",
    "login-delay": "honoured LOGIN-DELAY",
    "tls": "used TLS",
    "certificate": "refused a certificate that should fail verification",
}


def host_of(peer: str) -> str:
    """The client address of a peer as the service or a fault record names it:
    "127.0.0.1:40000" -> "127.0.0.1", "[::1]:40000" -> "::1", "::1" or "127.0.0.1" as is."""
    if peer.startswith("["):
        return peer[1:].partition("]")[0]
    if peer.count(":") == 1:
        host, _, port = peer.partition(":")
        if port.isdigit():
            return host
    return peer


def _since(seconds: float) -> str:
    return f"{seconds:.1f} s"


# ----- the graded output ----------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One graded item. `name`: "capa", "uidl", ... or "fault:ACTION"; `verdict`: pass, warn,
    fail or not-seen; `reason`: one line; `rfc`: the section it is graded against."""

    name: str
    title: str
    verdict: str
    reason: str
    rfc: str


@dataclass(frozen=True)
class BoxCounters:
    """What one client did in one box (`box`: the name it logged in to)."""

    box: str
    sessions: int = 0
    retrieved: int = 0
    deleted: int = 0
    quit: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class ClientCard:
    """One client address's report card. Times are seconds since the epoch; `history` the
    latest session summaries, oldest first ("session 7 box alice tls: CAPA STLS ... QUIT")."""

    address: str
    first_seen: float
    last_seen: float
    counters: dict[str, int]
    boxes: list[BoxCounters]
    items: list[Item]
    history: list[str] = field(default_factory=list)

    @property
    def worst(self) -> str:
        """The worst verdict among the items ("not-seen" when none was graded)."""
        worst = "not-seen"
        for item in self.items:
            if _RANK[item.verdict] > _RANK[worst]:
                worst = item.verdict
        return worst

    def to_json(self) -> dict[str, Any]:
        """The card as plain JSON (the shape of GET /api/v1/clients and the report file)."""
        return {
            "address": self.address,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "counters": dict(self.counters),
            "boxes": [vars(b).copy() for b in self.boxes],
            "items": [vars(i).copy() for i in self.items],
            "history": list(self.history),
        }

    @classmethod
    def from_json(cls, obj: Any) -> ClientCard:
        """Parse one card; ValueError naming what is missing or wrong."""
        if not isinstance(obj, dict):
            raise ValueError("a client card must be a JSON object")
        try:
            address = obj["address"]
            counters = obj["counters"]
            boxes = [BoxCounters(**b) for b in obj["boxes"]]
            items = [Item(**i) for i in obj["items"]]
            first, last = float(obj["first_seen"]), float(obj["last_seen"])
        except KeyError as exc:
            raise ValueError(f"client card without {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"client card with a malformed field ({exc})") from None
        if not isinstance(address, str) or not isinstance(counters, dict):
            raise ValueError("client card address must be text and counters an object")
        if not all(isinstance(k, str) and isinstance(v, int) for k, v in counters.items()):
            raise ValueError(f"client card {address}: counters must be integers")
        for item in items:
            if item.verdict not in VERDICTS:
                raise ValueError(f"client card {address}: unknown verdict {item.verdict!r}")
        history = obj.get("history", [])
        if not isinstance(history, list) or not all(isinstance(h, str) for h in history):
            raise ValueError(f"client card {address}: history must be a list of text")
        return cls(address, first, last, counters, boxes, items, history)


def cards_to_json(cards: Iterable[ClientCard], written: float) -> dict[str, Any]:
    """The report file's JSON: {"format": "dpfw-clients", "version": 1, "written": epoch,
    "clients": [card, ...]}."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "written": written,
        "clients": [c.to_json() for c in cards],
    }


def cards_from_json(obj: Any) -> tuple[float, list[ClientCard]]:
    """(written, cards) from the report file's JSON; ValueError with one line if it is not."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} report file")
    if obj.get("version") != FORMAT_VERSION:
        raise ValueError(f"{FORMAT} version {obj.get('version')!r} is not {FORMAT_VERSION}")
    clients = obj.get("clients")
    if not isinstance(clients, list):
        raise ValueError("report file without a list of clients")
    written = obj.get("written", 0.0)
    if not isinstance(written, int | float):
        raise ValueError("report file 'written' must be a number")
    return float(written), [ClientCard.from_json(c) for c in clients]


# ----- renderings -----------------------------------------------------------------------------

_MARK: Final = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "not-seen": "not seen"}


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(cards: Iterable[ClientCard], title: str = "POP3 client report card") -> str:
    """The cards as a Markdown document: one section per client, one table row per item."""
    cards = list(cards)
    lines = [f"# {title}", ""]
    if not cards:
        lines += ["No client has connected yet.", ""]
    for card in cards:
        c = card.counters
        lines += [
            f"## {card.address}: {_MARK[card.worst]}",
            "",
            f"{c.get('sessions', 0)} sessions, {c.get('commands', 0)} commands, "
            f"{c.get('retrieved', 0)} retrieved, {c.get('deleted', 0)} deleted; "
            f"boxes: {', '.join(b.box for b in card.boxes) or 'none'}",
            "",
            "| item | verdict | reason | reference |",
            "|---|---|---|---|",
        ]
        for item in card.items:
            lines.append(
                f"| {_md_cell(item.title)} | {_MARK[item.verdict]} | {_md_cell(item.reason)} "
                f"| {_md_cell(item.rfc)} |"
            )
        lines.append("")
    return "\n".join(lines)


def render_junit(cards: Iterable[ClientCard], name: str = "dpfw client report card") -> str:
    """The cards as JUnit XML: one <testsuite> per client, one <testcase> per item; a fail is
    a <failure>, not-seen a <skipped>, a warn passes with the reason in <system-out>."""
    cards = list(cards)
    root = ET.Element("testsuites", name=name)
    total = failures = skipped = 0
    for card in cards:
        suite = ET.SubElement(root, "testsuite", name=f"client {card.address}")
        classname = "dpfw.client." + card.address.replace(".", "_").replace(":", "_")
        s_fail = s_skip = 0
        for item in card.items:
            case = ET.SubElement(suite, "testcase", name=item.title, classname=classname)
            text = f"{item.reason} ({item.rfc})"
            if item.verdict == "fail":
                s_fail += 1
                failure = ET.SubElement(case, "failure", message=item.reason, type="fail")
                failure.text = text
            elif item.verdict == "not-seen":
                s_skip += 1
                ET.SubElement(case, "skipped", message=item.reason)
            else:
                out = ET.SubElement(case, "system-out")
                out.text = f"{item.verdict}: {text}"
        suite.set("tests", str(len(card.items)))
        suite.set("failures", str(s_fail))
        suite.set("errors", "0")
        suite.set("skipped", str(s_skip))
        total += len(card.items)
        failures += s_fail
        skipped += s_skip
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", "0")
    root.set("skipped", str(skipped))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# ----- the book -------------------------------------------------------------------------------


class FaultNote(Protocol):
    """What `ClientBook.on_fault` reads of a fault plan's record (the faults branch's
    `FaultEvent`: `plan.subscribe(book.on_fault)`). `time`: epoch seconds."""

    @property
    def action(self) -> str: ...
    @property
    def time(self) -> float: ...
    @property
    def session(self) -> int | None: ...
    @property
    def peer(self) -> str | None: ...
    @property
    def box(self) -> str | None: ...
    @property
    def command(self) -> str | None: ...


class _Fault:
    """One fault action met by one client: counts of outcomes, the reaction awaited."""

    __slots__ = (
        "awaiting",
        "command",
        "kind",
        "met",
        "outcomes",
        "reason",
        "session",
        "skip",
        "when",
    )

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.command: str | None = None
        self.skip = False
        self.met = 0
        self.outcomes = {"pass": 0, "warn": 0, "fail": 0}
        self.reason = ""
        self.awaiting = False
        self.session: int | None = None
        self.when = 0.0

    def settle(self, verdict: str, reason: str) -> None:
        self.outcomes[verdict] += 1
        self.reason = reason
        self.awaiting = False


def fault_kind(action: str, code: str | None = None, cert: str | None = None) -> str:
    """How a reaction to fault `action` is graded (docs/report-card.md):
    "cert" (must not go on), "backoff" (must wait before trying again), "refetch" (must
    reconnect and RETR again), "reconnect" (must come back), "uidl" (must notice a changed
    maildrop), "finish" (must end the session cleanly). `code`: reply-error's response code;
    `cert`: tls-fail's bad certificate ("expired", "wrong-name": a certificate fault)."""
    a = action.lower()
    if "cert" in a or (a == "tls-fail" and cert is not None and cert != "abort"):
        return "cert"
    if a in ("reply-error", "memory-full") or "in-use" in a or "temp" in a or "delay" in a:
        if a == "delay":
            return "finish"  # a slow reply: the client should wait, not give up
        if a == "reply-error" and code is not None and code.upper() in ("AUTH", "SYS/PERM"):
            return "finish"
        return "backoff"
    if a in ("retr-break", "stall-before-end"):
        return "refetch"
    if a.startswith("drop") or a in ("tls-fail", "power-cut", "reset"):
        return "reconnect"
    if a == "vanish":
        return "uidl"
    return "finish"


class _Ended:
    """A closed session in its client's history; `str` gives its line, e.g.
    `session 17 box scan01: USER PASS STAT UIDL RETR DELE QUIT [QUIT]`."""

    __slots__ = ("box", "end", "id", "keywords", "more", "repeats", "tls")

    def __init__(self, s: _Session, end: str) -> None:
        # the closed session's own lists: nothing changes them any more
        self.id, self.box, self.tls, self.end = s.id, s.box, s.tls, end
        self.keywords, self.repeats, self.more = s.keywords, s.repeats, s.more

    def __str__(self) -> str:
        summary = " ".join(
            w if n == 1 else f"{w} x{n}" for w, n in zip(self.keywords, self.repeats, strict=True)
        ) + (" ..." if self.more else "")
        where = f" box {self.box}" if self.box is not None else ""
        tls = " tls" if self.tls else ""
        return f"session {self.id}{where}{tls}: {summary or '-'} [{self.end}]"


class _Client:
    __slots__ = (
        "address",
        "awaiting",
        "boxes",
        "counters",
        "faults",
        "first_seen",
        "history",
        "last_seen",
        "temp",
    )

    def __init__(self, address: str, now: float) -> None:
        self.address = address
        self.first_seen = now
        self.last_seen = now
        self.counters = dict.fromkeys(COUNTERS, 0)
        # box -> [sessions, retrieved, deleted, quit, dropped]
        self.boxes: dict[str, list[int]] = {}
        self.history: deque[_Ended] = deque(maxlen=HISTORY)
        self.faults: dict[str, _Fault] = {}
        # (when, (keyword, message numbers)) of the last [IN-USE] / [SYS/TEMP] not yet retried
        self.temp: tuple[float, tuple[str, tuple[int, ...]]] | None = None
        self.awaiting = 0  # faults whose reaction is still awaited (0: nothing to check)

    def box(self, name: str) -> list[int]:
        row = self.boxes.get(name)
        if row is None:
            if len(self.boxes) >= MAX_BOXES:
                name = OTHER_BOXES
                row = self.boxes.get(name)
            if row is None:
                row = self.boxes[name] = [0, 0, 0, 0, 0]
        return row


class _Session:
    __slots__ = (
        "box",
        "capa",
        "cert_bad",
        "cert_fault",
        "client",
        "commands",
        "deleted",
        "id",
        "keywords",
        "login_delay",
        "more",
        "pending",
        "pipelined",
        "pipelining",
        "quit",
        "repeats",
        "retrieved",
        "stls",
        "tls",
        "tls_failed",
        "uidl",
    )

    def __init__(
        self, ident: int, client: _Client, tls: bool, stls: bool, pipelining: bool, delay: int
    ) -> None:
        self.id = ident
        self.client = client
        self.tls = tls
        self.tls_failed = False
        self.stls = stls
        self.pipelining = pipelining
        self.login_delay = delay
        self.box: str | None = None
        self.capa = False
        self.uidl = False
        self.quit = False
        self.cert_fault = False  # a certificate fault waits for this session's handshake
        self.cert_bad = False  # ... which succeeded: any command now is going on after it
        self.commands = 0
        self.pipelined = 0
        self.retrieved = 0
        self.deleted = 0
        self.pending = 0  # DELE marks not yet committed (RSET clears them)
        self.keywords: list[str] = []
        self.repeats: list[int] = []  # how often each keyword came in a row
        self.more = False  # keywords beyond SUMMARY_KEYWORDS were left out

    def note(self, word: str) -> None:
        """Add a keyword to the session's summary (a repeat counts the last one up)."""
        if self.keywords and self.keywords[-1] == word:
            self.repeats[-1] += 1
        elif len(self.keywords) < SUMMARY_KEYWORDS:
            self.keywords.append(word)
            self.repeats.append(1)
        else:
            self.more = True


class ClientBook:
    """Every client's record and grades for one device (the device keeps one across reboots).

    `clock`: seconds since the epoch. `version` grows with every change (the writer of the
    report file saves only when it moved)."""

    def __init__(
        self, max_clients: int = MAX_CLIENTS, clock: Callable[[], float] = time.time
    ) -> None:
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._sessions: dict[int, _Session] = {}
        self._max = max_clients
        self._clock = clock
        self.version = 0

    # -- observations ----------------------------------------------------------------------

    def _client(self, address: str, now: float) -> _Client:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = _Client(address, now)
            while len(self._clients) > self._max:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(address)
        client.last_seen = now
        return client

    def _attempt(
        self, client: _Client, now: float, what: tuple[str, tuple[int, ...]] | None
    ) -> None:
        """A new try after [IN-USE] / [SYS/TEMP]: a new session (`what` None), the same
        command on the same message again, or another login after a refused one (USER, PASS,
        APOP and AUTH, whatever the mechanism). Counted as hammered or backed off."""
        if client.temp is None:
            return
        when, refused = client.temp
        same_login = what is not None and what[0] in _LOGIN_ALL and refused[0] in _LOGIN_ALL
        if what is not None and what != refused and not same_login:
            return
        client.temp = None
        waited = now - when
        key = "retries_hammered" if waited < HAMMER_S else "retries_backed_off"
        client.counters[key] += 1

    def opened(
        self,
        session: int,
        peer: str,
        *,
        tls: bool = False,
        stls: bool = False,
        pipelining: bool = True,
        login_delay: int = 0,
    ) -> None:
        """Session `session` from `peer` (an address, with or without port) was accepted.
        `tls`: it starts with TLS (POP3S; counted once `tls()` reports the handshake);
        `stls`: STLS is offered; `pipelining`: CAPA lists PIPELINING; `login_delay`: the
        LOGIN-DELAY seconds CAPA advertises (0: none)."""
        now = self._clock()
        client = self._client(host_of(peer), now)
        client.counters["sessions"] += 1
        self._attempt(client, now, None)
        for fault in client.faults.values():
            if fault.awaiting and fault.session != session:
                waited = _since(now - fault.when)
                if fault.kind == "reconnect":
                    fault.settle("pass", f"came back after {waited}")
                elif fault.kind == "backoff":
                    if now - fault.when < HAMMER_S:
                        fault.settle("fail", f"hammered: came back after {waited}")
                    else:
                        fault.settle("pass", f"backed off {waited}")
        s = _Session(session, client, False, stls, pipelining, login_delay)
        self._sessions[session] = s
        cert = client.faults.get("_cert")
        if cert is not None and cert.awaiting and cert.session is None:
            cert.session = session  # a certificate fault noted for the client's next session
            s.cert_fault = True
        self.version += 1

    def tls(self, session: int) -> None:
        """The session's TLS handshake (STLS or POP3S) succeeded."""
        s = self._sessions.get(session)
        if s is None:
            return
        s.tls = True
        if s.cert_fault:
            s.cert_fault, s.cert_bad = False, True
        s.client.counters["tls_sessions"] += 1
        s.note("<tls>")
        self.version += 1

    def tls_failed(self, session: int) -> None:
        """The session's TLS handshake failed (the client refused our certificate, or spoke
        no TLS)."""
        s = self._sessions.get(session)
        if s is None:
            return
        s.client.counters["tls_failures"] += 1
        s.note("<tls failed>")
        s.tls_failed = True  # the connection cannot go on: its end is no drop
        fault = s.client.faults.get("_cert")
        if (s.cert_fault or s.cert_bad) and fault is not None and fault.awaiting:
            fault.settle("pass", "refused the certificate: the handshake failed")
            s.cert_fault = s.cert_bad = False
        self.version += 1

    def refused(self, peer: str, code: str | None) -> None:
        """A connection from `peer` was refused at admission with -ERR [code]."""
        now = self._clock()
        client = self._client(host_of(peer), now)
        client.counters["refused"] += 1
        self._attempt(client, now, None)
        if code in _TEMP_CODES:
            client.counters["temp_replies"] += 1
            client.temp = (now, ("", ()))
        self.version += 1

    def exchange(
        self,
        session: int,
        event: Command | BadCommand | SaslResponse,
        first: Reply | MultilineStart | SaslContinuation,
        pipelined: bool,
        box: str | None,
    ) -> None:
        """One client event and the first line of the device's answer. `pipelined`: the
        command arrived before the reply to the one before it was written; `box`: the box the
        session is logged in to after this answer (None before login)."""
        s = self._sessions.get(session)
        if s is None:
            return
        self.version += 1
        client = s.client
        s.commands += 1  # folded into the client's counters at close (and live in cards)
        if pipelined:
            s.pipelined += 1
        kind, reply = type(event), type(first)
        ok = reply is MultilineStart or (reply is Reply and first.ok)  # type: ignore[union-attr]
        if kind is Command:
            keyword = event.keyword  # type: ignore[union-attr]
            word = keyword
            if keyword == "AUTH" and event.args:  # type: ignore[union-attr]
                word = "AUTH " + event.args[0].upper()  # type: ignore[union-attr]
        elif kind is SaslResponse:
            keyword, word = "AUTH", "<sasl>"
        else:
            keyword = event.keyword  # type: ignore[union-attr]
            word = keyword or "?"
        if not ok and reply is Reply:
            word += "!"  # -ERR: "RETR!"
        # The summary: a repeat counts the last keyword up (inlined Session.note: hot path).
        words = s.keywords
        if words and words[-1] == word:
            s.repeats[-1] += 1
        else:
            s.note(word)
        if s.cert_bad or client.temp is not None or client.awaiting or not ok:
            self._unusual(s, event, first, ok, keyword)
        if kind is not Command:
            if keyword == "AUTH" and box is not None and s.box is None:
                self._logged_in(s, box)
            return
        if keyword in _NOTED:
            self._command(s, event, ok, keyword)  # type: ignore[arg-type]
        if box is not None and s.box is None:
            self._logged_in(s, box)

    @staticmethod
    def _react(client: _Client, s: _Session, keyword: str, now: float) -> None:
        """A command from a client that has a fault's reaction pending."""
        for fault in client.faults.values():
            if not fault.awaiting or fault.kind != "backoff" or fault.session != s.id:
                continue
            if fault.skip and keyword == fault.command:
                fault.skip = False  # the command the fault answered
                continue
            waited = now - fault.when
            if keyword == "QUIT":
                fault.settle("pass", "gave up with QUIT")
            elif keyword == fault.command and waited < HAMMER_S:
                fault.settle("fail", f"hammered: sent {keyword} again after {_since(waited)}")
            elif keyword == fault.command:
                fault.settle("pass", f"sent {keyword} again after {_since(waited)}")
            else:
                fault.settle("pass", f"went on with {keyword}")
        client.awaiting = sum(f.awaiting for f in client.faults.values())

    def _logged_in(self, s: _Session, box: str) -> None:
        s.box = box
        s.client.counters["logins"] += 1
        s.client.box(box)[0] += 1

    def _command(self, s: _Session, event: Command, ok: bool, keyword: str) -> None:
        """The commands the grades count (_NOTED)."""
        client = s.client
        c = client.counters
        if keyword in _LOGIN and s.box is None:
            self._login_attempt(s, c, event)
        if keyword == "CAPA":
            if not s.capa:
                c["capa_sessions"] += 1
                s.capa = True
                if s.pipelining:
                    c["pipelining_offered"] += 1
                if s.login_delay > 0:
                    c["login_delay_offered"] += 1
        elif keyword == "UIDL":
            s.uidl = True
        elif ok:
            if keyword == "RETR":
                c["retrieved"] += 1
                s.retrieved += 1
                if s.retrieved == 1:
                    c["retr_sessions"] += 1
                if client.awaiting:
                    self._settle(client, s, "refetch", "pass", "re-fetched the message")
            elif keyword == "DELE":
                c["deleted"] += 1
                s.deleted += 1
                s.pending += 1
            elif keyword == "TOP":
                c["top"] += 1
            elif keyword == "RSET":
                s.pending = 0
            elif keyword == "QUIT":
                s.quit = True

    def _unusual(
        self,
        s: _Session,
        event: Command | BadCommand | SaslResponse,
        first: Reply | MultilineStart | SaslContinuation,
        ok: bool,
        keyword: str,
    ) -> None:
        """An -ERR, or a client with a certificate fault, a refusal or a fault pending."""
        client = s.client
        c = client.counters
        now = self._clock()
        numbers = event.numbers if type(event) is Command else ()
        if s.cert_bad:  # went on after a certificate that should have failed
            s.cert_bad = False
            fault = client.faults.get("_cert")
            if fault is not None and fault.awaiting:
                fault.settle("fail", f"went on after the certificate: sent {keyword}")
        if client.temp is not None:
            self._attempt(client, now, (keyword, numbers))
        code = None if isinstance(first, SaslContinuation) else first.code
        if not ok and code is not None:
            if code in _TEMP_CODES:
                c["temp_replies"] += 1
                client.temp = (now, (keyword, numbers))
            elif code == "LOGIN-DELAY":
                c["login_delay_refusals"] += 1
        if (
            keyword in _LOGIN
            and not ok
            and type(first) is not SaslContinuation
            and type(event) is not BadCommand
        ):
            c["login_failures"] += 1
        if client.awaiting:
            self._react(client, s, keyword, now)

    @staticmethod
    def _login_attempt(s: _Session, c: dict[str, int], event: Command) -> None:
        if s.tls:
            c["tls_logins"] += 1
        elif not s.stls:
            c["plain_logins_no_tls"] += 1
        elif event.keyword == "PASS" or (
            event.keyword == "AUTH" and event.args and event.args[0].upper() in _REVEALING
        ):
            c["plain_logins_tls_offered"] += 1
        else:
            c["cr_logins_tls_offered"] += 1

    @staticmethod
    def _settle(client: _Client, s: _Session, kind: str, verdict: str, reason: str) -> None:
        for fault in client.faults.values():
            if fault.awaiting and fault.kind == kind and fault.session != s.id:
                fault.settle(verdict, reason)

    def closed(self, session: int, how: str) -> None:
        """Session `session` ended. `how`: "client" (EOF or reset from the client, or the
        closing reply to its QUIT), "idle" (the client went silent past the timeout) or
        "device" (evicted, killed, shut down, or closed by a device limit)."""
        s = self._sessions.pop(session, None)
        if s is None:
            return
        self.version += 1
        client = s.client
        client.last_seen = self._clock()
        self._fold(s, client.counters)
        c = client.counters
        row = client.box(s.box) if s.box is not None else None
        if row is not None:
            row[1] += s.retrieved
            row[2] += s.deleted
        if s.retrieved > s.deleted:
            c["kept_sessions"] += 1
            if s.uidl:
                c["kept_uidl_sessions"] += 1
        dropped = False
        if s.quit:
            c["quit"] += 1
            if row is not None:
                row[3] += 1
        elif how == "device" or s.tls_failed:
            c["ended_by_device"] += 1
        elif s.commands or s.tls:
            dropped = True
            c["dropped"] += 1
            if s.pending:
                c["dropped_pending"] += 1
            if row is not None:
                row[4] += 1
        for fault in client.faults.values():
            if not fault.awaiting:
                continue
            if fault.kind == "cert" and s.cert_bad:
                fault.settle("pass", "closed the connection after the handshake")
            elif fault.kind == "cert" and s.cert_fault:
                fault.session = None  # no handshake in this session: wait for the next
            elif fault.kind == "finish" and fault.session in (s.id, None):
                if s.quit:
                    fault.settle("pass", "finished the session with QUIT")
                else:
                    fault.settle("warn", "dropped the session without QUIT")
            elif fault.kind == "refetch" and fault.session != s.id and s.box is not None:
                fault.settle("warn", "came back but did not RETR again")
            elif fault.kind == "uidl" and fault.session != s.id and s.box is not None:
                verdict = "pass" if s.uidl else "warn"
                fault.settle(verdict, "asked UIDL" if s.uidl else "did not ask UIDL")
        if s.quit:
            end = "QUIT"
        elif s.tls_failed:
            end = "TLS handshake failed"
        else:
            end = "dropped" if dropped else f"ended by {how}"
        client.history.append(_Ended(s, end))  # its line is written when a card is read

    def fault_met(
        self,
        peer: str,
        box: str | None,
        action: str,
        when: float,
        *,
        session: int | None = None,
        command: str | None = None,
        code: str | None = None,
        cert: str | None = None,
    ) -> None:
        """The client at `peer` met fault `action` (a fault plan's record: box, time in epoch
        seconds, the session and command it hit, for reply-error the response code, for
        tls-fail the bad certificate, graded as a certificate fault). The
        client's next moves grade its reaction (see `fault_kind`). Call it when the fault
        fires, before the answer to `command` reaches `exchange`: that exchange is the fault's
        own and is not taken for a reaction."""
        client = self._client(host_of(peer), when)
        client.counters["faults_met"] += 1
        if cert is not None and cert != "abort":
            key = f"{action} [cert={cert}]"
        else:
            key = action if code is None else f"{action} [{code}]"
        kind = fault_kind(action, code, cert)
        fault = client.faults.get(key)
        if fault is None:
            if len(client.faults) >= MAX_FAULTS:
                return
            fault = client.faults[key] = _Fault(kind)
        fault.met += 1
        fault.awaiting = True
        fault.session = session
        fault.when = when
        fault.command = command.upper() if command else None
        fault.skip = fault.command is not None
        client.awaiting += 1
        if kind == "cert":
            client.faults["_cert"] = fault
            if session is not None and (s := self._sessions.get(session)) is not None:
                if s.tls:
                    s.cert_bad = True
                else:
                    s.cert_fault = True
        if box is not None:
            client.box(box)
        self.version += 1

    def on_fault(self, note: FaultNote) -> None:
        """A fault plan's record (see `FaultNote`) as `fault_met`; one without a peer (a
        device fault such as flash-full) is no client's. A `code` attribute, when the record
        has one, is reply-error's response code; a `cert` attribute tls-fail's certificate."""
        if note.peer is None:
            return
        code = getattr(note, "code", None)
        cert = getattr(note, "cert", None)
        self.fault_met(
            note.peer,
            note.box,
            note.action,
            note.time,
            session=note.session,
            command=note.command,
            code=code if isinstance(code, str) else None,
            cert=cert if isinstance(cert, str) else None,
        )

    # -- the cards -------------------------------------------------------------------------

    def addresses(self) -> list[str]:
        return list(self._clients)

    def cards(self) -> list[ClientCard]:
        """Every client's card, the most recently seen last."""
        return [self._card(c) for c in self._clients.values()]

    def card(self, address: str) -> ClientCard | None:
        client = self._clients.get(host_of(address))
        return None if client is None else self._card(client)

    @staticmethod
    def _fold(s: _Session, counters: dict[str, int]) -> None:
        """Add what session `s` counts itself (commands, pipelined) to `counters`."""
        counters["commands"] += s.commands
        counters["pipelined"] += s.pipelined
        if s.commands:
            counters["command_sessions"] += 1

    def _card(self, client: _Client) -> ClientCard:
        boxes = [BoxCounters(name, *row) for name, row in client.boxes.items()]
        counters = dict(client.counters)
        for s in self._sessions.values():  # the open sessions' own counts, live
            if s.client is client:
                self._fold(s, counters)
        return ClientCard(
            client.address,
            client.first_seen,
            client.last_seen,
            counters,
            boxes,
            grade(counters, _fault_rows(client)),
            [str(ended) for ended in client.history],
        )


def _fault_rows(client: _Client) -> list[tuple[str, dict[str, int], str, bool]]:
    return [
        (name, {"met": f.met, **f.outcomes}, f.reason, f.awaiting)
        for name, f in client.faults.items()
        if not name.startswith("_")
    ]


def _item(name: str, verdict: str, reason: str) -> Item:
    return Item(name, TITLES[name], verdict, reason, RFC[name])


def grade(
    c: dict[str, int], faults: Iterable[tuple[str, dict[str, int], str, bool]] = ()
) -> list[Item]:
    """The graded items from a client's counters and its fault rows (name, counts of met /
    pass / warn / fail, last reason, still awaiting a reaction). Pure: the same counters give
    the same items. The rules are docs/report-card.md's table."""
    return [
        _grade_capa(c),
        _grade_uidl(c),
        _grade_quit(c),
        _grade_pipelining(c),
        _grade_retry(c),
        _grade_login_delay(c),
        _grade_tls(c),
        *_grade_faults(faults),
    ]


def _all(n: int, noun: str) -> str:
    """ "the 1 session" reads badly: "all 3 sessions", "1 session"."""
    return f"all {plural(n, noun)}" if n > 1 else plural(n, noun)


def _grade_capa(c: dict[str, int]) -> Item:
    n, capa = c.get("command_sessions", 0), c.get("capa_sessions", 0)
    if n == 0:
        return _item("capa", "not-seen", "no session sent a command")
    if capa == n:
        return _item("capa", "pass", f"asked CAPA in {_all(n, 'session')}")
    if capa:
        return _item("capa", "warn", f"asked CAPA in {capa} of {plural(n, 'session')}")
    return _item("capa", "warn", f"never asked CAPA ({plural(n, 'session')}): guesses extensions")


def _grade_uidl(c: dict[str, int]) -> Item:
    kept, with_uidl = c.get("kept_sessions", 0), c.get("kept_uidl_sessions", 0)
    if kept == 0:
        if c.get("retr_sessions", 0):
            return _item("uidl", "pass", "deletes what it retrieves: nothing to re-download")
        return _item("uidl", "not-seen", "retrieved no message")
    sessions = plural(kept, "session")
    if with_uidl == kept:
        return _item("uidl", "pass", f"left mail on the server with UIDL ({sessions})")
    if with_uidl:
        why = f"left mail on the server without UIDL in {kept - with_uidl} of {sessions}"
        return _item("uidl", "warn", why)
    why = f"left mail on the server without UIDL ({sessions}): it cannot tell new mail from old"
    return _item("uidl", "fail", why)


def _grade_quit(c: dict[str, int]) -> Item:
    quit_, dropped, pending = c.get("quit", 0), c.get("dropped", 0), c.get("dropped_pending", 0)
    if quit_ + dropped == 0:
        return _item("quit", "not-seen", "no session ended by the client yet")
    if pending:
        why = f"dropped {plural(pending, 'session')} with deletions pending: not committed"
        return _item("quit", "fail", why)
    if dropped:
        why = f"dropped {dropped} of {plural(quit_ + dropped, 'session')} without QUIT"
        return _item("quit", "warn", why)
    return _item("quit", "pass", f"ended {_all(quit_, 'session')} with QUIT")


def _grade_pipelining(c: dict[str, int]) -> Item:
    offered, piped = c.get("pipelining_offered", 0), c.get("pipelined", 0)
    if piped and not offered:
        why = f"pipelined {plural(piped, 'command')} without seeing PIPELINING in CAPA"
        return _item("pipelining", "warn", why)
    if piped:
        return _item("pipelining", "pass", f"pipelined {plural(piped, 'command')}")
    if offered:
        why = f"saw PIPELINING in {plural(offered, 'session')}; sent one command at a time"
        return _item("pipelining", "warn", why)
    return _item("pipelining", "not-seen", "never saw PIPELINING offered (no CAPA)")


def _grade_retry(c: dict[str, int]) -> Item:
    temp = c.get("temp_replies", 0)
    hammered, backed = c.get("retries_hammered", 0), c.get("retries_backed_off", 0)
    if temp == 0:
        return _item("retry", "not-seen", "met no [IN-USE] or [SYS/TEMP]")
    met = f"{temp} met"
    if hammered:
        why = f"retried {plural(hammered, 'time')} within {HAMMER_S:.0f} s ({met})"
        return _item("retry", "fail", why)
    if backed:
        retries = plural(backed, "retry", "retries")
        why = f"waited {HAMMER_S:.0f} s or more before each of {retries} ({met})"
        return _item("retry", "pass", why)
    return _item("retry", "pass", f"did not retry at once ({met})")


def _grade_login_delay(c: dict[str, int]) -> Item:
    offered, refused = c.get("login_delay_offered", 0), c.get("login_delay_refusals", 0)
    if refused > 1:
        return _item("login-delay", "fail", f"logged in too soon {plural(refused, 'time')}")
    if refused:
        why = "though CAPA advertised it" if offered else "without asking CAPA for it"
        return _item("login-delay", "fail" if offered else "warn", f"logged in too soon, {why}")
    if offered:
        return _item("login-delay", "pass", "never logged in before the delay was over")
    return _item("login-delay", "not-seen", "no LOGIN-DELAY advertised to it or met")


def _grade_tls(c: dict[str, int]) -> Item:
    tls, plain = c.get("tls_logins", 0), c.get("plain_logins_tls_offered", 0)
    no_tls, cr = c.get("plain_logins_no_tls", 0), c.get("cr_logins_tls_offered", 0)
    if plain:
        why = f"sent the password in clear text {plural(plain, 'time')} though STLS was offered"
        return _item("tls", "fail", why)
    if cr:
        why = (
            f"logged in without TLS {plural(cr, 'time')} though STLS was offered "
            "(challenge-response: the password stays secret, the mail does not)"
        )
        return _item("tls", "warn", why)
    if tls and no_tls:
        why = f"{plural(no_tls, 'login')} in clear text (no TLS offered), {tls} in TLS"
        return _item("tls", "warn", why)
    if tls:
        return _item("tls", "pass", f"{_all(tls, 'login attempt')} inside TLS")
    if no_tls:
        why = f"{plural(no_tls, 'login')} in clear text; the device offered no TLS"
        return _item("tls", "warn", why)
    return _item("tls", "not-seen", "no login attempt")


def _row_kind(name: str) -> str:
    """`fault_kind` of a fault row's name: "ACTION", "ACTION [CODE]" or "ACTION [cert=C]"."""
    action, _, rest = name.partition(" ")
    inner = rest.strip("[]") or None
    if inner is not None and inner.startswith("cert="):
        return fault_kind(action, cert=inner.removeprefix("cert="))
    return fault_kind(action, inner)


def _grade_faults(faults: Iterable[tuple[str, dict[str, int], str, bool]]) -> list[Item]:
    """The certificate item (from a bad-certificate fault, if any) and one per fault met."""
    cert: list[Item] = []
    rows: list[Item] = []
    for name, counts, reason, awaiting in faults:
        verdict = "not-seen"
        for v in ("pass", "warn", "fail"):  # the worst outcome seen
            if counts.get(v, 0):
                verdict = v
        if verdict == "not-seen":
            reason = "no reaction seen yet"
        elif awaiting:
            reason += "; a reaction is still awaited"
        line = f"{reason} (met {plural(counts.get('met', 0), 'time')})"
        if _row_kind(name) == "cert":
            cert.append(_item("certificate", verdict, line))
        rows.append(Item(f"fault:{name}", f"reacted to fault {name}", verdict, line, RFC["fault"]))
    if not cert:
        cert.append(_item("certificate", "not-seen", "no bad certificate was presented to it"))
    return cert + rows
