"""The message log in the image's data area: append, read, replay, relocate records.

Records lie back to back from the log head (kept in NVRAM) to the tail (found by replay). Each
record is a CRC-checked header holding its own logical position, then its payload; zero bytes
follow the last record. Replay tells three things apart: a clean end (zeros), a record whose
payload CRC fails but which is followed by more valid records (corrupt: kept and reported), and
a bad last record (torn: discarded, logged, erased).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from construct import ConstructError

from firmware.errors import CorruptRecordError, StorageFullError
from firmware.flash.image import Image
from firmware.flash.layout import (
    GUARD_SIZE,
    KIND_DELETE,
    KIND_MESSAGE,
    KIND_TRAY,
    KINDS,
    RECORD_ALIGN,
    RECORD_HEADER_SIZE,
    RECORD_MAGIC,
    RECORD_VERSION,
    DeleteBody,
    RecordHead,
    RecordHeader,
    align,
)

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # I/O unit for streaming payloads and scanning
_ZERO_HEADER = bytes(RECORD_HEADER_SIZE)


@dataclass(frozen=True)
class Header:
    """A parsed record header."""

    position: int
    kind: int
    seq: int
    payload_len: int
    payload_crc: int
    box_id: int = 0
    arrived: float = 0.0
    pop3_size: int = 0
    header_len: int = 0

    @property
    def total(self) -> int:
        """Bytes the record occupies in the log, padding included."""
        return align(RECORD_HEADER_SIZE + self.payload_len)

    def build(self) -> bytes:
        """The header's on-flash bytes (`RecordHeader`: the head, then the CRC32 of it).

        Packed with one precompiled `struct` rather than by construct: compaction builds one
        header per relocated record, and construct's ~50 us each, in Python, held the GIL
        away from the event loop for most of a compaction of small records (NOOPs waited
        30-50 ms, `tools/bench latency`). tests/store/test_log.py proves both agree.
        """
        head = _HEAD_STRUCT.pack(
            RECORD_MAGIC,
            RECORD_VERSION,
            self.kind,
            0,
            self.position,
            self.seq,
            self.payload_len,
            self.payload_crc,
            self.box_id,
            self.arrived,
            self.pop3_size,
            self.header_len,
        )
        return head + zlib.crc32(head).to_bytes(4, "big")

    def build_interpreted(self) -> bytes:
        """The same bytes as `build`, by the construct layout (the reference, for tests)."""
        return bytes(
            RecordHeader.build(
                {
                    "head": {
                        "value": {
                            "version": RECORD_VERSION,
                            "kind": self.kind,
                            "flags": 0,
                            "position": self.position,
                            "seq": self.seq,
                            "payload_len": self.payload_len,
                            "payload_crc": self.payload_crc,
                            "box_id": self.box_id,
                            "arrived": self.arrived,
                            "pop3_size": self.pop3_size,
                            "header_len": self.header_len,
                        }
                    }
                }
            )
        )


# RecordHead (firmware/flash/layout.py) as one struct: magic, version, kind, flags, position,
# seq, payload_len, payload_crc, box_id, arrived, pop3_size, header_len; all big-endian.
_HEAD_STRUCT = struct.Struct(">4sBBHQQQIIdQQ")


def parse_header(raw: bytes, position: int, room: int) -> Header | None:
    """The header in `raw` if it is valid *at this position*; None otherwise.

    `room` is how many bytes the log may still hold from `position`: a header claiming more
    is not believed. This is the boot hot path (one call per record), so it checks magic and
    CRC first and only then parses with the compiled layout: compiled construct code skips
    checks, so it never sees bytes whose CRC has not matched (docs/storage.md, "Replay speed";
    tests/store/test_log.py proves it agrees with the interpreted `RecordHeader`).
    """
    if len(raw) < RECORD_HEADER_SIZE or not raw.startswith(RECORD_MAGIC):
        return None
    body = raw[:_HEAD_SIZE]
    if zlib.crc32(body) != int.from_bytes(raw[_HEAD_SIZE:RECORD_HEADER_SIZE], "big"):
        return None
    try:
        h = _compiled_head().parse(body)
    except (ConstructError, ValueError, TypeError):
        return None
    return _checked_header(h, position, room)


def _checked_header(h: Any, position: int, room: int) -> Header | None:
    """A parsed header as a Header, or None where it cannot be a record at `position`."""
    if h.position != position or h.version != RECORD_VERSION or h.kind not in KINDS:
        return None
    header = Header(
        position=int(h.position),
        kind=int(h.kind),
        seq=int(h.seq),
        payload_len=int(h.payload_len),
        payload_crc=int(h.payload_crc),
        box_id=int(h.box_id),
        arrived=float(h.arrived),
        pop3_size=int(h.pop3_size),
        header_len=int(h.header_len),
    )
    if header.total > room or header.header_len > header.payload_len:
        return None
    return header


def parse_header_interpreted(raw: bytes, position: int, room: int) -> Header | None:
    """The same as `parse_header`, by the interpreted `RecordHeader` alone (the reference)."""
    try:
        h = RecordHeader.parse(raw[:RECORD_HEADER_SIZE]).head.value
    except (ConstructError, ValueError, TypeError):
        return None
    return _checked_header(h, position, room)


_HEAD_SIZE = RecordHead.sizeof()


@functools.cache
def _compiled_head() -> Any:
    return RecordHead.compile()


def encode_delete(seqs: Iterable[int]) -> bytes:
    return bytes(DeleteBody.build({"seqs": sorted(seqs)}))


def decode_delete(payload: bytes) -> list[int]:
    try:
        return [int(s) for s in DeleteBody.parse(payload).seqs]
    except (ConstructError, ValueError, TypeError) as exc:
        raise CorruptRecordError(f"delete record does not parse: {exc}") from None


@dataclass(frozen=True)
class Replayed:
    """One step of replay: a record (maybe with a bad payload) or an unreadable span."""

    position: int
    length: int
    header: Header | None  # None: a span whose header is unreadable
    payload_ok: bool
    deleted: tuple[int, ...] = ()


@dataclass(frozen=True)
class TornTail:
    position: int
    length: int


class _SequentialReader:
    """Read-ahead over the ring for replay: one large pread serves many small records."""

    def __init__(self, image: Image, limit: int) -> None:
        self._image = image
        self._limit = limit
        self._start = 0
        self._buf = b""

    def get(self, position: int, length: int) -> bytes:
        if not (self._start <= position and position + length <= self._start + len(self._buf)):
            n = max(length, min(CHUNK, self._limit - position))
            self._buf = self._image.read(position, n)
            self._start = position
        at = position - self._start
        return self._buf[at : at + length]


class Log:
    """The record log over an image's data area."""

    def __init__(self, image: Image, head: int) -> None:
        self.image = image
        self.head = head
        self.tail = head  # set by replay()

    @property
    def capacity(self) -> int:
        return self.image.capacity

    @property
    def used(self) -> int:
        return self.tail - self.head

    @property
    def free(self) -> int:
        return self.capacity - self.used

    # -- replay --------------------------------------------------------------------------------

    def replay(self) -> tuple[list[Replayed], TornTail | None]:
        """Walk the log from the head, verifying every CRC; sets `tail`."""
        limit = self.head + self.capacity
        reader = _SequentialReader(self.image, limit)
        out: list[Replayed] = []
        torn: TornTail | None = None
        pos = self.head
        while limit - pos >= RECORD_HEADER_SIZE:
            raw = reader.get(pos, RECORD_HEADER_SIZE)
            if raw == _ZERO_HEADER:
                break
            header = parse_header(raw, pos, limit - pos)
            if header is None:
                found, dirty_end = self._resync(pos + RECORD_ALIGN, limit)
                if found is None:
                    torn = TornTail(pos, dirty_end - pos)
                    break
                out.append(Replayed(pos, found - pos, None, False))
                pos = found
                continue
            ok, deleted = self._check_payload(reader, header)
            if not ok:
                nxt = pos + header.total
                found, dirty_end = self._resync(nxt, limit)
                if found is None:
                    torn = TornTail(pos, max(dirty_end, nxt) - pos)
                    break
            out.append(Replayed(pos, header.total, header, ok, tuple(deleted)))
            pos += header.total
        self.tail = pos
        return out, torn

    def _check_payload(self, reader: _SequentialReader, header: Header) -> tuple[bool, list[int]]:
        start = header.position + RECORD_HEADER_SIZE
        crc = 0
        if header.payload_len <= CHUNK:
            payload = reader.get(start, header.payload_len)
            crc = zlib.crc32(payload)
        else:
            payload = b""
            for chunk in self.iter_payload(header, 0, header.payload_len):
                crc = zlib.crc32(chunk, crc)
        if crc != header.payload_crc:
            return False, []
        if header.kind == KIND_DELETE:
            try:
                return True, decode_delete(payload)
            except CorruptRecordError:
                return False, []
        return True, []

    def _resync(self, start: int, limit: int) -> tuple[int | None, int]:
        """The next valid header at or after `start`, and where non-zero bytes end before it."""
        start = align(start)
        dirty_end = start
        pos = start
        while pos < limit:
            n = min(CHUNK, limit - pos)
            data = self.image.read(pos, n)
            at = data.find(RECORD_MAGIC)
            while at >= 0:
                cand = pos + at
                if cand % RECORD_ALIGN == 0:
                    raw = data[at : at + RECORD_HEADER_SIZE]
                    if len(raw) < RECORD_HEADER_SIZE:
                        raw = self.image.read(cand, min(RECORD_HEADER_SIZE, limit - cand))
                    if parse_header(raw, cand, limit - cand) is not None:
                        return cand, max(dirty_end, cand)
                at = data.find(RECORD_MAGIC, at + 1)
            stripped = len(data.rstrip(b"\0"))
            if stripped:
                dirty_end = pos + stripped
            pos += n
        return None, dirty_end

    # -- reading -------------------------------------------------------------------------------

    def header_at(self, position: int) -> Header:
        raw = self.image.read(position, RECORD_HEADER_SIZE)
        header = parse_header(raw, position, self.head + self.capacity - position)
        if header is None:
            raise CorruptRecordError(f"record header at log offset {position} does not check out")
        return header

    def iter_payload(
        self, header: Header, offset: int, length: int, chunk_size: int = CHUNK
    ) -> Iterator[bytes]:
        """Payload bytes [offset, offset+length) in chunks of at most `chunk_size`."""
        pos = header.position + RECORD_HEADER_SIZE + offset
        end = pos + length
        while pos < end:
            n = min(chunk_size, end - pos)
            yield self.image.read(pos, n)
            pos += n

    def verify(self, header: Header) -> bool:
        """Re-read the payload and compare its CRC."""
        crc = 0
        for chunk in self.iter_payload(header, 0, header.payload_len):
            crc = zlib.crc32(chunk, crc)
        return crc == header.payload_crc

    # -- writing -------------------------------------------------------------------------------

    def append(self, header: Header, payload: Iterable[bytes]) -> Header:
        """Write a record at the tail and fsync it; `header.position` and CRC are filled in.

        The payload goes first, the header last: until the header is written the tail still
        reads as zeros, so a crash leaves at worst a torn last record.
        """
        total = header.total
        if total > self.free:
            raise StorageFullError(
                f"storage full: a {total}-byte record does not fit in {self.free} free bytes"
            )
        pos = self.tail
        crc = 0
        written = 0
        at = pos + RECORD_HEADER_SIZE
        buf = bytearray()
        for chunk in payload:
            written += len(chunk)
            if written > header.payload_len:
                raise ValueError("payload longer than announced")
            crc = zlib.crc32(chunk, crc)
            buf += chunk
            if len(buf) >= CHUNK:
                self.image.write(at, buf)
                at += len(buf)
                buf = bytearray()
        if written != header.payload_len:
            raise ValueError(f"payload is {written} bytes, {header.payload_len} announced")
        pad = total - RECORD_HEADER_SIZE - written
        guard = min(GUARD_SIZE, self.free - total)
        buf += bytes(pad + guard)
        self.image.write(at, buf)
        final = replace(header, position=pos, payload_crc=crc)
        self._commit_header(pos, final)
        self.tail = pos + total
        return final

    def _commit_header(self, pos: int, header: Header) -> None:
        """Write the header that makes a record count, and make it durable.

        If that fails (EIO or ENOSPC on write or fsync) the operation is reported as failed,
        so the header must not survive to the next boot: zero it and sync again before the
        error goes up. (Best effort: if the device cannot even do that, boot still checks
        every CRC.)
        """
        try:
            self.image.write(pos, header.build())
            self.image.sync()
        except BaseException:
            with contextlib.suppress(Exception):
                self.image.write(pos, bytes(RECORD_HEADER_SIZE))
                self.image.sync()
            raise

    def append_unsized(
        self, payload: Iterable[bytes], room: int, complete: Callable[[int], Header]
    ) -> Header:
        """Like `append` for a payload whose length is known only at its end (a pipe).

        Writes at most `room` bytes; more raises StorageFullError with nothing visible, since
        the header is not written. `complete(length)` gives the header once the payload is in.
        """
        pos = self.tail
        at = pos + RECORD_HEADER_SIZE
        crc = 0
        written = 0
        buf = bytearray()
        for chunk in payload:
            written += len(chunk)
            if align(RECORD_HEADER_SIZE + written) > room:
                raise StorageFullError(
                    f"storage full: the message outgrew the {max(room, 0)} bytes free; "
                    "nothing was stored"
                )
            crc = zlib.crc32(chunk, crc)
            buf += chunk
            if len(buf) >= CHUNK:
                self.image.write(at, buf)
                at += len(buf)
                buf = bytearray()
        header = complete(written)
        total = header.total
        guard = min(GUARD_SIZE, self.free - total)
        buf += bytes(total - RECORD_HEADER_SIZE - written + guard)
        self.image.write(at, buf)
        final = replace(header, position=pos, payload_crc=crc)
        self._commit_header(pos, final)
        self.tail = pos + total
        return final

    def relocate(self, header: Header) -> Header:
        """Copy a record to the tail unchanged but for its position (same seq: replay dedupes).

        Not synced: the caller syncs once after a batch of copies.
        """
        total = header.total
        if total > self.free:
            raise StorageFullError("storage full: no room to relocate a record")
        pos = self.tail
        at = pos + RECORD_HEADER_SIZE
        for chunk in self.iter_payload(header, 0, header.payload_len):
            self.image.write(at, chunk)
            at += len(chunk)
        guard = min(GUARD_SIZE, self.free - total)
        self.image.write(at, bytes(pos + total - at + guard))
        moved = replace(header, position=pos)
        self.image.write(pos, moved.build())
        self.tail = pos + total
        return moved

    def erase_torn(self, torn: TornTail) -> None:
        """Zero what a torn write left behind so the next boot sees a clean end."""
        room = self.head + self.capacity - torn.position
        self.image.erase(torn.position, min(torn.length, room))
        self.image.sync()


def kind_name(kind: int) -> str:
    return KINDS.get(kind, f"kind {kind}")


__all__ = [
    "CHUNK",
    "KIND_DELETE",
    "KIND_MESSAGE",
    "KIND_TRAY",
    "Header",
    "Log",
    "Replayed",
    "TornTail",
    "decode_delete",
    "encode_delete",
    "kind_name",
    "parse_header",
]
