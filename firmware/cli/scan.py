"""`dpfw scan IMG BOX`: run one scan job into a box of a board image.

Offline the job runs here, in the RAM budget the image's profile gives the device. On an
image a running device holds, the device runs it (`POST /api/v1/scans`, then the job is
followed until it is done; firmware/cli/remote.py) with its own job numbers and RAM budget,
as the console's `scan` does."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from firmware.cli import remote
from firmware.cli.remote import from_json
from firmware.config.profile import COLOR_MODES, FORMATS, RESOLUTIONS
from firmware.errors import DeviceError
from firmware.ops import scans
from firmware.ops.context import OpsContext
from firmware.ops.scans import ScanDone
from firmware.text import plural


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scan",
        help="scan synthetic test-chart pages into a box (on a board image or its device)",
        description="Render PAGES test-chart pages, encode them as the device does and store "
        "the job as one MIME message in BOX. Prints the stored message's uid and size.",
    )
    p.add_argument("image", type=Path, metavar="IMG", help="board image file")
    p.add_argument("box", metavar="BOX", help="target mailbox")
    p.add_argument("--pages", type=int, metavar="N", help="pages in the job (1)")
    p.add_argument(
        "--dpi",
        choices=RESOLUTIONS,
        help="resolution (default: 300 if the profile offers it, else its first; "
        "200x100 = fax standard, 200x200 = fax fine)",
    )
    p.add_argument(
        "--mode", choices=COLOR_MODES, help="colour mode (default: the profile's first, mono)"
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="tiff (mono, CCITT G4), pdf (any mode) or jpeg (gray/color, one file per page); "
        "default: the profile's first offered format that carries the mode",
    )
    p.add_argument(
        "--job",
        type=int,
        metavar="N",
        help="job number printed on the pages and in the file name (1..9999; default 1); "
        "a running device numbers its jobs itself",
    )
    p.set_defaults(func=_scan)


def _options(args: argparse.Namespace) -> dict[str, str | int]:
    given = (("pages", args.pages), ("dpi", args.dpi), ("mode", args.mode), ("format", args.format))
    return {name: value for name, value in given if value is not None}


def scan_image(image: Path, args: argparse.Namespace) -> ScanDone:
    """Open the board, run the job in the profile's RAM budget (firmware.ops.scans), close it;
    or, when a running device holds the image, have the device run it.

    Options left out take the defaults the console's `scan` takes from the profile.
    """
    from firmware.device.boards import open_board

    with remote.reach(image) as device:
        if device is not None:
            if args.job is not None:
                raise DeviceError(
                    f"--job: {image} is held by a running device, which numbers its jobs itself"
                )
            answer = device.request("POST", "/scans", json={"box": args.box, **_options(args)})
            return from_json(ScanDone, device.wait_scan(int(answer["job"]), args.box))
    options = {name: str(value) for name, value in _options(args).items()}
    with open_board(image) as board:
        ctx = OpsContext.offline(board)
        request = scans.prepare_scan(ctx, args.box, options)
        return scans.run_scan_offline(ctx, request, 1 if args.job is None else args.job)


def _scan(args: argparse.Namespace) -> int:
    from firmware.scanner.job import JOB_NUMBER_LIMIT

    if args.job is not None and not 0 < args.job < JOB_NUMBER_LIMIT:
        raise DeviceError(f"--job {args.job} is not allowed; expected 1..{JOB_NUMBER_LIMIT - 1}")
    result = scan_image(args.image, args)
    files = result.files[0] if len(result.files) == 1 else f"{len(result.files)} files"
    print(
        f"stored job {result.job_number:04d} in {result.box}: uid {result.uid} "
        f"size {result.size} ({plural(result.pages, 'page')}, {files})"
    )
    return 0
