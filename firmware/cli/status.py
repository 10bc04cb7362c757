"""`dpfw status IMG` and `dpfw session list|kill IMG`: the device at a glance, its sessions.

On an image a running device holds these ask the device (firmware/cli/remote.py): its
uptime, RAM, POP3 counters and open sessions. On an image nothing runs they read the image:
flash use and the saved profile, `running` false and no sessions. `--json` prints the
operation's dataclass (firmware/ops/status.py, firmware/ops/sessions.py) either way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from firmware.cli import remote
from firmware.cli.common import add_image_json, print_json
from firmware.cli.remote import from_json
from firmware.device.boards import open_board
from firmware.errors import ConflictError
from firmware.ops import render, sessions, status
from firmware.ops.context import OpsContext


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="model, uptime, RAM, flash, POP3 counters and locks")
    add_image_json(p)
    p.set_defaults(func=cmd_status)

    parser = sub.add_parser("session", help="POP3 sessions of the running device: list, kill")
    cmds = parser.add_subparsers(dest="session_command", required=True, metavar="ACTION")
    p = cmds.add_parser("list", help="open POP3 sessions: id, peer, box, state, TLS")
    add_image_json(p)
    p.set_defaults(func=cmd_session_list)
    p = cmds.add_parser("kill", help="end a POP3 session now (its deletions are not committed)")
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("id", type=int, metavar="ID")
    p.set_defaults(func=cmd_session_kill)


def cmd_status(args: argparse.Namespace) -> int:
    with remote.reach(args.image) as device:
        if device is not None:
            result = from_json(status.Status, device.request("GET", "/status"))
        else:
            with open_board(args.image) as board:
                result = status.status(OpsContext.offline(board))
    print_json(result) if args.json else print(render.status(result))
    return 0


def cmd_session_list(args: argparse.Namespace) -> int:
    with remote.reach(args.image) as device:
        if device is not None:
            result = from_json(sessions.SessionList, device.request("GET", "/sessions"))
        else:
            with open_board(args.image) as board:
                result = sessions.session_list(OpsContext.offline(board))
    print_json(result) if args.json else print(render.sessions(result))
    return 0


def cmd_session_kill(args: argparse.Namespace) -> int:
    with remote.reach(args.image) as device:
        if device is None:
            raise ConflictError(f"session kill: no device is running {args.image}")
        killed = device.request("DELETE", f"/sessions/{args.id}")["killed"]
    print(f"session {killed} killed")
    return 0
