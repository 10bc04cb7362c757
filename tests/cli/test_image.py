"""`dpfw image ...` run as real processes on real images."""

from __future__ import annotations

import json
import os
from pathlib import Path

from firmware.device.boards import open_board, saved_profile
from tests.support import dpfw


def test_create_with_password_from_stdin(tmp_path: Path) -> None:
    image = tmp_path / "b.img"
    out = dpfw(
        "image",
        "create",
        str(image),
        "--profile",
        "DP-3520",
        "--size",
        "8MiB",
        "--admin-password-stdin",
        stdin="s3cret\n",
    )
    assert "DP-3520" in out.stdout
    assert image.stat().st_size == 8 << 20
    with open_board(image) as board:
        assert board.check_admin_password("s3cret")
        assert saved_profile(board).model == "DP-3520"
        assert board.boxes() == []


def test_create_refuses_existing_and_bad_profile(tmp_path: Path) -> None:
    image = tmp_path / "b.img"
    image.write_bytes(b"keep me")
    proc = dpfw(
        "image", "create", str(image), "--profile", "DP-3530", "--admin-password", "x", check=False
    )
    assert proc.returncode == 1 and "already exists" in proc.stderr
    assert image.read_bytes() == b"keep me"
    proc = dpfw(
        "image",
        "create",
        str(tmp_path / "n.img"),
        "--profile",
        "DP-9999",
        "--admin-password",
        "x-admin",
        check=False,
    )
    assert proc.returncode == 1 and "DP-9999" in proc.stderr
    proc = dpfw("image", "create", str(tmp_path / "n.img"), "--profile", "DP-3530", check=False)
    assert proc.returncode == 1 and "admin-password" in proc.stderr
    assert not (tmp_path / "n.img").exists()


def test_demo_image(tmp_path: Path) -> None:
    image = tmp_path / "demo.img"
    out = dpfw("image", "demo", str(image)).stdout
    assert "alice-lab" in out and "bob-lab" in out and "admin-lab" in out
    with open_board(image) as board:
        assert saved_profile(board).model == "DP-3530"
        assert saved_profile(board).str("pop3.plaintext_auth") == "always"
        assert board.check_admin_password("admin-lab")
        for box in ("alice", "bob"):
            msgs = board.messages(box)
            assert len(msgs) >= 3
            wires = [b"".join(board.read_wire(box, m.uid)) for m in msgs]
            assert any(b"\r\n..hidden" in w for w in wires)  # a stuffed line starting with "."
            assert any(b"multipart/mixed" in w and b"page-001.txt" in w for w in wires)
            assert any(b"<scanner@dp3530.local>" in w for w in wires)  # a real scan
        assert "alice/alice-lab" in board.settings()["lab.notice"]
        assert "tls.cert_pem" in board.settings()  # every image has its own certificate


def test_inspect_text_and_json(tmp_path: Path) -> None:
    image = tmp_path / "demo.img"
    dpfw("image", "demo", str(image), "--size", "4MiB")
    text = dpfw("image", "inspect", str(image)).stdout
    assert "format version 1" in text and "DP-3530" in text
    assert "alice: 4 messages" in text and "no corrupt or torn records" in text
    info = json.loads(dpfw("image", "inspect", str(image), "--json").stdout)
    assert info["profile"]["model"] == "DP-3530"
    assert [b["name"] for b in info["boxes"]] == ["alice", "bob"]
    assert info["space"]["free"] + info["space"]["used"] == info["space"]["total"]
    assert len(info["nvram"]["slot_sequences"]) == 2
    assert info["problems"] == []


def test_inspect_reports_a_corrupt_record(tmp_path: Path) -> None:
    image = tmp_path / "demo.img"
    dpfw("image", "demo", str(image), "--size", "4MiB")
    raw = bytearray(image.read_bytes())
    at = raw.find(b"This box is a demo.")
    raw[at] ^= 0x20
    image.write_bytes(bytes(raw))
    info = json.loads(dpfw("image", "inspect", str(image), "--json").stdout)
    assert [(p["what"], p["box"]) for p in info["problems"]] == [("corrupt", "alice")]
    text = dpfw("image", "inspect", str(image)).stdout
    assert "corrupt record at log offset" in text
    proc = dpfw("image", "fsck", str(image), check=False)
    assert proc.returncode == 2 and "records checked, 1 bad:\n  corrupt at " in proc.stdout


def test_refuses_foreign_and_corrupt_images(tmp_path: Path) -> None:
    foreign = tmp_path / "notes.txt"
    foreign.write_bytes(b"hello\n" * 1000)
    proc = dpfw("image", "inspect", str(foreign), check=False)
    assert proc.returncode == 1 and "not a dpfw board image" in proc.stderr
    image = tmp_path / "b.img"
    dpfw(
        "image",
        "create",
        str(image),
        "--profile",
        "DP-3510",
        "--size",
        "1MiB",
        "--admin-password",
        "x-admin",
    )
    raw = bytearray(image.read_bytes())
    raw[30] ^= 0xFF
    image.write_bytes(bytes(raw))
    proc = dpfw("image", "inspect", str(image), check=False)
    assert proc.returncode == 1 and "superblock CRC mismatch" in proc.stderr
    assert image.read_bytes() == bytes(raw)  # never repaired silently
    proc = dpfw("image", "inspect", str(tmp_path / "missing.img"), check=False)
    assert proc.returncode == 1 and "no such board image" in proc.stderr


def test_second_opener_gets_in_use_by_pid(tmp_path: Path) -> None:
    image = tmp_path / "b.img"
    dpfw(
        "image",
        "create",
        str(image),
        "--profile",
        "DP-3510",
        "--size",
        "1MiB",
        "--admin-password",
        "x-admin",
    )
    with open_board(image):
        proc = dpfw("image", "inspect", str(image), check=False)
        assert proc.returncode != 0
        assert f"{image} is in use by PID {os.getpid()}" in proc.stderr
    dpfw("image", "inspect", str(image))  # free again once closed


def test_compact(tmp_path: Path) -> None:
    image = tmp_path / "demo.img"
    dpfw("image", "demo", str(image), "--size", "4MiB")
    with open_board(image) as board:
        board.delete("alice", [m.uid for m in board.messages("alice")])
    out = dpfw("image", "compact", str(image)).stdout
    assert "reclaimed" in out
    info = json.loads(dpfw("image", "inspect", str(image), "--json").stdout)
    assert info["space"]["reclaimable"] == 0


def test_inspect_reports_a_torn_tail_without_repairing_it(tmp_path: Path) -> None:
    image = tmp_path / "b.img"
    dpfw("image", "demo", str(image), "--size", "1MiB")
    raw = bytearray(image.read_bytes())
    last = raw.rfind(b"DPRC")
    raw[last + 200 : last + 400] = bytes(200)  # the last write never finished
    image.write_bytes(bytes(raw))
    for _ in range(2):
        proc = dpfw("image", "inspect", str(image))
        assert "torn record at log offset" in proc.stdout
        assert "discarded a torn tail" in proc.stderr
        assert "bob: 3 messages" in proc.stdout  # its last one (a scan) was torn
    with open_board(image) as board:  # a normal open repairs it
        assert len(board.messages("bob")) == 3
    assert "no corrupt or torn records" in dpfw("image", "inspect", str(image)).stdout
