"""The record log: check every record (fsck), reclaim deleted messages' flash (compact)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from firmware.device.boards import saved_profile
from firmware.ops.boxes import BoxList, box_list
from firmware.ops.context import OpsContext


@dataclass(frozen=True)
class Problem:
    what: str  # "corrupt" | "torn" | ...
    log_offset: int
    length: int
    detail: str
    box: str | None
    uid: str | None


@dataclass(frozen=True)
class Fsck:
    records_checked: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Compact:
    records_moved: int
    bytes_moved: int
    bytes_reclaimed: int
    seconds: float
    free: int  # flash bytes free afterwards
    stalled: str | None = None  # why reclaimable space is left, if it is (`Space.blocked`)


def fsck(ctx: OpsContext) -> Fsck:
    """Re-read every record and check its CRC; changes nothing."""
    report = ctx.board.fsck()
    problems = [
        Problem(p.what, p.position, p.length, p.detail, p.box, p.uid) for p in report.problems
    ]
    return Fsck(report.records_checked, problems)


def compact(ctx: OpsContext) -> Compact:
    """Move live records so deleted messages' blocks can be erased."""
    board = ctx.board
    report = board.compact()
    return Compact(
        report.records_moved,
        report.bytes_moved,
        report.bytes_reclaimed,
        report.seconds,
        board.usage().free,
        report.stalled,
    )


def inspect(ctx: OpsContext, listing: BoxList | None = None) -> dict[str, Any]:
    """What `dpfw image inspect` shows, as plain JSON data: `image` (its path), `superblock`
    (format_version, image_size, block_size and block_count in bytes/blocks, nvram_offset,
    nvram_slot_size, data_offset, created in epoch seconds, image_id in hex), `profile`
    (model, firmware_version of the saved profile), `nvram` (slot_sequences,
    active_sequence), `boxes` (as `box list`), `space` (total, used, free, reclaimable,
    live: bytes), `settings` (the names of the stored settings), `records_checked` and
    `problems` (as `fsck`). Reads the whole log (fsck): on a running device run it on the
    store worker (`ctx.run_store`) with `listing`, the `box_list` read on the event loop
    (a running device's lock-outs are read there). Changes nothing."""
    board = ctx.board
    g = board.geometry
    usage = board.usage()
    report = fsck(ctx)
    slots = board.nvram_slots
    profile = saved_profile(board)
    return {
        "image": str(board.path),
        "superblock": {
            "format_version": g.format_version,
            "image_size": g.image_size,
            "block_size": g.block_size,
            "block_count": g.block_count,
            "nvram_offset": g.nvram_offset,
            "nvram_slot_size": g.nvram_slot_size,
            "data_offset": g.data_offset,
            "created": g.created,
            "image_id": g.image_id.hex(),
        },
        "profile": {
            "model": profile.model,
            "firmware_version": profile.str("identity.firmware_version"),
        },
        "nvram": {
            "slot_sequences": list(slots),
            "active_sequence": max(s for s in slots if s is not None),
        },
        "boxes": [dataclasses.asdict(box) for box in (listing or box_list(ctx)).boxes],
        "space": {
            "total": usage.total,
            "used": usage.used,
            "free": usage.free,
            "reclaimable": usage.reclaimable,
            "live": usage.live,
        },
        "settings": sorted(board.settings()),
        "records_checked": report.records_checked,
        "problems": [dataclasses.asdict(problem) for problem in report.problems],
    }
