"""The store on its own: it keeps the profile as text, enforces the limits it is given, and
makes no certificate; firmware.device.boards is where a stored profile becomes a Profile."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from firmware.config.profile import factory
from firmware.device.boards import create_board, limits_of, open_board, saved_profile
from firmware.errors import DeviceError, ImageError, QuotaError
from firmware.security.tls import SETTING_CERT, SETTING_KEY, describe
from firmware.store.board import Board, StoreLimits
from tests.store.helpers import ADMIN

LIMITS = StoreLimits(max_boxes=1, max_messages=2, quota_mib=1, compact_threshold_pct=10)


def test_the_store_keeps_profile_text_it_does_not_read(tmp_path: Path) -> None:
    text = "whatever the layer above wrote\n[not toml"
    with Board.create(tmp_path / "b.img", text, ADMIN, size=1 << 20) as board:
        assert board.profile_toml == text
        assert dict(board.settings()) == {}  # no certificate: the store makes none
    with Board.open(tmp_path / "b.img") as board:
        assert board.profile_toml == text
        board.set_profile_toml("again")
    with Board.open(tmp_path / "b.img") as board:
        assert board.profile_toml == "again"


def test_the_store_enforces_the_limits_it_is_given(tmp_path: Path) -> None:
    with Board.create(tmp_path / "b.img", "", ADMIN, size=1 << 20) as board:
        with pytest.raises(DeviceError, match="limits are not set"):
            board.add_box("alice", "alice-pw")
        board.limits = LIMITS
        board.add_box("alice", "alice-pw")
        with pytest.raises(QuotaError, match=r"mailbox\.max_boxes"):
            board.add_box("bob", "bob-pw")
        board.deliver("alice", b"Subject: 1\r\n\r\none\r\n")
        board.deliver("alice", b"Subject: 2\r\n\r\ntwo\r\n")
        with pytest.raises(QuotaError, match=r"mailbox\.max_messages"):
            board.deliver("alice", b"Subject: 3\r\n\r\nthree\r\n")


def test_a_new_device_leaves_the_factory_with_its_certificate(tmp_path: Path) -> None:
    profile = factory("DP-3530").with_value("identity.hostname", "copier.lab", "test")
    with create_board(tmp_path / "b.img", profile, ADMIN, size=1 << 20) as board:
        settings = board.settings()
        assert settings[SETTING_KEY] and "DNS:copier.lab" in describe(settings[SETTING_CERT]).san
        assert saved_profile(board) is profile and board.limits == limits_of(profile)


def test_open_board_reads_the_profile_once_and_sets_its_limits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = tmp_path / "b.img"
    profile = factory("DP-3530").with_value("mailbox.max_boxes", "3", "test")
    with Board.create(image, profile.to_toml() + "\n[future]\nx = 1\n", ADMIN, size=1 << 20):
        pass
    with caplog.at_level(logging.WARNING), open_board(image) as board:
        assert saved_profile(board) == profile and saved_profile(board) is saved_profile(board)
        assert board.limits == limits_of(profile)
    assert caplog.text.count("ignoring future.x") == 1


def test_open_board_refuses_a_profile_it_cannot_read_in_one_line(tmp_path: Path) -> None:
    image = tmp_path / "b.img"
    Board.create(image, "[identity]\nmodel = 'DP-1'\n", ADMIN, size=1 << 20).close()
    with pytest.raises(ImageError, match=r"b\.img profile: unknown model 'DP-1'") as caught:
        open_board(image)
    assert "\n" not in str(caught.value)
    with Board.open(image) as board:  # and the image was not left locked
        assert board.profile_toml.startswith("[identity]")


def test_board_create_refuses_a_profile_object(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="create_board"):
        profile: object = factory("DP-3530")
        Board.create(tmp_path / "b.img", profile, ADMIN, size=1 << 20)  # type: ignore[arg-type]
    assert not (tmp_path / "b.img").exists()


def test_compaction_calls_between_steps_after_each_segment(board: Board) -> None:
    """The hook a store worker uses to let readers in during a long compaction."""
    uids = [board.deliver("alice", b"Subject: x\r\n\r\n" + b"y" * 30_000).uid for _ in range(20)]
    board.delete("alice", uids[:-1])
    calls: list[int] = []
    board.between_steps = lambda: calls.append(len(board.messages("alice")))
    report = board.compact()
    assert report.records_moved == 1 and calls and set(calls) == {1}


def test_a_fitted_profile_reaches_nvram_with_the_next_update(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = tmp_path / "b.img"
    old_text = factory("DP-3530").to_toml() + "\n[future]\nx = 1\n"
    Board.create(image, old_text, ADMIN, size=1 << 20).close()
    with open_board(image, repair=False):
        pass  # inspect: nothing written
    with Board.open(image) as board:
        assert board.profile_toml == old_text
    with open_board(image) as board:
        board.add_box("alice", "alice-pw")  # any NVRAM update carries the fitted profile
    caplog.clear()
    with caplog.at_level(logging.WARNING), open_board(image) as board:
        assert board.profile_toml == factory("DP-3530").to_toml()
    assert "future.x" not in caplog.text
