"""`dpfw box add|list|del|passwd`: mailboxes on a board image."""

from __future__ import annotations

import argparse
from pathlib import Path

from firmware.cli.common import add_secret_options, read_secret
from firmware.errors import BoxError
from firmware.security.credentials import check_password_policy
from firmware.store.board import Board, check_box_name
from firmware.text import plural


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("box", help="manage mailboxes")
    cmds = parser.add_subparsers(dest="box_command", required=True, metavar="ACTION")

    p = cmds.add_parser("add", help="add a mailbox")
    _image_and_name(p)
    _password_options(p)
    p.set_defaults(func=cmd_add)

    p = cmds.add_parser("list", help="list mailboxes")
    p.add_argument("image", type=Path, metavar="IMG")
    p.set_defaults(func=cmd_list)

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
    p.add_argument(
        "--legacy",
        action="store_true",
        help="also keep an APOP/CRAM-MD5 secret (plaintext-equivalent)",
    )
    add_secret_options(p, "password")


def cmd_add(args: argparse.Namespace) -> int:
    with Board.open(args.image) as board:
        check_box_name(args.name)  # refuse before asking for a password
        if board.box_credentials(args.name) is not None:
            raise BoxError(f"box {args.name!r} already exists")
        password = read_secret(args, "password")
        check_password_policy(password, "box add")
        board.add_box(args.name, password, legacy=args.legacy)
    print(f"added box {args.name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with Board.open(args.image) as board:
        boxes = board.boxes()
        limit = board.profile.int("mailbox.max_boxes")
    print(f"{len(boxes)} of {plural(limit, 'box')}")
    for b in boxes:
        extra = "  legacy-secret" if b.has_legacy_secret else ""
        print(f"{b.name}\t{plural(b.messages, 'message')}\t{plural(b.bytes, 'byte')}{extra}")
    return 0


def cmd_del(args: argparse.Namespace) -> int:
    with Board.open(args.image) as board:
        board.delete_box(args.name, purge=args.purge)
    print(f"deleted box {args.name}")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    with Board.open(args.image) as board:
        if board.box_credentials(args.name) is None:
            raise BoxError(f"no box named {args.name!r}")
        password = read_secret(args, "password")
        check_password_policy(password, "box passwd")
        board.set_box_password(args.name, password, legacy=args.legacy)
    print(f"password of box {args.name} changed")
    return 0
