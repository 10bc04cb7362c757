"""The demo image's lab notice: the boot banner prints only passwords that still verify."""

from __future__ import annotations

from pathlib import Path

from firmware.device import demo


def test_boot_notice_leaves_out_changed_passwords_and_deleted_boxes(tmp_path: Path) -> None:
    with demo.create_demo(tmp_path / "demo.img", size=4 << 20) as board:
        notice = board.settings()["lab.notice"]
        assert demo.boot_notice(notice, board) == [demo.lab_notice()]
        board.set_box_password("bob", "bob-new", legacy=True)
        assert demo.boot_notice(notice, board) == [
            "LAB IMAGE: POP3 boxes (user/password) alice/alice-lab; console admin password "
            "admin-lab; changed since the image was made (not shown): box bob"
        ]
        board.delete_box("alice", purge=True)
        board.set_admin_password("admin-new")
        assert demo.boot_notice(notice, board) == [
            "LAB IMAGE: changed since the image was made (not shown): box bob, console admin"
        ]
        board.set_box_password("bob", "bob-lab")  # set back: true again, printed again
        assert demo.boot_notice(notice, board) == [
            "LAB IMAGE: POP3 boxes (user/password) bob/bob-lab; changed since the image was "
            "made (not shown): console admin"
        ]


def test_a_notice_in_another_format_is_printed_as_stored(tmp_path: Path) -> None:
    with demo.create_demo(tmp_path / "demo.img", size=4 << 20) as board:
        assert demo.boot_notice("LAB IMAGE: ask Ann\nfor access", board) == [
            "LAB IMAGE: ask Ann",
            "for access",
        ]
