"""`dpfw box ...` run as real processes on real images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from firmware.device.boards import open_board, save_profile, saved_profile
from firmware.security.credentials import verify_password
from tests.support import create_image, dpfw


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = create_image(tmp_path / "b.img")
    return path


def test_add_list_passwd_del(image: Path) -> None:
    dpfw("box", "add", str(image), "alice", "--password-stdin", stdin="pw-1\n")
    dpfw("box", "add", str(image), "Bob", "--password", "pw-2", "--legacy")
    out = dpfw("box", "list", str(image)).stdout
    assert "(2 of 20 boxes)" in out and re.search(r"^alice +0 +0 B$", out, re.M)
    assert re.search(r"^Bob +0 +0 B  legacy secret \(APOP, CRAM-MD5\)$", out, re.M)
    listing = json.loads(dpfw("box", "list", str(image), "--json").stdout)
    assert listing["max_boxes"] == 20
    assert [(b["name"], b["messages"], b["legacy_secret"]) for b in listing["boxes"]] == [
        ("Bob", 0, True),
        ("alice", 0, False),
    ]
    dpfw("box", "passwd", str(image), "alice", "--password-stdin", stdin="new-pw\n")
    with open_board(image) as board:
        creds = board.box_credentials("alice")
        assert creds is not None and verify_password(creds, "new-pw")
        bob = board.box_credentials("Bob")
        assert bob is not None and bob.legacy_secret == "pw-2"
    dpfw("box", "del", str(image), "Bob")
    assert "Bob" not in dpfw("box", "list", str(image)).stdout


def test_errors_are_clear(image: Path) -> None:
    dpfw("box", "add", str(image), "alice", "--password", "pw-1")
    for name, message in (
        ("alice", "already exists"),
        ("a b", "not allowed"),
        ("x" * 41, "not allowed"),
        # The rule the running device's API needs holds offline too (one rule, in the store).
        ("x/y", "cannot be addressed in a URL path"),
        ("..", "cannot be addressed in a URL path"),
        (".", "cannot be addressed in a URL path"),
    ):
        proc = dpfw("box", "add", str(image), name, "--password", "pw-1", check=False)
        assert proc.returncode == 1 and message in proc.stderr, name
    proc = dpfw("box", "del", str(image), "nobody", check=False)
    assert proc.returncode == 1 and "no box named 'nobody'" in proc.stderr
    proc = dpfw("box", "passwd", str(image), "nobody", "--password", "x", check=False)
    assert proc.returncode == 1 and "no box named 'nobody'" in proc.stderr
    proc = dpfw("box", "add", str(image), "carol", check=False)  # no password given, no tty
    assert proc.returncode == 1 and "password" in proc.stderr


def test_del_refused_while_holding_messages_unless_purge(image: Path, tmp_path: Path) -> None:
    dpfw("box", "add", str(image), "alice", "--password", "pw-1")
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"Subject: x\n\nhi\n")
    dpfw("deliver", str(image), "alice", str(msg))
    proc = dpfw("box", "del", str(image), "alice", check=False)
    assert proc.returncode == 1 and "holds 1 message; delete it first" in proc.stderr
    dpfw("box", "del", str(image), "alice", "--purge")
    with open_board(image) as board:
        assert board.boxes() == []


def test_max_boxes_enforced(image: Path) -> None:
    with open_board(image) as board:
        save_profile(board, saved_profile(board).with_value("mailbox.max_boxes", "1"))
    dpfw("box", "add", str(image), "one", "--password", "pw-1")
    proc = dpfw("box", "add", str(image), "two", "--password", "pw-1", check=False)
    assert proc.returncode == 1 and "mailbox.max_boxes" in proc.stderr


def test_one_password_rule_as_on_the_console(image: Path, tmp_path: Path) -> None:
    """`dpfw box add|passwd` and `image create` refuse what the console refuses, in its words."""
    rule = "a password has 4 to 64 characters; nothing changed"
    for bad in ("x", "x" * 100):
        proc = dpfw("box", "add", str(image), "alice", "--password", bad, check=False)
        assert proc.returncode == 1 and f"box add: {rule}" in proc.stderr
    dpfw("box", "add", str(image), "alice", "--password", "good-pw")
    for bad in ("x", "x" * 100):
        proc = dpfw("box", "passwd", str(image), "alice", "--password", bad, check=False)
        assert proc.returncode == 1 and f"box passwd: {rule}" in proc.stderr
        new = tmp_path / "new.img"
        proc = dpfw(
            "image",
            "create",
            str(new),
            "--profile",
            "DP-3510",
            "--admin-password",
            bad,
            check=False,
        )
        assert proc.returncode == 1 and f"image create: {rule}" in proc.stderr
        assert not new.exists()
    with open_board(image) as board:
        creds = board.box_credentials("alice")
        assert creds is not None and verify_password(creds, "good-pw")
        assert [b.name for b in board.boxes()] == ["alice"]


def _add_box_as_before_the_rule(image: Path, name: str) -> None:
    """What `box add` wrote before the '/' rule: the same NVRAM record, without the check."""
    from firmware.flash import nvram as nv
    from firmware.security.credentials import make_credentials
    from firmware.store.board import _record
    from firmware.store.index import BoxState

    with open_board(image) as board:
        state = board._state
        box_id = state.next_box_id
        boxes = dict(state.boxes)
        boxes[name] = nv.BoxRecord(box_id, _record(make_credentials("Old-pw-123")))
        board._commit(state.evolve(boxes=boxes, next_box_id=box_id + 1))
        board._index.boxes[box_id] = BoxState()


def test_an_image_holding_a_name_made_before_the_rule_still_opens(image: Path) -> None:
    # Such an image opens and lists the box; offline commands reach it (the API cannot).
    _add_box_as_before_the_rule(image, "x/y")
    listing = json.loads(dpfw("box", "list", str(image), "--json").stdout)
    assert [b["name"] for b in listing["boxes"]] == ["x/y"]
    dpfw("box", "del", str(image), "x/y")
    assert "x/y" not in dpfw("box", "list", str(image)).stdout
