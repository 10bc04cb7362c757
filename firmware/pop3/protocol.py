"""The device's POP3 application, sans I/O: what the protocol library leaves to the device.

The protocol library (`firmware.pop3.connection.ServerConnection`) frames and parses client
lines, runs the state table, pipelining, dot-stuffing and the terminator. One `Pop3Protocol`
per connection answers the library's client events (`Command`, `BadCommand`, `SaslResponse`)
with exactly one `Answer`: the library event to send first, maybe a body, and whether to wait
first (a failed login), start TLS or close afterwards. What is the device's lives here:
authentication, the maildrop, box locks, the RAM budget, limits and reply texts. No sockets,
timers or files; the store is reached only through the async `Mailstore` (on the device, every
store effect runs on the store worker), and message bodies come back as a `Body` the adapter
pulls chunk by chunk, so a message of any size passes through in bounded memory.

Each command is a small `Handler` in firmware/pop3/handlers/, which also declares the
command's CAPA lines: CAPA is built from the installed handlers.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from firmware.config.budget import RamBudget
from firmware.config.profile import Profile
from firmware.errors import CorruptRecordError, DeviceError, MemoryFullError
from firmware.pop3 import events
from firmware.pop3.auth import LEGACY_METHODS, make_apop_timestamp
from firmware.pop3.events import (
    BadCommand,
    Command,
    MultilineStart,
    Problem,
    SaslContinuation,
    SaslResponse,
)
from firmware.pop3.locks import BoxLocks
from firmware.pop3.mailbox import Mailstore
from firmware.pop3.syntax import MAX_COMMAND_LINE, MAX_REPLY_LINE
from firmware.security import authlog
from firmware.security.abuse import LoginGuard
from firmware.security.sasl import (
    BAD_CREDENTIALS,
    MALFORMED,
    MAX_RESPONSE_LINE,
    NO_LEGACY_SECRET,
    OVERSIZED,
    Challenge,
    SaslEncodingError,
    SaslMechanism,
    Step,
    Success,
    decode_response,
    encode,
    is_cancel,
    offered_mechanisms,
)
from firmware.text import plural

log = logging.getLogger(__name__)

MAX_BAD_COMMANDS: Final = 20
"""Consecutive bad commands after which the connection is closed."""

STREAM_CHUNK: Final = 65536
"""Bytes read from the store per chunk of RETR/TOP, and reserved from the RAM budget."""

MAX_DISCARD: Final = 65536
"""Octets of an over-long command line, past the line limit, that the device reads and drops
while waiting for its line end; more and the connection is closed (`ServerConnection`'s
`max_discard`)."""

_LISTING_BATCH: Final = 512
SASL_LINE_LIMIT: Final = MAX_RESPONSE_LINE + 2
"""Octets per client line (CRLF included) while a SASL exchange waits for a response."""
BOX_LOCKED: Final = "box-locked"
ENDLESS_LINE: Final = "line too long and still no line end; closing"
"""The device's last word to a client whose over-long line did not end within MAX_DISCARD."""


async def _verified() -> bool:
    return True  # a SASL mechanism that succeeded has checked the credentials


class State(Enum):
    """A device session's state (RFC 1939 §3); the console shows `value`."""

    __hash__ = object.__hash__  # identity, in C: looked up per command (see states.State)

    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"
    CLOSED = "closed"


_AUTHORIZATION: Final = State.AUTHORIZATION  # module constants: faster than Enum attributes
_TRANSACTION: Final = State.TRANSACTION


class Body:
    """The chunks of a multi-line reply's body, pulled one at a time (no terminator: the
    library writes it).

    `wire`: the chunks are already byte-stuffed (a stored message in wire form), to be sent as
    `Data(chunk, wire=True)`; otherwise raw octets the library stuffs. `first` is a chunk read
    ahead (given before `chunks`). `close()` gives back whatever the body holds (store
    iterators, RAM reservations) and must be called on every exit path.
    """

    __slots__ = ("_chunks", "_done", "_first", "_on_close", "wire")

    def __init__(
        self,
        chunks: Iterator[bytes],
        *,
        first: bytes = b"",
        wire: bool = False,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._chunks = chunks
        self._first = first
        self._done = False
        self._on_close = on_close
        self.wire = wire

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        if self._first:
            chunk, self._first = self._first, b""
            return chunk
        for chunk in self._chunks:
            if chunk:
                return chunk
        self._done = True
        raise StopIteration

    def take_first(self) -> bytes:
        """The chunk read ahead (b"" if none); iteration goes on after it."""
        chunk, self._first = self._first, b""
        return chunk

    def close(self) -> None:
        """Release what the body holds; safe to call more than once."""
        self._done = True
        self._first = b""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()


def fixed_body(lines: list[bytes]) -> Body:
    """A body built from our own short lines (LIST, UIDL, CAPA, AUTH), CRLF included."""
    return Body(iter((b"".join(lines),)) if lines else iter(()))


@dataclass(slots=True)
class Answer:
    """What to send for one client event: a first event, maybe a body, maybe a delay or close.

    Treat as immutable (not frozen only because a frozen dataclass costs 1 us more to build,
    and one is built per command).

    `first`: the library event (`events.Reply`, `MultilineStart` when `body` follows, or
    `SaslContinuation`). `starttls`: after sending `first`, the adapter starts TLS (STLS).
    `stored`: (box, uid) when the body is exactly that stored message's wire form (RETR), so
    an adapter may copy it from the store by other means than pulling the body.
    `guard`: for a body read from the store, what each pull of a chunk must run inside
    (`async with guard(): next(body)`): the store's short-read lock.
    """

    first: events.Reply | MultilineStart | SaslContinuation
    body: Body | None = None
    close: bool = False
    delay: float = 0.0
    starttls: bool = False
    stored: tuple[str, str] | None = None
    guard: Callable[[], AbstractAsyncContextManager[None]] | None = None

    @property
    def ok(self) -> bool:
        """True for `+OK` (single or multi-line); False for `-ERR` and SASL continuations."""
        first = self.first
        return isinstance(first, MultilineStart) or (isinstance(first, events.Reply) and first.ok)


RETR_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass(slots=True)
class Pop3Stats:
    """Counters for the console's `status`, shared by all sessions of one service."""

    sessions_total: int = 0
    sessions_refused: int = 0
    logins_ok: int = 0
    logins_failed: int = 0
    messages_retrieved: int = 0
    messages_deleted: int = 0
    commits_failed: int = 0
    idle_logouts: int = 0
    tls_sessions: int = 0  # TLS handshakes completed (STLS and POP3S)
    tls_failures: int = 0  # handshakes failed or timed out, plaintext after STLS
    evictions: int = 0  # pre-login connections closed to make room
    # For /metrics (firmware/http/metrics.py): each keyed by a bounded set of names.
    logins_by_method: dict[tuple[str, bool], int] = field(default_factory=dict)  # (mech, ok)
    commands: dict[str, int] = field(default_factory=dict)  # keyword (or "unknown") -> count
    refusals: dict[str, int] = field(default_factory=dict)  # limit -> connections refused
    bytes_sent: int = 0  # reply octets (a RETR copied from the image: its message octets)
    retr_buckets: list[int] = field(default_factory=lambda: [0] * len(RETR_BUCKETS_S))
    retr_count: int = 0
    retr_seconds: float = 0.0  # the sum, for the histogram's _sum

    def note_login(self, mech: str, ok: bool) -> None:
        key = (mech, ok)
        self.logins_by_method[key] = self.logins_by_method.get(key, 0) + 1

    def note_retr(self, seconds: float) -> None:
        """One RETR, from its command line in to its last octet out (a histogram)."""
        self.retr_count += 1
        self.retr_seconds += seconds
        for index, bound in enumerate(RETR_BUCKETS_S):
            if seconds <= bound:
                self.retr_buckets[index] += 1
                break


def clean_text(text: str, room: int = MAX_REPLY_LINE - len(b"-ERR \r\n")) -> str:
    """Reply text fit for the wire: CR/LF become spaces, octets that are not UTF-8 become
    U+FFFD, and the text is cut (at a character boundary) to `room` octets of UTF-8."""
    if len(text) <= room and text.isascii() and "\r" not in text and "\n" not in text:
        return text  # the common case: our own short ASCII texts
    raw = text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")
    if len(raw) > room:
        raw = raw[:room]
    return raw.decode("utf-8", "ignore")


def _room(prefix: int, code: str | None) -> int:
    return MAX_REPLY_LINE - prefix - 3 - (len(code) + 3 if code else 0)  # space, CRLF


def ok(text: str = "", code: str | None = None) -> events.Reply:
    """A `+OK` reply, its text cleaned and cut to fit 512 octets (RFC 2449 §4)."""
    return events.Reply(True, clean_text(text, _room(3, code)), code)


def err(text: str, code: str | None = None) -> events.Reply:
    """A `-ERR` reply (RFC 2449 §8 / RFC 3206 `code` without brackets), cleaned and cut."""
    return events.Reply(False, clean_text(text, _room(4, code)), code)


def capability(text: str) -> bytes:
    """One CAPA line (RFC 2449 §5) with its CRLF, cleaned and at most 512 octets."""
    return clean_text(text, MAX_REPLY_LINE - 2).encode("utf-8") + b"\r\n"


OK: Final = Answer(events.Reply(True))
_BAD_LOGIN: Final = events.Reply(False, "invalid mailbox name or password", "AUTH")
_TOP_HEAD: Final = MultilineStart("top of message follows")
_NO_SIZES: Final = array("q")
CAPA_HEAD: Final = MultilineStart("capability list follows")


def _no_capabilities(session: Pop3Protocol) -> list[bytes]:
    return []


def _readable(text: str) -> str:
    """Command text from the library (surrogate-escaped octets) as the device reads it:
    octets that are not UTF-8 become U+FFFD."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Handler:
    """One POP3 command: its keyword, the states it is valid in, what it does, its CAPA lines.

    `run(session, command)` gets the library's parsed `Command` (numbers already ints, see
    `firmware.pop3.events.Command`) and returns the one answer (or a coroutine for it, when it
    waits for the maildrop); `usage` is the reply text to a `BadCommand(SYNTAX)` for it;
    `capabilities(session)` the CAPA lines (RFC 2449 §6, CRLF included) this command adds in
    the session's present state and profile: none, or the lines that advertise it.
    """

    keyword: str
    states: frozenset[State]
    run: Callable[[Pop3Protocol, Command], Answer | Awaitable[Answer]]
    usage: str
    capabilities: Callable[[Pop3Protocol], list[bytes]] = _no_capabilities


class Commands:
    """The installed handlers: dispatch by state and keyword; CAPA in installation order."""

    __slots__ = ("_by_state", "handlers", "keywords")

    def __init__(self, handlers: Sequence[Handler]) -> None:
        self.handlers = tuple(handlers)
        self.keywords = {h.keyword: h for h in self.handlers}
        self._by_state = {
            state: {h.keyword: h for h in self.handlers if state in h.states} for state in State
        }

    def get(self, state: State, keyword: str) -> Handler | None:
        """The handler of `keyword` (upper case) in `state`, or None."""
        return self._by_state[state].get(keyword)

    def capabilities(self, session: Pop3Protocol) -> list[bytes]:
        """Every installed handler's CAPA lines for this session, in installation order."""
        return [line for handler in self.handlers for line in handler.capabilities(session)]


_installed: Commands | None = None


def installed_commands() -> Commands:
    """firmware.pop3.handlers.INSTALLED as a `Commands` (built once, on first use)."""
    global _installed
    if _installed is None:
        from firmware.pop3.handlers import INSTALLED  # the handlers import this module

        _installed = Commands(INSTALLED)
    return _installed


class Pop3Protocol:
    """One POP3 session's state: AUTHORIZATION -> TRANSACTION -> UPDATE, then closed."""

    __slots__ = (
        "_auth_failures",
        "_bad_count",
        "_budget",
        "_clock",
        "_guard",
        "_locks",
        "box",
        "commands",
        "deleted",
        "live_count",
        "live_octets",
        "peer",
        "profile",
        "retrieved",
        "sasl",
        "session_id",
        "sizes",
        "state",
        "stats",
        "store",
        "timestamp",
        "tls_active",
        "tls_available",
        "uids",
        "user_name",
    )

    def __init__(
        self,
        store: Mailstore,
        profile: Callable[[], Profile],
        locks: BoxLocks,
        budget: RamBudget,
        *,
        session_id: int,
        clock: Callable[[], float],
        stats: Pop3Stats | None = None,
        tls_active: bool = False,
        tls_available: bool = False,
        peer: str = "unknown",
        guard: LoginGuard | None = None,
        commands: Commands | None = None,
    ) -> None:
        """`peer` is the client address (logged, and the key of login penalties); `guard` is
        the service's shared LoginGuard (a private one if None); `tls_available` says STLS
        can be offered (the device has a certificate); `commands` the installed handlers
        (firmware.pop3.handlers.INSTALLED if None)."""
        self.commands = commands if commands is not None else installed_commands()
        self.store = store
        self.profile = profile
        self._locks = locks
        self._budget = budget
        self._clock = clock
        self.stats = stats if stats is not None else Pop3Stats()
        self.session_id = session_id
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.peer = peer
        self._guard = guard if guard is not None else LoginGuard(0.0, clock=clock)
        self.sasl: SaslMechanism | None = None
        self.state = State.AUTHORIZATION
        self.box: str | None = None
        self.timestamp: str | None = None
        self.user_name: str | None = None
        self._auth_failures = 0
        self._bad_count = 0
        # The session's snapshot of the box, kept compact: idle logged-in sessions are many.
        self.uids: Sequence[str] = ()
        self.sizes: array[int] = _NO_SIZES
        self.deleted: set[int] | None = None
        self.retrieved: set[int] | None = None
        self.live_count = 0
        self.live_octets = 0

    # -- entry points --------------------------------------------------------------------

    def greeting(self) -> events.Reply:
        """The `+OK` greeting, with a fresh APOP timestamp when APOP is offered."""
        profile = self.profile()
        text = f"{profile.model} POP3 service ready"
        if profile.bool("pop3.apop"):
            self.timestamp = make_apop_timestamp(profile.str("identity.hostname"))
            text += " " + self.timestamp
        return ok(text)

    async def answer(self, event: Command | BadCommand | SaslResponse) -> Answer:
        """Answer one client event from the library; always exactly one answer.

        A coroutine because some commands wait for the store (login, RETR/TOP, QUIT); the
        rest never suspend. The caller must send this answer before asking the library for
        the next event (the library holds pipelined commands back until then).
        """
        state = self.state
        if state is not _AUTHORIZATION and state is not _TRANSACTION:
            return Answer(err("session is over"), close=True)
        if type(event) is Command:
            self._count(event.keyword)
            handler = self.commands.get(state, event.keyword)
            if handler is None:
                if event.keyword in self.commands.keywords:
                    return self.bad(f"{event.keyword} is not valid in the {self.state.value} state")
                return self.bad("unknown command")
            if event.args and not all(a.isascii() for a in event.args):
                event = Command(event.keyword, tuple(map(_readable, event.args)), event.numbers)
            answer = handler.run(self, event)
            if not isinstance(answer, Answer):
                answer = await answer
            if answer.ok:
                self._bad_count = 0
            return answer
        if isinstance(event, SaslResponse):
            return await self.sasl_response(event)
        assert isinstance(event, BadCommand)
        return self.bad_command(event)

    def _count(self, keyword: str) -> None:
        """Count a command line for /metrics: its keyword if installed, else "unknown"."""
        counted = keyword if keyword in self.commands.keywords else "unknown"
        commands = self.stats.commands
        commands[counted] = commands.get(counted, 0) + 1

    def bad_command(self, event: BadCommand) -> Answer:
        """The reply to a line the library refused: the device's wording for each problem."""
        if self.sasl is None and event.problem is not Problem.TOO_LONG:
            self._count(event.keyword)  # (a line inside an AUTH exchange is not a command)
        if event.problem is Problem.TOO_LONG:
            if self.sasl is not None:  # a SASL response over the limit: a failed login
                mechanism, self.sasl = self.sasl, None
                return self.login_failed(None, mechanism.name, OVERSIZED)
            return self.bad(f"line too long; commands are at most {MAX_COMMAND_LINE} octets")
        self.sasl = None  # a bad line ends an AUTH exchange (the library's table agrees)
        handler = self.commands.keywords.get(event.keyword)
        if handler is None or event.problem is Problem.UNKNOWN:
            return self.bad("unknown command")
        if event.keyword == "PASS":
            self.user_name = None  # PASS, even a malformed one, ends the USER it followed
        if event.problem is Problem.WRONG_STATE or self.state not in handler.states:
            return self.bad(f"{event.keyword} is not valid in the {self.state.value} state")
        return self.bad(handler.usage)

    def endless_line(self) -> events.Reply:
        """The library gave up on a line that did not end within MAX_DISCARD octets: the
        device's closing reply (the adapter sends it and closes). Logged for fail2ban."""
        self.sasl = None
        authlog.log_event("limit", self.peer, limit="line-length", session=self.session_id)
        return err(ENDLESS_LINE)

    def end(self) -> None:
        """Leave the session without UPDATE: drop marks, give the box lock back. Idempotent."""
        self.sasl = None
        if self.box is not None:
            self._locks.release(self.box, self.session_id)
        self.state = State.CLOSED
        self.deleted = self.retrieved = None
        self.uids, self.sizes = (), _NO_SIZES

    # -- helpers -------------------------------------------------------------------------

    def bad(self, text: str, code: str | None = None) -> Answer:
        """A `-ERR` to a bad command; MAX_BAD_COMMANDS in a row close the session."""
        self._bad_count += 1
        if self._bad_count >= MAX_BAD_COMMANDS:
            return Answer(err("too many bad commands; closing"), close=True)
        return Answer(err(text, code))

    def plaintext_allowed(self) -> bool:
        return self.tls_active or self.profile().str("pop3.plaintext_auth") == "always"

    def message_index(self, number: int) -> int | Answer:
        """0-based index of the live message `number` (1-based), or the -ERR answer to send."""
        count = len(self.uids)
        if number < 1 or number > count:
            there = "there are no messages" if not count else f"messages are 1 to {count}"
            return self.bad(f"no message {number}; {there}")
        if self.deleted is not None and number - 1 in self.deleted:
            return self.bad(f"message {number} is deleted")
        return number - 1

    def listing_body(self, column: Sequence[object]) -> Body:
        """`n value` lines for live messages, built in batches so huge boxes stay bounded.

        A column with a `listing(start, stop) -> str` method (the store's uids) writes its
        own lines in one pass while nothing is deleted."""
        own: Callable[[int, int], str] | None = getattr(column, "listing", None)

        def batches() -> Iterator[bytes]:
            count = len(self.uids)
            for start in range(0, count, _LISTING_BATCH):
                stop = min(count, start + _LISTING_BATCH)
                deleted = self.deleted
                if not deleted and own is not None:
                    text = own(start, stop)
                else:
                    numbered: Iterator[tuple[int, object]]
                    numbered = zip(range(start + 1, stop + 1), column[start:stop], strict=True)
                    if deleted:
                        numbered = ((n, v) for n, v in numbered if n - 1 not in deleted)
                    text = "".join([f"{n} {value}\r\n" for n, value in numbered])
                if text:
                    yield text.encode("ascii")

        return Body(batches())

    def mechanisms(self) -> tuple[str, ...]:
        profile = self.profile()
        return offered_mechanisms(
            tls_active=self.tls_active,
            plaintext_auth=profile.str("pop3.plaintext_auth"),
            legacy=profile.bool("pop3.apop"),
        )

    # -- AUTHORIZATION -------------------------------------------------------------------

    async def sasl_response(self, event: SaslResponse) -> Answer:
        """A client line inside an AUTH exchange: `*` cancels, anything else is base64."""
        mechanism, self.sasl = self.sasl, None
        if mechanism is None:  # the library only sends these inside an exchange
            return self.bad("no AUTH exchange is under way")
        line = event.text.encode("utf-8", "surrogateescape")
        if is_cancel(line):
            return self.bad("AUTH cancelled")
        try:
            response = decode_response(line)
        except SaslEncodingError:
            return self.login_failed(None, mechanism.name, MALFORMED)
        step = mechanism.step
        return await self.sasl_next(mechanism, await self.store.sasl_step(lambda: step(response)))

    async def sasl_next(self, mechanism: SaslMechanism, step: Step) -> Answer:
        if isinstance(step, Challenge):
            self.sasl = mechanism
            return Answer(SaslContinuation(encode(step.data).decode("ascii")))
        if isinstance(step, Success):
            return await self.login(step.box, mechanism.name, _verified)
        if step.reason == NO_LEGACY_SECRET and step.box is not None:
            return self.no_legacy_secret(step.box, mechanism.name)
        return self.login_failed(step.box, mechanism.name, step.reason)

    def no_legacy_secret(self, name: str, mech: str) -> Answer:
        """APOP or CRAM-MD5 for a name that keeps no legacy secret: it can never succeed.

        Said plainly, and not counted as a failed login (no penalty, no lock-out, no fail2ban
        line): a client that picked the legacy method with the right password must learn to
        use another one, not be locked out. Unknown names get the same reply as real boxes
        without a secret, so only boxes that do keep one check the digest (docs/pop3.md).
        """
        authlog.log_event(
            "auth-unavailable",
            self.peer,
            box=name,
            mech=mech,
            reason=NO_LEGACY_SECRET,
            session=self.session_id,
        )
        return self.bad(
            f"no {LEGACY_METHODS} secret is kept for {name}; log in another way (see CAPA)",
            "AUTH",
        )

    def login_failed(self, name: str | None, mech: str, reason: str) -> Answer:
        """Count and log a failed login; the reply waits the client's growing penalty."""
        profile = self.profile()
        self._auth_failures += 1
        self.stats.logins_failed += 1
        self.stats.note_login(mech, False)
        self._guard.penalty.base_delay_s = profile.float("pop3.auth_failure_delay_s")
        delay = self._guard.failed(self.peer, name)
        close = self._auth_failures >= profile.int("pop3.max_auth_failures")
        authlog.log_event(
            "auth-fail", self.peer, box=name, mech=mech, reason=reason, session=self.session_id
        )
        if close:
            authlog.log_event("limit", self.peer, limit="auth-failures", session=self.session_id)
        return Answer(_BAD_LOGIN, close=close, delay=delay)

    async def login(self, name: str, mech: str, check: Callable[[], Awaitable[bool]]) -> Answer:
        """The one login path: lock-out, credentials, box lock, LOGIN-DELAY, snapshot."""
        if self._guard.refusal(name) is not None:
            return self.login_failed(name, mech, BOX_LOCKED)
        if not await check():
            return self.login_failed(name, mech, BAD_CREDENTIALS)
        self._guard.succeeded(self.peer, name)
        profile = self.profile()
        if not self._locks.acquire(name, self.session_id):
            authlog.log_event("limit", self.peer, limit="in-use", box=name, session=self.session_id)
            return Answer(err("mailbox is in use by another session", "IN-USE"))
        now = self._clock()
        login_delay = profile.int("pop3.login_delay_s")
        since = self._locks.seconds_since_login(name, now)
        if login_delay > 0 and since is not None and since < login_delay:
            self._locks.release(name, self.session_id)
            authlog.log_event(
                "limit", self.peer, limit="login-delay", box=name, session=self.session_id
            )
            return Answer(
                err(f"wait {plural(login_delay, 'second')} between logins to a box", "LOGIN-DELAY")
            )
        try:
            listing = await self.store.messages(name)
        except CorruptRecordError as exc:
            self._locks.release(name, self.session_id)
            return Answer(err(f"mailbox cannot be read: {exc}", "SYS/PERM"))
        except DeviceError as exc:
            self._locks.release(name, self.session_id)
            return Answer(err(f"mailbox cannot be opened now: {exc}", "SYS/TEMP"))
        self._locks.note_login(name, now)
        self.stats.logins_ok += 1
        self.stats.note_login(mech, True)
        authlog.log_event(
            "auth-ok",
            self.peer,
            box=name,
            mech=mech,
            tls="yes" if self.tls_active else "no",
            session=self.session_id,
        )
        self.box = name
        self.state = State.TRANSACTION
        sizes, uids = getattr(listing, "sizes", None), getattr(listing, "uids", None)
        if isinstance(sizes, array) and isinstance(uids, Sequence):
            self.uids, self.sizes = uids, sizes  # the store's compact listing (Board.listing)
        else:
            self.uids = tuple(m.uid for m in listing)
            self.sizes = array("q", (m.size for m in listing))
        self.live_count = len(self.uids)
        self.live_octets = sum(self.sizes)
        return Answer(
            ok(
                f"{name} has {plural(self.live_count, 'message')} "
                f"({plural(self.live_octets, 'octet')})"
            )
        )

    # -- TRANSACTION ---------------------------------------------------------------------

    async def stream(self, index: int, top_lines: int | None) -> Answer:
        assert self.box is not None
        uid = self.uids[index]
        what = "RETR" if top_lines is None else "TOP"
        try:
            reservation = self._budget.reserve(STREAM_CHUNK, f"POP3 {what} buffer")
        except MemoryFullError:
            return Answer(err("out of memory; try again later", "SYS/TEMP"))
        try:
            if top_lines is None:
                opened = await self.store.read_wire(self.box, uid, STREAM_CHUNK)
            else:
                opened = await self.store.read_top(self.box, uid, top_lines, STREAM_CHUNK)
        except CorruptRecordError as exc:
            reservation.release()
            log.error("POP3 %s of %s/%s: %s", what, self.box, uid, exc)
            return Answer(err(f"message {index + 1} is damaged: {exc}", "SYS/PERM"))
        except DeviceError as exc:
            reservation.release()
            return Answer(err(f"message {index + 1} cannot be read: {exc}", "SYS/TEMP"))
        except BaseException:
            reservation.release()
            raise
        body = Body(opened.rest, first=opened.first, wire=True, on_close=reservation.release)
        guard = self.store.reading
        if top_lines is None:
            self.stats.messages_retrieved += 1
            if self.retrieved is None:
                self.retrieved = set()
            self.retrieved.add(index)
            head = MultilineStart(f"{self.sizes[index]} octets")
            return Answer(head, body, stored=(self.box, uid), guard=guard)
        return Answer(_TOP_HEAD, body, guard=guard)

    # -- UPDATE --------------------------------------------------------------------------

    async def update(self) -> Answer:
        """Commit this session's deletions in one atomic store call, then end the session."""
        assert self.box is not None
        doomed = set(self.deleted or ())
        if self.retrieved and self.profile().int("pop3.expire_days") == 0:
            doomed |= self.retrieved
        # The store's uids pick theirs as numbers (a QUIT of 10,000: no uid made on the loop)
        pick: Callable[[list[int]], Sequence[str]] | None = getattr(self.uids, "pick", None)
        indexes = sorted(doomed)
        uids = pick(indexes) if pick is not None else [self.uids[i] for i in indexes]
        left = len(self.uids) - len(uids)
        self.state = State.UPDATE
        try:
            if uids:
                await self.store.delete(self.box, uids)
        except CorruptRecordError as exc:
            self.stats.commits_failed += 1
            return Answer(err(f"no messages removed: {exc}", "SYS/PERM"), close=True)
        except DeviceError as exc:
            self.stats.commits_failed += 1
            return Answer(err(f"no messages removed: {exc}", "SYS/TEMP"), close=True)
        finally:
            self.end()
        self.stats.messages_deleted += len(uids)
        return Answer(ok(f"signing off ({plural(left, 'message')} left)"), close=True)
