"""`dpfw profile ...`: read and change the profile saved on an image while the device is off.

Nothing runs, so every change applies at the next boot. `apply` and `reset` print each key
that changes (old -> new) and save at once: the command line is the confirmation, and
`--dry-run` shows the list without saving (the console asks `apply? [y/N]` instead).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.config.profile import (
    MODELS,
    SCHEMA,
    Profile,
    canonical_model,
    factory,
    for_model,
    parse_toml,
    render,
)
from firmware.errors import ProfileError
from firmware.pop3.auth import boxes_without_legacy_secret, legacy_warning
from firmware.store.board import Board


def register(sub: Any) -> None:
    parser = sub.add_parser("profile", help="device profiles: list, show, set, apply, validate")
    psub = parser.add_subparsers(dest="profile_command", required=True, metavar="ACTION")

    p = psub.add_parser("list", help="the nine factory profiles")
    p.set_defaults(func=_list)

    p = psub.add_parser("keys", help="every profile key, what it means and what it accepts")
    p.set_defaults(func=_keys)

    p = psub.add_parser("show", help="print the profile saved on an image as TOML")
    p.add_argument("image", type=Path)
    p.set_defaults(func=_show)

    p = psub.add_parser("set", help="change one key of the saved profile (validated)")
    p.add_argument("image", type=Path)
    p.add_argument("key")
    p.add_argument("value")
    p.set_defaults(func=_set)

    p = psub.add_parser(
        "apply",
        help="switch the image to MODEL (any case), keeping site settings; lists the changes",
    )
    p.add_argument("image", type=Path)
    p.add_argument("model", type=_model, metavar="MODEL")
    p.add_argument(
        "--factory",
        action="store_true",
        help="take every factory value, site settings (host name, ports, POP3 policy) too",
    )
    p.add_argument("--dry-run", action="store_true", help="list the changes; change nothing")
    p.set_defaults(func=_apply)

    p = psub.add_parser("reset", help="every key back to the model's factory value")
    p.add_argument("image", type=Path)
    p.add_argument("--dry-run", action="store_true", help="list the changes; change nothing")
    p.set_defaults(func=_reset)

    p = psub.add_parser("validate", help="check profile TOML files against the schema")
    p.add_argument("files", type=Path, nargs="+")
    p.set_defaults(func=_validate)


def _list(args: argparse.Namespace) -> int:
    for model in MODELS:
        prof = factory(model)
        print(
            f"{model}  {prof.int('engine.ppm'):>3} ppm  "
            f"RAM {prof.int('memory.image_ram_mib'):>4} MiB  "
            f"flash {prof.int('storage.flash_mib'):>5} MiB  "
            f"POP3 sessions {prof.int('pop3.max_sessions'):>3}  "
            f"boxes {prof.int('mailbox.max_boxes'):>4}"
        )
    print("(modelled values, not Panasonic specifications)")
    return 0


def _keys(args: argparse.Namespace) -> int:
    for key, field in SCHEMA.items():
        when = "live" if field.live else "after reboot"
        site = ", site setting" if field.site else ""
        print(f"{key:34} {field.allowed()}; {field.doc} ({when}{site})")
    return 0


def _show(args: argparse.Namespace) -> int:
    with Board.open(args.image) as board:
        print(board.profile.to_toml(), end="")
    return 0


def _model(text: str) -> str:
    try:
        return canonical_model(text)
    except ProfileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _set(args: argparse.Namespace) -> int:
    with Board.open(args.image) as board:
        old = board.profile
        new = old.with_value(args.key, args.value, where=str(args.image))
        board.set_profile(new)
        print(f"{args.key} = {render(new[args.key])} (saved; applies at next boot)")
        _warn_legacy(board, old, new)
    return 0


def _change(args: argparse.Namespace, what: str, make: Callable[[Profile], Profile]) -> int:
    """List every key that changes (old -> new), then save unless --dry-run."""
    with Board.open(args.image) as board:
        old = board.profile
        new = make(old)
        changes = old.diff(new)
        if not changes:
            print(f"{args.image}: {what}: no value changed")
            return 0
        verb = "would change" if args.dry_run else "changes"
        print(f"{args.image}: {what} {verb} {len(changes)} value(s):")
        for key, before, after in changes:
            print(f"  {key}: {render(before)} -> {render(after)}")
        if args.dry_run:
            print("nothing changed (--dry-run)")
            return 0
        board.set_profile(new)
        print("saved; applies at next boot")
        _warn_legacy(board, old, new)
    return 0


def _warn_legacy(board: Board, old: Profile, new: Profile) -> None:
    """Name the boxes that cannot use APOP/CRAM-MD5 when `new` switches pop3.apop on."""
    if new.bool("pop3.apop") and not old.bool("pop3.apop"):
        warning = legacy_warning(boxes_without_legacy_secret(board.boxes()), console=False)
        if warning is not None:
            print(warning)


def _apply(args: argparse.Namespace) -> int:
    what = f"profile apply {args.model}" + (" --factory" if args.factory else "")
    return _change(args, what, lambda old: for_model(old, args.model, keep_site=not args.factory))


def _reset(args: argparse.Namespace) -> int:
    return _change(args, "profile reset", lambda old: factory(old.model))


def _validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            prof = parse_toml(path.read_text("utf-8"), str(path))
        except (OSError, UnicodeDecodeError) as exc:
            print(f"{path}: cannot read: {exc}")
            failed += 1
        except ProfileError as exc:
            print(exc)
            failed += 1
        else:
            print(f"{path}: valid profile for {prof.model}")
    return 1 if failed else 0
