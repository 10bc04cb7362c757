"""The client report card on disk: `IMG.clients.json` beside the board image.

A running device keeps its `ClientBook` (firmware/pop3/report.py) in RAM and saves it here so
that `dpfw report IMG` works whether the device runs or not: at most every
REPORT_INTERVAL_S seconds when the book changed, and once more when the device stops. The
JSON is built on the event loop (a few hundred cards at most) and written on a thread: a
temporary file in the same directory, fsync, then rename over the old one, so a reader sees
the old file or the new one, never half of one. A write that fails is logged (once until one
succeeds again); the device goes on.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import trio

from firmware.errors import DeviceError
from firmware.pop3.report import ClientBook, ClientCard, cards_from_json, cards_to_json
from firmware.text import os_reason

log = logging.getLogger(__name__)

REPORT_INTERVAL_S: Final = 5.0
"""Seconds between two saves of a changed book."""
SUFFIX: Final = ".clients.json"
MAX_REPORT_BYTES: Final = 64 * 1024 * 1024
"""A report file larger than this is not read (a full book is a few MiB)."""


def report_path(image: Path) -> Path:
    """Where the report card of the device on `image` is saved: `IMG.clients.json`."""
    return image.with_name(image.name + SUFFIX)


def write_report(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON to `path` atomically (temporary file, fsync, rename). OSError."""
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_report(image: Path) -> tuple[float, list[ClientCard]]:
    """(written, cards) from `image`'s report file; DeviceError with one line when it is
    absent, unreadable or not a report file."""
    path = report_path(image)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_REPORT_BYTES + 1)
    except FileNotFoundError:
        raise DeviceError(
            f"{path}: no client report yet (a device running on {image.name} writes it "
            "once a client has connected)"
        ) from None
    except OSError as exc:
        raise DeviceError(f"{path}: cannot read the client report: {os_reason(exc)}") from None
    if len(raw) > MAX_REPORT_BYTES:
        raise DeviceError(f"{path}: larger than {MAX_REPORT_BYTES} bytes: not a client report")
    try:
        return cards_from_json(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeviceError(f"{path}: corrupt client report: not JSON ({exc})") from None
    except ValueError as exc:
        raise DeviceError(f"{path}: corrupt client report: {exc}") from None


class ReportWriter:
    """Saves one book to one file when it changed; `run` is the device's service task."""

    def __init__(self, book: ClientBook, path: Path) -> None:
        self.book = book
        self.path = path
        self.saved = -1  # the book's version last saved (-1: none yet)
        self.failing = False

    async def save(self) -> bool:
        """Save now if the book changed since the last save; True if a file was written."""
        version = self.book.version
        if version == self.saved or version == 0:
            return False
        data = cards_to_json(self.book.cards(), time.time())
        try:
            await trio.to_thread.run_sync(write_report, self.path, data)
        except OSError as exc:
            if not self.failing:
                log.warning("client report %s not saved: %s", self.path, os_reason(exc))
            self.failing = True
            return False
        self.failing = False
        self.saved = version
        return True

    async def run(self, interval: float = REPORT_INTERVAL_S) -> None:
        """Save every `interval` seconds when changed, and once more when cancelled."""
        try:
            while True:
                await trio.sleep(interval)
                await self.save()
        finally:
            with trio.CancelScope(shield=True):
                await self.save()
