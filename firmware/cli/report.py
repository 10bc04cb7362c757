"""`dpfw report IMG`: the client report card a device saved beside its image.

Reads `IMG.clients.json` (firmware/device/report_file.py), which the device running on IMG
rewrites every few seconds while clients connect and when it stops; it does not open the
image, so it works while the device runs. Formats: text (default), md (Markdown), junit
(JUnit XML: one test suite per client, a failure per failed item, for a client's CI), json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from firmware.device.report_file import read_report
from firmware.errors import DeviceError
from firmware.ops import render
from firmware.ops.clients import ClientList
from firmware.pop3.report import cards_to_json, host_of, render_junit, render_markdown

FORMATS = ("text", "md", "junit", "json")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="the POP3 client report card (text, Markdown, JUnit XML, JSON)",
        description="Print the report card the device running on IMG saved beside it "
        "(IMG.clients.json): what each client did and how it grades against RFC 1939, 2449 "
        "and 2595. Works while the device runs.",
    )
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (text)")
    p.add_argument("--client", metavar="ADDRESS", help="only this client address")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit with status 1 when any item of any client shown fails",
    )
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    written, cards = read_report(args.image)
    if args.client is not None:
        host = host_of(args.client.strip())
        cards = [c for c in cards if c.address == host]
        if not cards:
            raise DeviceError(f"report: no client {host} in {args.image.name}'s report")
    if args.format == "md":
        print(render_markdown(cards, f"POP3 client report card: {args.image.name}"), end="")
    elif args.format == "junit":
        print(render_junit(cards, f"dpfw client report card: {args.image.name}"), end="")
    elif args.format == "json":
        print(json.dumps(cards_to_json(cards, written), indent=2, ensure_ascii=False))
    else:
        print(render.clients(ClientList(False, written, cards), detail=True))
    failed = any(item.verdict == "fail" for card in cards for item in card.items)
    return 1 if args.check and failed else 0
