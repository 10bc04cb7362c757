"""Helpers shared by the sub-commands: argparse shapes, secrets from stdin or a prompt, sizes."""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from pathlib import Path

from firmware.errors import DeviceError

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1000,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1000**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1000**3,
    "GIB": 1024**3,
}


def parse_size(text: str) -> int:
    """'64MiB', '512K', '1048576' -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 64MiB or 512K")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def add_image_json(parser: argparse.ArgumentParser, *, json: bool = True) -> None:
    """The `IMG [--json]` arguments most sub-commands take: the board image and, when `json`,
    `--json` (print the operation's dataclass as JSON instead of text)."""
    parser.add_argument("image", type=Path, metavar="IMG", help="board image file")
    if json:
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_secret_options(parser: argparse.ArgumentParser, what: str) -> None:
    """--WHAT-stdin, or --WHAT (for labs), or else a prompt."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(f"--{what}-stdin", action="store_true", help=f"read the {what} from stdin")
    group.add_argument(f"--{what}", metavar="TEXT", help=f"the {what} itself (labs only)")


def read_secret(args: argparse.Namespace, what: str) -> str:
    """The secret named by add_secret_options, from wherever it was given."""
    attr = what.replace("-", "_")
    given: str | None = getattr(args, attr)
    if given is not None:
        secret = given
    elif getattr(args, f"{attr}_stdin"):
        try:
            secret = sys.stdin.readline().rstrip("\r\n")
        except UnicodeDecodeError:
            raise DeviceError(f"the {what.replace('-', ' ')} on stdin is not UTF-8 text") from None
    elif sys.stdin.isatty():
        try:
            secret = getpass.getpass(f"{what.replace('-', ' ').capitalize()}: ")
            again = getpass.getpass("Again: ")
        except EOFError:  # Ctrl-D at the prompt; Ctrl-C is KeyboardInterrupt, for main()
            print(file=sys.stderr)  # end the prompt's line
            raise DeviceError(f"no {what.replace('-', ' ')} given (end of input)") from None
        if again != secret:
            raise DeviceError(f"the two {what.replace('-', ' ')}s differ")
    else:
        raise DeviceError(f"no {what.replace('-', ' ')}: use --{what}-stdin or --{what}")
    if not secret:
        raise DeviceError(f"the {what.replace('-', ' ')} must not be empty")
    return secret


def print_json(result: object) -> None:
    """An operation's dataclass as JSON (`--json`): dataclasses.asdict, tuples as lists."""
    import dataclasses
    import json

    assert dataclasses.is_dataclass(result) and not isinstance(result, type)
    print(json.dumps(dataclasses.asdict(result), indent=2, ensure_ascii=False))
