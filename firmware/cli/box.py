"""`dpfw box add|list|show|messages|del|passwd`: mailboxes on a board image.

Parse, call firmware.ops over the offline board, render: the same operations and texts as the
console's `box` commands; `--json` prints the operation's dataclass. On an image a running
device holds, the same requests go to the device's API (firmware/cli/remote.py) and its
answers are rendered the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from firmware.cli import remote
from firmware.cli.common import add_image_json, add_secret_options, print_json, read_secret
from firmware.cli.remote import from_json, segment
from firmware.device.boards import open_board
from firmware.errors import DeviceError, NotFoundError
from firmware.ops import boxes, messages, render
from firmware.ops.boxes import BoxChange
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
        add_image_json(p, json=False)
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
    with remote.reach(args.image) as device:
        if device is not None:
            if _exists(device, args.name):  # refuse before asking for a password
                raise DeviceError(f"box add: a box named {args.name!r} already exists")
            body = {"name": args.name, "password": read_secret(args, "password")}
            if args.legacy is not None:
                body["legacy"] = args.legacy
            print(
                render.box_change(from_json(BoxChange, device.request("POST", "/boxes", json=body)))
            )
            return 0
    with open_board(args.image) as board:
        ctx = OpsContext.offline(board)
        boxes.check_new_box(ctx, args.name)  # refuse before asking for a password
        password = read_secret(args, "password")
        print(render.box_change(boxes.box_add(ctx, args.name, password, legacy=args.legacy)))
    return 0


def _exists(device: remote.Device, name: str) -> bool:
    try:
        device.request("GET", f"/boxes/{segment(name)}")
    except NotFoundError:
        return False
    return True


def cmd_list(args: argparse.Namespace) -> int:
    with remote.reach(args.image) as device:
        if device is not None:
            listing = from_json(boxes.BoxList, device.request("GET", "/boxes"))
        else:
            with open_board(args.image) as board:
                listing = boxes.box_list(OpsContext.offline(board))
    print_json(listing) if args.json else print(render.box_list(listing))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with remote.reach(args.image) as device:
        if device is not None:
            answer = device.request("GET", f"/boxes/{segment(args.name)}")
            detail = from_json(boxes.BoxDetail, answer)
        else:
            with open_board(args.image) as board:
                detail = boxes.box_show(OpsContext.offline(board), args.name)
    print_json(detail) if args.json else print(render.box_detail(detail))
    return 0


def cmd_messages(args: argparse.Namespace) -> int:
    with remote.reach(args.image) as device:
        if device is not None:
            answer = device.request("GET", f"/boxes/{segment(args.name)}/messages")
            for row in answer.get("messages", []):  # back to the dataclass's fields
                row.pop("number", None)
                row["sender"] = row.pop("from", None)
            listing = from_json(messages.MessageList, answer)
        else:
            with open_board(args.image) as board:
                listing = messages.list_messages(OpsContext.offline(board), args.name)
    if args.json:  # the one message shape, as the API lists it (firmware/ops/messages.py)
        print(json.dumps(messages.listing_json(listing), indent=2, ensure_ascii=False))
    else:
        print(render.messages(listing))
    return 0


def cmd_del(args: argparse.Namespace) -> int:
    with remote.reach(args.image) as device:
        if device is not None:
            params = {"purge": "true"} if args.purge else {}
            answer = device.request("DELETE", f"/boxes/{segment(args.name)}", params=params)
            print(render.box_change(from_json(BoxChange, answer)))
            return 0
    with open_board(args.image) as board:
        print(
            render.box_change(boxes.box_del(OpsContext.offline(board), args.name, purge=args.purge))
        )
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    with remote.reach(args.image) as device:
        if device is not None:
            path = f"/boxes/{segment(args.name)}"
            device.request("GET", path)  # refuse before asking for a password
            body: dict[str, object] = {"password": read_secret(args, "password")}
            if args.legacy is not None:
                body["legacy"] = args.legacy
            answer = device.request("PATCH", path, json=body)
            print(render.box_change(from_json(BoxChange, answer["password"])))
            return 0
    with open_board(args.image) as board:
        ctx = OpsContext.offline(board)
        boxes.find_box(ctx, args.name, "box passwd")  # refuse before asking for a password
        password = read_secret(args, "password")
        print(render.box_change(boxes.box_passwd(ctx, args.name, password, legacy=args.legacy)))
    return 0
