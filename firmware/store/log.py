"""The message log in the image's data area: append, read, replay, relocate records.

Records lie back to back from the log head (kept in NVRAM) to the tail (found by replay). Each
record is a CRC-checked header holding its own logical position, then its payload; zero bytes
follow the last record. Replay tells three things apart: a clean end (zeros), a record whose
payload CRC fails but which is followed by more valid records (corrupt: kept and reported), and
a bad last record (torn: discarded, logged, erased).
"""

from __future__ import annotations

import contextlib
import logging
import operator
import struct
import sys
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import compress, islice
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
from firmware.store.pace import give_way

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
        return self.build_at(self.position)

    def build_at(self, position: int) -> bytes:
        """The on-flash bytes of this header moved to `position` (a compaction copy): the
        same as `replace(self, position=position).build()` without making the Header."""
        head = _HEAD.pack(
            RECORD_MAGIC,
            RECORD_VERSION,
            self.kind,
            0,
            position,
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


def parse_header(raw: bytes, position: int, room: int) -> Header | None:
    """The header in `raw` if it is valid *at this position*; None otherwise.

    `room` is how many bytes the log may still hold from `position`: a header claiming more
    is not believed. This is a hot path (one call per record read), so it checks magic and
    CRC first and only then unpacks with `struct`, which checks nothing: it never sees bytes
    whose CRC has not matched (docs/storage.md, "Replay speed";
    tests/store/test_log.py proves it agrees with the interpreted `RecordHeader`).
    """
    if len(raw) < RECORD_HEADER_SIZE or not raw.startswith(RECORD_MAGIC):
        return None
    body = raw[:_HEAD_SIZE]
    if zlib.crc32(body) != int.from_bytes(raw[_HEAD_SIZE:RECORD_HEADER_SIZE], "big"):
        return None
    (_, version, kind, _, pos, seq, plen, pcrc, box_id, arrived, pop3, hlen) = _HEAD.unpack(body)
    if pos != position or version != RECORD_VERSION or kind not in KINDS:
        return None
    header = Header(pos, kind, seq, plen, pcrc, box_id, arrived, pop3, hlen)
    if header.total > room or hlen > plen:
        return None
    return header


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
# The fixed layout of `RecordHead` (firmware/flash/layout.py) for struct: the boot hot path
# unpacks it only once magic and CRC have matched, as the compiled parser did.
_HEAD = struct.Struct(">4sBBHQQQIIdQQ")
assert _HEAD.size == _HEAD_SIZE
# Replay's fast look at a record: magic, version, kind, flags, position, payload length,
# header length and the header CRC behind them.
_FAST = struct.Struct(">4sBBHQ8xQ24xQI")
assert _FAST.size == RECORD_HEADER_SIZE


def encode_delete(seqs: Iterable[int]) -> bytes:
    """A delete record's payload (`DeleteBody`: a 32-bit count, then the seqs sorted, 64-bit
    big-endian): packed with `array`, not construct, which took ~3 ms of Python for a QUIT's
    10,000 deletions (tests/store/test_log.py proves both agree). OverflowError for a seq
    outside 0..2**64-1."""
    body = array("Q", sorted(seqs))
    if sys.byteorder == "little":
        body.byteswap()
    return len(body).to_bytes(4, "big") + body.tobytes()


def encode_delete_interpreted(seqs: Iterable[int]) -> bytes:
    """The same bytes as `encode_delete`, by the construct layout (the reference, for tests)."""
    return bytes(DeleteBody.build({"seqs": sorted(seqs)}))


def decode_delete(payload: bytes) -> list[int]:
    try:
        return [int(s) for s in DeleteBody.parse(payload).seqs]
    except (ConstructError, ValueError, TypeError) as exc:
        raise CorruptRecordError(f"delete record does not parse: {exc}") from None


@dataclass(frozen=True)
class TornTail:
    position: int
    length: int


PAYLOAD_UNCHECKED, PAYLOAD_OK, PAYLOAD_BAD = 0, 1, 2


class Walk:
    """What replay found, head to tail, in columns (no object per record: 1M records boot).

    `ext_*`: where every stretch of the log begins, in order (each ends where the next begins,
    the last at the tail): a record, or an unreadable span (seq -1; delete records also have
    seq -1). `msg_*`: the message and tray records in log order, with
    `msg_check` one of PAYLOAD_UNCHECKED/OK/BAD. `deleted`: every seq a valid delete record
    names. `unreadable`, `bad_deletes`: (position, length) of unreadable headers and of delete
    records failing their CRC. `in_order`: the message seqs only grow along the log (no
    compaction copy and no duplicate), so they need no sorting.
    """

    def __init__(self) -> None:
        self.ext_pos = array("q")
        self.ext_seq = array("q")
        self.msg_pos = array("q")
        self.msg_seq = array("q")
        self.msg_plen = array("q")
        self.msg_crc = array("I")
        self.msg_box = array("i")
        self.msg_arrived = array("d")
        self.msg_pop3 = array("q")
        self.msg_hlen = array("q")
        self.msg_check = bytearray()
        self.msg_bytes = 0  # bytes of all message and tray records (padding included)
        self.deleted: set[int] = set()
        self.unreadable: list[tuple[int, int]] = []
        self.bad_deletes: list[tuple[int, int]] = []
        self.max_seq = -1
        self.in_order = True
        self.records = 0

    @classmethod
    def from_packed(cls, packed: bytearray, tail: int) -> Walk:
        """Columns from replay's packed entries (the bytearray is emptied): 64 bytes each in
        the `RecordHead` layout (the
        record's own header bytes; for delete records and unreadable spans, an entry with kind
        2 or 0 and seq all ones; the flags field holds the PAYLOAD_* check). `tail`: where the
        last entry ends. Strided slices of one array: C speed, no loop per record."""
        walk = cls()
        if not packed:
            return walk
        q = array("q")
        q.frombytes(packed)
        if sys.byteorder == "little":
            q.byteswap()
        kinds = bytes(packed[5::_HEAD_SIZE])
        checks = bytearray(packed[7::_HEAD_SIZE])
        packed.clear()  # consumed: 64 bytes a record less at the peak
        walk.ext_pos = q[1::8]
        walk.ext_seq = q[2::8]  # all ones reads as -1
        pos = walk.ext_pos
        lengths = array("q", map(operator.sub, islice(pos, 1, None), pos))
        lengths.append(tail - pos[-1])
        halves = array("I", q[4::8].tobytes())  # little-endian qwords: box, then crc
        columns: dict[str, Any] = {
            "msg_pos": array("q", pos),
            "msg_seq": array("q", walk.ext_seq),
            "msg_plen": q[3::8],
            "msg_crc": halves[1::2],
            "msg_box": array("i", halves[0::2].tobytes()),
            "msg_arrived": array("d", q[5::8].tobytes()),
            "msg_pop3": q[6::8],
            "msg_hlen": q[7::8],
            "msg_check": checks,
        }
        del q, halves
        selector = kinds.translate(_IS_MESSAGE)
        everything = selector.count(0) == 0
        for name, column in columns.items():
            if not everything:
                kept = compress(column, selector)
                column = (
                    bytearray(kept)
                    if isinstance(column, bytearray)
                    else array(column.typecode, kept)
                )
            setattr(walk, name, column)
        walk.msg_bytes = sum(lengths) if everything else sum(compress(lengths, selector))
        seqs = walk.msg_seq
        walk.in_order = all(map(operator.lt, seqs, islice(seqs, 1, None)))
        walk.max_seq = max(walk.ext_seq)
        walk.records = len(walk.ext_pos) - kinds.count(0)
        return walk

    def drop_last_message(self) -> None:
        """Forget the last record, a message (a torn tail found after the walk)."""
        self.msg_bytes -= Header(0, 0, 0, self.msg_plen[-1], 0).total
        for column in (
            self.ext_pos, self.ext_seq, self.msg_pos, self.msg_seq, self.msg_plen,
            self.msg_crc, self.msg_box, self.msg_arrived, self.msg_pop3, self.msg_hlen,
        ):  # fmt: skip
            del column[-1]
        del self.msg_check[-1]
        self.records -= 1

    def message_header(self, i: int) -> Header:
        """The header of message record `i` (log order)."""
        box = self.msg_box[i]
        return Header(
            self.msg_pos[i],
            KIND_MESSAGE if box else KIND_TRAY,
            self.msg_seq[i],
            self.msg_plen[i],
            self.msg_crc[i],
            box,
            self.msg_arrived[i],
            self.msg_pop3[i],
            self.msg_hlen[i],
        )


_NO_SEQ = (1 << 64) - 1  # a packed entry's seq that reads back as -1
_IS_MESSAGE = bytes(1 if k in (KIND_MESSAGE, KIND_TRAY) else 0 for k in range(256))


def _entry(header: Header, check: int) -> bytes:
    """A packed entry for a message or tray record checked on the slow path."""
    return _HEAD.pack(
        RECORD_MAGIC,
        RECORD_VERSION,
        header.kind,
        check,
        header.position,
        header.seq,
        header.payload_len,
        header.payload_crc,
        header.box_id,
        header.arrived,
        header.pop3_size,
        header.header_len,
    )


def _span_entry(position: int, kind: int) -> bytes:
    """A packed entry for a delete record (kind 2) or an unreadable span (kind 0): seq -1."""
    return _HEAD.pack(RECORD_MAGIC, 0, kind, 0, position, _NO_SEQ, 0, 0, 0, 0.0, 0, 0)


def _unpack_header(head: bytes) -> Header:
    """A Header from 64 header bytes whose CRC has matched (struct checks nothing)."""
    (_, _, kind, _, pos, seq, plen, pcrc, box_id, arrived, pop3, hlen) = _HEAD.unpack(head)
    return Header(pos, kind, seq, plen, pcrc, box_id, arrived, pop3, hlen)


# Replay reads the log in pieces of this size (one pread serves many small records).
WINDOW = 256 * 1024
# Compaction reads the payloads of live records less than this apart in one pread, and
# writes a payload of DIRECT bytes or more straight from its pread (Log.relocate_many).
RUN_GAP = 64 * 1024
DIRECT = 64 * 1024


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

    def replay(
        self, *, every_payload: bool = False, start: int | None = None
    ) -> tuple[Walk, TornTail | None]:
        """Walk the log from the head (or from `start`, a record after it); sets `tail`.

        Every header is checked (magic, CRC, its own position, version, kind, length within the
        log). Payload CRCs are checked for delete records (their seqs are needed), for the last
        record (a write cut short looks like a valid header over a partial payload: torn), and
        with `every_payload` for every record (inspect, fsck); message payloads not checked here
        are checked by the first read (firmware.store.reader) and by fsck.

        The loop keeps the 64 header bytes of each record back to back in one bytearray and
        turns them into columns at the end (`Walk.from_packed`): ~2 us a record. It reads the
        log in WINDOW-sized preads through `Image.read`, so an I/O error is an ImageError.
        (A read-only mmap saves the copy, ~1 us a record at 7 KB a record, but a media error
        under a map is SIGBUS, not an error line: not worth it with the checkpoint.)
        """
        limit = self.head + self.capacity
        torn: TornTail | None = None
        packed = bytearray()
        deleted: set[int] = set()
        unreadable: list[tuple[int, int]] = []
        bad_deletes: list[tuple[int, int]] = []
        slow_max_seq = -1
        pos = self.head if start is None else start
        buf = b""
        buf_at = 0  # log position of buf[0]
        crc32 = zlib.crc32
        unpack = _FAST.unpack_from
        head_size = RECORD_HEADER_SIZE
        magic = RECORD_MAGIC
        fast = not every_payload
        while limit - pos >= head_size:
            at = pos - buf_at
            if at < 0 or at + head_size > len(buf):
                buf = self.image.read(pos, min(WINDOW, limit - pos))
                buf_at = pos
                at = 0
            mg, version, kind, flags, p, plen, hlen, crc = unpack(buf, at)
            head = buf[at : at + _HEAD_SIZE]
            header: Header | None = None
            if mg == magic and crc32(head) == crc:
                total = (head_size + plen + RECORD_ALIGN - 1) & -RECORD_ALIGN
                if p == pos and version == RECORD_VERSION and hlen <= plen and total <= limit - pos:
                    if fast and flags == 0 and kind in (KIND_MESSAGE, KIND_TRAY):
                        packed += head  # payload checked later (first read, fsck)
                        pos += total
                        continue
                    if kind in KINDS:
                        header = _unpack_header(head)
            if header is None:
                if buf[at : at + head_size] == _ZERO_HEADER:
                    break
                found, dirty_end = self._resync(pos + RECORD_ALIGN, limit)
                if found is None:
                    torn = TornTail(pos, dirty_end - pos)
                    break
                unreadable.append((pos, found - pos))
                packed += _span_entry(pos, 0)
                pos = found
                continue
            ok, seqs = self._check_payload(header)
            if not ok:
                nxt = pos + header.total
                found, dirty_end = self._resync(nxt, limit)
                if found is None:
                    torn = TornTail(pos, max(dirty_end, nxt) - pos)
                    break
            slow_max_seq = max(slow_max_seq, header.seq)
            if header.kind == KIND_DELETE:
                deleted.update(seqs)
                if not ok:
                    bad_deletes.append((pos, header.total))
                packed += _HEAD.pack(
                    RECORD_MAGIC, 0, KIND_DELETE, 0, pos, _NO_SEQ, 0, 0, 0, 0.0, 0, 0
                )
            else:
                packed += _entry(header, PAYLOAD_OK if ok else PAYLOAD_BAD)
            pos += header.total
        walk = Walk.from_packed(packed, pos)
        del packed
        walk.deleted = deleted
        walk.unreadable = unreadable
        walk.bad_deletes = bad_deletes
        walk.max_seq = max(walk.max_seq, slow_max_seq)
        m_check = walk.msg_check
        if m_check and m_check[-1] == PAYLOAD_UNCHECKED and walk.ext_seq[-1] >= 0:
            # The last record may be a write that never completed: check it as boot always has.
            last = walk.message_header(len(m_check) - 1)
            ok, _ = self._check_payload(last)
            if ok:
                m_check[-1] = PAYLOAD_OK
            else:
                found, dirty_end = self._resync(pos, limit)
                if found is None:  # nothing valid follows: torn, not a corrupt record
                    walk.drop_last_message()
                    end = max(dirty_end, pos, torn.position + torn.length if torn else 0)
                    torn = TornTail(last.position, end - last.position)
                    pos = last.position
                else:
                    m_check[-1] = PAYLOAD_BAD
        self.tail = pos
        return walk, torn

    def check_payload(self, header: Header) -> bool:
        """Whether the record's payload matches its CRC (one read of the payload)."""
        return self._check_payload(header)[0]

    def _check_payload(self, header: Header) -> tuple[bool, list[int]]:
        start = header.position + RECORD_HEADER_SIZE
        crc = 0
        if header.payload_len <= CHUNK:
            payload = self.image.read(start, header.payload_len)
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
                give_way()
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
                give_way()
        header = complete(written)
        total = header.total
        guard = min(GUARD_SIZE, self.free - total)
        buf += bytes(total - RECORD_HEADER_SIZE - written + guard)
        self.image.write(at, buf)
        final = replace(header, position=pos, payload_crc=crc)
        self._commit_header(pos, final)
        self.tail = pos + total
        return final

    def relocate_many(self, headers: Sequence[Header]) -> list[int]:
        """Copy records to the tail, back to back, unchanged but for their positions (same
        seqs: replay keeps the last good copy); their new positions, in order. Not synced:
        the caller syncs once after a batch of copies (firmware.store.space).

        `headers` lie in log order from the head. Small records are copied in runs: one
        pread of up to CHUNK for the payloads of many nearby records (the few dead bytes
        between them read too), and their copies (headers, payloads, padding, then GUARD_SIZE
        zeros as after every append) go out as one piece of about CHUNK in two pwrites:
        everything but the first header, then that header. A payload of DIRECT bytes or more
        goes from its pread straight to its pwrite (no copy holding the GIL), then its
        padding and guard, then its header. So, as for an append, a record's header is never
        written before its payload: a process killed in the middle of a pwrite (a prefix of
        it lands) leaves zeros where the next header would be, a clean end, never a torn
        record. Per record, only its header is built (from the index's copy, not from flash).
        A power cut may keep any subset of these unsynced writes: the originals are intact
        until the caller's sync and anchor move, and a copy whose header landed without its
        payload fails its CRC, which replay tells from a corrupt record (an interrupted copy
        of a good one). StorageFullError (nothing written) if they do not all fit.
        """
        pos = self.tail
        limit = self.head + self.capacity
        totals = [h.total for h in headers]
        if sum(totals) > limit - pos:
            raise StorageFullError("storage full: no room to relocate the records")
        image = self.image
        positions: list[int] = []
        out = bytearray()  # whole records' copies, from a header on
        out_at = pos  # log position of out[0]

        def put() -> None:
            end = out_at + len(out)
            out.extend(bytes(min(GUARD_SIZE, limit - end)))
            piece = memoryview(out)
            image.write(out_at + RECORD_HEADER_SIZE, piece[RECORD_HEADER_SIZE:])
            image.write(out_at, piece[:RECORD_HEADER_SIZE])  # the piece counts from now on

        run: bytes | memoryview = b""
        run_at = run_end = 0  # the log span that `run` holds
        for i, h in enumerate(headers):
            give_way()
            total = totals[i]
            start = h.position + RECORD_HEADER_SIZE
            plen = h.payload_len
            positions.append(pos)
            if plen >= DIRECT:
                if out:
                    put()
                    out = bytearray()
                at = pos + RECORD_HEADER_SIZE
                for chunk in self.iter_payload(h, 0, plen):
                    image.write(at, chunk)
                    at += len(chunk)
                    give_way()
                guard = min(GUARD_SIZE, limit - pos - total)
                image.write(at, bytes(pos + total - at + guard))
                image.write(pos, h.build_at(pos))
                pos += total
                out_at = pos
                continue
            if not (run_at <= start and start + plen <= run_end):
                run_at, run_end = start, start + plen
                for nxt in islice(headers, i + 1, None):  # widen over the next ones
                    nxt_end = nxt.position + nxt.total
                    if nxt.position - run_end > RUN_GAP or nxt_end - run_at > CHUNK:
                        break
                    run_end = nxt_end
                run = memoryview(image.read(run_at, run_end - run_at))
            out += h.build_at(pos)
            out += run[start - run_at : start - run_at + plen]
            out += bytes(total - RECORD_HEADER_SIZE - plen)
            pos += total
            if len(out) >= CHUNK:
                put()
                out = bytearray()
                out_at = pos
        if out:
            put()
        self.tail = pos
        return positions

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
    "PAYLOAD_BAD",
    "PAYLOAD_OK",
    "PAYLOAD_UNCHECKED",
    "Header",
    "Log",
    "TornTail",
    "Walk",
    "decode_delete",
    "encode_delete",
    "kind_name",
    "parse_header",
]
