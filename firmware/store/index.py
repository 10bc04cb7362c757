"""The in-memory index of the message log, and its rebuilding at boot by replaying the log.

`Index` knows, for every stored message, where its record lies and whether it checked out;
per box, its messages in arrival order and their POP3 bytes; the log's records head to tail
(`extents`, what compaction walks); the next sequence number; the problems found. Nothing here
writes flash: `replay` reads the log (firmware.store.log) and, with `repair`, erases a torn tail.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from firmware.store.info import MIN_RECORD, Problem
from firmware.store.log import KIND_DELETE, Header, Log, TornTail
from firmware.text import plural

log = logging.getLogger("firmware.store.board")  # the name operators' filters know

BoxNames = Callable[[int], str | None]  # box_id -> name (None: no such box any more)


@dataclass
class Msg:
    header: Header
    ok: bool
    # The payload CRC passed when this record was last read whole. Later reads check only
    # the header, so RETR reads a message once, not twice (see docs/storage.md).
    read_verified: bool = False


@dataclass
class Extent:
    """A stretch of the log from head to tail, in order: a record, or an unreadable span."""

    position: int
    length: int
    seq: int  # message seq, or -1 (delete record, unreadable span)


@dataclass
class BoxState:
    seqs: dict[int, None] = field(default_factory=dict)  # arrival order
    bytes: int = 0


class Index:
    """Messages by seq, boxes by id, the log's extents in order; uids are `<tag>.<seq>`."""

    def __init__(self, uid_tag: str, next_seq: int) -> None:
        self.uid_tag = uid_tag
        self.msgs: dict[int, Msg] = {}
        self.boxes: dict[int, BoxState] = {}
        self.extents: deque[Extent] = deque()
        self.live_bytes = 0  # bytes of the records of stored messages
        self.next_seq = next_seq
        self.problems: list[Problem] = []

    def uid(self, seq: int) -> str:
        return f"{self.uid_tag}.{seq}"

    def add(self, header: Header, ok: bool) -> None:
        """Index a stored message (its box must be indexed)."""
        self.msgs[header.seq] = Msg(header, ok)
        box = self.boxes[header.box_id]
        box.seqs[header.seq] = None
        box.bytes += header.pop3_size
        self.live_bytes += header.total

    def drop(self, seq: int) -> None:
        """Forget a message (deleted); nothing if it is not indexed."""
        msg = self.msgs.pop(seq, None)
        if msg is None:
            return
        box = self.boxes.get(msg.header.box_id)
        if box is not None:
            box.seqs.pop(seq, None)
            box.bytes -= msg.header.pop3_size
        self.live_bytes -= msg.header.total

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
    reused. A torn tail is reported, and erased when `repair`.
    """
    started = time.monotonic()
    index = Index(uid_tag, seq_floor)
    index.boxes = {box_id: BoxState() for box_id in box_ids}
    deleted: set[int] = set()
    max_seq = seq_floor - 1
    lost_seqs = 0  # how many records unreadable spans could have held: never reuse their seqs
    records, torn = the_log.replay()
    for item in records:
        header = item.header
        if header is None:
            index.extents.append(Extent(item.position, item.length, -1))
            index.problems.append(
                Problem(item.position, item.length, "corrupt", "unreadable record header")
            )
            lost_seqs += item.length // MIN_RECORD + 1
            continue
        max_seq = max(max_seq, header.seq)
        if header.kind == KIND_DELETE:
            index.extents.append(Extent(item.position, item.length, -1))
            if not item.payload_ok:
                index.problems.append(
                    Problem(item.position, item.length, "corrupt", "delete record fails CRC")
                )
            for seq in item.deleted:
                deleted.add(seq)
                index.drop(seq)
            continue
        index.extents.append(Extent(item.position, item.length, header.seq))
        if header.seq in deleted or header.box_id not in box_ids:
            continue
        previous = index.msgs.get(header.seq)
        if previous is None:
            index.add(header, item.payload_ok)
        elif item.payload_ok or not previous.ok:
            # A relocated copy: the later one wins, unless it is an interrupted copy of a
            # good record (compaction crashed before it synced; the original is intact).
            index.live_bytes += header.total - previous.header.total
            previous.header = header
            previous.ok = item.payload_ok
        else:
            index.problems.append(
                Problem(
                    item.position,
                    item.length,
                    "stale",
                    "interrupted copy of a message whose original is intact",
                )
            )
    for state in index.boxes.values():
        state.seqs = dict.fromkeys(sorted(state.seqs))
    for msg in index.msgs.values():
        if not msg.ok:
            index.problems.append(index.corrupt_problem(msg.header, box_names))
    if torn is not None:
        lost_seqs += torn.length // MIN_RECORD + 1  # a flipped last header looks torn too
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
    log.debug(
        "%s: replayed %s in %.3f s",
        path,
        plural(len(records), "record"),
        time.monotonic() - started,
    )
    return index


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
