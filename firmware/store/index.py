"""The in-memory index of the message log, and its rebuilding at boot by replaying the log.

`Index` knows, for every stored message, where its record lies and whether it checked out;
per box, its messages in arrival order and their POP3 bytes; the log's records head to tail
(`extents`, what compaction walks); the next sequence number; the problems found. Nothing here
writes flash: `replay` reads the log (firmware.store.log) and, with `repair`, erases a torn tail.

The index is compact: no Python object per message. A table of columns (`array`s: position,
seq, payload length and CRC, box id, arrival, POP3 size, header length, and a flags byte; ~57
bytes per message) in slot order, a seq-sorted lookup (seq, slot: 12 bytes), per box its seqs
in arrival order (8 bytes), and the log's extents (24 bytes per record): about 100 bytes per
message where a `Msg` with its `Header` took ~800. `msgs[seq]` hands out a small view (`Msg`)
made on demand. Removed messages leave a tombstone in the table until enough of them pile up
to rebuild it.
"""

from __future__ import annotations

import logging
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import compress
from pathlib import Path

from firmware.flash.layout import RECORD_HEADER_SIZE
from firmware.store.info import MIN_RECORD, MessageInfo, Problem
from firmware.store.log import (
    KIND_MESSAGE,
    KIND_TRAY,
    Header,
    Log,
    TornTail,
    Walk,
)
from firmware.store.pace import give_way
from firmware.text import plural

log = logging.getLogger("firmware.store.board")  # the name operators' filters know

BoxNames = Callable[[int], str | None]  # box_id -> name (None: no such box any more)

# Flags byte of a table slot.
BAD = 1  # the payload failed its CRC: reads raise CorruptRecordError
VERIFIED = 2  # the payload CRC passed when the record was last read whole (docs/storage.md)
REMOVED = 4  # a tombstone: deleted, superseded by a later copy, or of a deleted box
_FROM_CHECK = bytes([0, VERIFIED, BAD]) + bytes(253)  # PAYLOAD_UNCHECKED/OK/BAD -> flags


def _total(payload_len: int) -> int:
    return int((RECORD_HEADER_SIZE + payload_len + 15) & -16)


@dataclass(frozen=True, slots=True)
class Extent:
    """A stretch of the log from head to tail, in order: a record, or an unreadable span."""

    position: int
    length: int
    seq: int  # message seq, or -1 (delete record, unreadable span)


class Extents:
    """The log's extents head to tail. Records lie back to back, so only where each begins is
    kept (and its seq): a length is the distance to the next one, or to `end` for the last.
    `popleft` moves a start mark; the arrays are trimmed once half of them is behind it."""

    def __init__(
        self, pos: array[int] | None = None, seq: array[int] | None = None, end: int = 0
    ) -> None:
        self._pos = array("q") if pos is None else pos
        self._seq = array("q") if seq is None else seq
        self._end = end  # where the last extent ends (the log's tail)
        self._first = 0

    def __len__(self) -> int:
        return len(self._pos) - self._first

    def __bool__(self) -> bool:
        return len(self._pos) > self._first

    def _length(self, j: int) -> int:
        pos = self._pos
        return (pos[j + 1] if j + 1 < len(pos) else self._end) - pos[j]

    def __iter__(self) -> Iterator[Extent]:
        pos, seq = self._pos, self._seq
        n = len(pos)
        for j in range(self._first, n):
            nxt = pos[j + 1] if j + 1 < n else self._end
            yield Extent(pos[j], nxt - pos[j], seq[j])

    def __getitem__(self, i: int) -> Extent:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("extent index out of range")
        j = self._first + i
        return Extent(self._pos[j], self._length(j), self._seq[j])

    def append(self, ext: Extent) -> None:
        """A record at the end of the log. It starts where the last extent ends, or later:
        the log's tail can be past the last extent when a compaction failed after writing
        copies (their sync or the anchor's failed): those copies count for nothing, and the
        gap becomes a dead extent (seq -1) that the next compaction reclaims. A record that
        starts before the end is a bug: ValueError."""
        if self and ext.position != self._end:
            if ext.position < self._end:
                raise ValueError(
                    f"extent at {ext.position} starts before the log's end {self._end}"
                )
            self._pos.append(self._end)
            self._seq.append(-1)
        self._pos.append(ext.position)
        self._seq.append(ext.seq)
        self._end = ext.position + ext.length

    def popleft(self) -> Extent:
        ext = self[0]
        self.drop_first(1)
        return ext

    def drop_first(self, count: int) -> None:
        """Forget the first `count` extents (a compaction segment: erased behind the head)."""
        if not 0 <= count <= len(self):
            raise ValueError(f"cannot drop {count} of {len(self)} extents")
        self._first += count
        if self._first >= 4096 and self._first * 2 >= len(self._pos):
            del self._pos[: self._first]
            del self._seq[: self._first]
            self._first = 0

    def from_head(self) -> Iterator[tuple[int, int, int]]:
        """(position, length, seq) of each extent from the head: `iter` without an Extent
        object per record (compaction's walk over a segment)."""
        pos, seq = self._pos, self._seq
        n = len(pos)
        for j in range(self._first, n):
            start = pos[j]
            yield start, (pos[j + 1] if j + 1 < n else self._end) - start, seq[j]

    def extend_run(self, positions: Sequence[int], seqs: Sequence[int], end: int) -> None:
        """Records back to back at the end of the log (a compaction segment's copies): as
        many `append`s, the first at `positions[0]`, the last ending at `end`."""
        if not positions:
            return
        first = positions[0]
        if self and first != self._end:
            if first < self._end:
                raise ValueError(f"extent at {first} starts before the log's end {self._end}")
            self._pos.append(self._end)
            self._seq.append(-1)
        self._pos.extend(positions)
        self._seq.extend(seqs)
        self._end = end


class SeqList:
    """A box's message seqs in arrival (= seq) order and their POP3 sizes, in two `array`s
    (16 bytes a message): a listing is two copies of memory."""

    __slots__ = ("_a", "_s")

    def __init__(self, seqs: Iterable[int] = (), sizes: Iterable[int] = ()) -> None:
        self._a = array("q", seqs)
        self._s = array("q", sizes)

    def __len__(self) -> int:
        return len(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __iter__(self) -> Iterator[int]:
        return iter(self._a)

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, int):
            return False
        i = bisect_left(self._a, seq)
        return i < len(self._a) and self._a[i] == seq

    def __getitem__(self, i: int) -> int:
        return self._a[i]

    def snapshot(self) -> tuple[array[int], array[int]]:
        """Copies of the seqs and the sizes (two memcpys): what a listing keeps."""
        return array("q", self._a), array("q", self._s)

    def add(self, seq: int, size: int) -> None:
        if not self._a or seq > self._a[-1]:
            self._a.append(seq)
            self._s.append(size)
        else:
            i = bisect_left(self._a, seq)
            self._a.insert(i, seq)
            self._s.insert(i, size)

    def remove_many(self, doomed: set[int]) -> None:
        if len(doomed) <= 16:
            for seq in doomed:
                i = bisect_left(self._a, seq)
                if i < len(self._a) and self._a[i] == seq:
                    del self._a[i]
                    del self._s[i]
        else:
            keep = [i for i, s in enumerate(self._a) if s not in doomed]
            self._a = array("q", map(self._a.__getitem__, keep))
            self._s = array("q", map(self._s.__getitem__, keep))


class BoxState:
    """One box: its seqs in arrival order and the sum of their POP3 sizes."""

    __slots__ = ("bytes", "seqs")

    def __init__(self, seqs: SeqList | None = None, size: int = 0) -> None:
        self.seqs = SeqList() if seqs is None else seqs
        self.bytes = size


class Msg:
    """A view of one indexed message (made on demand): its header and its check flags."""

    __slots__ = ("_index", "_slot", "seq")

    def __init__(self, index: Index, slot: int, seq: int) -> None:
        self._index = index
        self._slot = slot
        self.seq = seq

    def _at(self) -> int:
        index = self._index
        if self._slot >= len(index._seq) or index._seq[self._slot] != self.seq:
            slot = index._find(self.seq, live=False)  # the table was rebuilt
            if slot < 0:
                raise KeyError(self.seq)  # removed, and its tombstone is gone too
            self._slot = slot
        return self._slot

    @property
    def header(self) -> Header:
        return self._index._header(self._at())

    @header.setter
    def header(self, header: Header) -> None:
        self._index._set_header(self._at(), header)

    @property
    def ok(self) -> bool:
        return not self._index._flags[self._at()] & BAD

    @ok.setter
    def ok(self, value: bool) -> None:
        self._index._set_flag(self._at(), BAD, not value)

    @property
    def read_verified(self) -> bool:
        """The payload CRC passed when this record was last read whole. Later reads check only
        the header, so RETR reads a message once, not twice (see docs/storage.md)."""
        return bool(self._index._flags[self._at()] & VERIFIED)

    @read_verified.setter
    def read_verified(self, value: bool) -> None:
        self._index._set_flag(self._at(), VERIFIED, value)


class Messages:
    """`index.msgs`: the stored messages by seq, as a read-only mapping of `Msg` views."""

    def __init__(self, index: Index) -> None:
        self._index = index

    def get(self, seq: int, default: Msg | None = None) -> Msg | None:
        slot = self._index._find(seq)
        return default if slot < 0 else Msg(self._index, slot, seq)

    def __getitem__(self, seq: int) -> Msg:
        slot = self._index._find(seq)
        if slot < 0:
            raise KeyError(seq)
        return Msg(self._index, slot, seq)

    def __contains__(self, seq: object) -> bool:
        return isinstance(seq, int) and self._index._find(seq) >= 0

    def __len__(self) -> int:
        return len(self._index._seq) - self._index._removed

    def values(self) -> Iterator[Msg]:
        index = self._index
        for slot, flags in enumerate(index._flags):
            if not flags & REMOVED:
                yield Msg(index, slot, index._seq[slot])


class Index:
    """Messages by seq, boxes by id, the log's extents in order; uids are `<tag>.<seq>`."""

    def __init__(self, uid_tag: str, next_seq: int) -> None:
        self.uid_tag = uid_tag
        self.boxes: dict[int, BoxState] = {}
        self.extents = Extents()
        self.live_bytes = 0  # bytes of the records of stored messages
        self.next_seq = next_seq
        self.problems: list[Problem] = []
        self.bad: set[int] = set()  # seqs of stored messages whose payload fails its CRC
        self.box_names: BoxNames = lambda box_id: None  # for Problems (replay sets it)
        self.msgs = Messages(self)
        # The table, one slot per message record (tombstones included).
        self._pos = array("q")
        self._seq = array("q")
        self._plen = array("q")
        self._crc = array("I")
        self._box = array("i")
        self._arrived = array("d")
        self._pop3 = array("q")
        self._hlen = array("q")
        self._flags = bytearray()
        self._removed = 0
        # Lookup: seqs in order and the slot of each (tombstones may stay in it).
        self._sorted = array("q")
        self._slot = array("i")

    def uid(self, seq: int) -> str:
        return f"{self.uid_tag}.{seq}"

    # -- the table -------------------------------------------------------------------------

    def _columns(self) -> tuple[array[int] | array[float], ...]:
        return (
            self._pos, self._seq, self._plen, self._crc, self._box, self._arrived,
            self._pop3, self._hlen,
        )  # fmt: skip

    def _find(self, seq: int, *, live: bool = True) -> int:
        """The slot of `seq`, or -1 (not indexed, or removed when `live`)."""
        i = bisect_left(self._sorted, seq)
        if i < len(self._sorted) and self._sorted[i] == seq:
            slot = self._slot[i]
            if not (live and self._flags[slot] & REMOVED):
                return slot
        return -1

    def _header(self, slot: int) -> Header:
        box = self._box[slot]
        return Header(
            self._pos[slot],
            KIND_MESSAGE if box else KIND_TRAY,
            self._seq[slot],
            self._plen[slot],
            self._crc[slot],
            box,
            self._arrived[slot],
            self._pop3[slot],
            self._hlen[slot],
        )

    def live_header(self, seq: int, position: int) -> Header | None:
        """The header of stored message `seq` if its record is the one at `position` (not a
        stale copy, not removed); None otherwise."""
        slot = self._find(seq)
        if slot < 0 or self._pos[slot] != position:
            return None
        return self._header(slot)

    def move(self, seqs: Iterable[int], positions: Iterable[int]) -> None:
        """Stored messages' records now lie at `positions` (compaction copies, same bytes)."""
        for seq, position in zip(seqs, positions, strict=True):
            give_way()
            slot = self._find(seq)
            if slot < 0:
                raise KeyError(seq)
            self._pos[slot] = position

    def _set_header(self, slot: int, header: Header) -> None:
        self.live_bytes += header.total - _total(self._plen[slot])
        self._pos[slot] = header.position
        self._plen[slot] = header.payload_len
        self._crc[slot] = header.payload_crc
        self._arrived[slot] = header.arrived
        self._pop3[slot] = header.pop3_size
        self._hlen[slot] = header.header_len

    def _set_flag(self, slot: int, flag: int, on: bool) -> None:
        if flag == BAD and on and not self._flags[slot] & BAD:
            # Found by a read (or fsck), not by boot: a problem from now on, as if boot had.
            self.bad.add(self._seq[slot])
            self.problems.append(self.corrupt_problem(self._header(slot), self.box_names))
        elif flag == BAD and not on:
            self.bad.discard(self._seq[slot])
        if on:
            self._flags[slot] |= flag
        else:
            self._flags[slot] &= ~flag & 0xFF

    def add(self, header: Header, ok: bool) -> None:
        """Index a stored message (its box must be indexed); its seq is new."""
        slot = len(self._seq)
        self._pos.append(header.position)
        self._seq.append(header.seq)
        self._plen.append(header.payload_len)
        self._crc.append(header.payload_crc)
        self._box.append(header.box_id)
        self._arrived.append(header.arrived)
        self._pop3.append(header.pop3_size)
        self._hlen.append(header.header_len)
        self._flags.append(0 if ok else BAD)
        if not ok:
            self.bad.add(header.seq)
        if not self._sorted or header.seq > self._sorted[-1]:
            self._sorted.append(header.seq)
            self._slot.append(slot)
        else:  # not for a seq from next_seq; kept correct all the same
            i = bisect_left(self._sorted, header.seq)
            self._sorted.insert(i, header.seq)
            self._slot.insert(i, slot)
        box = self.boxes[header.box_id]
        box.seqs.add(header.seq, header.pop3_size)
        box.bytes += header.pop3_size
        self.live_bytes += header.total

    def drop(self, seq: int) -> None:
        """Forget a message (deleted); nothing if it is not indexed."""
        self.drop_many([seq])

    def drop_many(self, seqs: Iterable[int]) -> None:
        """Forget messages (one delete record); seqs not indexed are ignored."""
        by_box: dict[int, set[int]] = {}
        for seq in seqs:
            give_way()
            slot = self._find(seq)
            if slot < 0:
                continue
            self._flags[slot] |= REMOVED
            self._removed += 1
            self.bad.discard(seq)
            box_id = self._box[slot]
            by_box.setdefault(box_id, set()).add(seq)
            box = self.boxes.get(box_id)
            if box is not None:
                box.bytes -= self._pop3[slot]
            self.live_bytes -= _total(self._plen[slot])
        for box_id, doomed in by_box.items():
            box = self.boxes.get(box_id)
            if box is not None:
                box.seqs.remove_many(doomed)
        if self._removed > 4096 and self._removed * 2 > len(self._seq):
            self._squeeze()

    def _squeeze(self) -> None:
        """Rebuild the table without its tombstones (slots change; `Msg` views re-find)."""
        keep = [slot for slot, flags in enumerate(self._flags) if not flags & REMOVED]
        for column in self._columns():
            column[:] = array(column.typecode, map(column.__getitem__, keep))  # type: ignore[arg-type]
        self._flags = bytearray(map(self._flags.__getitem__, keep))
        self._removed = 0
        order = sorted(range(len(keep)), key=self._seq.__getitem__)
        self._sorted = array("q", map(self._seq.__getitem__, order))
        self._slot = array("i", order)

    def info(self, seq: int) -> MessageInfo:
        """A stored message's facts from the table (KeyError if not stored)."""
        slot = self._find(seq)
        if slot < 0:
            raise KeyError(seq)
        return MessageInfo(
            self.uid(seq),
            self._pop3[slot],
            self._arrived[slot],
            seq,
            bool(self._flags[slot] & BAD),
        )

    def corrupt_in(self, state: BoxState) -> int:
        """How many of a box's messages are known to fail their CRC."""
        return sum(1 for seq in self.bad if seq in state.seqs)

    def corrupt_problem(self, header: Header, box_names: BoxNames) -> Problem:
        """The Problem for a stored message whose payload fails its CRC."""
        return Problem(
            header.position,
            header.total,
            "corrupt",
            "message payload fails CRC",
            box_names(header.box_id),
            self.uid(header.seq),
        )

    # -- boot ------------------------------------------------------------------------------

    def _load(self, walk: Walk, box_ids: set[int], the_log: Log) -> list[Problem]:
        """Take over the walk's columns; resolve copies, deletions and unknown boxes.

        Returns the "stale" problems (interrupted compaction copies) found.
        """
        self._pos, self._seq, self._plen = walk.msg_pos, walk.msg_seq, walk.msg_plen
        self._crc, self._box, self._arrived = walk.msg_crc, walk.msg_box, walk.msg_arrived
        self._pop3, self._hlen = walk.msg_pop3, walk.msg_hlen
        flags = self._flags = bytearray(walk.msg_check.translate(_FROM_CHECK))
        n = len(flags)
        seqs = self._seq
        removed_bytes = removed = 0
        stale: list[Problem] = []
        if walk.in_order:
            order: Iterable[int] = range(n)
            self._sorted = array("q", seqs)
        else:
            order = sorted(range(n), key=seqs.__getitem__)  # stable: copies in log order
            self._sorted = array("q", map(seqs.__getitem__, order))
        if not walk.in_order and len(set(seqs)) != n:
            # Copies of one message (compaction interrupted, or done but not yet erased from
            # the ring's view): the last copy whose payload checks out wins; a later one that
            # fails is an interrupted copy of a good record.
            keep: list[int] = []
            sorted_seqs = self._sorted
            order = list(order)
            i = 0
            while i < n:
                j = i + 1
                while j < n and sorted_seqs[j] == sorted_seqs[i]:
                    j += 1
                if j - i == 1:
                    keep.append(order[i])
                else:
                    run = [order[k] for k in range(i, j)]
                    winner = run[-1]
                    for slot in reversed(run):
                        if self._payload_ok(slot, the_log):
                            winner = slot
                            break
                    seen_good_before = False
                    for slot in run:
                        if slot == winner:
                            seen_good_before = True
                            continue
                        flags[slot] |= REMOVED
                        removed += 1
                        removed_bytes += _total(self._plen[slot])
                        if seen_good_before:
                            stale.append(
                                Problem(
                                    self._pos[slot],
                                    _total(self._plen[slot]),
                                    "stale",
                                    "interrupted copy of a message whose original is intact",
                                )
                            )
                    keep.append(winner)
                i = j
            self._sorted = array("q", map(seqs.__getitem__, keep))
            self._slot = array("i", keep)
        else:
            self._slot = array("i", order)
        # Deleted messages and messages of deleted boxes.
        for seq in walk.deleted:
            slot = self._find(seq)
            if slot >= 0:
                flags[slot] |= REMOVED
                removed += 1
                removed_bytes += _total(self._plen[slot])
        boxes_seen = set(self._box)
        if not boxes_seen <= box_ids:
            for slot in range(n):
                if self._box[slot] not in box_ids and not flags[slot] & REMOVED:
                    flags[slot] |= REMOVED
                    removed += 1
                    removed_bytes += _total(self._plen[slot])
        self._removed = removed
        self.live_bytes = walk.msg_bytes - removed_bytes
        if self._removed * 4 > n:
            self._squeeze()
        # Per box: its live seqs in seq order, and their POP3 bytes.
        slot_col = self._slot
        if self._removed:
            boxes_sorted = array(
                "i", (-1 if flags[s] & REMOVED else self._box[s] for s in slot_col)
            )
        elif walk.in_order:
            boxes_sorted = self._box
        else:
            boxes_sorted = array("i", map(self._box.__getitem__, slot_col))
        pop3_sorted = (
            self._pop3
            if boxes_sorted is self._box
            else array("q", map(self._pop3.__getitem__, slot_col))
        )
        present = set(boxes_sorted) & box_ids
        self.boxes = {box_id: BoxState() for box_id in box_ids}
        for box_id in present:
            if len(present) == 1 and not self._removed:
                self.boxes[box_id] = BoxState(SeqList(self._sorted, pop3_sorted), sum(pop3_sorted))
                continue
            sizes = array("q", compress(pop3_sorted, map(box_id.__eq__, boxes_sorted)))
            self.boxes[box_id] = BoxState(
                SeqList(compress(self._sorted, map(box_id.__eq__, boxes_sorted)), sizes),
                sum(sizes),
            )
        at = flags.find(BAD)
        while at >= 0:
            if not flags[at] & REMOVED:
                self.bad.add(seqs[at])
            at = flags.find(BAD, at + 1)
        return stale

    def _payload_ok(self, slot: int, the_log: Log) -> bool:
        """Check a slot's payload now (once); its flags say the outcome."""
        flags = self._flags[slot]
        if flags & BAD:
            return False
        if not flags & VERIFIED:
            ok = the_log.check_payload(self._header(slot))
            self._flags[slot] |= VERIFIED if ok else BAD
            return ok
        return True


def replay(
    the_log: Log,
    box_ids: set[int],
    seq_floor: int,
    uid_tag: str,
    box_names: BoxNames,
    *,
    path: Path,
    repair: bool,
) -> Index:
    """Rebuild the index from the log, head to tail (what a boot does).

    Records of boxes not in `box_ids` are ignored (the box was deleted). Unreadable headers,
    payloads failing their CRC and interrupted compaction copies become Problems (logged as
    warnings naming `path`); sequence numbers an unreadable span could have held are never
    reused. A torn tail is reported, and erased when `repair`. A boot (`repair`) checks every
    header but only the payloads it must (firmware.store.log.Log.replay); `repair=False`
    (inspect, fsck) checks every payload too.
    """
    started = time.monotonic()
    walk, torn = the_log.replay(every_payload=not repair)
    index = Index(uid_tag, seq_floor)
    index.box_names = box_names
    index.extents = Extents(walk.ext_pos, walk.ext_seq, the_log.tail)
    stale = index._load(walk, box_ids, the_log)
    finish(index, the_log, walk, torn, stale, seq_floor, path=path, repair=repair)
    log.debug(
        "%s: replayed %s in %.3f s",
        path,
        plural(walk.records, "record"),
        time.monotonic() - started,
    )
    return index


def finish(
    index: Index,
    the_log: Log,
    walk: Walk,
    torn: TornTail | None,
    found: list[Problem],
    seq_floor: int,
    *,
    path: Path,
    repair: bool,
) -> None:
    """The end of a boot: problems (`found` so far, the walk's, corrupt messages) logged,
    the next seq (never one an unreadable span could have held), a torn tail reported and,
    with `repair`, erased."""
    lost_seqs = 0  # how many records unreadable spans could have held: never reuse their seqs
    found = list(found)
    for position, length in walk.unreadable:
        found.append(Problem(position, length, "corrupt", "unreadable record header"))
        lost_seqs += length // MIN_RECORD + 1
    for position, length in walk.bad_deletes:
        found.append(Problem(position, length, "corrupt", "delete record fails CRC"))
    found.sort(key=lambda p: p.position)
    index.problems = found
    for seq in sorted(index.bad):
        msg = index.msgs[seq]
        index.problems.append(index.corrupt_problem(msg.header, index.box_names))
    if torn is not None:
        lost_seqs += torn.length // MIN_RECORD + 1  # a flipped last header looks torn too
    max_seq = max(seq_floor - 1, walk.max_seq, index.next_seq - 1)
    index.next_seq = max_seq + 1 + lost_seqs
    for p in index.problems:
        log.warning(
            "%s: %s record at log offset %d (%d bytes): %s",
            path,
            p.what,
            p.position,
            p.length,
            p.detail,
        )
    if torn is not None:
        _report_torn(the_log, index, torn, path, repair)


def _report_torn(the_log: Log, index: Index, torn: TornTail, path: Path, repair: bool) -> None:
    log.warning(
        "%s: discarded a torn tail of %d bytes at log offset %d (an unacknowledged write)",
        path,
        torn.length,
        torn.position,
    )
    index.problems.append(
        Problem(torn.position, torn.length, "torn", "discarded unacknowledged tail")
    )
    if repair:
        the_log.erase_torn(torn)


__all__ = [
    "BAD",
    "REMOVED",
    "VERIFIED",
    "BoxNames",
    "BoxState",
    "Extent",
    "Extents",
    "Index",
    "Messages",
    "Msg",
    "SeqList",
    "finish",
    "replay",
]
