"""The console's line discipline: bytes from a serial line in, edited lines and echo out.

A serial console sees whatever the wire carries: keystrokes, pasted text, terminal escape
sequences, and noise from a wrong baud rate. This editor accepts printable ASCII into one
bounded line, edits it (backspace/DEL, Ctrl-U), treats CR, LF or CRLF as Enter, turns
Ctrl-C and Ctrl-D into events, swallows escape sequences (arrow keys) and drops every other
byte. It is fed one byte at a time so the shell can change the echo mode between two lines of
one pasted chunk (a command, then a secret).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MAX_LINE = 255  # characters; longer lines are refused whole, never truncated and run

CR, LF, BS, DEL, ESC, BEL = 0x0D, 0x0A, 0x08, 0x7F, 0x1B, 0x07
CTRL_C, CTRL_D, CTRL_U = 0x03, 0x04, 0x15
_MAX_ESCAPE = 16  # a longer "escape sequence" is noise; stop swallowing


class Kind(Enum):
    LINE = "line"  # Enter with an acceptable line
    CANCEL = "cancel"  # Ctrl-C: the line was dropped
    EOF = "eof"  # Ctrl-D
    TOO_LONG = "too_long"  # Enter after a line that overflowed MAX_LINE


@dataclass(frozen=True)
class Event:
    kind: Kind
    text: str = ""


class _Esc(Enum):
    NONE = 0
    START = 1  # after ESC
    CSI = 2  # after ESC [ : parameters until a final byte 0x40..0x7E
    SS3 = 3  # after ESC O : exactly one more byte


class LineEditor:
    """Edits one line at a time. `push(byte)` returns (echo bytes, finished event or None)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.echo = True  # False while a secret is typed: nothing but Enter is echoed
        self._buf: list[str] = []
        self._overflow = False
        self._after_cr = False
        self._esc = _Esc.NONE
        self._esc_len = 0

    @property
    def pending(self) -> int:
        """Characters held in the unfinished line (never more than max_line)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget the unfinished line and any half-read escape sequence."""
        self._buf.clear()
        self._overflow = False
        self._after_cr = False
        self._esc = _Esc.NONE
        self._esc_len = 0

    def push(self, byte: int) -> tuple[bytes, Event | None]:
        after_cr, self._after_cr = self._after_cr, False
        if self._esc is not _Esc.NONE:
            if byte >= 0x20:
                return self._escape(byte), None
            self._esc = _Esc.NONE  # a control byte ends a broken sequence and counts itself
        if byte in (CR, LF):
            if byte == LF and after_cr:
                return b"", None  # the LF of a CRLF pair: Enter was already handled
            self._after_cr = byte == CR
            return b"\r\n", self._finish()
        if 0x20 <= byte < 0x7F:
            return self._insert(chr(byte)), None
        if byte in (BS, DEL):
            return self._erase(1), None
        if byte == CTRL_U:
            return self._erase(len(self._buf)), None
        if byte == CTRL_C:
            self.reset()
            return b"^C\r\n", Event(Kind.CANCEL)
        if byte == CTRL_D:
            self.reset()
            return b"^D\r\n", Event(Kind.EOF)
        if byte == ESC:
            self._esc, self._esc_len = _Esc.START, 0
        return b"", None  # any other control byte or 8-bit noise is dropped

    def _insert(self, char: str) -> bytes:
        if len(self._buf) >= self.max_line:
            first = not self._overflow
            self._overflow = True
            return bytes([BEL]) if first and self.echo else b""
        self._buf.append(char)
        return char.encode("ascii") if self.echo else b""

    def _erase(self, count: int) -> bytes:
        count = min(count, len(self._buf))
        del self._buf[len(self._buf) - count :]
        if not self._buf:
            self._overflow = False
        return b"\b \b" * count if self.echo else b""

    def _finish(self) -> Event:
        text, overflow = "".join(self._buf), self._overflow
        self._buf.clear()
        self._overflow = False
        return Event(Kind.TOO_LONG) if overflow else Event(Kind.LINE, text)

    def _escape(self, byte: int) -> bytes:
        self._esc_len += 1
        if self._esc is _Esc.START:
            self._esc = {ord("["): _Esc.CSI, ord("O"): _Esc.SS3}.get(byte, _Esc.NONE)
        elif self._esc is _Esc.SS3 or 0x40 <= byte <= 0x7E or self._esc_len > _MAX_ESCAPE:
            self._esc = _Esc.NONE
        return b""
