"""The record log: check every record (fsck), reclaim deleted messages' flash (compact)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    )
