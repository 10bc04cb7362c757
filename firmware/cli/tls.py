"""`dpfw tls show|import|selfsign`: the device TLS certificate kept in a board's NVRAM."""

from __future__ import annotations

import argparse
from pathlib import Path

from firmware.cli.common import print_json
from firmware.device.boards import open_board
from firmware.errors import DeviceError
from firmware.ops import render
from firmware.ops import tls as ops_tls
from firmware.ops.context import OpsContext
from firmware.ops.tls import MAX_TLS_PEM
from firmware.text import file_problem

# firmware.security.tls (cryptography, a slow and large import) is imported by the operations.

MAX_PEM_BYTES = MAX_TLS_PEM  # a file given to --cert/--key/--chain, as a console paste


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("tls", help="show or replace the device TLS certificate")
    cmds = parser.add_subparsers(dest="tls_command", required=True, metavar="ACTION")

    p = cmds.add_parser("show", help="subject, names, validity and fingerprint")
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("--pem", action="store_true", help="print the certificate and chain as PEM")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_show)

    p = cmds.add_parser("import", help="install a certificate and key (checked first)")
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("--cert", type=Path, required=True, metavar="FILE", help="PEM certificate")
    p.add_argument("--key", type=Path, required=True, metavar="FILE", help="PEM private key")
    p.add_argument("--chain", type=Path, metavar="FILE", help="PEM intermediates, leaf-first")
    p.set_defaults(func=cmd_import)

    p = cmds.add_parser("selfsign", help="make a new self-signed certificate")
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("--hostname", help="name in the certificate (default: identity.hostname)")
    p.add_argument(
        "--no-loopback",
        dest="loopback",
        action="store_false",
        help="name only the host, not also localhost, 127.0.0.1 and ::1 (the lab default)",
    )
    p.set_defaults(func=cmd_selfsign)


def _read_pem(path: Path, option: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DeviceError(f"{option} {file_problem(path, exc)}") from None
    if len(data) > MAX_PEM_BYTES:
        raise DeviceError(f"{option} {path} is {len(data)} bytes; at most {MAX_PEM_BYTES}")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise DeviceError(f"{option} {path} is not PEM text (DER? convert it to PEM)") from None


def cmd_show(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        ctx = OpsContext.offline(board)
        if args.pem:
            print(render.tls_pem(ops_tls.tls_pem(ctx)))
        elif args.json:
            print_json(ops_tls.tls_show(ctx))
        else:
            print(render.tls_view(ops_tls.tls_show(ctx)))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    cert_pem = _read_pem(args.cert, "--cert")
    key_pem = _read_pem(args.key, "--key")
    chain_pem = _read_pem(args.chain, "--chain") if args.chain else None
    with open_board(args.image) as board:
        saved = ops_tls.tls_import(OpsContext.offline(board), cert_pem, key_pem, chain_pem)
    print(render.tls_saved(saved, live=False))
    return 0


def cmd_selfsign(args: argparse.Namespace) -> int:
    with open_board(args.image) as board:
        ctx = OpsContext.offline(board)
        saved = ops_tls.tls_selfsign(ctx, args.hostname, loopback=args.loopback)
    print(render.tls_saved(saved, live=False))
    return 0
