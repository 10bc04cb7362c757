"""The POP3 state machine (RFC 1939, RFC 2449, RFC 3206), sans I/O.

One `Pop3Protocol` per connection: the adapter hands it one command line at a time and gets
exactly one `Reply` back, which says what to send, whether to wait first (a failed login) and
whether to close afterwards. No sockets, timers or files in here; the store is reached only
through `Mailstore`, and message bodies come back as a `MultilineBody` the adapter pulls chunk
by chunk, so a message of any size passes through in bounded memory.
"""

from __future__ import annotations

import logging
import sys
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from firmware.config.budget import RamBudget
from firmware.config.profile import Profile
from firmware.errors import CorruptRecordError, DeviceError, MemoryFullError
from firmware.pop3.auth import LEGACY_METHODS, apop_matches, make_apop_timestamp
from firmware.pop3.framing import (
    LINE_NEVER_ENDS,
    LINE_TOO_LONG,
    MAX_COMMAND_LINE,
    LineTooLong,
    MultilineBody,
    fixed_body,
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
    decode_initial_response,
    decode_response,
    encode,
    is_cancel,
    new_mechanism,
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


def parse_number(text: str) -> int | None:
    """An RFC 1939 number argument (message number, TOP line count), or None if it is not one.

    One or more ASCII digits, any length, leading zeros allowed ("0002" is 2); no sign, no
    spaces, no other scripts' digits. Every numeric argument of every command is read here.
    """
    if not text or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def _arguments(rest: str) -> list[str]:
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
    """

    head: bytes
    body: MultilineBody | None = None
    close: bool = False
    delay: float = 0.0
    starttls: bool = False
    stored: tuple[str, str] | None = None

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


def _line(text: str) -> bytes:
    """One reply line: no CR/LF inside, at most 512 octets with its CRLF."""
    raw = text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")
    if len(raw) > _MAX_REPLY_LINE:
        raw = raw[:_MAX_REPLY_LINE].decode("utf-8", "ignore").encode("utf-8")
    return raw + b"\r\n"


_OK: Final = Reply(b"+OK\r\n")
_NO_SIZES: Final = array("q")
_CAPA_HEAD: Final = b"+OK capability list follows\r\n"


class Pop3Protocol:
    """One POP3 session's state: AUTHORIZATION -> TRANSACTION -> UPDATE, then closed."""

    __slots__ = (
        "_auth_failures",
        "_bad_count",
        "_budget",
        "_clock",
        "_deleted",
        "_guard",
        "_live_count",
        "_live_octets",
        "_locks",
        "_profile",
        "_retrieved",
        "_sasl",
        "_sizes",
        "_stats",
        "_store",
        "_timestamp",
        "_uids",
        "_user_name",
        "box",
        "peer",
        "session_id",
        "state",
        "tls_active",
        "tls_available",
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
    ) -> None:
        """`peer` is the client address (logged, and the key of login penalties); `guard` is
        the service's shared LoginGuard (a private one if None); `tls_available` says STLS
        can be offered (the device has a certificate)."""
        self._store = store
        self._profile = profile
        self._locks = locks
        self._budget = budget
        self._clock = clock
        self._stats = stats if stats is not None else Pop3Stats()
        self.session_id = session_id
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.peer = peer
        self._guard = guard if guard is not None else LoginGuard(0.0, clock=clock)
        self._sasl: SaslMechanism | None = None
        self.state = State.AUTHORIZATION
        self.box: str | None = None
        self._timestamp: str | None = None
        self._user_name: str | None = None
        self._auth_failures = 0
        self._bad_count = 0
        # The session's snapshot of the box, kept compact: idle logged-in sessions are many.
        self._uids: tuple[str, ...] = ()
        self._sizes: array[int] = _NO_SIZES
        self._deleted: set[int] | None = None
        self._retrieved: set[int] | None = None
        self._live_count = 0
        self._live_octets = 0

    # -- entry points --------------------------------------------------------------------

    def greeting(self) -> Reply:
        """The `+OK` greeting, with a fresh APOP timestamp when APOP is offered."""
        profile = self._profile()
        text = f"+OK {profile.model} POP3 service ready"
        if profile.bool("pop3.apop"):
            self._timestamp = make_apop_timestamp(profile.str("identity.hostname"))
            text += " " + self._timestamp
        return Reply(_line(text))

    def receive_line(self, line: bytes | LineTooLong) -> Reply:
        """Handle one command line (without its line end); always exactly one reply."""
        if self.state is not State.AUTHORIZATION and self.state is not State.TRANSACTION:
            return Reply(b"-ERR session is over\r\n", close=True)
        if line is LINE_NEVER_ENDS:
            self._sasl = None
            authlog.log_event("limit", self.peer, limit="line-length", session=self.session_id)
            return Reply(b"-ERR line too long and still no line end; closing\r\n", close=True)
        if self._sasl is not None:
            return self._sasl_response(line)
        if line is LINE_TOO_LONG:
            return self._bad("-ERR line too long; commands are at most 255 octets")
        assert isinstance(line, bytes)
        keyword, _, rest = line.decode("utf-8", "replace").partition(" ")
        keyword = keyword.upper()
        commands = _AUTH_COMMANDS if self.state is State.AUTHORIZATION else _TRANS_COMMANDS
        handler = commands.get(keyword)
        counted = keyword if keyword in _ALL_KEYWORDS else "unknown"
        self._stats.commands[counted] = self._stats.commands.get(counted, 0) + 1
        if handler is None:
            if keyword in _ALL_KEYWORDS:
                return self._bad(f"-ERR {keyword} is not valid in the {self.state.value} state")
            return self._bad("-ERR unknown command")
        reply = handler(self, rest)
        if reply.ok:
            self._bad_count = 0
        return reply

    @property
    def line_limit(self) -> int:
        """The longest client line (CRLF included) to accept next: longer inside SASL."""
        return MAX_COMMAND_LINE if self._sasl is None else SASL_LINE_LIMIT

    def end(self) -> None:
        """Leave the session without UPDATE: drop marks, give the box lock back. Idempotent."""
        self._sasl = None
        if self.box is not None:
            self._locks.release(self.box, self.session_id)
        self.state = State.CLOSED
        self._deleted = self._retrieved = None
        self._uids, self._sizes = (), _NO_SIZES

    # -- helpers -------------------------------------------------------------------------

    def _bad(self, text: str) -> Reply:
        self._bad_count += 1
        if self._bad_count >= MAX_BAD_COMMANDS:
            return Reply(b"-ERR too many bad commands; closing\r\n", close=True)
        return Reply(_line(text))

    def _plaintext_allowed(self) -> bool:
        return self.tls_active or self._profile().str("pop3.plaintext_auth") == "always"

    def _message_index(self, arg: str) -> int | Reply:
        """0-based index of a live message named by `arg`, or the -ERR reply to send."""
        number = parse_number(arg)
        if number is None:
            return self._bad("-ERR a message number is a decimal number (1, 2, ...)")
        count = len(self._uids)
        if number < 1 or number > count:
            there = "there are no messages" if not count else f"messages are 1 to {count}"
            return self._bad(f"-ERR no message {number}; {there}")
        if self._deleted is not None and number - 1 in self._deleted:
            return self._bad(f"-ERR message {number} is deleted")
        return number - 1

    def _one_message(
        self, keyword: str, rest: str, *, optional: bool = False
    ) -> int | Reply | None:
        """The index named by a command's one message-number argument; None if optional and
        absent; or the -ERR reply to send."""
        args = _arguments(rest)
        if not args and optional:
            return None
        if len(args) != 1:
            many = "at most one message number" if optional else "one message number"
            return self._bad(f"-ERR {keyword} takes {many}")
        return self._message_index(args[0])

    def _no_args(self, keyword: str, rest: str) -> Reply | None:
        return None if not rest.strip() else self._bad(f"-ERR {keyword} takes no arguments")

    def _live_indexes(self) -> Iterator[int]:
        deleted = self._deleted or ()
        return (i for i in range(len(self._uids)) if i not in deleted)

    def _listing_body(self, column: Sequence[object]) -> MultilineBody:
        """`n value` lines for live messages, built in batches so huge boxes stay bounded."""

        def batches() -> Iterator[bytes]:
            lines: list[str] = []
            for i in self._live_indexes():
                lines.append(f"{i + 1} {column[i]}\r\n")
                if len(lines) >= _LISTING_BATCH:
                    yield "".join(lines).encode("ascii")
                    lines.clear()
            if lines:
                yield "".join(lines).encode("ascii")

        return MultilineBody(batches())

    def _mechanisms(self) -> tuple[str, ...]:
        profile = self._profile()
        return offered_mechanisms(
            tls_active=self.tls_active,
            plaintext_auth=profile.str("pop3.plaintext_auth"),
            legacy=profile.bool("pop3.apop"),
        )

    def _capabilities(self) -> list[bytes]:
        profile = self._profile()
        caps = [b"TOP\r\n", b"UIDL\r\n"]
        if self._plaintext_allowed():
            caps.append(b"USER\r\n")
        if self.state is State.AUTHORIZATION and self.tls_available and not self.tls_active:
            caps.append(b"STLS\r\n")
        caps.append(("SASL " + " ".join(self._mechanisms()) + "\r\n").encode("ascii"))
        caps += [b"RESP-CODES\r\n", b"AUTH-RESP-CODE\r\n", b"PIPELINING\r\n"]
        expire = profile.int("pop3.expire_days")
        if expire >= 0:
            caps.append(b"EXPIRE %d\r\n" % expire)
        login_delay = profile.int("pop3.login_delay_s")
        if login_delay > 0:
            caps.append(b"LOGIN-DELAY %d\r\n" % login_delay)
        version = profile.str("identity.firmware_version")
        caps.append(_line(f"IMPLEMENTATION dpfw {profile.model} firmware {version}"))
        return caps

    # -- AUTHORIZATION -------------------------------------------------------------------

    def _cmd_user(self, rest: str) -> Reply:
        if not self._plaintext_allowed():
            return self._bad("-ERR [AUTH] USER/PASS are refused without TLS on this device")
        name = rest.strip()
        if not name or " " in name:
            return self._bad("-ERR USER takes one mailbox name")
        self._user_name = name
        return Reply(b"+OK send PASS\r\n")

    def _cmd_pass(self, rest: str) -> Reply:
        name, self._user_name = self._user_name, None
        if name is None:
            return self._bad("-ERR send USER first")
        if not self._plaintext_allowed():
            return self._bad("-ERR [AUTH] USER/PASS are refused without TLS on this device")
        return self._login(
            name, "PASS", lambda: bool(rest) and self._store.check_password(name, rest)
        )

    def _cmd_apop(self, rest: str) -> Reply:
        self._user_name = None
        if self._timestamp is None or not self._profile().bool("pop3.apop"):
            return self._bad("-ERR APOP is not offered on this device")
        parts = _arguments(rest)
        if len(parts) != 2:
            return self._bad("-ERR APOP takes a mailbox name and a digest")
        name, digest = parts
        timestamp = self._timestamp
        secret = self._store.apop_secret(name)
        if secret is None:
            return self._no_legacy_secret(name, "APOP")
        return self._login(name, "APOP", lambda: apop_matches(timestamp, secret, digest))

    def _cmd_stls(self, rest: str) -> Reply:
        bad = self._no_args("STLS", rest)
        if bad:
            return bad
        if self.tls_active:
            return self._bad("-ERR TLS is already active")
        if not self.tls_available:
            return self._bad("-ERR STLS is not offered: the device has no TLS certificate")
        self._user_name = None  # RFC 2595 §4: nothing said before TLS carries over
        return Reply(b"+OK begin TLS negotiation\r\n", starttls=True)

    def _cmd_auth(self, rest: str) -> Reply:
        """RFC 5034 AUTH; with no argument, list the mechanisms (what Outlook asks)."""
        self._user_name = None
        offered = self._mechanisms()
        args = _arguments(rest)
        if not args:
            names = [name.encode("ascii") + b"\r\n" for name in offered]
            return Reply(b"+OK SASL mechanisms follow\r\n", fixed_body(names))
        if len(args) > 2:
            return self._bad("-ERR AUTH takes a mechanism and an optional initial response")
        mechanism = new_mechanism(
            args[0],
            offered=offered,
            credentials_for=self._store.credentials,
            hostname=self._profile().str("identity.hostname"),
        )
        if mechanism is None:
            if args[0].upper() == "PLAIN":
                return self._bad("-ERR [AUTH] PLAIN is refused without TLS on this device")
            return self._bad(f"-ERR mechanism not offered; try {' '.join(offered)}")
        initial: bytes | None = None
        if len(args) == 2:
            try:
                initial = decode_initial_response(args[1].encode("utf-8"))
            except SaslEncodingError:
                return self._login_failed(None, mechanism.name, MALFORMED)
        return self._sasl_next(mechanism, mechanism.start(initial))

    def _sasl_response(self, line: bytes | LineTooLong) -> Reply:
        """A client line inside an AUTH exchange: `*` cancels, anything else is base64."""
        mechanism, self._sasl = self._sasl, None
        assert mechanism is not None
        if line is LINE_TOO_LONG:
            return self._login_failed(None, mechanism.name, OVERSIZED)
        assert isinstance(line, bytes)
        if is_cancel(line):
            return self._bad("-ERR AUTH cancelled")
        try:
            response = decode_response(line)
        except SaslEncodingError:
            return self._login_failed(None, mechanism.name, MALFORMED)
        return self._sasl_next(mechanism, mechanism.step(response))

    def _sasl_next(self, mechanism: SaslMechanism, step: Step) -> Reply:
        if isinstance(step, Challenge):
            self._sasl = mechanism
            return Reply(b"+ " + encode(step.data) + b"\r\n")
        if isinstance(step, Success):
            return self._login(step.box, mechanism.name, lambda: True)
        if step.reason == NO_LEGACY_SECRET and step.box is not None:
            return self._no_legacy_secret(step.box, mechanism.name)
        return self._login_failed(step.box, mechanism.name, step.reason)

    def _no_legacy_secret(self, name: str, mech: str) -> Reply:
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
        return self._bad(
            f"-ERR [AUTH] no {LEGACY_METHODS} secret is kept for {name}; "
            "log in another way (see CAPA)"
        )

    def _login_failed(self, name: str | None, mech: str, reason: str) -> Reply:
        """Count and log a failed login; the reply waits the client's growing penalty."""
        profile = self._profile()
        self._auth_failures += 1
        self._stats.logins_failed += 1
        self._stats.note_login(mech, False)
        self._guard.penalty.base_delay_s = profile.float("pop3.auth_failure_delay_s")
        delay = self._guard.failed(self.peer, name)
        close = self._auth_failures >= profile.int("pop3.max_auth_failures")
        authlog.log_event(
            "auth-fail", self.peer, box=name, mech=mech, reason=reason, session=self.session_id
        )
        if close:
            authlog.log_event("limit", self.peer, limit="auth-failures", session=self.session_id)
        return Reply(b"-ERR [AUTH] invalid mailbox name or password\r\n", close=close, delay=delay)

    def _login(self, name: str, mech: str, check: Callable[[], bool]) -> Reply:
        """The one login path: lock-out, credentials, box lock, LOGIN-DELAY, snapshot."""
        if self._guard.refusal(name) is not None:
            return self._login_failed(name, mech, BOX_LOCKED)
        if not check():
            return self._login_failed(name, mech, BAD_CREDENTIALS)
        self._guard.succeeded(self.peer, name)
        profile = self._profile()
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
                _line(
                    f"-ERR [LOGIN-DELAY] wait {plural(login_delay, 'second')} "
                    "between logins to a box"
                )
            )
        try:
            listing = self._store.messages(name)
        except CorruptRecordError as exc:
            self._locks.release(name, self.session_id)
            return Reply(_line(f"-ERR [SYS/PERM] mailbox cannot be read: {exc}"))
        except DeviceError as exc:
            self._locks.release(name, self.session_id)
            return Reply(_line(f"-ERR [SYS/TEMP] mailbox cannot be opened now: {exc}"))
        self._locks.note_login(name, now)
        self._stats.logins_ok += 1
        self._stats.note_login(mech, True)
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
        self._uids = tuple(m.uid for m in listing)
        self._sizes = array("q", (m.size for m in listing))
        self._live_count = len(self._uids)
        self._live_octets = sum(self._sizes)
        return Reply(
            _line(
                f"+OK {name} has {plural(self._live_count, 'message')} "
                f"({plural(self._live_octets, 'octet')})"
            )
        )

    def _cmd_quit(self, rest: str) -> Reply:
        bad = self._no_args("QUIT", rest)
        if bad:
            return bad
        if self.state is State.TRANSACTION:
            return self._update()
        self.end()
        return Reply(b"+OK signing off\r\n", close=True)

    def _cmd_capa(self, rest: str) -> Reply:
        bad = self._no_args("CAPA", rest)
        return bad or Reply(_CAPA_HEAD, fixed_body(self._capabilities()))

    # -- TRANSACTION ---------------------------------------------------------------------

    def _cmd_stat(self, rest: str) -> Reply:
        bad = self._no_args("STAT", rest)
        return bad or Reply(b"+OK %d %d\r\n" % (self._live_count, self._live_octets))

    def _cmd_list(self, rest: str) -> Reply:
        index = self._one_message("LIST", rest, optional=True)
        if isinstance(index, Reply):
            return index
        if index is not None:
            return Reply(b"+OK %d %d\r\n" % (index + 1, self._sizes[index]))
        count, size = plural(self._live_count, "message"), plural(self._live_octets, "octet")
        head = f"+OK {count} ({size})\r\n".encode("ascii")
        return Reply(head, self._listing_body(self._sizes))

    def _cmd_uidl(self, rest: str) -> Reply:
        index = self._one_message("UIDL", rest, optional=True)
        if isinstance(index, Reply):
            return index
        if index is not None:
            return Reply(_line(f"+OK {index + 1} {self._uids[index]}"))
        return Reply(
            b"+OK unique-id listing follows\r\n",
            self._listing_body(self._uids),
        )

    def _stream(self, index: int, top_lines: int | None) -> Reply:
        assert self.box is not None
        uid = self._uids[index]
        what = "RETR" if top_lines is None else "TOP"
        try:
            reservation = self._budget.reserve(STREAM_CHUNK, f"POP3 {what} buffer")
        except MemoryFullError:
            return Reply(b"-ERR [SYS/TEMP] out of memory; try again later\r\n")
        try:
            if top_lines is None:
                chunks = self._store.read_wire(self.box, uid, STREAM_CHUNK)
            else:
                chunks = self._store.read_top(self.box, uid, top_lines, STREAM_CHUNK)
            first = next(chunks, b"")
        except CorruptRecordError as exc:
            reservation.release()
            log.error("POP3 %s of %s/%s: %s", what, self.box, uid, exc)
            return Reply(_line(f"-ERR [SYS/PERM] message {index + 1} is damaged: {exc}"))
        except DeviceError as exc:
            reservation.release()
            return Reply(_line(f"-ERR [SYS/TEMP] message {index + 1} cannot be read: {exc}"))
        except BaseException:
            reservation.release()
            raise
        body = MultilineBody(chunks, first=first, on_close=reservation.release)
        if top_lines is None:
            self._stats.messages_retrieved += 1
            if self._retrieved is None:
                self._retrieved = set()
            self._retrieved.add(index)
            return Reply(b"+OK %d octets\r\n" % self._sizes[index], body, stored=(self.box, uid))
        return Reply(b"+OK top of message follows\r\n", body)

    def _cmd_retr(self, rest: str) -> Reply:
        index = self._one_message("RETR", rest)
        assert index is not None
        return index if isinstance(index, Reply) else self._stream(index, None)

    def _cmd_top(self, rest: str) -> Reply:
        parts = _arguments(rest)
        if len(parts) != 2:
            return self._bad("-ERR TOP takes a message number and a line count")
        index = self._message_index(parts[0])
        if isinstance(index, Reply):
            return index
        count = parse_number(parts[1])
        if count is None:
            return self._bad("-ERR a TOP line count is a decimal number (0, 1, ...)")
        # RFC 1939 §7 sets no bound; a count beyond the body sends the whole body. Clamped
        # only so that the store sees a machine-sized integer.
        return self._stream(index, min(count, sys.maxsize))

    def _cmd_dele(self, rest: str) -> Reply:
        index = self._one_message("DELE", rest)
        assert index is not None
        if isinstance(index, Reply):
            return index
        if self._deleted is None:
            self._deleted = set()
        self._deleted.add(index)
        self._live_count -= 1
        self._live_octets -= self._sizes[index]
        return Reply(b"+OK message %d deleted\r\n" % (index + 1))

    def _cmd_noop(self, rest: str) -> Reply:
        return self._no_args("NOOP", rest) or _OK

    def _cmd_rset(self, rest: str) -> Reply:
        bad = self._no_args("RSET", rest)
        if bad:
            return bad
        self._deleted = self._retrieved = None
        self._live_count = len(self._uids)
        self._live_octets = sum(self._sizes)
        return Reply(
            f"+OK maildrop has {plural(self._live_count, 'message')} "
            f"({plural(self._live_octets, 'octet')})\r\n".encode("ascii")
        )

    # -- UPDATE --------------------------------------------------------------------------

    def _update(self) -> Reply:
        """Commit this session's deletions in one atomic store call, then end the session."""
        assert self.box is not None
        doomed = set(self._deleted or ())
        if self._retrieved and self._profile().int("pop3.expire_days") == 0:
            doomed |= self._retrieved
        uids = [self._uids[i] for i in sorted(doomed)]
        left = len(self._uids) - len(uids)
        self.state = State.UPDATE
        try:
            if uids:
                self._store.delete(self.box, uids)
        except CorruptRecordError as exc:
            self._stats.commits_failed += 1
            return Reply(_line(f"-ERR [SYS/PERM] no messages removed: {exc}"), close=True)
        except DeviceError as exc:
            self._stats.commits_failed += 1
            return Reply(_line(f"-ERR [SYS/TEMP] no messages removed: {exc}"), close=True)
        finally:
            self.end()
        self._stats.messages_deleted += len(uids)
        bye = f"+OK signing off ({plural(left, 'message')} left)\r\n"
        return Reply(bye.encode("ascii"), close=True)


_Handler = Callable[[Pop3Protocol, str], Reply]

_AUTH_COMMANDS: Final[dict[str, _Handler]] = {
    "USER": Pop3Protocol._cmd_user,
    "PASS": Pop3Protocol._cmd_pass,
    "APOP": Pop3Protocol._cmd_apop,
    "AUTH": Pop3Protocol._cmd_auth,
    "STLS": Pop3Protocol._cmd_stls,
    "QUIT": Pop3Protocol._cmd_quit,
    "CAPA": Pop3Protocol._cmd_capa,
}
_TRANS_COMMANDS: Final[dict[str, _Handler]] = {
    "STAT": Pop3Protocol._cmd_stat,
    "LIST": Pop3Protocol._cmd_list,
    "RETR": Pop3Protocol._cmd_retr,
    "DELE": Pop3Protocol._cmd_dele,
    "NOOP": Pop3Protocol._cmd_noop,
    "RSET": Pop3Protocol._cmd_rset,
    "QUIT": Pop3Protocol._cmd_quit,
    "TOP": Pop3Protocol._cmd_top,
    "UIDL": Pop3Protocol._cmd_uidl,
    "CAPA": Pop3Protocol._cmd_capa,
}
_ALL_KEYWORDS: Final = frozenset(_AUTH_COMMANDS) | frozenset(_TRANS_COMMANDS)
