"""A message offered for delivery: bytes or a seekable file, measured in one pass, stored in
a second (so compaction can make exactly the room needed), or a stream that cannot seek."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from firmware.store.log import CHUNK
from firmware.store.wire import WireEncoder


@dataclass(frozen=True)
class Measured:
    pop3_size: int  # POP3 octets
    wire_size: int  # stored wire bytes (CRLF, dot-stuffed)
    header_len: int  # wire bytes of the header section and its blank line


class Source:
    """A message given as bytes or a seekable file: measured in one pass, stored in a second."""

    def __init__(self, message: bytes | bytearray | memoryview | BinaryIO) -> None:
        self._bytes: bytes | None = None
        self._file: BinaryIO | None = None
        self._start = 0
        if isinstance(message, bytes | bytearray | memoryview):
            self._bytes = bytes(message)
        else:
            self._file = message
            self._start = message.tell()
        self._measured: Measured | None = None

    def _raw_chunks(self) -> Iterator[bytes]:
        if self._bytes is not None:
            for at in range(0, len(self._bytes), CHUNK):
                yield self._bytes[at : at + CHUNK]
            return
        assert self._file is not None
        self._file.seek(self._start)
        while chunk := self._file.read(CHUNK):
            yield bytes(chunk)

    def measure(self) -> Measured:
        enc = WireEncoder()
        for chunk in self._raw_chunks():
            enc.feed(chunk)
        enc.finish()
        assert enc.header_len is not None
        self._measured = Measured(enc.pop3_size, enc.wire_size, enc.header_len)
        return self._measured

    def wire_chunks(self) -> Iterator[bytes]:
        """The wire bytes again; ValueError at the end if they differ from `measure`'s."""
        enc = WireEncoder()
        for chunk in self._raw_chunks():
            out = enc.feed(chunk)
            if out:
                yield out
        tail = enc.finish()
        if tail:
            yield tail
        if self._measured != Measured(enc.pop3_size, enc.wire_size, enc.header_len or 0):
            raise ValueError("second pass differs from the first")


def seekable(f: BinaryIO) -> bool:
    """True if `f` can be read twice (seek back to where it stands now)."""
    try:
        return bool(f.seekable()) and isinstance(f.tell(), int)
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def chain(*parts: Iterator[bytes]) -> Iterator[bytes]:
    for part in parts:
        yield from part
