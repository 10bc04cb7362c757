"""`dpfw tls show|import|selfsign`: the device TLS certificate kept in a board's NVRAM."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from firmware.errors import DeviceError
from firmware.store.board import Board
from firmware.text import plural

# firmware.security.tls (cryptography, a slow and large import) is imported by the commands.

# NVRAM is small: a server certificate with a few intermediates is a few KiB.
MAX_PEM_BYTES = 64 * 1024


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("tls", help="show or replace the device TLS certificate")
    cmds = parser.add_subparsers(dest="tls_command", required=True, metavar="ACTION")

    p = cmds.add_parser("show", help="subject, names, validity and fingerprint")
    p.add_argument("image", type=Path, metavar="IMG")
    p.add_argument("--pem", action="store_true", help="print the certificate and chain as PEM")
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


def describe_settings(settings: Mapping[str, str]) -> list[str]:
    """What `tls show` prints for a board's settings; DeviceError if there is no certificate."""
    from firmware.security import tls

    cert_pem = settings.get(tls.SETTING_CERT)
    if not cert_pem:
        raise DeviceError("no TLS certificate on this board; `dpfw tls selfsign IMG` makes one")
    lines = tls.describe(cert_pem).lines()
    chain_pem = settings.get(tls.SETTING_CHAIN) or ""
    chain = plural(chain_pem.count("-----BEGIN CERTIFICATE-----"), "certificate")
    lines.append(f"chain:       {chain}")
    try:
        tls.check_pair(cert_pem, settings.get(tls.SETTING_KEY, ""), chain_pem)
    except tls.TlsError as exc:
        lines.append(f"usable:      no: {exc}")
    else:
        lines.append("usable:      yes")
    return lines


def _read_pem(path: Path, option: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DeviceError(f"cannot read {option} {path}: {exc.strerror}") from None
    if len(data) > MAX_PEM_BYTES:
        raise DeviceError(f"{option} {path} is {len(data)} bytes; at most {MAX_PEM_BYTES}")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise DeviceError(f"{option} {path} is not PEM text (DER? convert it to PEM)") from None


def _store(board: Board, settings: Mapping[str, str | None]) -> None:
    board.set_settings(settings)


def cmd_show(args: argparse.Namespace) -> int:
    from firmware.security import tls

    with Board.open(args.image) as board:
        settings = dict(board.settings())
    if args.pem:
        if not settings.get(tls.SETTING_CERT):
            raise DeviceError("no TLS certificate on this board")
        print(settings[tls.SETTING_CERT].rstrip("\n"))
        if settings.get(tls.SETTING_CHAIN):
            print(settings[tls.SETTING_CHAIN].rstrip("\n"))
        return 0
    print("\n".join(describe_settings(settings)))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from firmware.security import tls

    cert_pem = _read_pem(args.cert, "--cert")
    key_pem = _read_pem(args.key, "--key")
    chain_pem = _read_pem(args.chain, "--chain") if args.chain else None
    info = tls.check_pair(cert_pem, key_pem, chain_pem)
    with Board.open(args.image) as board:
        _store(board, tls.settings_for(cert_pem, key_pem, chain_pem))
    print("imported the TLS certificate")
    print("\n".join(info.lines()))
    return 0


def cmd_selfsign(args: argparse.Namespace) -> int:
    from firmware.security import tls

    with Board.open(args.image) as board:
        hostname = args.hostname or board.profile.str("identity.hostname")
        cert_pem, key_pem = tls.make_self_signed(hostname, loopback=args.loopback)
        _store(board, tls.settings_for(cert_pem, key_pem))
    print(f"made a self-signed TLS certificate for {hostname}")
    print("\n".join(tls.describe(cert_pem).lines()))
    return 0
