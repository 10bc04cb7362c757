"""The POP3 protocol trace: what each session said, line by line, credentials redacted.

The service (firmware/pop3/server.py) calls a `Tracer` at a few points of a session, only
when `Tracer.active` is true (one attribute check per event when nobody traces). Each call
becomes a `TraceRecord`: session id, peer, wall-clock time, direction ("c->s" or "s->c") and
the line. Commands are written back as the client sent them; replies as their first line;
a multi-line body as "<N octets>" (N: the body's octets without stuffing or terminator).
Secrets never enter a record: the PASS argument, the APOP digest, an AUTH initial response
and every SASL continuation line from the client become "***" (`redact_command`).

Records go to a bounded ring (the console's `trace show`) and to subscribers (`dpfw run
--trace FILE`, `GET /api/v1/trace`), each through a bounded trio memory channel: a subscriber
that does not keep up loses records (counted in `dropped`), the service never waits for it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

import trio

from firmware.pop3.events import (
    BadCommand,
    Command,
    MultilineStart,
    Reply,
    SaslContinuation,
    SaslResponse,
)

REDACTED: Final = "***"
RING_SIZE: Final = 1000
"""Records the ring keeps (the oldest go first)."""
SUBSCRIBER_BUFFER: Final = 1000
"""Records a subscriber may fall behind before it loses records."""

Direction = Literal["c->s", "s->c"]


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One traced line. `time`: seconds since the epoch; `direction`: "c->s" (a command)
    or "s->c" (a reply line or "<N octets>" for a multi-line body)."""

    session: int
    peer: str
    time: float
    direction: Direction
    line: str

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object (the shape of `dpfw run --trace` lines and SSE data)."""
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> TraceRecord:
        """Parse one JSON object; ValueError naming what is missing or wrong."""
        if not isinstance(obj, dict):
            raise ValueError("a trace record must be a JSON object")
        try:
            session, peer, when = obj["session"], obj["peer"], obj["time"]
            direction, line = obj["direction"], obj["line"]
        except KeyError as exc:
            raise ValueError(f"trace record without {exc.args[0]!r}") from None
        if direction not in ("c->s", "s->c"):
            raise ValueError(f"trace record direction {direction!r} is not c->s or s->c")
        if not isinstance(session, int) or not isinstance(line, str):
            raise ValueError("trace record session must be an integer and line a string")
        return cls(session, str(peer), float(when), direction, line)


def redact_command(event: Command | BadCommand | SaslResponse) -> str:
    """A client event as a trace line, secrets replaced by REDACTED.

    PASS's argument (RFC 1939 §7), APOP's digest (RFC 1939 §7), AUTH's initial response
    (RFC 5034 §4) and every SASL response line (RFC 5034 §4) are secrets. A `BadCommand`
    has no line kept by the library: its keyword and problem are shown in angle brackets.
    """
    if isinstance(event, SaslResponse):
        return REDACTED
    if isinstance(event, BadCommand):
        what = f"{event.keyword} " if event.keyword else ""
        return f"<{what}{event.problem.value}>"
    keyword = event.keyword
    if keyword == "PASS":
        return f"PASS {REDACTED}"
    if keyword == "APOP":
        return f"APOP {event.args[0]} {REDACTED}" if event.args else "APOP"
    args = list(event.args)
    if keyword == "AUTH" and len(args) > 1:
        args[1:] = [REDACTED]
    parts = [keyword, *args, *(str(n) for n in event.numbers)]
    return " ".join(parts)


def reply_line(event: Reply | MultilineStart | SaslContinuation) -> str:
    """A server first line as a trace line: "+OK text", "-ERR [CODE] text", or "+ <base64>"
    (a SASL challenge is shown: it holds no secret of the client's)."""
    if isinstance(event, SaslContinuation):
        return f"+ {event.text}".rstrip()
    status = "+OK" if isinstance(event, MultilineStart) or event.ok else "-ERR"
    code = f" [{event.code}]" if event.code else ""
    return f"{status}{code} {event.text}".rstrip()


def body_line(octets: int) -> str:
    """The trace line of a multi-line body of `octets` octets."""
    return f"<{octets} octets>"


def body_octets(line: str) -> int | None:
    """`body_line`'s inverse: the octet count, or None if `line` is not a body line."""
    if line.startswith("<") and line.endswith(" octets>"):
        digits = line[1 : -len(" octets>")]
        if digits.isascii() and digits.isdigit():
            return int(digits)
    return None


class Tracer:
    """One device's trace: the console's switch, a ring of recent records, subscribers.

    `active` is what the service checks before building a record: true while the console
    switched tracing on or anyone subscribes. `clock`: seconds since the epoch.
    """

    def __init__(self, ring_size: int = RING_SIZE, clock: Callable[[], float] = time.time) -> None:
        self.ring: deque[TraceRecord] = deque(maxlen=ring_size)
        self.active = False
        self.dropped = 0
        self._on = False
        self._clock = clock
        self._subscribers: set[trio.MemorySendChannel[TraceRecord]] = set()

    @property
    def on(self) -> bool:
        """The console's switch (`trace on|off`)."""
        return self._on

    @on.setter
    def on(self, value: bool) -> None:
        self._on = value
        self._update()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _update(self) -> None:
        self.active = self._on or bool(self._subscribers)

    def record(self, session: int, peer: str, direction: Direction, line: str) -> None:
        """Add one record to the ring and offer it to every subscriber (never blocks)."""
        rec = TraceRecord(session, peer, self._clock(), direction, line)
        self.ring.append(rec)
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(rec)
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(channel)
        self._update()

    def client(self, session: int, peer: str, event: Command | BadCommand | SaslResponse) -> None:
        self.record(session, peer, "c->s", redact_command(event))

    def server(
        self, session: int, peer: str, event: Reply | MultilineStart | SaslContinuation
    ) -> None:
        self.record(session, peer, "s->c", reply_line(event))

    def body(self, session: int, peer: str, octets: int) -> None:
        self.record(session, peer, "s->c", body_line(octets))

    def show(self, session: int | None = None) -> list[TraceRecord]:
        """The ring's records, oldest first; only `session`'s when given."""
        return [r for r in self.ring if session is None or r.session == session]

    @contextmanager
    def subscribe(
        self, buffer: int = SUBSCRIBER_BUFFER
    ) -> Iterator[trio.MemoryReceiveChannel[TraceRecord]]:
        """Receive every record from now on while inside the block (at most `buffer`
        waiting; more are dropped)."""
        send, receive = trio.open_memory_channel[TraceRecord](buffer)
        self._subscribers.add(send)
        self._update()
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
            self._update()
