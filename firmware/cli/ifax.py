"""`dpfw ifax status|poll|tray list|tray show|tray clear IMG`: Internet Fax, device off.

The console's `ifax` operations over the offline board (firmware/ops/ifax.py), rendered the
same way; `--json` prints the dataclass (a tray document's sender also under `from`).
`poll` runs one poll from the command line with the image's saved profile.
"""

from __future__ import annotations

import argparse
import json

import trio

from firmware.cli.common import add_image_json, print_json
from firmware.config.budget import RamBudget
from firmware.device.boards import open_board, saved_profile
from firmware.ifax.poller import IfaxPoller
from firmware.ops import ifax, render
from firmware.ops.context import OpsContext
from firmware.store.worker import StoreWorker

MIB = 1 << 20


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("ifax", help="Internet Fax: status, poll now, the output tray")
    cmds = parser.add_subparsers(dest="ifax_command", required=True, metavar="ACTION")

    p = cmds.add_parser("status", help="settings, tray size")
    add_image_json(p)
    p.set_defaults(func=cmd_status)

    p = cmds.add_parser("poll", help="poll the mail server once with the image's profile")
    add_image_json(p)
    p.set_defaults(func=cmd_poll)

    tray = cmds.add_parser("tray", help="the output tray: list, show N, clear")
    tcmds = tray.add_subparsers(dest="tray_command", required=True, metavar="ACTION")
    p = tcmds.add_parser("list", help="every document: status, pages, sender, subject")
    add_image_json(p)
    p.set_defaults(func=cmd_tray_list)
    p = tcmds.add_parser("show", help="one document with its pages")
    add_image_json(p, json=False)
    p.add_argument("number", type=int, metavar="N")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_tray_show)
    p = tcmds.add_parser("clear", help="remove every document (UIDLs are remembered)")
    add_image_json(p, json=False)
    p.set_defaults(func=cmd_tray_clear)


def cmd_status(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        result = ifax.status(OpsContext.offline(board))
    print_json(result) if args.json else print(render.ifax_status(result))
    return 0


def cmd_poll(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        profile = saved_profile(board)
        budget = RamBudget(profile.int("memory.image_ram_mib") * MIB)
        poller = IfaxPoller(lambda: board, lambda: profile, lambda: budget, StoreWorker())
        report = trio.run(poller.poll)
    result = ifax.result_of(report)
    print_json(result) if args.json else print(render.ifax_poll(result))
    return 1 if result.failed else 0


def cmd_tray_list(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        result = ifax.tray_list(OpsContext.offline(board))
    if args.json:
        print(json.dumps(result.json(), indent=2, ensure_ascii=False))
    else:
        print(render.tray_list(result))
    return 0


def cmd_tray_show(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        result = ifax.tray_show(OpsContext.offline(board), args.number)
    if args.json:
        print(json.dumps(result.json(), indent=2, ensure_ascii=False))
    else:
        print(render.tray_show(result))
    return 0


def cmd_tray_clear(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        print(render.tray_cleared(ifax.tray_clear(OpsContext.offline(board))))
    return 0


__all__ = ["register"]
