"""The POP3 state machine (RFC 1939, RFC 2449, RFC 3206), sans I/O.

One `Pop3Protocol` per connection: the adapter hands it one command line at a time and awaits
exactly one `Reply`, which says what to send, whether to wait first (a failed login) and
whether to close afterwards. No sockets, timers or files in here; the store is reached only
through the async `Mailstore` (on the device, every store effect runs on the store worker), and
message bodies come back as a `MultilineBody` the adapter pulls chunk by chunk, so a message of
any size passes through in bounded memory.

This module holds the session's state and what commands share (message numbers, the one login
path, streaming, UPDATE); each command is a small `Handler` in firmware/pop3/handlers/, which
also declares the command's CAPA lines: CAPA is built from the installed handlers.
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
from firmware.pop3.auth import LEGACY_METHODS, make_apop_timestamp
from firmware.pop3.framing import (
    LINE_NEVER_ENDS,
    LINE_TOO_LONG,
    MAX_COMMAND_LINE,
    LineTooLong,
    MultilineBody,
)
from firmware.pop3.locks import BoxLocks
from firmware.pop3.mailbox import Mailstore
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

_LISTING_BATCH: Final = 512
_MAX_REPLY_LINE: Final = 510  # RFC 2449 §4: 512 octets with CRLF
SASL_LINE_LIMIT: Final = MAX_RESPONSE_LINE + 2
"""Octets per client line (CRLF included) while a SASL exchange waits for a response."""
BOX_LOCKED: Final = "box-locked"


async def _verified() -> bool:
    return True  # a SASL mechanism that succeeded has checked the credentials


def parse_number(text: str) -> int | None:
    """An RFC 1939 number argument (message number, TOP line count), or None if it is not one.

    One or more ASCII digits, any length, leading zeros allowed ("0002" is 2); no sign, no
    spaces, no other scripts' digits. Every numeric argument of every command is read here.
    """
    if not text or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def arguments(rest: str) -> list[str]:
    """A command's arguments: the words of the rest of its line, split at spaces."""
    return [word for word in rest.split(" ") if word]


class State(Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send for one command: a first line, maybe a body, maybe a delay or a close.

    `starttls`: after sending `head`, the adapter starts TLS on the connection (STLS).
    `stored`: (box, uid) when the body is exactly that stored message's wire form (RETR), so
    an adapter may copy it from the store by other means than pulling the body.
    `guard`: for a body read from the store, what each pull of a chunk must run inside
    (`async with guard(): next(body)`): the store's short-read lock.
    """

    head: bytes
    body: MultilineBody | None = None
    close: bool = False
    delay: float = 0.0
    starttls: bool = False
    stored: tuple[str, str] | None = None
    guard: Callable[[], AbstractAsyncContextManager[None]] | None = None

    @property
    def ok(self) -> bool:
        return self.head.startswith(b"+OK")


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


def reply_line(text: str) -> bytes:
    """One reply line: no CR/LF inside, at most 512 octets with its CRLF."""
    raw = text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")
    if len(raw) > _MAX_REPLY_LINE:
        raw = raw[:_MAX_REPLY_LINE].decode("utf-8", "ignore").encode("utf-8")
    return raw + b"\r\n"


OK: Final = Reply(b"+OK\r\n")
_NO_SIZES: Final = array("q")
CAPA_HEAD: Final = b"+OK capability list follows\r\n"


def _no_capabilities(session: Pop3Protocol) -> list[bytes]:
    return []


@dataclass(frozen=True, slots=True)
class Handler:
    """One POP3 command: its keyword, the states it is valid in, what it does, its CAPA lines.

    `run(session, rest)` gets the rest of the command line after the keyword and returns the
    one reply (or a coroutine for it, when it waits for the maildrop); `capabilities(session)`
    the CAPA lines (RFC 2449 §6, CRLF included) this command adds in the session's present
    state and profile: none, or the lines that advertise it.
    """

    keyword: str
    states: frozenset[State]
    run: Callable[[Pop3Protocol, str], Reply | Awaitable[Reply]]
    capabilities: Callable[[Pop3Protocol], list[bytes]] = _no_capabilities


class Commands:
    """The installed handlers: dispatch by state and keyword; CAPA in installation order."""

    __slots__ = ("_by_state", "handlers", "keywords")

    def __init__(self, handlers: Sequence[Handler]) -> None:
        self.handlers = tuple(handlers)
        self.keywords = frozenset(h.keyword for h in self.handlers)
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
        self.uids: tuple[str, ...] = ()
        self.sizes: array[int] = _NO_SIZES
        self.deleted: set[int] | None = None
        self.retrieved: set[int] | None = None
        self.live_count = 0
        self.live_octets = 0

    # -- entry points --------------------------------------------------------------------

    def greeting(self) -> Reply:
        """The `+OK` greeting, with a fresh APOP timestamp when APOP is offered."""
        profile = self.profile()
        text = f"+OK {profile.model} POP3 service ready"
        if profile.bool("pop3.apop"):
            self.timestamp = make_apop_timestamp(profile.str("identity.hostname"))
            text += " " + self.timestamp
        return Reply(reply_line(text))

    async def receive_line(self, line: bytes | LineTooLong) -> Reply:
        """Handle one command line (without its line end); always exactly one reply.

        A coroutine because some commands wait for the store (login, RETR/TOP, QUIT); the
        rest never suspend. The caller must not send the next line before this returns.
        """
        if self.state is not State.AUTHORIZATION and self.state is not State.TRANSACTION:
            return Reply(b"-ERR session is over\r\n", close=True)
        if line is LINE_NEVER_ENDS:
            self.sasl = None
            authlog.log_event("limit", self.peer, limit="line-length", session=self.session_id)
            return Reply(b"-ERR line too long and still no line end; closing\r\n", close=True)
        if self.sasl is not None:
            return await self.sasl_response(line)
        if line is LINE_TOO_LONG:
            return self.bad("-ERR line too long; commands are at most 255 octets")
        assert isinstance(line, bytes)
        keyword, _, rest = line.decode("utf-8", "replace").partition(" ")
        keyword = keyword.upper()
        handler = self.commands.get(self.state, keyword)
        counted = keyword if keyword in self.commands.keywords else "unknown"
        self.stats.commands[counted] = self.stats.commands.get(counted, 0) + 1
        if handler is None:
            if keyword in self.commands.keywords:
                return self.bad(f"-ERR {keyword} is not valid in the {self.state.value} state")
            return self.bad("-ERR unknown command")
        reply = handler.run(self, rest)
        if not isinstance(reply, Reply):
            reply = await reply
        if reply.ok:
            self._bad_count = 0
        return reply

    @property
    def line_limit(self) -> int:
        """The longest client line (CRLF included) to accept next: longer inside SASL."""
        return MAX_COMMAND_LINE if self.sasl is None else SASL_LINE_LIMIT

    def end(self) -> None:
        """Leave the session without UPDATE: drop marks, give the box lock back. Idempotent."""
        self.sasl = None
        if self.box is not None:
            self._locks.release(self.box, self.session_id)
        self.state = State.CLOSED
        self.deleted = self.retrieved = None
        self.uids, self.sizes = (), _NO_SIZES

    # -- helpers -------------------------------------------------------------------------

    def bad(self, text: str) -> Reply:
        self._bad_count += 1
        if self._bad_count >= MAX_BAD_COMMANDS:
            return Reply(b"-ERR too many bad commands; closing\r\n", close=True)
        return Reply(reply_line(text))

    def plaintext_allowed(self) -> bool:
        return self.tls_active or self.profile().str("pop3.plaintext_auth") == "always"

    def message_index(self, arg: str) -> int | Reply:
        """0-based index of a live message named by `arg`, or the -ERR reply to send."""
        number = parse_number(arg)
        if number is None:
            return self.bad("-ERR a message number is a decimal number (1, 2, ...)")
        count = len(self.uids)
        if number < 1 or number > count:
            there = "there are no messages" if not count else f"messages are 1 to {count}"
            return self.bad(f"-ERR no message {number}; {there}")
        if self.deleted is not None and number - 1 in self.deleted:
            return self.bad(f"-ERR message {number} is deleted")
        return number - 1

    def one_message(self, keyword: str, rest: str, *, optional: bool = False) -> int | Reply | None:
        """The index named by a command's one message-number argument; None if optional and
        absent; or the -ERR reply to send."""
        args = arguments(rest)
        if not args and optional:
            return None
        if len(args) != 1:
            many = "at most one message number" if optional else "one message number"
            return self.bad(f"-ERR {keyword} takes {many}")
        return self.message_index(args[0])

    def no_args(self, keyword: str, rest: str) -> Reply | None:
        return None if not rest.strip() else self.bad(f"-ERR {keyword} takes no arguments")

    def live_indexes(self) -> Iterator[int]:
        deleted = self.deleted or ()
        return (i for i in range(len(self.uids)) if i not in deleted)

    def listing_body(self, column: Sequence[object]) -> MultilineBody:
        """`n value` lines for live messages, built in batches so huge boxes stay bounded."""

        def batches() -> Iterator[bytes]:
            lines: list[str] = []
            for i in self.live_indexes():
                lines.append(f"{i + 1} {column[i]}\r\n")
                if len(lines) >= _LISTING_BATCH:
                    yield "".join(lines).encode("ascii")
                    lines.clear()
            if lines:
                yield "".join(lines).encode("ascii")

        return MultilineBody(batches())

    def mechanisms(self) -> tuple[str, ...]:
        profile = self.profile()
        return offered_mechanisms(
            tls_active=self.tls_active,
            plaintext_auth=profile.str("pop3.plaintext_auth"),
            legacy=profile.bool("pop3.apop"),
        )

    # -- AUTHORIZATION -------------------------------------------------------------------

    async def sasl_response(self, line: bytes | LineTooLong) -> Reply:
        """A client line inside an AUTH exchange: `*` cancels, anything else is base64."""
        mechanism, self.sasl = self.sasl, None
        assert mechanism is not None
        if line is LINE_TOO_LONG:
            return self.login_failed(None, mechanism.name, OVERSIZED)
        assert isinstance(line, bytes)
        if is_cancel(line):
            return self.bad("-ERR AUTH cancelled")
        try:
            response = decode_response(line)
        except SaslEncodingError:
            return self.login_failed(None, mechanism.name, MALFORMED)
        step = mechanism.step
        return await self.sasl_next(mechanism, await self.store.sasl_step(lambda: step(response)))

    async def sasl_next(self, mechanism: SaslMechanism, step: Step) -> Reply:
        if isinstance(step, Challenge):
            self.sasl = mechanism
            return Reply(b"+ " + encode(step.data) + b"\r\n")
        if isinstance(step, Success):
            return await self.login(step.box, mechanism.name, _verified)
        if step.reason == NO_LEGACY_SECRET and step.box is not None:
            return self.no_legacy_secret(step.box, mechanism.name)
        return self.login_failed(step.box, mechanism.name, step.reason)

    def no_legacy_secret(self, name: str, mech: str) -> Reply:
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
            f"-ERR [AUTH] no {LEGACY_METHODS} secret is kept for {name}; "
            "log in another way (see CAPA)"
        )

    def login_failed(self, name: str | None, mech: str, reason: str) -> Reply:
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
        return Reply(b"-ERR [AUTH] invalid mailbox name or password\r\n", close=close, delay=delay)

    async def login(self, name: str, mech: str, check: Callable[[], Awaitable[bool]]) -> Reply:
        """The one login path: lock-out, credentials, box lock, LOGIN-DELAY, snapshot."""
        if self._guard.refusal(name) is not None:
            return self.login_failed(name, mech, BOX_LOCKED)
        if not await check():
            return self.login_failed(name, mech, BAD_CREDENTIALS)
        self._guard.succeeded(self.peer, name)
        profile = self.profile()
        if not self._locks.acquire(name, self.session_id):
            authlog.log_event("limit", self.peer, limit="in-use", box=name, session=self.session_id)
            return Reply(b"-ERR [IN-USE] mailbox is in use by another session\r\n")
        now = self._clock()
        login_delay = profile.int("pop3.login_delay_s")
        since = self._locks.seconds_since_login(name, now)
        if login_delay > 0 and since is not None and since < login_delay:
            self._locks.release(name, self.session_id)
            authlog.log_event(
                "limit", self.peer, limit="login-delay", box=name, session=self.session_id
            )
            return Reply(
                reply_line(
                    f"-ERR [LOGIN-DELAY] wait {plural(login_delay, 'second')} "
                    "between logins to a box"
                )
            )
        try:
            listing = await self.store.messages(name)
        except CorruptRecordError as exc:
            self._locks.release(name, self.session_id)
            return Reply(reply_line(f"-ERR [SYS/PERM] mailbox cannot be read: {exc}"))
        except DeviceError as exc:
            self._locks.release(name, self.session_id)
            return Reply(reply_line(f"-ERR [SYS/TEMP] mailbox cannot be opened now: {exc}"))
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
        self.uids = tuple(m.uid for m in listing)
        self.sizes = array("q", (m.size for m in listing))
        self.live_count = len(self.uids)
        self.live_octets = sum(self.sizes)
        return Reply(
            reply_line(
                f"+OK {name} has {plural(self.live_count, 'message')} "
                f"({plural(self.live_octets, 'octet')})"
            )
        )

    # -- TRANSACTION ---------------------------------------------------------------------

    async def stream(self, index: int, top_lines: int | None) -> Reply:
        assert self.box is not None
        uid = self.uids[index]
        what = "RETR" if top_lines is None else "TOP"
        try:
            reservation = self._budget.reserve(STREAM_CHUNK, f"POP3 {what} buffer")
        except MemoryFullError:
            return Reply(b"-ERR [SYS/TEMP] out of memory; try again later\r\n")
        try:
            if top_lines is None:
                opened = await self.store.read_wire(self.box, uid, STREAM_CHUNK)
            else:
                opened = await self.store.read_top(self.box, uid, top_lines, STREAM_CHUNK)
        except CorruptRecordError as exc:
            reservation.release()
            log.error("POP3 %s of %s/%s: %s", what, self.box, uid, exc)
            return Reply(reply_line(f"-ERR [SYS/PERM] message {index + 1} is damaged: {exc}"))
        except DeviceError as exc:
            reservation.release()
            return Reply(reply_line(f"-ERR [SYS/TEMP] message {index + 1} cannot be read: {exc}"))
        except BaseException:
            reservation.release()
            raise
        body = MultilineBody(opened.rest, first=opened.first, on_close=reservation.release)
        guard = self.store.reading
        if top_lines is None:
            self.stats.messages_retrieved += 1
            if self.retrieved is None:
                self.retrieved = set()
            self.retrieved.add(index)
            head = b"+OK %d octets\r\n" % self.sizes[index]
            return Reply(head, body, stored=(self.box, uid), guard=guard)
        return Reply(b"+OK top of message follows\r\n", body, guard=guard)

    # -- UPDATE --------------------------------------------------------------------------

    async def update(self) -> Reply:
        """Commit this session's deletions in one atomic store call, then end the session."""
        assert self.box is not None
        doomed = set(self.deleted or ())
        if self.retrieved and self.profile().int("pop3.expire_days") == 0:
            doomed |= self.retrieved
        uids = [self.uids[i] for i in sorted(doomed)]
        left = len(self.uids) - len(uids)
        self.state = State.UPDATE
        try:
            if uids:
                await self.store.delete(self.box, uids)
        except CorruptRecordError as exc:
            self.stats.commits_failed += 1
            return Reply(reply_line(f"-ERR [SYS/PERM] no messages removed: {exc}"), close=True)
        except DeviceError as exc:
            self.stats.commits_failed += 1
            return Reply(reply_line(f"-ERR [SYS/TEMP] no messages removed: {exc}"), close=True)
        finally:
            self.end()
        self.stats.messages_deleted += len(uids)
        bye = f"+OK signing off ({plural(left, 'message')} left)\r\n"
        return Reply(bye.encode("ascii"), close=True)
