"""Internet Fax reception rate: faxes per minute from a private Dovecot, and RSS while polling.

`.venv/bin/python -m benchmarks.ifax_poll [N] [PAGES]` (root, dovecot-pop3d): N faxes of PAGES
G4 pages (the scanner's test chart at 200x200) are delivered to a private Dovecot
(tests/ifax/dovecot.py), then one poll in delete mode fetches, decodes, stores (one fsync
per tray record) and deletes them all.
Prints faxes/min and the process RSS before and at its peak during the poll (sampled every
10 ms from /proc/self/status).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import trio

from firmware.config.budget import RamBudget
from firmware.config.profile import factory
from firmware.device.boards import create_board
from firmware.ifax.poller import IfaxPoller
from firmware.store.worker import StoreWorker
from tests.ifax.conftest import ifax_profile
from tests.ifax.dovecot import Dovecot, fax_message


def chart_tiff(pages: int) -> bytes:
    """PAGES of the scanner's test chart at fax fine (200x200), G4: a realistic fax."""
    import io
    from datetime import UTC, datetime

    from firmware.scanner.render import PageSpec, render_page

    frames = [
        render_page(
            PageSpec("DP-3530", "dp", "fax", 1, n + 1, pages, datetime.now(UTC), 200, 200, "mono")
        )
        for n in range(pages)
    ]
    out = io.BytesIO()
    frames[0].save(
        out,
        format="TIFF",
        compression="group4",
        dpi=(200, 200),
        save_all=True,
        append_images=frames[1:],
    )
    return out.getvalue()


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    pages = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    dovecot = Dovecot()
    try:
        message = fax_message(chart_tiff(pages), "image/tiff", "fax.tif", "a@example.org")
        for _ in range(n):
            dovecot.deliver(message)
        with tempfile.TemporaryDirectory() as tmp:
            board = create_board(Path(tmp) / "b.img", factory("DP-3530"), "pw", size=64 << 20)
            profile = ifax_profile(dovecot)
            poller = IfaxPoller(
                lambda: board, lambda: profile, lambda: RamBudget(128 << 20), StoreWorker()
            )
            before = rss_kib()
            peak = [before]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], rss_kib())
                    time.sleep(0.01)

            threading.Thread(target=sample, daemon=True).start()
            started = time.monotonic()
            report = trio.run(poller.poll)
            seconds = time.monotonic() - started
            done.set()
            board.close()
        assert report.received == n and report.failed is None, report
        print(
            f"{n} faxes of {pages} page(s), {len(message)} bytes each: {seconds:.2f} s, "
            f"{n / seconds * 60:.0f} faxes/min; RSS {before // 1024} MiB before, "
            f"peak {peak[0] // 1024} MiB while polling"
        )
    finally:
        dovecot.stop()


if __name__ == "__main__":
    main()
