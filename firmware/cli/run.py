"""`dpfw run IMG`: boot the device from a board image and serve until stopped."""

from __future__ import annotations

import argparse
import logging
import math
import os
import stat
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.errors import DeviceError

if TYPE_CHECKING:
    from firmware.device.device import Device, Service
    from firmware.faults.spec import Scenario

log = logging.getLogger("dpfw.run")


def parse_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:1110', '[::1]:1110' or ':1110' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:1110)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def parse_scan_feed(text: str) -> float:
    """'6' or '0.5' jobs per minute; 0 means off. NaN, infinities and negatives are refused."""
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of jobs per minute") from None
    if not math.isfinite(rate) or rate < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not allowed; expected 0 (off) or a positive number of jobs per minute"
        )
    return rate


def parse_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. pop3.max_sessions=64)")
    return key.strip(), value.strip()


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="boot the device from IMG and serve POP3 (Ctrl-C stops)")
    p.add_argument("image", type=Path)
    p.add_argument(
        "--pop3",
        type=parse_address,
        metavar="HOST:PORT",
        help="POP3 listen address (default: the profile's pop3.address and port)",
    )
    p.add_argument(
        "--pop3s",
        type=parse_address,
        metavar="HOST:PORT",
        help="also listen for implicit-TLS POP3 (POP3S) here",
    )
    p.add_argument(
        "--set",
        type=parse_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="settings",
        help="override a profile value for this run only",
    )
    p.add_argument(
        "--console",
        default="none",
        metavar="SPEC",
        help="admin console: pty, stdio, none, or a pyserial port/URL (default none)",
    )
    p.add_argument(
        "--scan-feed",
        type=parse_scan_feed,
        default=0.0,
        metavar="RATE",
        help="lab feeder: scan RATE jobs per minute into random boxes",
    )
    p.add_argument(
        "--cert-out",
        type=Path,
        metavar="FILE",
        help="at each boot, write the TLS certificate in service to FILE (PEM, for --cacert)",
    )
    p.add_argument(
        "--http",
        type=parse_address,
        metavar="HOST:PORT",
        help="serve the HTTP API (/api/v1, /metrics) here; user admin, the console password",
    )
    p.add_argument(
        "--https",
        action="store_true",
        help="serve the HTTP API over TLS with the device certificate",
    )
    p.add_argument(
        "--http-insecure",
        action="store_true",
        help="allow plain HTTP on an address that is not loopback (closed labs only)",
    )
    p.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="append the POP3 protocol trace to FILE as JSON lines (credentials redacted)",
    )
    p.add_argument(
        "--faults",
        type=Path,
        metavar="FILE",
        help="set the faults of a scenario file (TOML: seed, [[fault]] tables; docs/faults.md)",
    )
    p.set_defaults(func=_run)


def check_console(spec: str) -> None:
    """Refuse a --console path that can never be a serial port (a regular file, a directory).

    A path that does not exist yet is accepted: a USB serial adapter may be plugged in later,
    and the console retries with back-off (docs/console.md). URLs are pyserial's to judge.
    """
    if spec in ("none", "pty", "stdio") or "://" in spec:
        return
    try:
        mode = os.stat(spec).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DeviceError(f"--console {spec}: {exc.strerror}") from None
    if not stat.S_ISCHR(mode):
        raise DeviceError(
            f"--console {spec}: not a serial port (not a character device); "
            "use pty, stdio, none, a tty device or a pyserial URL"
        )


def _run(args: argparse.Namespace) -> int:
    import trio

    from firmware.console.port import run_console
    from firmware.device.device import Device, RunOptions, refuse_one_address_for_both

    if args.pop3 is not None:  # before boot; the profile's address is checked at boot
        refuse_one_address_for_both(args.pop3, args.pop3, args.pop3s)
    check_console(args.console)
    options = RunOptions(
        image=args.image,
        overrides=dict(args.settings),
        pop3=args.pop3,
        pop3s=args.pop3s,
        scan_feed_per_min=args.scan_feed,
        cert_out=args.cert_out,
    )
    services: list[Service] = [control_service()]
    if args.console != "none":
        services.append(partial(run_console, spec=args.console))
    if args.http is not None:
        services.append(_http_service(args))
    elif args.https or args.http_insecure:
        raise DeviceError("--https and --http-insecure need --http HOST:PORT")
    if args.faults is not None:
        services.append(faults_service(args.faults))  # refused before the device boots
    if args.trace is not None:
        from firmware.cli.trace import open_trace_file, write_trace

        trace_file = open_trace_file(args.trace)  # refused before the device boots
        services.append(partial(write_trace, out=trace_file))
    try:
        return trio.run(Device(options, services).run)
    except BaseExceptionGroup as group:
        # A refused boot (missing image, in use, corrupt, an address that cannot be bound) or
        # a limit of the host (RLIMIT_AS) leaves the nursery wrapped in a group: report it as
        # the one clear line every other command gives (firmware.cli.main). Anything else is
        # our own bug and keeps its traceback.
        expected, rest = group.split(_EXPECTED)
        if expected is not None and rest is None:
            raise _first_leaf(expected) from None
        raise


def faults_service(path: Path) -> Service:
    """The scenario file read and checked now (one `dpfw:` line if it cannot be used); its
    faults are set once the device has booted."""
    from firmware.faults.spec import parse_scenario
    from firmware.text import file_problem

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        if isinstance(exc, UnicodeDecodeError):
            raise DeviceError(f"--faults {path}: not UTF-8 text") from None
        raise DeviceError(f"--faults {file_problem(path, exc, 'read')}") from None
    scenario = parse_scenario(text, f"--faults {path}")
    return partial(_set_faults, scenario=scenario)


async def _set_faults(device: Device, *, scenario: Scenario) -> None:
    from firmware.ops.context import OpsContext
    from firmware.ops.faults import load_scenario

    await device.wait_booted()
    load_scenario(OpsContext.running(device), scenario)


def control_service() -> Service:
    """The control socket IMG.ctl (firmware/http/server.py, run_control). Its HTTP stack is
    loaded once the device serves, and a host whose address-space limit cannot hold it
    (about 10 MiB) keeps a device that serves POP3 without the socket (a WARNING line)."""

    async def control(device: Device) -> None:
        try:
            from firmware.http.server import run_control
        except (MemoryError, ImportError, SystemError) as exc:
            log.warning("no control socket: loading the HTTP stack failed (%s)", exc)
            return
        await run_control(device)

    return control


def _http_service(args: argparse.Namespace) -> Service:
    from firmware.http.server import HttpOptions, check_options, run_http

    host, port = args.http
    options = HttpOptions(host, port, https=args.https, insecure=args.http_insecure)
    check_options(options)  # refused before the device boots
    return partial(run_http, options=options)


# What main() turns into one line; KeyboardInterrupt is Ctrl-C before the signal handler.
_EXPECTED = (DeviceError, OSError, MemoryError, ImportError, SystemError, KeyboardInterrupt)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
