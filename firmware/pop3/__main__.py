"""`python -m firmware.pop3 IMAGE`: serve one board image's POP3 service alone.

For measurements and lab use without the rest of the device (console, scanner): the service
reads the image's stored profile, its RAM budget is the profile's image RAM, and it prints
`POP3 on HOST:PORT` once it listens (port 0 picks a free port). With `--pop3s-port` it also
serves implicit TLS with the image's certificate and prints `POP3S on HOST:PORT`; STLS is
offered whenever the image has a certificate. SIGINT or SIGTERM stop it the way the device
stops: no new sessions, open ones get a few seconds, then exit 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import trio

from firmware.config.budget import RamBudget
from firmware.errors import DeviceError
from firmware.pop3.server import Pop3Service
from firmware.security.tls import context_from_settings
from firmware.store.board import Board

DRAIN_GRACE_S = 5.0


async def _serve(board: Board, host: str, port: int, pop3s_port: int | None) -> None:
    """Serve until SIGINT or SIGTERM, then drain: open sessions get a few seconds to finish."""
    profile = board.profile
    budget = RamBudget(profile.int("memory.image_ram_mib") * 1024 * 1024)
    tls = context_from_settings(board.settings())
    service = Pop3Service(board, lambda: board.profile, budget, tls=tls)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            actual = await nursery.start(service.serve, host, port)
            print(f"POP3 on {host}:{actual}", flush=True)
            if pop3s_port is not None:
                actual = await nursery.start(
                    lambda task_status: service.serve(
                        host, pop3s_port, implicit_tls=True, task_status=task_status
                    )
                )
                print(f"POP3S on {host}:{actual}", flush=True)
            async for _ in signals:
                await service.drain(DRAIN_GRACE_S)
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware.pop3", description=__doc__)
    parser.add_argument("image", type=Path, help="board image file")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: any free)")
    parser.add_argument(
        "--pop3s-port", type=int, default=None, help="also serve implicit TLS on this port"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        with Board.open(args.image) as board:
            trio.run(_serve, board, args.host, args.port, args.pop3s_port)
    except DeviceError as exc:
        print(f"dpfw: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
