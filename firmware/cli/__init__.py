"""The `dpfw` command line: one sub-module per area, each registering its sub-commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from firmware import __version__
from firmware.errors import DeviceError

# Each module has `register(subparsers)`; its sub-commands set `func(args) -> int`.
COMMAND_MODULES = ("image", "box", "deliver", "profile", "scan", "tls", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dpfw", description="Firmware simulator for DP-series networked copiers."
    )
    parser.add_argument("--version", action="version", version=f"dpfw {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"firmware.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except DeviceError as exc:
        print(f"dpfw: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
