"""`dpfw profile ...`: read and change the profile saved on an image while the device is off.

Nothing runs, so every change applies at the next boot. The changes go through the same
operations as the console's (firmware.ops.profile: one update path, one error vocabulary).
`apply` and `reset` print each key that changes (old -> new) and save at once: the command
line is the confirmation, and `--dry-run` shows the list without saving (the console asks
`apply? [y/N]` instead).

On an image a running device holds, `show`, `set`, `apply` and `reset` go to the device's
API (firmware/cli/remote.py): live keys apply at once, the others at its next reboot, as the
console's `profile set` does; `--dry-run` then plans against the device's saved profile
without saving.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from firmware.cli import remote
from firmware.cli.common import print_json
from firmware.cli.remote import from_json
from firmware.config.profile import (
    MODELS,
    SCHEMA,
    Profile,
    Value,
    canonical_model,
    check_toml,
    factory,
    for_model,
)
from firmware.device.boards import open_board
from firmware.errors import ProfileError
from firmware.ops import profile, render
from firmware.ops.context import OpsContext
from firmware.ops.profile import KeyChange, ProfilePlan, ProfileUpdate, ProfileView
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
    with remote.reach(args.image) as device:
        if device is not None:
            view = from_json(ProfileView, device.request("GET", "/profile"))
            if args.json:
                print_json(view)
            else:
                saved = Profile({key.key: key.saved for key in view.keys})
                print(saved.to_toml(mask_secrets=True), end="")
            return 0
    with open_board(args.image) as board:
        ctx = OpsContext.offline(board)
        if args.json:
            print_json(profile.profile_view(ctx))
        else:
            print(ctx.saved_profile.to_toml(mask_secrets=True), end="")
    return 0


def _model(text: str) -> str:
    try:
        return canonical_model(text)
    except ProfileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _set(args: argparse.Namespace) -> int:
    pairs = profile.parse_pairs(args.pairs, SET_USAGE)
    with remote.reach(args.image) as device:
        if device is not None:
            # Checked here as offline, in the same words, against the device's saved profile
            # (secrets masked); the device checks them again, whole, before it saves.
            view = from_json(ProfileView, device.request("GET", "/profile"))
            new = Profile({key.key: key.saved for key in view.keys}).with_values(
                pairs, "profile set"
            )
            body = {key: _json_value(new[key]) for key, _ in pairs}
            update = from_json(ProfileUpdate, device.request("PATCH", "/profile", json=body))
            print(render.update(dataclasses.replace(update, what="profile set"), console=False))
            return 0
    with open_board(args.image) as board:
        ctx = OpsContext.offline(board)
        update = profile.commit(ctx, profile.plan_set(ctx, pairs))
    print(render.update(update, console=False))
    return 0


def _json_value(value: Value) -> object:
    """A profile value as the API's JSON takes it (a list for a tuple)."""
    return list(value) if isinstance(value, tuple) else value


def _change(args: argparse.Namespace, plan_for: Any, model: str | None, keep_site: bool) -> int:
    """List every key that changes (old -> new), then save unless --dry-run.

    On a running device: `model` (None: reset to the saved model's factory values) and
    `keep_site` go to `POST /api/v1/profile/apply`; `--dry-run` plans from the device's
    profile view."""
    with remote.reach(args.image) as device:
        if device is not None:
            return _change_remote(device, args, model, keep_site)
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


def _change_remote(
    device: remote.Device, args: argparse.Namespace, model: str | None, keep_site: bool
) -> int:
    view = from_json(ProfileView, device.request("GET", "/profile"))
    saved = Profile({key.key: key.saved for key in view.keys})
    if args.dry_run:
        print(render.plan(_remote_plan(view, saved, model, keep_site), dry_run=True))
        print("nothing changed (--dry-run)")
        return 0
    body = {"model": model or saved.model, "factory": not keep_site}
    update = from_json(ProfileUpdate, device.request("POST", "/profile/apply", json=body))
    if model is None:
        update = dataclasses.replace(update, what=f"profile reset to {saved.model} factory values")
    print(render.update(update, console=False))
    return 0


def _remote_plan(
    view: ProfileView, saved: Profile, model: str | None, keep_site: bool
) -> ProfilePlan:
    """What `profile apply|reset` would change on a running device, from its profile view,
    as firmware.ops.profile plans it (secrets come masked: a secret the change empties
    shows as a change of the mask)."""
    if model is None:
        new, what = factory(saved.model), f"profile reset to {saved.model} factory values"
    else:
        new = for_model(saved, model, keep_site=keep_site)
        what = f"profile apply {model}" + ("" if keep_site else " factory")
    running = {key.key: key.running for key in view.keys}
    changes = [
        KeyChange(
            key,
            saved[key],
            new[key],
            running[key],
            "now" if SCHEMA[key].live else "running" if running[key] == new[key] else "reboot",
        )
        for key in SCHEMA
        if new[key] != saved[key]
    ]
    return ProfilePlan(what, changes, dict(new.data))


def _apply(args: argparse.Namespace) -> int:
    return _change(
        args,
        lambda ctx: profile.plan_apply(ctx, args.model, keep_site=not args.factory),
        args.model,
        not args.factory,
    )


def _reset(args: argparse.Namespace) -> int:
    return _change(args, profile.plan_reset, None, False)


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
