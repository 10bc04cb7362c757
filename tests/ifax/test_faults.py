"""Faults: a connection dropped mid-RETR, [IN-USE], a power cut between store and DELE.

In each: nothing lost (every fax ends in the tray or stays on the server) and nothing printed
twice (the UIDL inside the tray record is recognised on the next poll).
"""

from __future__ import annotations

import poplib
import time
from pathlib import Path

import trio

from firmware.config.budget import RamBudget
from firmware.config.profile import factory
from firmware.device.boards import create_board, open_board
from firmware.ifax.poller import IfaxPoller
from firmware.store.board import Board
from firmware.store.worker import StoreWorker
from tests.ifax.conftest import ifax_profile, tiff_g4
from tests.ifax.dovecot import PASSWORD, USER, Dovecot, fax_message
from tests.ifax.proxy import FaultProxy
from tests.ifax.test_dovecot import deliver_three, poll, tray
from tests.support import DeviceProcess


def test_connection_dropped_mid_retr_loses_nothing_prints_nothing_twice(
    board: Board, dovecot: Dovecot
) -> None:
    deliver_three(dovecot)
    proxy = FaultProxy(dovecot.port, cut_retr=(2, 600))  # the 2nd fax is cut 600 octets in
    try:
        report = poll(board, ifax_profile(dovecot, **{"ifax.port": str(proxy.port)}))
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert report.failed is not None and report.received == 1 and report.deleted == 0
    assert len(board.tray()) == 1 and len(dovecot.stored()) == 3  # no QUIT: nothing deleted
    again = poll(board, ifax_profile(dovecot))
    assert (again.skipped, again.received, again.errors, again.deleted) == (1, 1, 1, 3)
    assert [d["subject"] for d in tray(board)] == [
        "fax one.tif",
        "fax three.tif",
        "fax doc.pdf",
    ]
    assert dovecot.stored() == []


def test_in_use_is_reported_and_retried_after_the_interval(board: Board, dovecot: Dovecot) -> None:
    deliver_three(dovecot)
    holder = poplib.POP3("127.0.0.1", dovecot.port, timeout=10)
    holder.user(USER)
    holder.pass_(PASSWORD)  # Dovecot's pop3_lock_session: the box is locked while this lives
    try:
        poller = IfaxPoller(
            lambda: board,
            lambda: ifax_profile(dovecot),
            lambda: RamBudget(64 << 20),
            StoreWorker(),
        )
        report = trio.run(poller.poll)
    finally:
        holder.quit()
    assert report.code == "IN-USE", report.failed
    assert poller.delay(report, 120) == 120.0
    assert board.tray() == [] and len(dovecot.stored()) == 3
    assert trio.run(poller.poll).received == 2


def wait_unlocked(dovecot: Dovecot, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        client = poplib.POP3("127.0.0.1", dovecot.port, timeout=10)
        try:
            client.user(USER)
            client.pass_(PASSWORD)
            client.quit()
            return
        except poplib.error_proto:
            client.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_power_cut_between_store_and_dele(tmp_path: Path, dovecot: Dovecot) -> None:
    image = tmp_path / "dev.img"
    create_board(image, factory("DP-3530"), "admin-pw", size=4 << 20).close()
    dovecot.deliver(fax_message(tiff_g4(2), "image/tiff", "two.tif", "a@example.org"))
    devices: list[DeviceProcess] = []
    proxy = FaultProxy(dovecot.port, on_dele=lambda: devices[0].kill())

    def settings(port: int) -> list[str]:
        prof = ifax_profile(dovecot, **{"ifax.port": str(port), "ifax.poll_interval_s": "3600"})
        return [
            arg
            for key in prof
            if key.startswith("ifax.") and prof[key] != ""
            for arg in (
                "--set",
                f"{key}={prof[key] if not isinstance(prof[key], bool) else str(prof[key]).lower()}",
            )
        ]

    try:
        devices.append(DeviceProcess(image, *settings(proxy.port)))
        devices[0].popen.wait(60)  # killed by the proxy at DELE: a power cut
    finally:
        proxy.close()
    assert proxy.deles_seen == 1
    with open_board(image) as b:
        assert [d["pages"] for d in tray(b)] == [2]  # the fax was durable before DELE
    assert len(dovecot.stored()) == 1  # and is still on the server
    wait_unlocked(dovecot)  # Dovecot reaps the dead session (the device reboots meanwhile)
    device = DeviceProcess(image, *settings(dovecot.port))
    try:
        deadline = time.monotonic() + 30
        while dovecot.stored() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dovecot.stored() == [], device.output()  # fetched again, recognised, deleted
        assert "fax-pass-1" not in device.output()  # run-only settings mask the password
    finally:
        assert device.stop() == 0
    with open_board(image) as b:
        assert len(b.tray()) == 1  # printed once
