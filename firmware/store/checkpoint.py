"""A checkpoint of the index on flash: a boot loads it and walks only the log written after it.

The checkpoint is an ordinary message record of the reserved box id CHECKPOINT_BOX_ID, which no
NVRAM box has: older firmware ignores it as the record of a deleted box, fsck checks its CRC,
compaction reclaims it like any dead record. NVRAM keeps its log position (`Nvram.checkpoint`,
a trailing field older firmware parses past and drops when it writes NVRAM).

Written at a clean close (`Board.close`) of a store with at least MIN_MESSAGES messages and no
known problem, when the log after the checkpoint in force (if any) has grown by MIN_TAIL
records and 2 % of the messages: (1) append the record (payload, header, fdatasync:
`Log.append`), (2) one atomic NVRAM update naming it. A power cut before (2) leaves the
previous pointer (or none): a full walk, or the older checkpoint plus a longer tail.
Compaction clears the pointer in the NVRAM update that moves the log head.

A boot uses the checkpoint only if everything checks out: the pointer lies in the log, the
record's header and payload CRC are good, its version is known, it was made at the log head
NVRAM has now, its extents end where it lies, and every message written after it has a newer
seq. Anything else: a warning and the full walk (firmware.store.index.replay).

Payload (little-endian): a head (magic DPCK, version, log head, next seq, live bytes, counts),
then the message table in seq order (position, seq, payload length, CRC, box id, arrival,
POP3 size, header length), the extents (start, seq) and per box its id, count, POP3 bytes,
seqs and sizes. About 100 bytes a message: 1,000,000 messages are ~100 MB of a 7 GB log.
"""

from __future__ import annotations

import logging
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path

from firmware.errors import CorruptRecordError, DeviceError, StorageFullError
from firmware.flash.layout import RECORD_HEADER_SIZE, align
from firmware.store.index import (
    REMOVED,
    BoxNames,
    BoxState,
    Extent,
    Extents,
    Index,
    SeqList,
    finish,
)
from firmware.store.log import KIND_MESSAGE, PAYLOAD_BAD, PAYLOAD_OK, Header, Log, Walk
from firmware.text import plural

log = logging.getLogger("firmware.store.board")

CHECKPOINT_BOX_ID = 0x7FFFFFFF  # reserved: NVRAM box ids count up from 1
MIN_MESSAGES = 10_000  # below this the walk is fast enough (docs/benchmarks.md, "store scale")
MIN_TAIL = 1_000  # records after the checkpoint in force before a close writes a new one
MAGIC = b"DPCK"
VERSION = 1
_HEAD = struct.Struct("<4sHHqqqqqqq")  # magic, version, 0, log head, next seq, live bytes,
# messages, extents, extents' end, boxes
_BOX = struct.Struct("<iqq")  # box id, count, POP3 bytes
_LITTLE = sys.byteorder == "little"
# The message table's columns in payload order, with their array type codes.
_COLUMNS = (
    ("_pos", "q"),
    ("_seq", "q"),
    ("_plen", "q"),
    ("_crc", "I"),
    ("_box", "i"),
    ("_arrived", "d"),
    ("_pop3", "q"),
    ("_hlen", "q"),
)


def _le(a: array[int] | array[float]) -> bytes:
    if _LITTLE:
        return a.tobytes()
    b = array(a.typecode, a)
    b.byteswap()
    return b.tobytes()


def encode(index: Index, log_head: int) -> Iterator[bytes]:
    """The checkpoint payload of `index` (taken at `log_head`), in pieces."""
    n = len(index._seq)
    live: list[int] | None = None  # None: the table is already live and in seq order
    if index._removed or len(index._sorted) != n or index._slot != array("i", range(n)):
        flags = index._flags
        live = [slot for slot in index._slot if not flags[slot] & REMOVED]
    ext = index.extents
    first = ext._first
    ext_pos, ext_seq = ext._pos[first:], ext._seq[first:]
    boxes = sorted(index.boxes.items())
    yield _HEAD.pack(
        MAGIC,
        VERSION,
        0,
        log_head,
        index.next_seq,
        index.live_bytes,
        n if live is None else len(live),
        len(ext_pos),
        ext._end,
        len(boxes),
    )
    for name, code in _COLUMNS:
        column = getattr(index, name)
        yield _le(column if live is None else array(code, map(column.__getitem__, live)))
    yield _le(ext_pos)
    yield _le(ext_seq)
    for box_id, state in boxes:
        yield _BOX.pack(box_id, len(state.seqs), state.bytes)
    for _, state in boxes:
        seqs, sizes = state.seqs.snapshot()
        yield _le(seqs)
        yield _le(sizes)


def write(the_log: Log, index: Index, log_head: int, room: int) -> Header:
    """Append the checkpoint record (durable on return); StorageFullError if it needs more
    than `room` bytes (what is free beyond the reserve kept for deletions)."""
    pieces = list(encode(index, log_head))
    length = sum(len(p) for p in pieces)
    if align(RECORD_HEADER_SIZE + length) > room:
        raise StorageFullError(f"a {length}-byte checkpoint does not fit in {max(room, 0)} bytes")
    header = Header(
        0,
        KIND_MESSAGE,
        index.next_seq,
        length,
        0,
        box_id=CHECKPOINT_BOX_ID,
        arrived=0.0,
        pop3_size=length,
        header_len=0,
    )
    written = the_log.append(header, pieces)
    index.next_seq += 1
    index.extents.append(Extent(written.position, written.total, written.seq))
    return written


class _Reader:
    """Sections of the checkpoint payload read in order from flash, CRC accumulated."""

    def __init__(self, the_log: Log, header: Header) -> None:
        self._log = the_log
        self._at = header.position + RECORD_HEADER_SIZE
        self._left = header.payload_len
        self.crc = 0

    def take(self, n: int) -> bytes:
        if n > self._left:
            raise CorruptRecordError("checkpoint payload is shorter than its counts")
        data = self._log.image.read(self._at, n) if n else b""
        self._at += n
        self._left -= n
        self.crc = zlib.crc32(data, self.crc)
        return data

    def array(self, code: str, count: int) -> array[int] | array[float]:
        a: array[int] | array[float] = array(code)
        a.frombytes(self.take(count * a.itemsize))
        if not _LITTLE:
            a.byteswap()
        return a

    @property
    def left(self) -> int:
        return self._left


def load(
    the_log: Log,
    position: int,
    log_head: int,
    uid_tag: str,
    box_ids: set[int],
    box_names: BoxNames,
) -> Index | None:
    """The index as the checkpoint at `position` saw it, or None (with a warning) if it does
    not check out. The caller walks the log after it (`extend`)."""
    where = f"checkpoint at log offset {position}"
    if not log_head <= position < log_head + the_log.capacity:
        log.warning("%s: %s lies outside the log; walking the whole log", the_log.image.path, where)
        return None
    try:
        header = the_log.header_at(position)
        if header.box_id != CHECKPOINT_BOX_ID or header.kind != KIND_MESSAGE:
            raise CorruptRecordError("the record there is not a checkpoint")
        r = _Reader(the_log, header)
        head = _HEAD.unpack(r.take(_HEAD.size))
        magic, version, _, ck_head, next_seq, live_bytes, n, n_ext, ext_end, n_boxes = head
        if magic != MAGIC or version != VERSION:
            raise CorruptRecordError(f"unknown checkpoint format {magic!r} {version}")
        if ck_head != log_head or ext_end != position:
            raise CorruptRecordError("made at another log head (compaction since)")
        index = Index(uid_tag, next_seq)
        index.box_names = box_names
        for name, code in _COLUMNS:
            setattr(index, name, r.array(code, n))
        ext_pos = r.array("q", n_ext)
        ext_seq = r.array("q", n_ext)
        boxes = [_BOX.unpack(r.take(_BOX.size)) for _ in range(n_boxes)]
        states: dict[int, BoxState] = {}
        for box_id, count, size in boxes:
            seqs = r.array("q", count)
            sizes = r.array("q", count)
            list_ = SeqList()
            list_._a, list_._s = seqs, sizes  # type: ignore[assignment]
            states[box_id] = BoxState(list_, size)
        if r.left or r.crc != header.payload_crc:
            raise CorruptRecordError("checkpoint payload fails its CRC")
    except (CorruptRecordError, DeviceError, struct.error, ValueError) as exc:
        log.warning("%s: %s not used (%s); walking the whole log", the_log.image.path, where, exc)
        return None
    index._flags = bytearray(n)
    index._sorted = array("q", index._seq)
    index._slot = array("i", range(n))
    index.extents = Extents(ext_pos, ext_seq, ext_end)  # type: ignore[arg-type]
    index.live_bytes = live_bytes
    index.boxes = {box_id: states.get(box_id, BoxState()) for box_id in box_ids}
    gone = [seq for box_id, st in states.items() if box_id not in box_ids for seq in st.seqs]
    if gone:  # boxes deleted since (their messages were deleted first, or they were empty)
        for box_id in states:
            if box_id not in box_ids:
                index.boxes[box_id] = states[box_id]
        index.drop_many(gone)
        for box_id in states:
            if box_id not in box_ids:
                del index.boxes[box_id]
    return index


def extend(index: Index, walk: Walk, box_ids: set[int], tail: int) -> bool:
    """Add what the log holds after the checkpoint (`walk`, from its position); False if it
    cannot be (a seq not newer than the checkpoint's: not what a log after it can hold)."""
    extents = index.extents
    if walk.ext_pos and walk.ext_pos[0] != extents._end:
        return False
    seqs = walk.msg_seq
    newest = index._sorted[-1] if index._sorted else -1
    if not walk.in_order or (seqs and seqs[0] <= newest):
        return False
    for i, check in enumerate(walk.msg_check):
        header = walk.message_header(i)
        if header.box_id in box_ids:
            index.add(header, check != PAYLOAD_BAD)
            if check == PAYLOAD_OK:
                index.msgs[header.seq].read_verified = True
    extents._pos.extend(walk.ext_pos)
    extents._seq.extend(walk.ext_seq)
    extents._end = tail
    index.drop_many(walk.deleted)
    return True


def replay_from(
    the_log: Log,
    position: int,
    log_head: int,
    box_ids: set[int],
    seq_floor: int,
    uid_tag: str,
    box_names: BoxNames,
    *,
    path: Path,
) -> Index | None:
    """A boot from the checkpoint at `position`: load it, walk the log after it, finish as
    `firmware.store.index.replay` does. None (a warning logged) if the checkpoint does not
    check out: the caller walks the whole log."""
    started = time.monotonic()
    index = load(the_log, position, log_head, uid_tag, box_ids, box_names)
    if index is None:
        return None
    walk, torn = the_log.replay(start=position)
    if not extend(index, walk, box_ids, the_log.tail):
        log.warning(
            "%s: the log after the checkpoint at log offset %d does not follow it; "
            "walking the whole log",
            path,
            position,
        )
        return None
    finish(index, the_log, walk, torn, [], seq_floor, path=path, repair=True)
    log.debug(
        "%s: loaded the checkpoint of %s and walked %s after it in %.3f s",
        path,
        plural(len(index.msgs), "message"),
        plural(walk.records, "record"),
        time.monotonic() - started,
    )
    return index
