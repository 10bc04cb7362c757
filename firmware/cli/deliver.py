"""`dpfw deliver IMG BOX FILE...`: store raw RFC 5322 messages in a box, in order.

On an image a running device holds, each message goes to the device's API
(`POST /api/v1/boxes/BOX/messages`, firmware/cli/remote.py): stored durably by the device's
store worker before the next file is read, and POP3 lists it at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from firmware.cli import remote
from firmware.device.boards import open_board
from firmware.errors import DeviceError, ImageError
from firmware.ops.boxes import find_box
from firmware.ops.context import OpsContext
from firmware.ops.messages import deliver
from firmware.text import file_problem


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("deliver", help="store message files in a box")
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("box", metavar="BOX")
    p.add_argument("files", nargs="+", metavar="FILE", help="message files; - reads stdin")
    p.set_defaults(func=cmd_deliver)


def cmd_deliver(args: argparse.Namespace) -> int:
    with remote.reach(args.image) as device:
        if device is not None:
            return _deliver_remote(device, args)
    with open_board(args.image) as board:
        ctx = OpsContext.offline(board)
        find_box(ctx, args.box)  # an unknown box fails before any file is read
        for path in args.files:
            name = "stdin" if path == "-" else path
            try:
                if path == "-":
                    info = deliver(ctx, args.box, sys.stdin.buffer)
                else:
                    with open(path, "rb") as f:
                        info = deliver(ctx, args.box, f)
            except OSError as exc:  # the message file (the image's own are ImageError)
                raise DeviceError(file_problem(name, exc)) from None
            except ImageError:
                raise  # the image, not this file, failed: its message names the image
            except DeviceError as exc:
                raise DeviceError(f"{name}: {exc}") from None
            print(f"{info.uid} {info.size} {name}")
    return 0


def _deliver_remote(device: remote.Device, args: argparse.Namespace) -> int:
    box = f"/boxes/{remote.segment(args.box)}"
    device.request("GET", box)  # an unknown box fails before any file is read
    for path in args.files:
        name = "stdin" if path == "-" else path
        try:
            if path == "-":
                data = sys.stdin.buffer.read()
            else:
                with open(path, "rb") as f:
                    data = f.read()
        except OSError as exc:
            raise DeviceError(file_problem(name, exc)) from None
        try:
            info = device.request(
                "POST",
                f"{box}/messages",
                content=data,
                headers={"Content-Type": "message/rfc822"},
            )
        except DeviceError as exc:
            raise DeviceError(f"{name}: {exc}") from None
        print(f"{info['uid']} {info['size']} {name}")
    return 0
