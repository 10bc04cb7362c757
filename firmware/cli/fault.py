"""`dpfw fault add|list|clear IMG ...`: the faults of a running device (docs/faults.md).

Faults live in the running device's RAM (a power cut or reboot keeps them, the process's end
does not), so these commands always go through the device's control socket
(firmware/cli/remote.py); on an image nothing runs they say so in one line. `add` checks the
fault here first (the same parser as the console's `fault add`: ACTION then key=value
words), so a mistake is named before the device is asked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from firmware.cli import remote
from firmware.cli.common import add_image_json, print_json
from firmware.cli.remote import from_json
from firmware.errors import ConflictError
from firmware.faults.spec import ACTIONS, parse_words
from firmware.ops import render
from firmware.ops.faults import FaultInfo, FaultList, FaultsCleared, parse_fault_id


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("fault", help="inject faults into a running device: add, list, clear")
    cmds = parser.add_subparsers(dest="fault_command", required=True, metavar="ACTION")
    p = cmds.add_parser(
        "add",
        help="set a fault: ACTION and key=value triggers/parameters (docs/faults.md)",
        description=f"Actions: {', '.join(ACTIONS)}. Example: dpfw fault add IMG retr-break "
        "box=alice after_percent=50 times=1",
    )
    add_image_json(p)
    # A free word the spec parser checks: an unknown one is one line naming the actions.
    p.add_argument("action", metavar="ACTION")
    p.add_argument("words", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_add)
    p = cmds.add_parser("list", help="the faults set, how often each fired, the seed")
    add_image_json(p)
    p.set_defaults(func=cmd_list)
    p = cmds.add_parser("clear", help="remove one fault (ID) or all of them")
    add_image_json(p)
    p.add_argument("id", nargs="?", metavar="ID")
    p.set_defaults(func=cmd_clear)


def _no_device(image: Path, what: str) -> ConflictError:
    return ConflictError(
        f"fault {what}: no device is running {image}; faults live in a running device "
        "(dpfw run IMG, or dpfw run IMG --faults FILE.toml)"
    )


def cmd_add(args: argparse.Namespace) -> int:
    spec = parse_words(args.action, args.words)
    with remote.reach(args.image) as device:
        if device is None:
            raise _no_device(args.image, "add")
        added = from_json(FaultInfo, device.request("POST", "/faults", json=spec.to_json()))
    print_json(added) if args.json else print(render.fault_added(added))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with remote.reach(args.image) as device:
        if device is None:
            raise _no_device(args.image, "list")
        faults = from_json(FaultList, device.request("GET", "/faults"))
    print_json(faults) if args.json else print(render.fault_list(faults))
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    path = "/faults" if args.id is None else f"/faults/{parse_fault_id(args.id)}"
    with remote.reach(args.image) as device:
        if device is None:
            raise _no_device(args.image, "clear")
        cleared = from_json(FaultsCleared, device.request("DELETE", path))
    print_json(cleared) if args.json else print(render.faults_cleared(cleared))
    return 0
