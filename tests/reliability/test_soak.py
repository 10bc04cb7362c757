"""Soak: the lab scan feeder plus POP3 clients at the session bound, for a minute in CI and
ten minutes (or DPFW_SOAK_S seconds) for a release. After warm-up the device's RSS does not
grow, no descriptor leaks (/proc/PID/fd), and nothing is logged but the designed lines.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability.harness import (
    Console,
    Device,
    add_boxes,
    login,
    message_digest,
    new_image,
    open_fds,
    proc_status_kib,
    rss_kib,
    wait_until,
)

LONG = os.environ.get("DPFW_LONG") == "1"
RELEASE_SECONDS = float(os.environ.get("DPFW_SOAK_S", "600"))
BOUND = 4
BOXES = [f"s{i}" for i in range(1, BOUND + 1)]
# RSS growth allowed after warm-up. Python's and glibc's allocators keep what a job once
# needed (a high-water mark, not a leak), so warm-up runs the largest jobs the feeder can draw
# first, and the end of the run is held against the highest RSS of warm-up; a flat process
# still wobbles by a few hundred KiB, while a leak of one message or one session per cycle
# (thousands of cycles) shows far above this.
GROWTH_LIMIT_KIB = 3 * 1024
# One minute is short for allocators to settle: CI runs saw +3.4 and +4.1 MiB in a minute on a
# device that stays flat over ten (58.3 -> 58.8 MiB). The CI variant allows 6 MiB, which still
# catches a leak of 2 KiB per session (about 3,000 sessions a minute); the release soak holds
# the 3 MiB line over ten minutes.
CI_GROWTH_LIMIT_KIB = 6 * 1024
# The largest jobs the restricted feeder below can draw (5 pages, 200x200, each format).
WARM_UP_SCANS = [
    ("pages=5", "dpi=200x200", "mode=gray", "format=pdf"),
    ("pages=5", "dpi=200x200", "mode=gray", "format=jpeg"),
    ("pages=5", "dpi=200x200", "mode=mono", "format=tiff"),
]


@dataclass
class SoakReport:
    sessions: int = 0
    retrieved: int = 0
    deleted: int = 0
    errors: list[str] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # RssAnon
    vmrss_max: int = 0  # VmRSS, mapped image pages included
    warm_max: int = 0  # highest RssAnon of warm-up


def client_loop(port: int, box: str, stop: threading.Event, report: SoakReport) -> None:
    seen: dict[str, str] = {}  # uid -> sha256: a uid always names the same bytes
    while not stop.is_set():
        try:
            client = login(port, box, f"{box}-pw")
            count, _ = client.stat()
            uids = [line.split()[1].decode() for line in client.uidl()[1]]
            assert len(uids) == count
            for n, uid in enumerate(uids, 1):
                _, lines, _ = client.retr(n)
                digest = message_digest(lines)
                assert seen.setdefault(uid, digest) == digest, f"{uid} changed"
                report.retrieved += 1
            for n in range(1, count // 2 + 1):  # keep the box from filling up
                client.dele(n)
            assert client.quit().startswith(b"+OK")
            report.deleted += count // 2
            report.sessions += 1
        except Exception as exc:  # every client error is a finding, reported at the end
            report.errors.append(f"{box}: {exc!r}")
            time.sleep(0.5)
        stop.wait(0.05)


def run_soak(tmp_path: Path, seconds: float, feed_per_min: float) -> tuple[Device, SoakReport]:
    """Run the load; the caller checks (and kills) the device. On an error it is killed here."""
    image = new_image(tmp_path / "soak.img", size="128MiB")
    add_boxes(image, BOXES, messages=4)
    add_boxes(image, ["warm"], messages=1, size=300_000)
    device = Device(
        image,
        "--scan-feed",
        str(feed_per_min),
        "--set",
        f"pop3.max_sessions={BOUND}",
        "--set",
        f"pop3.max_sessions_per_client={BOUND}",
        # Small pages keep two CI cores for the clients; the job path is the same.
        "--set",
        "scan.resolutions=200x100,200x200",
        "--set",
        "scan.color_modes=mono,gray",
        console=True,
    )
    try:
        return device, load(device, seconds)
    except BaseException:
        device.kill()
        raise


def load(device: Device, seconds: float) -> SoakReport:
    device.wait_booted()
    # One long RETR first: the service opens the image once for direct copies and keeps it.
    client = login(device.pop3_port, "warm", "warm-pw")
    assert message_digest(client.retr(1)[1])
    client.quit()
    assert device.console_path is not None
    console = Console(device.console_path, timeout=60)
    try:
        console.login()
        for options in WARM_UP_SCANS:
            assert console.scan("warm", *options), f"warm-up scan {options} failed"
    finally:
        console.close()
    time.sleep(0.5)
    base_fds = open_fds(device.pid)
    report = SoakReport(warm_max=rss_kib(device.pid))
    stop = threading.Event()
    clients = [
        threading.Thread(target=client_loop, args=(device.pop3_port, box, stop, report))
        for box in BOXES
    ]
    started = time.monotonic()
    for t in clients:
        t.start()
    try:
        while time.monotonic() - started < seconds:
            report.rss.append((time.monotonic() - started, rss_kib(device.pid)))
            report.vmrss_max = max(report.vmrss_max, proc_status_kib(device.pid, "VmRSS"))
            time.sleep(1.0)
    finally:
        stop.set()
        for t in clients:
            t.join(30)
    assert wait_until(lambda: len(open_fds(device.pid)) <= len(base_fds), timeout=10), (
        f"descriptors leaked: {sorted(set(open_fds(device.pid)) - set(base_fds))}"
    )
    return report


def check(
    device: Device, report: SoakReport, seconds: float, limit_kib: int = GROWTH_LIMIT_KIB
) -> dict[str, float]:
    try:
        assert device.alive(), device.output()
        assert not report.errors, report.errors[:10]
        assert not device.unexpected_log_lines(), device.unexpected_log_lines()[:10]
        assert report.sessions >= seconds  # at least one session a second overall
        warm = [kib for t, kib in report.rss if t < seconds * 0.45]
        last = [kib for t, kib in report.rss if t >= seconds * 0.85]
        growth = statistics.median(last) - max(report.warm_max, *warm)
        feeder = [line for line in device.lines if "scan feeder: job" in line]
        assert feeder, "the scan feeder stored nothing"
        figures = {
            "seconds": seconds,
            "sessions": report.sessions,
            "retrieved": report.retrieved,
            "deleted": report.deleted,
            "scans": len(feeder),
            "rss_warm_max_kib": max(report.warm_max, *warm),
            "rss_end_kib": statistics.median(last),
            "rss_max_kib": max(kib for _, kib in report.rss),
            "vmrss_max_kib": report.vmrss_max,
        }
        print("soak figures:", figures)
        assert growth <= limit_kib, f"RSS grew by {growth} KiB after warm-up: {figures}"
        return figures
    finally:
        device.kill()


@pytest.mark.slow
def test_soak_one_minute(tmp_path: Path) -> None:
    seconds = 60.0
    device, report = run_soak(tmp_path, seconds, feed_per_min=30)
    check(device, report, seconds, limit_kib=CI_GROWTH_LIMIT_KIB)


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="release soak: set DPFW_LONG=1 (DPFW_SOAK_S, default 600)")
@pytest.mark.timeout(RELEASE_SECONDS + 300)
def test_soak_release(tmp_path: Path) -> None:
    seconds = RELEASE_SECONDS
    device, report = run_soak(tmp_path, seconds, feed_per_min=30)
    check(device, report, seconds)
