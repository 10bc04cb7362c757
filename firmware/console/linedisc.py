"""The console's line discipline: bytes from a serial line in, edited lines and echo out.

A serial console sees whatever the wire carries: keystrokes, pasted text, terminal escape
sequences, and noise from a wrong baud rate. This editor accepts printable ASCII into one
bounded line, edits it (backspace/DEL, Ctrl-U), treats CR, LF or CRLF as Enter, turns
Ctrl-C and Ctrl-D into events, reads escape sequences (ECMA-48 CSI `ESC [ ... final`, and
SS3 `ESC O x` from terminals in application-cursor mode) and drops every other byte. It is fed
one byte at a time so the shell can change the echo mode between two lines of one pasted chunk
(a command, then a secret), and an escape sequence split across two reads is still one key.

With `editing` on (the shell's command prompt only) it also keeps a history of the last
HISTORY lines, recalled with Up/Down (`ESC [ A`/`ESC [ B`, `ESC O A`/`ESC O B`), and completes
the word before the cursor with Tab through the shell's `completer`; Left/Right (and Ctrl-A,
Ctrl-E, Home, End) move the cursor. Typing and erasing at the end of the line echo plain text
and `BS SP BS`, as before, for any terminal; in mid-line the echo uses the VT100/ECMA-48
codes every terminal program in use understands (CUB/CUF `ESC [ n D`/`C`, ICH `ESC [ n @`,
DCH `ESC [ n P`, EL `ESC [ K`), so one byte of input never costs more than a few bytes of
echo, even in line noise full of Ctrl-A. With echo off (a password) editing is
off whatever the flag says: a secret is never recorded, recalled or completed, and the cursor
stays at the end of the line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

MAX_LINE = 255  # characters; longer lines are refused whole, never truncated and run

CR, LF, BS, DEL, ESC, BEL = 0x0D, 0x0A, 0x08, 0x7F, 0x1B, 0x07
CTRL_A, CTRL_C, CTRL_D, CTRL_E, CTRL_U, TAB = 0x01, 0x03, 0x04, 0x05, 0x15, 0x09
_MAX_ESCAPE = 16  # a longer "escape sequence" is noise; stop swallowing
HISTORY = 32  # lines remembered for Up/Down (each at most MAX_LINE characters)
MAX_LISTED = 64  # candidates a Tab lists at most

Completer = Callable[[str], tuple[int, list[str]]]
"""`completer(line)` -> (index where the word being completed starts, candidate words)."""


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
        self._pos = 0  # the cursor, 0..len(_buf); at the end unless editing moved it
        self._overflow = False
        self._after_cr = False
        self._esc = _Esc.NONE
        self._esc_len = 0
        self._esc_params = False  # the CSI had parameter bytes (ESC [ 1 ; 5 A is not Up)
        self.editing = False  # history and completion (the shell turns it on at its prompt)
        self.completer: Completer | None = None
        self.prompt = ""  # redrawn after a Tab lists candidates
        self._history: deque[str] = deque(maxlen=HISTORY)
        self._recall: int | None = None  # index into history while Up/Down browse it
        self._draft = ""  # the line being typed when Up was first pressed

    @property
    def pending(self) -> int:
        """Characters held in the unfinished line (never more than max_line)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget the unfinished line and any half-read escape sequence."""
        self._buf.clear()
        self._pos = 0
        self._overflow = False
        self._after_cr = False
        self._esc = _Esc.NONE
        self._esc_len = 0
        self._recall = None
        self._draft = ""

    def clear_history(self) -> None:
        """Forget every remembered line (the shell calls this at logout)."""
        self._history.clear()
        self._recall = None
        self._draft = ""

    @property
    def history(self) -> list[str]:
        """The remembered lines, oldest first."""
        return list(self._history)

    def _editing(self) -> bool:
        return self.editing and self.echo

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
        if byte == TAB and self._editing():
            return self._complete(), None
        if byte == CTRL_U:
            return self._erase_line(), None
        if byte in (CTRL_A, CTRL_E) and self._editing():
            return self._move_to(0 if byte == CTRL_A else len(self._buf)), None
        if byte == CTRL_C:
            self.reset()
            return b"^C\r\n", Event(Kind.CANCEL)
        if byte == CTRL_D:
            self.reset()
            return b"^D\r\n", Event(Kind.EOF)
        if byte == ESC:
            self._esc, self._esc_len, self._esc_params = _Esc.START, 0, False
        return b"", None  # any other control byte or 8-bit noise is dropped

    def _insert(self, text: str) -> bytes:
        if len(self._buf) + len(text) > self.max_line:
            first = not self._overflow
            self._overflow = True
            return bytes([BEL]) if first and self.echo else b""
        in_line = self._pos < len(self._buf)
        self._buf[self._pos : self._pos] = text
        self._pos += len(text)
        if not self.echo:
            return b""
        room = f"\x1b[{len(text)}@" if in_line else ""  # ICH: open a gap, the tail moves right
        return (room + text).encode("ascii")

    def _erase(self, count: int) -> bytes:
        """Erase `count` characters before the cursor."""
        count = min(count, self._pos)
        in_line = self._pos < len(self._buf)
        del self._buf[self._pos - count : self._pos]
        self._pos -= count
        if not self._buf:
            self._overflow = False
        if not self.echo or not count:
            return b""
        if not in_line:
            return b"\b \b" * count
        return _cursor(-count) + f"\x1b[{count}P".encode()  # DCH: the tail moves left

    def _erase_line(self) -> bytes:
        if self._pos == len(self._buf):
            return self._erase(len(self._buf))
        out = _cursor(-self._pos) + b"\x1b[K" if self.echo else b""  # EL: erase to the end
        self._buf.clear()
        self._pos = 0
        self._overflow = False
        return out

    def _move_to(self, pos: int) -> bytes:
        pos = max(0, min(pos, len(self._buf)))
        old, self._pos = self._pos, pos
        return _cursor(pos - old) if self.echo else b""

    def _finish(self) -> Event:
        text, overflow = "".join(self._buf), self._overflow
        self._buf.clear()
        self._pos = 0
        self._overflow = False
        recording = self._editing()
        self._recall, self._draft = None, ""
        if overflow:
            return Event(Kind.TOO_LONG)
        if recording and text.strip() and (not self._history or self._history[-1] != text):
            self._history.append(text)
        return Event(Kind.LINE, text)

    def _escape(self, byte: int) -> bytes:
        self._esc_len += 1
        if self._esc is _Esc.START:
            self._esc = {ord("["): _Esc.CSI, ord("O"): _Esc.SS3}.get(byte, _Esc.NONE)
            return b""
        if self._esc is _Esc.SS3 or 0x40 <= byte <= 0x7E:
            key = None if self._esc_params else byte  # modified arrows (ESC [ 1;5A) do nothing
            self._esc = _Esc.NONE
            if key == ord("A"):
                return self._browse(-1)
            if key == ord("B"):
                return self._browse(+1)
            if self._editing() and key in (ord("C"), ord("D"), ord("H"), ord("F")):
                target = {
                    ord("C"): self._pos + 1,
                    ord("D"): self._pos - 1,
                    ord("H"): 0,
                    ord("F"): len(self._buf),
                }[key]
                return self._move_to(target)
            return b""
        self._esc_params = True
        if self._esc_len > _MAX_ESCAPE:
            self._esc = _Esc.NONE
        return b""

    # ----- history and completion (only while editing, never with echo off) -----

    def _browse(self, step: int) -> bytes:
        """Up (-1) or Down (+1): show an older or newer remembered line in place."""
        if not self._editing() or not self._history:
            return b""
        last = len(self._history)  # the draft's place, after the newest line
        current = last if self._recall is None else self._recall
        target = max(0, min(last, current + step))
        if target == current:
            return bytes([BEL])
        if self._recall is None:
            self._draft = "".join(self._buf)
        self._recall = None if target == last else target
        return self._replace(self._draft if target == last else self._history[target])

    def _replace(self, text: str) -> bytes:
        out = self._erase_line()
        return out + self._insert(text[: self.max_line])

    def _complete(self) -> bytes:
        """Tab: one candidate completes the word; several extend it to their common prefix,
        or are listed under the line (as bash does) when there is nothing to add."""
        if self.completer is None or self._overflow:
            return bytes([BEL])
        line = "".join(self._buf[: self._pos])  # the word before the cursor is completed
        start, found = self.completer(line)
        start = max(0, min(start, len(line)))
        word = line[start:]
        found = sorted({c for c in found if c.startswith(word) and c.isascii() and c.isprintable()})
        if not found:
            return bytes([BEL])
        if len(found) == 1:  # a word ending in "=" (scan's pages=) takes its value next
            addition = found[0][len(word) :] + ("" if found[0].endswith("=") else " ")
        else:
            addition = _common_prefix(found)[len(word) :]
        if len(self._buf) + len(addition) > self.max_line:
            return bytes([BEL])
        if addition:
            return self._insert(addition)
        listed = found[:MAX_LISTED]
        more = f"  (+{len(found) - len(listed)} more)" if len(found) > len(listed) else ""
        whole = "".join(self._buf)
        redraw = "\r\n" + "  ".join(listed) + more + "\r\n" + self.prompt + whole
        return redraw.encode("ascii", "replace") + _cursor(self._pos - len(whole))


def _cursor(step: int) -> bytes:
    """Move the terminal's cursor `step` columns (negative: left): BS for one, else CUB/CUF."""
    if step == -1:
        return b"\b"
    if step < 0:
        return f"\x1b[{-step}D".encode()
    return f"\x1b[{step}C".encode() if step else b""


def _common_prefix(words: list[str]) -> str:
    first, last = min(words), max(words)
    size = 0
    while size < len(first) and first[size] == last[size]:
        size += 1
    return first[:size]
