"""Space in the message log: usage, the room kept for deletions, making room, compaction.

Compaction copies the live records at the head of the log forward to its tail and then erases
the blocks behind them. Copies are synced before the NVRAM anchor (log head, seq floor) moves
past the originals, so a power cut at any point leaves either the originals or synced copies;
replay (firmware.store.index) prefers a good later copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from firmware.errors import StorageFullError
from firmware.flash.image import Image
from firmware.flash.layout import align
from firmware.store.index import Index
from firmware.store.info import CompactReport, MiB, StoreLimits, Usage
from firmware.store.log import Header, Log
from firmware.store.pace import give_way

MoveAnchor = Callable[[int, int], None]  # (new log head, seq floor): one atomic NVRAM update


class Space:
    """The log's space policy over one open image; `limits` is read at each decision."""

    def __init__(
        self,
        the_log: Log,
        image: Image,
        index: Index,
        move_anchor: MoveAnchor,
        limits: Callable[[], StoreLimits],
        between_steps: Callable[[], None] = lambda: None,
    ) -> None:
        self._log = the_log
        self._image = image
        self.index = index
        self._move_anchor = move_anchor
        self._limits = limits
        self._between_steps = between_steps  # after each compaction segment, index consistent

    def usage(self) -> Usage:
        used = self._log.used
        return Usage(
            total=self._log.capacity,
            used=used,
            free=self._log.free,
            reclaimable=used - self.index.live_bytes,
            live=self.index.live_bytes,
        )

    def reserve(self) -> int:
        """Room (bytes) kept back from messages so that deletions can always be recorded."""
        return align(min(64 * 1024, max(4096, self._log.capacity // 64)))

    def make_room(self, needed: int, what: str) -> None:
        """Compact if that frees `needed` bytes; StorageFullError naming `what` if not."""
        if self._log.free >= needed:
            return
        reclaimable = self._log.used - self.index.live_bytes
        if reclaimable > 0 and self._log.free + reclaimable >= needed:
            self.compact(target_free=needed)
        if self._log.free < needed:
            blocked = self.blocked()
            why = "" if blocked is None else f": {blocked}"
            raise StorageFullError(
                f"storage full: the {what} needs {needed} bytes, {self._log.free} are free "
                f"of {self._log.capacity} ({self._log.used - self.index.live_bytes} "
                f"reclaimable{why}); nothing was stored"
            )

    def blocked(self) -> str | None:
        """Why compaction cannot reclaim what is reclaimable, if it cannot: the record at the
        head of the log is a live message larger than the free space (it must be copied
        forward before anything behind it can be erased); None if it can go on.

        E.g. "behind message a1b2.17 (31293520 bytes) at the head of the log, more than the
        free space: delete it to reclaim the rest".
        """
        if self._log.used - self.index.live_bytes <= 0:
            return None
        for position, length, seq in self.index.extents.from_head():
            if seq < 0 or self.index.live_header(seq, position) is None:
                return None  # a dead record first: compaction can erase it
            if length <= self._log.free:
                return None
            return (
                f"behind message {self.index.uid(seq)} ({length} bytes) at the head of the log, "
                "more than the free space: delete it to reclaim the rest"
            )
        return None

    def auto_compact(self) -> None:
        """Compact when free space falls below storage.compact_threshold_pct."""
        capacity = self._log.capacity
        threshold = capacity * self._limits().compact_threshold_pct // 100
        reclaimable = self._log.used - self.index.live_bytes
        if self._log.free < threshold and reclaimable >= min(
            self._image.geometry.block_size, capacity // 100
        ):
            self.compact(target_free=threshold)

    def compact(self, target_free: int | None) -> CompactReport:
        """Compact from the head until `target_free` bytes are free (None: as far as it goes)."""
        index = self.index
        started = time.monotonic()
        used_before = self._log.used
        moved_records = moved_bytes = 0
        stop = self._log.tail
        # Segments of several erase blocks: fewer NVRAM commits, same crash safety.
        block = max(self._image.geometry.block_size, min(4 * MiB, self._log.capacity // 16))
        while index.extents and self._log.head < stop:
            if target_free is not None and self._log.free >= target_free:
                break
            # One segment: whole records from the head covering at least one erase block.
            head = self._log.head
            free = self._log.free
            count = 0
            end = head
            live: list[Header] = []
            live_bytes = 0
            for position, length, seq in index.extents.from_head():
                give_way()
                if position >= stop or (count and end - head >= block):
                    break
                header = index.live_header(seq, position) if seq >= 0 else None
                if header is not None:
                    if live_bytes + length > free:
                        break  # no room to copy this one forward (yet)
                    live.append(header)
                    live_bytes += length
                count += 1
                end = position + length
            if not count:
                break  # stalled: the record at the head is live and larger than free space
            positions = self._log.relocate_many(live)
            if live:
                self._image.sync()  # copies are durable before the head moves past originals
            self._move_anchor(end, index.next_seq)
            self._log.head = end
            index.extents.drop_first(count)
            seqs = [h.seq for h in live]
            index.move(seqs, positions)
            index.extents.extend_run(positions, seqs, self._log.tail)
            self._image.erase(head, end - head)
            moved_records += len(live)
            moved_bytes += sum(h.total for h in live)
            self._between_steps()
        index.problems = [p for p in index.problems if p.position >= self._log.head]
        return CompactReport(
            records_moved=moved_records,
            bytes_moved=moved_bytes,
            bytes_reclaimed=used_before - self._log.used,
            seconds=time.monotonic() - started,
            stalled=self.blocked() if target_free is None else None,
        )
