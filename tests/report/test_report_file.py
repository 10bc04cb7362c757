"""The report card on disk and `dpfw report`: a real `dpfw run`, a real client (poplib)."""

from __future__ import annotations

import json
import poplib
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio

from firmware.device.report_file import ReportWriter, read_report, report_path, write_report
from firmware.errors import DeviceError
from firmware.pop3.events import Command, Reply
from firmware.pop3.report import ClientBook, cards_to_json
from tests.support import DeviceProcess, dpfw


def poplib_leaves_mail_without_uidl(port: int) -> None:
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    client.user("alice")
    client.pass_("alice-lab")
    client.retr(1)
    client.quit()


def wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.1)


def test_dpfw_report_reads_what_the_running_device_saved(
    demo_image: Path, start_device: type[DeviceProcess]
) -> None:
    device = start_device(demo_image)
    port = device.wait_booted()
    poplib_leaves_mail_without_uidl(port)
    wait_for(report_path(demo_image))  # written within REPORT_INTERVAL_S, device running
    md = dpfw("report", str(demo_image), "--format", "md").stdout
    assert "## 127.0.0.1: FAIL" in md
    assert "| used UIDL to avoid re-downloading | FAIL |" in md
    junit = ET.fromstring(dpfw("report", str(demo_image), "--format", "junit").stdout)
    failed = [c.get("name") for c in junit.iter("testcase") if c.find("failure") is not None]
    # The demo image offers STLS: poplib's USER/PASS in clear text fails "used TLS" too.
    assert failed == ["used UIDL to avoid re-downloading", "used TLS"]
    checked = dpfw("report", str(demo_image), "--check", check=False)
    assert checked.returncode == 1 and "FAIL  used UIDL" in checked.stdout
    assert device.stop() == 0
    data = json.loads(dpfw("report", str(demo_image), "--format", "json").stdout)
    (card,) = data["clients"]
    assert card["address"] == "127.0.0.1" and card["counters"]["retrieved"] == 1
    assert dpfw("report", str(demo_image), "--client", "10.9.9.9", check=False).returncode == 1


def test_a_missing_or_corrupt_report_file_is_one_clear_line(tmp_path: Path) -> None:
    image = tmp_path / "lab.img"
    missing = dpfw("report", str(image), check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"dpfw: {report_path(image)}: no client report yet (a device running on lab.img "
        "writes it once a client has connected)"
    ]
    report_path(image).write_text('{"format": "dpfw-clients", "version": 1, "clients": [')
    corrupt = dpfw("report", str(image), check=False)
    assert corrupt.returncode == 1 and len(corrupt.stderr.strip().splitlines()) == 1
    assert "corrupt client report: not JSON" in corrupt.stderr
    report_path(image).write_text('{"format": "other"}')
    with pytest.raises(DeviceError, match="not a dpfw-clients report file"):
        read_report(image)


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "x.img.clients.json"
    write_report(path, cards_to_json([], 1.0))
    write_report(path, cards_to_json([], 2.0))
    assert json.loads(path.read_text())["written"] == 2.0
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


async def test_the_writer_saves_only_when_the_book_changed_and_once_more_at_the_end(
    tmp_path: Path,
) -> None:
    book = ClientBook()
    path = tmp_path / "d.img.clients.json"
    writer = ReportWriter(book, path)
    assert not await writer.save()  # nothing seen yet: no file
    book.opened(1, "127.0.0.1:5")
    book.exchange(1, Command("NOOP"), Reply(True), False, None)
    assert await writer.save()
    assert not await writer.save()  # unchanged
    book.closed(1, "client")
    with trio.CancelScope() as scope:
        scope.cancel()
        await writer.run(interval=3600)  # cancelled at once: the final save still happens
    _, cards = read_report(tmp_path / "d.img")
    assert cards[0].counters["quit"] == 0 and cards[0].counters["dropped"] == 1
    assert cards[0].history == ["session 1: NOOP [dropped]"]


async def test_a_write_that_fails_is_logged_and_the_device_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    book = ClientBook()
    book.opened(1, "127.0.0.1:5")
    writer = ReportWriter(book, tmp_path / "no-such-dir" / "d.img.clients.json")
    assert not await writer.save()
    assert not await writer.save()
    warnings = [r for r in caplog.records if "not saved" in r.getMessage()]
    assert len(warnings) == 1 and "No such file or directory" in warnings[0].getMessage()


def test_a_stopping_device_saves_what_it_saw_since_the_last_save(
    demo_image: Path, start_device: type[DeviceProcess]
) -> None:
    device = start_device(demo_image)
    port = device.wait_booted()
    poplib_leaves_mail_without_uidl(port)
    assert device.stop() == 0  # well within REPORT_INTERVAL_S of the session
    _, cards = read_report(demo_image)
    (card,) = cards
    assert card.counters["quit"] == 1 and card.history[-1].endswith("[QUIT]")
