"""Reading stored messages: whole, headers plus N body lines, or where their bytes lie on flash.

A message's record header is re-read and its payload CRC checked (once) before any byte is
handed out, so a damaged record raises CorruptRecordError before anything was sent. The header
is checked by comparing its bytes on flash with the ones the index's header packs to, and is
read together with the first chunk of the message (one pread per RETR of a small message).
Streams look the record up again for every chunk: compaction may move it in between.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from firmware.errors import BoxError, CorruptRecordError
from firmware.flash.image import Image
from firmware.flash.layout import RECORD_HEADER_SIZE
from firmware.store.index import Index
from firmware.store.log import CHUNK, Header, Log
from firmware.store.source import chain
from firmware.store.wire import take_lines


class Reader:
    """Reads messages of one open image; `seq` is the message's index key (uid `<tag>.<seq>`)."""

    def __init__(self, the_log: Log, image: Image, index: Index) -> None:
        self._log = the_log
        self._image = image
        self.index = index

    def wire(self, box: str, uid: str, seq: int, chunk_size: int) -> Iterator[bytes]:
        """The stored wire bytes (checked first: CorruptRecordError), in chunks."""
        chunk_size = max(1, min(chunk_size, CHUNK))
        first_len = min(chunk_size, self.index.msgs[seq].header.payload_len)
        header, first = self._checked(box, uid, seq, first_len)
        return self._stream(seq, first_len, header.payload_len, chunk_size, first)

    def top(self, box: str, uid: str, seq: int, lines: int, chunk_size: int) -> Iterator[bytes]:
        """Headers, the blank line and the first `lines` body lines, wire form, in chunks."""
        header = self.verified(box, uid, seq)
        head = self._stream(seq, 0, header.header_len, chunk_size)
        body = take_lines(
            self._stream(seq, header.header_len, header.payload_len, chunk_size), lines
        )
        return chain(head, body)

    def extents(
        self, box: str, uid: str, seq: int, start: int, end: int | None, *, check: bool
    ) -> list[tuple[int, int]]:
        """(file offset, length) pieces of wire bytes [start, end); see Board.wire_extents."""
        if check:
            header = self.verified(box, uid, seq)
        else:
            msg = self.index.msgs[seq]
            if not msg.ok:
                raise self._corrupt(box, uid, msg.header)
            header = msg.header
        stop = header.payload_len if end is None else end
        if not 0 <= start <= stop <= header.payload_len:
            raise ValueError(
                f"wire range [{start}, {stop}) is outside message {uid} "
                f"({header.payload_len} wire bytes)"
            )
        geometry = self._image.geometry
        capacity = geometry.capacity
        logical = header.position + RECORD_HEADER_SIZE + start
        length = stop - start
        pieces: list[tuple[int, int]] = []
        while length > 0:
            at = logical % capacity
            n = min(length, capacity - at)
            pieces.append((geometry.data_offset + at, n))
            logical += n
            length -= n
        return pieces

    def verified(self, box: str, uid: str, seq: int) -> Header:
        """The record header, re-read from flash; CorruptRecordError if it or the payload fails."""
        return self._checked(box, uid, seq, 0)[0]

    def _checked(self, box: str, uid: str, seq: int, first_len: int) -> tuple[Header, bytes]:
        """`verified`, reading the first `first_len` payload bytes in the same pread: the
        header and those bytes (CorruptRecordError if the header or the payload fails)."""
        msg = self.index.msgs[seq]
        header = msg.header
        first = b""
        if msg.ok:
            raw = self._image.read(header.position, RECORD_HEADER_SIZE + first_len)
            # Equal bytes are the same header (the packing is canonical); anything else, a
            # bad CRC included, is not the record the index knows.
            if raw[:RECORD_HEADER_SIZE] != header.build():
                msg.ok = False
            else:
                first = raw[RECORD_HEADER_SIZE:]
                if not msg.read_verified:
                    if first_len == header.payload_len:  # the whole payload is in hand
                        msg.ok = zlib.crc32(first) == header.payload_crc
                    else:
                        msg.ok = self._log.verify(header)
                    msg.read_verified = msg.ok
        if not msg.ok:
            raise self._corrupt(box, uid, header)
        return header, first

    @staticmethod
    def _corrupt(box: str, uid: str, header: Header) -> CorruptRecordError:
        return CorruptRecordError(
            f"message {uid} in box {box!r}: its record at log offset "
            f"{header.position} fails its CRC"
        )

    def _stream(
        self, seq: int, start: int, end: int, chunk_size: int, first: bytes = b""
    ) -> Iterator[bytes]:
        # Look the record up again for every chunk: compaction may move it between chunks.
        if first:
            yield first  # read with the header check, just before
        chunk_size = max(1, min(chunk_size, CHUNK))
        at = start
        while at < end:
            msg = self.index.msgs.get(seq)
            if msg is None:
                raise BoxError(f"message {self.index.uid(seq)} was removed while being read")
            n = min(chunk_size, end - at)
            yield self._image.read(msg.header.position + RECORD_HEADER_SIZE + at, n)
            at += n
