"""`dpfw box ...` run as real processes on real images."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.device.credentials import verify_password
from firmware.store.board import Board
from tests.support import create_image, dpfw


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = create_image(tmp_path / "b.img")
    return path


def test_add_list_passwd_del(image: Path) -> None:
    dpfw("box", "add", str(image), "alice", "--password-stdin", stdin="pw1\n")
    dpfw("box", "add", str(image), "Bob", "--password", "pw2", "--legacy")
    out = dpfw("box", "list", str(image)).stdout
    assert "2 of " in out and "alice\t0 messages" in out and "legacy-secret" in out
    dpfw("box", "passwd", str(image), "alice", "--password-stdin", stdin="new\n")
    with Board.open(image) as board:
        creds = board.box_credentials("alice")
        assert creds is not None and verify_password(creds, "new")
        bob = board.box_credentials("Bob")
        assert bob is not None and bob.legacy_secret == "pw2"
    dpfw("box", "del", str(image), "Bob")
    assert "Bob" not in dpfw("box", "list", str(image)).stdout


def test_errors_are_clear(image: Path) -> None:
    dpfw("box", "add", str(image), "alice", "--password", "pw")
    for name, message in (
        ("alice", "already exists"),
        ("a b", "not allowed"),
        ("x" * 41, "not allowed"),
    ):
        proc = dpfw("box", "add", str(image), name, "--password", "pw", check=False)
        assert proc.returncode == 1 and message in proc.stderr, name
    proc = dpfw("box", "del", str(image), "nobody", check=False)
    assert proc.returncode == 1 and "no box named 'nobody'" in proc.stderr
    proc = dpfw("box", "passwd", str(image), "nobody", "--password", "x", check=False)
    assert proc.returncode == 1 and "no box named 'nobody'" in proc.stderr
    proc = dpfw("box", "add", str(image), "carol", check=False)  # no password given, no tty
    assert proc.returncode == 1 and "password" in proc.stderr


def test_del_refused_while_holding_messages_unless_purge(image: Path, tmp_path: Path) -> None:
    dpfw("box", "add", str(image), "alice", "--password", "pw")
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"Subject: x\n\nhi\n")
    dpfw("deliver", str(image), "alice", str(msg))
    proc = dpfw("box", "del", str(image), "alice", check=False)
    assert proc.returncode == 1 and "holds 1 message; delete it first" in proc.stderr
    dpfw("box", "del", str(image), "alice", "--purge")
    with Board.open(image) as board:
        assert board.boxes() == []


def test_max_boxes_enforced(image: Path) -> None:
    with Board.open(image) as board:
        board.set_profile(board.profile.with_value("mailbox.max_boxes", "1"))
    dpfw("box", "add", str(image), "one", "--password", "pw")
    proc = dpfw("box", "add", str(image), "two", "--password", "pw", check=False)
    assert proc.returncode == 1 and "mailbox.max_boxes" in proc.stderr
