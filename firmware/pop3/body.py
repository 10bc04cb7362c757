"""Multi-line body framing (RFC 1939 §3): byte-stuffing, un-stuffing and the terminator.

A line of a multi-line reply that starts with `.` is sent with one more `.`; the body ends
with a line holding only `.`. Both directions work on chunks of any size and any boundary
with C-speed `bytes` operations (replace, find), never a Python loop per octet.

Lines are what follows an LF: a `.` after a bare LF is stuffed too, so a client that splits
on LF alone (as many do) cannot be fooled into an early end by a body with bare line ends.
A body that does not end in CRLF gets one before the terminator.
"""

from __future__ import annotations

import re
from typing import Final

TERMINATOR: Final = b".\r\n"
CRLF: Final = b"\r\n"
_DOT: Final = 0x2E
_LF: Final = 0x0A
_CR: Final = 0x0D
_END_LINE: Final = re.compile(rb"\n\.\r?\n")
"""A terminating `.` line inside wire-form octets. One regex pass is ~7x faster than two
`in` tests (whose needles end in LF, which a text holds every few dozen octets)."""


class Stuffer:
    """Writes one body: `feed(chunk)` returns its wire form, `end()` the terminator.

    Memory: three octets of the previous chunk's tail.
    """

    __slots__ = ("_bol", "_tail")

    def __init__(self) -> None:
        self._bol = True  # at the start of a line (also: nothing sent yet)
        self._tail = CRLF  # last (up to) three octets sent; CRLF for an empty body

    def feed(self, chunk: bytes) -> bytes:
        """Byte-stuff raw body octets."""
        if not chunk:
            return b""
        # No dot at all (a memchr) is the common case of a listing: nothing to stuff.
        out = chunk.replace(b"\n.", b"\n..") if b"." in chunk else chunk
        if self._bol and chunk[0] == _DOT:
            out = b"." + out
        self._note(chunk)
        return out

    def feed_wire(self, chunk: bytes) -> bytes | None:
        """Pass already-stuffed octets through; None if they hold a terminating `.` line
        (unstuffed: sending them would end the reply early and inject what follows)."""
        if not chunk:
            return b""
        if b"." in chunk and _END_LINE.search(chunk) is not None:  # memchr first
            return None
        seam = self._tail + chunk[:3]
        if b"\n.\r\n" in seam or b"\n.\n" in seam:
            return None
        self._note(chunk)
        return chunk

    def skip_wire(self, tail: bytes) -> None:
        """Wire-form octets were sent by other means; `tail` is their last (up to 3) octets."""
        if tail:
            self._note(tail[-3:])

    def _note(self, chunk: bytes) -> None:
        self._tail = chunk[-3:] if len(chunk) > 2 else (self._tail + chunk)[-3:]
        self._bol = chunk[-1] == _LF

    def end(self) -> bytes:
        """The terminator, with a CRLF first unless the body already ends in one."""
        return TERMINATOR if self._tail.endswith(CRLF) else CRLF + TERMINATOR


class Unstuffer:
    """Reads one body from a receive buffer: un-stuffs and finds the terminator.

    `read(buf, pos)` consumes as much of `buf[pos:]` as it can and returns
    (body octets, new position, finished). It holds back at most the two octets of a line
    start that could still become the terminator (`.` or `.\\r`).
    A line `.` ended by a bare LF also ends the body (lenient with servers that send it).
    """

    __slots__ = ("_bol",)

    def __init__(self) -> None:
        self._bol = True

    def read(self, buf: bytes, pos: int) -> tuple[bytes, int, bool]:
        end = len(buf)
        pieces: list[bytes] = []
        while pos < end:
            if self._bol:
                if buf[pos] == _DOT:
                    if end - pos < 2:
                        break
                    nxt = buf[pos + 1]
                    if nxt == _LF:
                        return b"".join(pieces), pos + 2, True
                    if nxt == _CR:
                        if end - pos < 3:
                            break
                        if buf[pos + 2] == _LF:
                            return b"".join(pieces), pos + 3, True
                    pos += 1  # a stuffed dot
                self._bol = False
                if pos >= end:
                    break
            found = buf.find(b"\n.", pos)
            if found < 0:
                pieces.append(buf[pos:] if pos else buf)
                self._bol = buf[-1] == _LF
                pos = end
                break
            pieces.append(buf[pos : found + 1])
            pos = found + 1
            self._bol = True
        if len(pieces) == 1:
            return pieces[0], pos, False
        return b"".join(pieces), pos, False
