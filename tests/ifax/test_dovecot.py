"""The poller against a real Dovecot: three faxes (G4 TIFF of 1 and 3 pages, one PDF)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import trio
from PIL import Image

from firmware.config.budget import RamBudget
from firmware.config.profile import Profile, factory
from firmware.device.boards import create_board
from firmware.ifax.poller import IfaxPoller, PollReport, clear_tray
from firmware.store.board import Board
from firmware.store.worker import StoreWorker
from tests.ifax.conftest import ifax_profile, pdf_page, tiff_g4
from tests.ifax.dovecot import Dovecot, fax_message


def deliver_three(dovecot: Dovecot) -> None:
    dovecot.deliver(fax_message(tiff_g4(1), "image/tiff", "one.tif", "a@example.org"))
    dovecot.deliver(fax_message(tiff_g4(3, (200, 200)), "image/tiff", "three.tif", "b@x.org"))
    dovecot.deliver(fax_message(pdf_page(), "application/pdf", "doc.pdf", "c@example.org"))


def poll(board: Board, profile: Profile, budget: int = 64 << 20) -> PollReport:
    poller = IfaxPoller(lambda: board, lambda: profile, lambda: RamBudget(budget), StoreWorker())
    return trio.run(poller.poll)


def tray(board: Board) -> list[dict[str, object]]:
    return [board.tray_read(e.seq)[0] for e in board.tray()]


def test_delete_mode_prints_two_refuses_the_pdf_and_empties_the_box(
    board: Board, dovecot: Dovecot
) -> None:
    deliver_three(dovecot)
    report = poll(board, ifax_profile(dovecot))
    assert (report.received, report.errors, report.deleted, report.failed) == (2, 1, 3, None)
    docs = tray(board)
    assert [(d["status"], d["pages"], d["resolution"]) for d in docs] == [
        ("printed", 1, "200x100"),
        ("printed", 3, "200x200"),
        ("error", 0, ""),
    ]
    assert docs[0]["from"] == "a@example.org" and docs[1]["subject"] == "fax three.tif"
    assert "application/pdf" in str(docs[2]["error"])
    assert dovecot.stored() == []
    assert board.fsck().problems == []


def test_leave_mode_keeps_the_box_and_never_prints_twice(board: Board, dovecot: Dovecot) -> None:
    deliver_three(dovecot)
    profile = ifax_profile(dovecot, **{"ifax.leave_on_server": "true"})
    first = poll(board, profile)
    before = dovecot.stored()
    second = poll(board, profile)
    assert (first.received, first.errors, first.deleted) == (2, 1, 0)
    assert (second.received, second.errors, second.skipped) == (0, 0, 3)
    assert len(before) == 3 and len(dovecot.stored()) == 3
    assert len(board.tray()) == 3
    clear_tray(board)  # the UIDLs are remembered in NVRAM: a cleared tray is not re-printed
    third = poll(board, profile)
    assert (third.received, third.skipped) == (0, 3) and board.tray() == []


def test_stls_with_verification_and_scram(board: Board, dovecot_tls: Dovecot) -> None:
    deliver_three(dovecot_tls)
    report = poll(board, ifax_profile(dovecot_tls, **{"ifax.auth": "sasl"}))
    assert (report.received, report.errors, report.failed) == (2, 1, None)
    assert dovecot_tls.stored() == []


def test_pop3s_implicit_tls(board: Board, dovecot_tls: Dovecot) -> None:
    deliver_three(dovecot_tls)
    profile = ifax_profile(
        dovecot_tls, **{"ifax.tls": "pop3s", "ifax.port": str(dovecot_tls.pop3s_port)}
    )
    report = poll(board, profile)
    assert (report.received, report.errors, report.failed) == (2, 1, None)


def test_storage_full_stores_nothing_and_leaves_the_fax(tmp_path: Path, dovecot: Dovecot) -> None:
    small = create_board(tmp_path / "s.img", factory("DP-3530"), "admin-pw", size=1 << 20)
    try:
        noise = Image.frombytes("1", (1728, 2800), os.urandom(1728 * 2800 // 8))
        out = io.BytesIO()
        noise.save(out, format="TIFF", compression="group4", dpi=(200, 200))
        assert len(out.getvalue()) > 1 << 20  # a valid fax larger than the whole image
        dovecot.deliver(fax_message(out.getvalue(), "image/tiff", "big.tif", "a@example.org"))
        report = poll(small, ifax_profile(dovecot, **{"ifax.max_message_kib": "4096"}))
        assert report.failed is not None and report.failed.startswith("storage full"), report
        assert small.tray() == [] and len(dovecot.stored()) == 1
    finally:
        small.close()


def test_stls_refuses_an_unverified_certificate(board: Board, dovecot_tls: Dovecot) -> None:
    deliver_three(dovecot_tls)
    profile = ifax_profile(dovecot_tls, **{"ifax.ca_file": ""})  # system CAs: not ours
    report = poll(board, profile)
    assert report.failed is not None and "certificate verify failed" in report.failed
    assert board.tray() == [] and len(dovecot_tls.stored()) == 3


def test_wrong_password_is_auth_and_backs_off(board: Board, dovecot: Dovecot) -> None:
    deliver_three(dovecot)
    poller = IfaxPoller(
        lambda: board,
        lambda: ifax_profile(dovecot, **{"ifax.password": "wrong-one"}),
        lambda: RamBudget(64 << 20),
        StoreWorker(),
    )
    report = trio.run(poller.poll)
    assert report.failed is not None and report.code == "AUTH"
    assert poller.delay(report, 60) == 3600.0
    assert board.tray() == [] and len(dovecot.stored()) == 3


def test_memory_full_stores_nothing_and_leaves_the_fax(board: Board, dovecot: Dovecot) -> None:
    dovecot.deliver(fax_message(tiff_g4(3), "image/tiff", "three.tif", "a@example.org"))
    budget = RamBudget(2 << 20)  # the fax fits the whole budget, not what a scan leaves free
    poller = IfaxPoller(lambda: board, lambda: ifax_profile(dovecot), lambda: budget, StoreWorker())
    with budget.reserve(1700 << 10, "a scan job"):
        report = trio.run(poller.poll)
    assert report.failed is not None and report.failed.startswith("MEMORY FULL")
    assert board.tray() == [] and len(dovecot.stored()) == 1
    assert poll(board, ifax_profile(dovecot)).received == 1


def test_remembered_uidls_stay_within_their_nvram_budget(board: Board) -> None:
    from firmware.ifax.poller import SEEN_MAX_BYTES, SEEN_SETTING, clear_tray, known_keys

    for n in range(300):
        board.tray_print({"status": "error", "key": f"fax@host {n:040d}"}, b"r")
    assert clear_tray(board) == 300
    kept = board.settings()[SEEN_SETTING].splitlines()
    assert len("\n".join(kept)) <= SEEN_MAX_BYTES and kept[-1] == f"fax@host {299:040d}"
    assert known_keys(board) == set(kept)
