"""`dpfw box add|list|del|passwd`: mailboxes on a board image."""

from __future__ import annotations

import argparse
from pathlib import Path

from firmware.cli.common import add_secret_options, read_secret
from firmware.errors import BoxError
from firmware.pop3.auth import LEGACY_METHODS, keeps_legacy_secret
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


def _legacy_note(legacy: bool, apop_on: bool) -> str:
    """What the box's legacy secret means for the device as it is set now."""
    if legacy:
        return "" if apop_on else f" ({LEGACY_METHODS} secret kept; pop3.apop is off)"
    if apop_on:
        return f" (no {LEGACY_METHODS} secret: this box cannot use APOP or CRAM-MD5)"
    return ""


def cmd_add(args: argparse.Namespace) -> int:
    with Board.open(args.image) as board:
        check_box_name(args.name)  # refuse before asking for a password
        if board.box_credentials(args.name) is not None:
            raise BoxError(f"box {args.name!r} already exists")
        password = read_secret(args, "password")
        check_password_policy(password, "box add")
        apop_on = board.profile.bool("pop3.apop")
        legacy = keeps_legacy_secret(args.legacy, apop_on=apop_on)
        board.add_box(args.name, password, legacy=legacy)
    print(f"added box {args.name}{_legacy_note(legacy, apop_on)}")
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
        creds = board.box_credentials(args.name)
        if creds is None:
            raise BoxError(f"no box named {args.name!r}")
        password = read_secret(args, "password")
        check_password_policy(password, "box passwd")
        apop_on = board.profile.bool("pop3.apop")
        had = creds.legacy_secret is not None
        legacy = keeps_legacy_secret(args.legacy, apop_on=apop_on, had=had)
        board.set_box_password(args.name, password, legacy=legacy)
    print(f"password of box {args.name} changed{_legacy_note(legacy, apop_on)}")
    return 0
