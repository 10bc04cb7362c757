"""Message bytes to POP3 wire form, incrementally (sans-IO).

A message is stored the way RETR sends it: line ends normalised to CRLF (bare LF and bare CR
become CRLF), a final CRLF added when missing, and every line that starts with "." stuffed with
one more ".". The POP3 size (RFC 1939: CRLF line ends, no stuffing dots) and the header/body
boundary are counted on the way, so neither needs the message again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class WireEncoder:
    """Feed raw chunks, collect wire chunks; state is carried across chunk boundaries."""

    def __init__(self) -> None:
        self.pop3_size = 0  # octets as POP3 counts them (no stuffing dots)
        self.wire_size = 0  # octets stored (with stuffing dots)
        self.header_len: int | None = None  # wire offset just after the blank line, once seen
        self._pending_cr = False  # the previous chunk ended in CR: CRLF or bare CR?
        self._at_line_start = True
        self._tail = b""  # the last wire bytes (up to 3), to find CRLF CRLF across chunks
        self._fed_anything = False

    def feed(self, chunk: bytes) -> bytes:
        """Wire bytes for `chunk` (possibly fewer: a trailing CR is held back)."""
        if not chunk:
            return b""
        self._fed_anything = True
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            self._pending_cr = True
            chunk = chunk[:-1]
        return self._emit(chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))

    def finish(self) -> bytes:
        """The last wire bytes: a held CR and a missing final CRLF."""
        out = b""
        if self._pending_cr:
            self._pending_cr = False
            out += self._emit(b"\n")
        if not self._at_line_start or not self._fed_anything:
            out += self._emit(b"\n")
        if self.header_len is None:
            self.header_len = self.wire_size  # no body: the whole message is its header
        return out

    def _emit(self, lf_text: bytes) -> bytes:
        """`lf_text` has only LF line ends: stuff dots, make CRLF, count."""
        if not lf_text:
            return b""
        self.pop3_size += len(lf_text) + lf_text.count(b"\n")
        stuffed = lf_text.replace(b"\n.", b"\n..")
        if self._at_line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        wire = stuffed.replace(b"\n", b"\r\n")
        self._at_line_start = wire.endswith(b"\n")
        if self.header_len is None:
            window = self._tail + wire
            if self.wire_size == 0 and window.startswith(b"\r\n"):
                self.header_len = 2  # empty header section
            else:
                found = window.find(b"\r\n\r\n")
                if found >= 0:
                    self.header_len = self.wire_size - len(self._tail) + found + 4
        self.wire_size += len(wire)
        self._tail = (self._tail + wire)[-3:]
        return wire


def encode(message: bytes) -> tuple[bytes, WireEncoder]:
    """The whole wire form of a message held in memory, and its counts."""
    enc = WireEncoder()
    wire = enc.feed(message) + enc.finish()
    return wire, enc


def unstuff(wire: bytes) -> bytes:
    """What a POP3 client makes of complete wire lines (test oracle and tooling)."""
    lines = wire.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def take_lines(chunks: Iterable[bytes], lines: int) -> Iterator[bytes]:
    """The first `lines` CRLF-terminated lines of a wire stream, as chunks."""
    if lines <= 0:
        return
    left = lines
    for chunk in chunks:
        start = 0
        while left > 0:
            found = chunk.find(b"\n", start)
            if found < 0:
                break
            left -= 1
            start = found + 1
        if left == 0:
            if start:
                yield chunk[:start]
            return
        yield chunk
