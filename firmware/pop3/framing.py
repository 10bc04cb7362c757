"""Bounded command-line reader and multi-line reply terminator for POP3.

Framing is kept apart from the protocol so its two promises can be tested on their own:
memory stays bounded whatever a peer sends (an endless line is dropped, not buffered, and
reported so that the peer can be disconnected), and every multi-line reply ends in exactly one
CRLF.CRLF whatever chunks the store hands back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import Enum
from typing import Final

MAX_COMMAND_LINE: Final = 255
"""Octets per command line including CRLF that a CAPA server must accept (RFC 2449 §4)."""

TERMINATOR: Final = b".\r\n"
CRLF: Final = b"\r\n"


class LineTooLong(Enum):
    """Markers the reader returns in place of a line it will not hand out.

    TOKEN (`LINE_TOO_LONG`): a line crossed the reader's limit; reported once, when it does.
    ENDLESS (`LINE_NEVER_ENDS`): that same line then went on past `max_discard` octets without
    a line end; reported once, after which the reader drops everything (the peer is to be
    disconnected).
    """

    TOKEN = "line too long"
    ENDLESS = "line never ends"


LINE_TOO_LONG: Final = LineTooLong.TOKEN
LINE_NEVER_ENDS: Final = LineTooLong.ENDLESS

MAX_DISCARD: Final = 65536
"""Octets of one over-long line before its LF (a CR counts) past which the reader gives up."""


class LineReader:
    """Splits received bytes into command lines without ever holding more than it must.

    A line ends at LF; a CR before it is dropped. A line longer than `limit` octets (its line
    end included) is reported once as LINE_TOO_LONG as soon as the limit is crossed, and the
    rest of it is discarded up to its LF. If more than `max_discard` octets of it arrive with
    no LF, LINE_NEVER_ENDS follows once and every later byte is dropped: the caller closes the
    connection. Both depend only on the line's length, not on how the bytes were chunked.
    Complete lines received together (PIPELINING) are handed out one at a time, in order.
    Idle readers hold only an empty bytes object.
    """

    __slots__ = ("_buf", "_discarded", "_discarding", "_ended", "_limit", "_max_discard", "_pos")

    def __init__(self, limit: int = MAX_COMMAND_LINE, *, max_discard: int = MAX_DISCARD) -> None:
        if limit < 3:
            raise ValueError(f"a line limit must allow at least one octet and CRLF ({limit})")
        if max_discard < limit:
            raise ValueError(f"max_discard ({max_discard}) must be at least the limit ({limit})")
        self._limit = limit
        self._max_discard = max_discard
        self._buf = b""
        self._pos = 0
        self._discarding = False
        self._discarded = 0  # octets of the over-long line seen so far
        self._ended: bool | None = None  # None: open; False: LINE_NEVER_ENDS due; True: given

    @property
    def limit(self) -> int:
        """Octets per line including its line end; raised during a SASL exchange."""
        return self._limit

    @limit.setter
    def limit(self, limit: int) -> None:
        if limit < 3:
            raise ValueError(f"a line limit must allow at least one octet and CRLF ({limit})")
        self._limit = limit
        self._max_discard = max(self._max_discard, limit)

    @property
    def buffered(self) -> int:
        """Octets received but not yet handed out as lines."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Add received bytes; call next_line() until it returns None before feeding more."""
        if not data or self._ended is not None:
            return
        if self._discarding:
            end = data.find(b"\n")
            if not self._count_discarded(len(data) if end < 0 else end):
                return
            if end < 0:
                return
            self._discarding = False
            data = data[end + 1 :]
        if self._pos == len(self._buf):
            self._buf, self._pos = data, 0
        else:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0

    def _count_discarded(self, octets: int) -> bool:
        """Add octets of the over-long line; False (and give up) once it is past max_discard."""
        self._discarded += octets
        if self._discarded <= self._max_discard:
            return True
        self._ended = False
        self._discarding = True
        self._buf, self._pos = b"", 0
        return False

    def next_line(self) -> bytes | LineTooLong | None:
        """The next complete line without its line end, a LineTooLong marker, or None."""
        if self._ended is not None:
            if self._ended:
                return None
            self._ended = True
            return LINE_NEVER_ENDS
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n", pos, pos + self._limit)
        if end >= 0:
            line = buf[pos:end]
            self._consume(end + 1)
            return line[:-1] if line.endswith(b"\r") else line
        if len(buf) - pos < self._limit:
            return None
        # Over the limit with no line end in sight: report once, keep none of it.
        end = buf.find(b"\n", pos + self._limit)
        self._discarded = 0
        if end >= 0:
            self._consume(end + 1)
            self._count_discarded(end - pos)
        else:
            self._buf, self._pos = b"", 0
            self._discarding = True
            self._count_discarded(len(buf) - pos)
        return LINE_TOO_LONG

    def _consume(self, upto: int) -> None:
        if upto >= len(self._buf):
            self._buf, self._pos = b"", 0
        else:
            self._pos = upto


class MultilineBody:
    """The chunks after a multi-line reply's first line, ending in exactly one CRLF.CRLF.

    The chunks are already byte-stuffed (the store keeps messages in wire form), so this adds
    no per-line work: it only watches the last two octets so that a body that does not end in
    CRLF still gets a line end before the terminating dot. `close()` gives back whatever the
    body holds (store iterators, RAM reservations) and must be called on every exit path.
    """

    __slots__ = ("_chunks", "_done", "_first", "_on_close", "_tail")

    def __init__(
        self,
        chunks: Iterator[bytes],
        *,
        first: bytes = b"",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._chunks = chunks
        self._first = first
        self._tail = CRLF  # an empty body needs no extra line end
        self._done = False
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        if self._first:
            chunk, self._first = self._first, b""
            self._tail = chunk[-2:] if len(chunk) > 1 else self._tail[-1:] + chunk
            return chunk
        for chunk in self._chunks:
            if chunk:
                self._tail = chunk[-2:] if len(chunk) > 1 else self._tail[-1:] + chunk
                return chunk
        self._done = True
        return TERMINATOR if self._tail == CRLF else CRLF + TERMINATOR

    def take_first(self) -> bytes:
        """The chunk read ahead (b"" if none); iteration goes on after it.

        For an adapter that sends the rest of a stored message by other means: it gets the
        bytes already read, and `close()` still releases everything.
        """
        chunk, self._first = self._first, b""
        if chunk:
            self._tail = chunk[-2:] if len(chunk) > 1 else self._tail[-1:] + chunk
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


def fixed_body(lines: list[bytes]) -> MultilineBody:
    """A multi-line body built from our own short lines (LIST, UIDL, CAPA), none starting '.'."""
    return MultilineBody(iter((b"".join(lines),)) if lines else iter(()))
