"""`python -m firmware.pop3 IMAGE`: a device that serves POP3 only (no console, no scan feed).

For measurements and lab use: it is the same `Device` that `dpfw run` boots (one boot path),
started with the console and the scan feeder off. Once it listens it prints `POP3 on HOST:PORT`
on standard output (port 0 picks a free port), and with `--pop3s-port` also `POP3S on
HOST:PORT`; the device's boot lines go to standard error as usual. SIGINT or SIGTERM stop it
the way the device stops: no new sessions, open ones get a few seconds, then exit 0.

This module is an entry point (a composition root, like `firmware.__main__`), so it may import
the device layer above the POP3 service.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from firmware.device.device import Device, RunOptions
from firmware.errors import DeviceError
from firmware.text import host_port


async def _print_addresses(device: Device) -> None:
    """Print where the device listens, once per boot, for harnesses that read stdout."""
    await device.wait_booted()
    for host, port in device.pop3_addresses:
        print(f"POP3 on {host_port(host, port)}", flush=True)
    for host, port in device.pop3s_addresses:
        print(f"POP3S on {host_port(host, port)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware.pop3", description=__doc__)
    parser.add_argument("image", type=Path, help="board image file")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: any free)")
    parser.add_argument(
        "--pop3s-port", type=int, default=None, help="also serve implicit TLS on this port"
    )
    args = parser.parse_args(argv)
    options = RunOptions(
        image=args.image,
        pop3=(args.host, args.port),
        pop3s=None if args.pop3s_port is None else (args.host, args.pop3s_port),
    )
    try:
        return trio.run(Device(options, [_print_addresses]).run)
    except DeviceError as exc:
        print(f"dpfw: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        refusals, rest = group.split(DeviceError)
        if refusals is None or rest is not None:
            raise
        first: BaseException = refusals
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        print(f"dpfw: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
