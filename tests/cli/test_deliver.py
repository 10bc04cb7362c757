"""`dpfw deliver ...` run as real processes on real images."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.device.boards import open_board
from tests.support import create_image, dpfw


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = create_image(tmp_path / "b.img")
    dpfw("box", "add", str(path), "alice", "--password", "pw-1")
    return path


def test_deliver_in_order_with_uid_and_size(image: Path, tmp_path: Path) -> None:
    files = []
    for i, body in enumerate([b"Subject: 1\n\none\n", b"Subject: 2\r\n\r\n.two", b"A: b\rc"]):
        path = tmp_path / f"m{i}.eml"
        path.write_bytes(body)
        files.append(str(path))
    out = dpfw("deliver", str(image), "alice", *files).stdout.splitlines()
    assert len(out) == 3
    with open_board(image) as board:
        msgs = board.messages("alice")
        assert [line.split()[:2] for line in out] == [[m.uid, str(m.size)] for m in msgs]
        wires = [b"".join(board.read_wire("alice", m.uid)) for m in msgs]
    assert wires == [b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\n..two\r\n", b"A: b\r\nc\r\n"]
    assert [m.size for m in msgs] == [19, 20, 9]


def test_deliver_from_stdin(image: Path) -> None:
    out = dpfw("deliver", str(image), "alice", "-", stdin="Subject: s\n\nbody\n").stdout
    _uid, size, _ = out.split()
    assert size == str(len(b"Subject: s\r\n\r\nbody\r\n"))


def test_errors(image: Path, tmp_path: Path) -> None:
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"x\n")
    proc = dpfw("deliver", str(image), "bob", str(msg), check=False)
    assert proc.returncode == 1 and "no box named 'bob'" in proc.stderr
    proc = dpfw("deliver", str(image), "alice", str(msg), str(tmp_path / "nope.eml"), check=False)
    assert proc.returncode == 1 and "nope.eml" in proc.stderr
    with open_board(image) as board:
        assert len(board.messages("alice")) == 1  # the first file was stored, in order


def test_storage_full_stores_nothing_partial(image: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.eml"
    big.write_bytes(b"Subject: big\n\n" + b"x" * 2_000_000)
    proc = dpfw("deliver", str(image), "alice", str(big), check=False)
    assert proc.returncode == 1 and "storage full" in proc.stderr
    with open_board(image) as board:
        assert board.messages("alice") == []
        assert board.usage().used == 0
