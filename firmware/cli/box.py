"""`dpfw box add|list|show|messages|del|passwd`: mailboxes on a board image (device off).

Parse, call firmware.ops over the offline board, render: the same operations and texts as the
console's `box` commands; `--json` prints the operation's dataclass.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from firmware.cli.common import add_secret_options, print_json, read_secret
from firmware.device.boards import open_board
from firmware.ops import boxes, messages, render
from firmware.ops.context import OpsContext


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("box", help="manage mailboxes")
    cmds = parser.add_subparsers(dest="box_command", required=True, metavar="ACTION")

    p = cmds.add_parser("add", help="add a mailbox")
    _image_and_name(p)
    _password_options(p)
    p.set_defaults(func=cmd_add)

    for name, helptext, func, named in (
        ("list", "list mailboxes", cmd_list, False),
        ("show", "one mailbox: limits, secrets, latest messages", cmd_show, True),
        ("messages", "a mailbox's messages: uid, size, date, subject, from", cmd_messages, True),
    ):
        p = cmds.add_parser(name, help=helptext)
        p.add_argument("image", type=Path, metavar="IMG")
        if named:
            p.add_argument("name", metavar="NAME")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)

    p = cmds.add_parser("del", help="delete a mailbox")
    _image_and_name(p)
    p.add_argument("--purge", action="store_true", help="also delete its messages")
    p.set_defaults(func=cmd_del)

    p = cmds.add_parser("passwd", help="set a mailbox password")
    _image_and_name(p)
    _password_options(p)
    p.set_defaults(func=cmd_passwd)


def _image_and_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("name", metavar="NAME")


def _password_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--legacy",
        action="store_const",
        const=True,
        dest="legacy",
        help="also keep an APOP/CRAM-MD5 secret (plaintext-equivalent); the default while "
        "pop3.apop is on, or for a box that already had one",
    )
    group.add_argument(
        "--no-legacy",
        action="store_const",
        const=False,
        dest="legacy",
        help="keep no APOP/CRAM-MD5 secret (the box then cannot use APOP or CRAM-MD5)",
    )
    add_secret_options(p, "password")


def cmd_add(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        ctx = OpsContext.offline(board)
        boxes.check_new_box(ctx, args.name)  # refuse before asking for a password
        password = read_secret(args, "password")
        print(render.box_change(boxes.box_add(ctx, args.name, password, legacy=args.legacy)))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        listing = boxes.box_list(OpsContext.offline(board))
    print_json(listing) if args.json else print(render.box_list(listing))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        detail = boxes.box_show(OpsContext.offline(board), args.name)
    print_json(detail) if args.json else print(render.box_detail(detail))
    return 0


def cmd_messages(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        listing = messages.list_messages(OpsContext.offline(board), args.name)
    print_json(listing) if args.json else print(render.messages(listing))
    return 0


def cmd_del(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        print(
            render.box_change(boxes.box_del(OpsContext.offline(board), args.name, purge=args.purge))
        )
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        ctx = OpsContext.offline(board)
        boxes.find_box(ctx, args.name, "box passwd")  # refuse before asking for a password
        password = read_secret(args, "password")
        print(render.box_change(boxes.box_passwd(ctx, args.name, password, legacy=args.legacy)))
    return 0
