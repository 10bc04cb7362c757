"""`dpfw profile ...`: read and change the profile saved on an image while the device is off.

Nothing runs, so every change applies at the next boot. The changes go through the same
operations as the console's (firmware.ops.profile: one update path, one error vocabulary).
`apply` and `reset` print each key that changes (old -> new) and save at once: the command
line is the confirmation, and `--dry-run` shows the list without saving (the console asks
`apply? [y/N]` instead).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from firmware.cli.common import print_json
from firmware.config.profile import MODELS, canonical_model, check_toml
from firmware.device.boards import open_board
from firmware.errors import ProfileError
from firmware.ops import profile, render
from firmware.ops.context import OpsContext
from firmware.ops.profile import ProfilePlan
from firmware.text import file_problem

SET_USAGE = "dpfw profile set IMG KEY VALUE [KEY VALUE ...] (or KEY=VALUE ...)"


def register(sub: Any) -> None:
    parser = sub.add_parser("profile", help="device profiles: list, show, set, apply, validate")
    psub = parser.add_subparsers(dest="profile_command", required=True, metavar="ACTION")

    p = psub.add_parser("list", help="the nine factory profiles")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)

    p = psub.add_parser("keys", help="every profile key, what it means and what it accepts")
    p.set_defaults(func=_keys)

    p = psub.add_parser("show", help="print the profile saved on an image as TOML")
    p.add_argument("image", type=Path)
    p.add_argument("--json", action="store_true", help="every key with its doc, as JSON")
    p.set_defaults(func=_show)

    p = psub.add_parser(
        "set", help="change keys of the saved profile (validated together, one NVRAM write)"
    )
    p.add_argument("image", type=Path)
    p.add_argument("pairs", nargs="+", metavar="KEY VALUE")
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
    rows = profile.models(None)
    if args.json:
        print_json(profile.ModelList(rows))
    else:
        print(render.models(rows))
    return 0


def _keys(args: argparse.Namespace) -> int:
    print(render.key_docs(profile.profile_view(None, MODELS[0]).keys))
    return 0


def _show(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        ctx = OpsContext.offline(board)
        if args.json:
            print_json(profile.profile_view(ctx))
        else:
            print(ctx.saved_profile.to_toml(), end="")
    return 0


def _model(text: str) -> str:
    try:
        return canonical_model(text)
    except ProfileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _set(args: argparse.Namespace) -> int:
    pairs = profile.parse_pairs(args.pairs, SET_USAGE)
    with open_board(args.image) as board:
        ctx = OpsContext.offline(board)
        update = profile.commit(ctx, profile.plan_set(ctx, pairs))
    print(render.update(update, console=False))
    return 0


def _change(args: argparse.Namespace, plan_for: Any) -> int:
    """List every key that changes (old -> new), then save unless --dry-run."""
    with open_board(args.image) as board:
        ctx = OpsContext.offline(board)
        plan: ProfilePlan = plan_for(ctx)
        print(render.plan(plan, dry_run=args.dry_run))
        if not plan.changes:
            return 0
        if args.dry_run:
            print("nothing changed (--dry-run)")
            return 0
        update = profile.commit(ctx, plan)
    print("saved; applies at next boot")
    warning = render.update_warning(update, console=False)
    if warning is not None:
        print(warning)
    return 0


def _apply(args: argparse.Namespace) -> int:
    return _change(
        args, lambda ctx: profile.plan_apply(ctx, args.model, keep_site=not args.factory)
    )


def _reset(args: argparse.Namespace) -> int:
    return _change(args, profile.plan_reset)


def _validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(file_problem(path, exc))
            failed += 1
            continue
        prof, problems = check_toml(text, str(path))
        for line in problems:  # every bad key of the file, not only the first
            print(line)
        if prof is None:
            failed += 1
        else:
            print(f"{path}: valid profile for {prof.model}")
    return 1 if failed else 0
