"""The client report card from the console, the API, the web page and `dpfw report`.

A running device answers from its `ClientBook` in RAM (firmware/pop3/report.py); a board
opened offline answers from the file the device saved beside the image
(firmware/device/report_file.py), so the card outlives the device.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.device.report_file import read_report
from firmware.errors import DeviceError
from firmware.ops.context import OpsContext
from firmware.pop3.report import ClientCard, host_of


@dataclass(frozen=True)
class ClientList:
    live: bool  # True: from the running device; False: from the saved report file
    written: float | None  # epoch seconds the file was written (None when live)
    clients: list[ClientCard]  # one per client address, the most recently seen last


def client_list(ctx: OpsContext, address: str | None = None) -> ClientList:
    """Every client's report card, or only `address`'s (a host, or host:port). DeviceError
    when `address` has no card, or offline when there is no readable report file."""
    if ctx.device is not None:
        book = ctx.device.clients
        cards = book.cards()
        live, written = True, None
    else:
        written, cards = read_report(ctx.board.path)
        live = False
    if address is not None:
        host = host_of(address.strip())
        cards = [c for c in cards if c.address == host]
        if not cards:
            raise DeviceError(f"clients: no client {host} has connected (see `clients`)")
    return ClientList(live, written, cards)
