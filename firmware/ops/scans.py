"""Scan jobs: check a request against the profile, run it on the device or offline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from firmware.errors import BoxNotFoundError, DeviceError
from firmware.ops.boxes import box_exists
from firmware.ops.context import OpsContext

if TYPE_CHECKING:  # the scanner (Pillow) is imported when a scan runs, not for every command
    from firmware.scanner.job import ScanRequest

OPTIONS = ("pages", "dpi", "mode", "format")


@dataclass(frozen=True)
class ScanDone:
    job_number: int
    box: str
    uid: str
    pages: int
    size: int  # POP3 octets of the stored message
    files: list[str]  # attachment file names


def prepare_scan(ctx: OpsContext, box: str, options: Mapping[str, str]) -> ScanRequest:
    """A request from `pages=N dpi=D mode=M format=F` (any left out: the defaults: 1 page,
    300 dpi if offered, else the first resolution, the first mode, and the first offered
    format that carries the mode), checked against the running profile now. DeviceError
    names the option and what is allowed."""
    from firmware.scanner.encode import FORMAT_MODES
    from firmware.scanner.job import ScanRequest, check_request

    profile = ctx.profile
    resolutions = profile.list("scan.resolutions")
    chosen = {
        "pages": "1",
        "dpi": "300" if "300" in resolutions else resolutions[0],
        "mode": profile.list("scan.color_modes")[0],
        "format": "",
    }
    for name, text in options.items():
        if name not in chosen:
            raise DeviceError(f"scan: {name!r} is not an option; use pages=N dpi=D mode=M format=F")
        chosen[name] = text
    try:
        pages = int(chosen["pages"])
    except ValueError:
        raise DeviceError(f"scan: pages={chosen['pages']!r} is not a number") from None
    fmt = chosen["format"] or next(
        (f for f in profile.list("scan.formats") if chosen["mode"] in FORMAT_MODES.get(f, ())),
        "pdf",
    )
    if not box_exists(ctx, box):
        raise BoxNotFoundError(f"scan: no box named {box!r} (see `box list`)")
    request = ScanRequest(box=box, pages=pages, dpi=chosen["dpi"], mode=chosen["mode"], format=fmt)
    check_request(request, profile)
    return request


async def run_scan(ctx: OpsContext, request: ScanRequest) -> ScanDone:
    """Run a job on the running device (its job counter, RAM budget and scan counts)."""
    result = await ctx.require_device("scan").scan(request)
    return ScanDone(
        result.job_number, result.box, result.uid, result.pages, result.size, list(result.filenames)
    )


def run_scan_offline(ctx: OpsContext, request: ScanRequest, job_number: int) -> ScanDone:
    """Run a job on an offline board, in the RAM budget its profile gives the device."""
    from firmware.config.budget import RamBudget
    from firmware.scanner.job import run_scan as run_job

    profile = ctx.profile
    budget = RamBudget(profile.int("memory.image_ram_mib") << 20)
    result = run_job(request, ctx.board, budget, profile, job_number=job_number)
    return ScanDone(
        result.job_number, result.box, result.uid, result.pages, result.size, list(result.filenames)
    )
