"""`dpfw image create|demo|inspect|fsck|compact`: make and look into board images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from firmware.cli import remote
from firmware.cli.common import add_secret_options, parse_size, read_secret
from firmware.config.profile import MODELS, Profile, factory, parse_toml, shown
from firmware.device.boards import create_board, open_board, saved_profile
from firmware.errors import DeviceError, ProfileError
from firmware.ops import render, storage
from firmware.ops.context import OpsContext
from firmware.security.credentials import check_password_policy
from firmware.text import file_problem, plural


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("image", help="create and inspect board images")
    cmds = parser.add_subparsers(dest="image_command", required=True, metavar="ACTION")

    p = cmds.add_parser("create", help="create a new, empty board image")
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument(
        "--profile",
        required=True,
        metavar="MODEL|FILE",
        help=f"factory model ({', '.join(MODELS)}) or a profile TOML file",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        help="image size, e.g. 64MiB (default: the profile's storage.flash_mib)",
    )
    add_secret_options(p, "admin-password")
    p.set_defaults(func=cmd_create)

    p = cmds.add_parser("demo", help="create the demo image (lab passwords, demo messages)")
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("--size", type=parse_size, help="image size (default: the profile's)")
    p.set_defaults(func=cmd_demo)

    p = cmds.add_parser("inspect", help="show superblock, NVRAM, boxes, space, bad records")
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)

    p = cmds.add_parser("fsck", help="re-read every record and verify its CRC")
    p.add_argument("image", type=Path, metavar="IMG")
    p.set_defaults(func=cmd_fsck)

    p = cmds.add_parser("compact", help="reclaim the space of deleted messages now")
    p.add_argument("image", type=Path, metavar="IMG")
    p.set_defaults(func=cmd_compact)


def load_profile(text: str) -> Profile:
    """A factory model name (any case), or the path of a profile TOML file."""
    if text.upper() in MODELS:
        return factory(text)
    path = Path(text)
    if not path.is_file():
        raise ProfileError(f"{shown(text)} is neither a model ({', '.join(MODELS)}) nor a file")
    try:
        toml = path.read_text("utf-8")
    except OSError as exc:
        raise ProfileError(file_problem(path, exc)) from None
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not UTF-8 text, so not a profile TOML file") from None
    return parse_toml(toml, str(path))


def cmd_create(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    if args.image.exists():
        raise DeviceError(f"{args.image} already exists; refusing to overwrite it")
    password = read_secret(args, "admin-password")
    check_password_policy(password, "image create")
    with create_board(args.image, profile, password, size=args.size) as board:
        print(
            f"created {board.path}: {profile.model}, {board.geometry.image_size} bytes, "
            f"{board.usage().total} bytes for messages"
        )
    return 0


# A scanned document in each box, as a person at the copier would have left it:
# (box, pages, dpi, mode, format) of a ScanRequest.
DEMO_SCANS = (
    ("alice", 2, "200x100", "mono", "tiff"),
    ("bob", 1, "200x200", "mono", "pdf"),
)


def cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: Pillow is only needed for the demo's scans (a smaller floor for the rest).
    from firmware.config.budget import RamBudget
    from firmware.device import demo
    from firmware.scanner.job import ScanRequest, run_scan

    with demo.create_demo(args.image, size=args.size) as board:
        budget = RamBudget(saved_profile(board).int("memory.image_ram_mib") * 1024 * 1024)
        for number, (box, pages, dpi, mode, fmt) in enumerate(DEMO_SCANS, start=1):
            request = ScanRequest(box=box, pages=pages, dpi=dpi, mode=mode, format=fmt)
            run_scan(request, board, budget, saved_profile(board), job_number=number)
        model = saved_profile(board).model
        print(f"created demo image {board.path} ({model}, plaintext POP3 allowed)")
        print(f"console admin password: {demo.ADMIN_PASSWORD}")
        for info in board.boxes():
            messages = plural(info.messages, "message")
            print(f"box {info.name}: password {demo.BOXES[info.name]}, {messages}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    device = remote.device_for(args.image)
    if device is not None:
        info = device.request("GET", "/image")
    else:
        with open_board(args.image, repair=False) as board:
            info = storage.inspect(OpsContext.offline(board))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    sb = info["superblock"]
    print(f"image {info['image']}")
    print(
        f"  format version {sb['format_version']}, {sb['image_size']} bytes, "
        f"{sb['block_count']} erase blocks of {sb['block_size']} bytes, id {sb['image_id']}"
    )
    print(f"  profile: {info['profile']['model']} (firmware {info['profile']['firmware_version']})")
    seqs = ", ".join("none" if s is None else str(s) for s in info["nvram"]["slot_sequences"])
    print(f"  NVRAM slots: {seqs} (active {info['nvram']['active_sequence']})")
    print(f"  boxes: {len(info['boxes'])}")
    for b in info["boxes"]:
        extra = " legacy-secret" if b["legacy_secret"] else ""
        bad = f" ({b['corrupt']} corrupt)" if b["corrupt"] else ""
        messages, size = plural(b["messages"], "message"), plural(b["bytes"], "byte")
        print(f"    {b['name']}: {messages}, {size}{bad}{extra}")
    sp = info["space"]
    print(
        f"  space: {sp['total']} total, {sp['used']} used, {sp['free']} free, "
        f"{sp['reclaimable']} reclaimable"
    )
    if info["settings"]:
        print(f"  settings: {', '.join(info['settings'])}")
    print(f"  records checked: {info['records_checked']}")
    if not info["problems"]:
        print("  no corrupt or torn records")
    for p in info["problems"]:
        where = f" (box {p['box']}, uid {p['uid']})" if p["uid"] else ""
        print(
            f"  {p['what']} record at log offset {p['log_offset']}, {p['length']} bytes: "
            f"{p['detail']}{where}"
        )
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    with open_board(args.image, repair=False) as board:
        report = storage.fsck(OpsContext.offline(board))
    print(render.fsck(report))
    return 0 if report.clean else 2


def cmd_compact(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        report = storage.compact(OpsContext.offline(board))
    print(f"{render.compact(report)}; {render.format_size(report.free)} free")
    return 0
