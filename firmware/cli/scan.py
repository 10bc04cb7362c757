"""`dpfw scan IMG BOX`: run one scan job offline into a box of a board image."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.config.budget import RamBudget
from firmware.config.profile import COLOR_MODES, FORMATS, RESOLUTIONS, Profile
from firmware.errors import DeviceError
from firmware.text import plural

if TYPE_CHECKING:  # the scanner (Pillow) is imported when a scan runs, not for every command
    from firmware.scanner.job import ScanRequest, ScanResult

MIB = 1024 * 1024


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scan",
        help="scan synthetic test-chart pages into a box (offline, on a board image)",
        description="Render PAGES test-chart pages, encode them as the device does and store "
        "the job as one MIME message in BOX. Prints the stored message's uid and size.",
    )
    p.add_argument("image", type=Path, metavar="IMG", help="board image file")
    p.add_argument("box", metavar="BOX", help="target mailbox")
    p.add_argument("--pages", type=int, default=1, metavar="N", help="pages in the job (1)")
    p.add_argument(
        "--dpi",
        choices=RESOLUTIONS,
        help="resolution (default: the profile's first offered; 200x100 = fax standard, "
        "200x200 = fax fine)",
    )
    p.add_argument("--mode", choices=COLOR_MODES, default="mono", help="colour mode (mono)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="tiff (mono, CCITT G4), pdf (any mode) or jpeg (gray/color, one file per page); "
        "default: tiff for mono, pdf otherwise",
    )
    p.add_argument(
        "--job",
        type=int,
        default=1,
        metavar="N",
        help="job number printed on the pages and in the file name (1..9999)",
    )
    p.set_defaults(func=_scan)


def request_from_args(args: argparse.Namespace, profile: Profile) -> ScanRequest:
    """Fill the defaults the profile decides (first offered resolution, format by mode)."""
    from firmware.scanner.job import ScanRequest

    dpi = args.dpi or profile.list("scan.resolutions")[0]
    fmt = args.format or ("tiff" if args.mode == "mono" else "pdf")
    return ScanRequest(box=args.box, pages=args.pages, dpi=dpi, mode=args.mode, format=fmt)


def scan_image(image: Path, args: argparse.Namespace) -> ScanResult:
    """Open the board, run the job with the profile's RAM budget, close the board."""
    from firmware.scanner.job import run_scan
    from firmware.store.board import Board

    board = Board.open(image)
    try:
        profile = board.profile
        budget = RamBudget(profile.int("memory.image_ram_mib") * MIB)
        request = request_from_args(args, profile)
        return run_scan(request, board, budget, profile, job_number=args.job)
    finally:
        board.close()


def _scan(args: argparse.Namespace) -> int:
    from firmware.scanner.job import JOB_NUMBER_LIMIT

    if not 0 < args.job < JOB_NUMBER_LIMIT:
        raise DeviceError(f"--job {args.job} is not allowed; expected 1..{JOB_NUMBER_LIMIT - 1}")
    result = scan_image(args.image, args)
    files = result.filename if len(result.filenames) == 1 else f"{len(result.filenames)} files"
    print(
        f"stored job {result.job_number:04d} in {result.box}: uid {result.uid} "
        f"size {result.size} ({plural(result.pages, 'page')}, {files})"
    )
    return 0
