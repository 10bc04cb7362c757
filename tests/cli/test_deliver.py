"""`dpfw deliver ...` run as real processes on real images."""

from __future__ import annotations

import json
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
    for i, body in enumerate([b"Subject: 1\n\none\n", b"Subject: 2\r\n\r\n.two", b"A: b\rc: d"]):
        path = tmp_path / f"m{i}.eml"
        path.write_bytes(body)
        files.append(str(path))
    out = dpfw("deliver", str(image), "alice", *files).stdout.splitlines()
    assert len(out) == 3
    with open_board(image) as board:
        msgs = board.messages("alice")
        assert [line.split()[:2] for line in out] == [[m.uid, str(m.size)] for m in msgs]
        wires = [b"".join(board.read_wire("alice", m.uid)) for m in msgs]
    assert wires == [
        b"Subject: 1\r\n\r\none\r\n",
        b"Subject: 2\r\n\r\n..two\r\n",
        b"A: b\r\nc: d\r\n",
    ]
    assert [m.size for m in msgs] == [19, 20, 12]


def test_deliver_from_stdin(image: Path) -> None:
    out = dpfw("deliver", str(image), "alice", "-", stdin="Subject: s\n\nbody\n").stdout
    _uid, size, _ = out.split()
    assert size == str(len(b"Subject: s\r\n\r\nbody\r\n"))


def test_errors(image: Path, tmp_path: Path) -> None:
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"X: y\n")
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


NOT_MESSAGES = {
    "empty.eml": (b"", "empty, not an RFC 5322 message"),
    "README.md": (
        b"# dpfw\n\nA firmware simulator.\n",
        "not an RFC 5322 message: line 1 is not a header field (Name: value)",
    ),
    "blank-first.eml": (
        b"\nSubject: late\n",
        "not an RFC 5322 message: it starts with an empty line (no header fields)",
    ),
    "mbox.txt": (
        b"From alice@example.org Mon Nov 30 00:00:00 2026\nSubject: s\n\nbody\n",
        "not an RFC 5322 message: line 1 is not a header field (Name: value)",
    ),
    "bad-third.eml": (
        b"Subject: s\nFrom: a@b\nnot a header\n\nbody\n",
        "not an RFC 5322 message: line 3 is not a header field (Name: value)",
    ),
    "nul.eml": (b"Subject: a\0b\n\nbody\n", "not an RFC 5322 message: a NUL byte in header line 1"),
    "binary.bin": (b"\x89PNG\r\n\x1a\n\0\0", "line 1 is not a header field"),
}


@pytest.mark.parametrize("name", list(NOT_MESSAGES))
def test_what_is_not_a_message_is_refused_naming_the_file(
    image: Path, tmp_path: Path, name: str
) -> None:
    """fetchmail refused these once stored ("incorrect header line"): now they never are."""
    data, why = NOT_MESSAGES[name]
    path = tmp_path / name
    path.write_bytes(data)
    proc = dpfw("deliver", str(image), "alice", str(path), check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"dpfw: {path}: ") and why in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    piped = dpfw("deliver", str(image), "alice", "-", stdin=data.decode("latin-1"), check=False)
    assert piped.returncode == 1 and piped.stderr.startswith("dpfw: stdin: "), piped.stderr
    with open_board(image) as board:
        assert board.messages("alice") == []


def test_a_message_longer_than_the_check_is_stored_whole_from_a_pipe(image: Path) -> None:
    """The header check reads the start of a pipe; every byte still reaches the box."""
    headers = "".join(f"X-Line-{i}: {'v' * 60}\n" for i in range(2000))  # > HEAD_CHECK_BYTES
    text = headers + "\nbody\n"
    out = dpfw("deliver", str(image), "alice", "-", stdin=text).stdout
    _uid, size, name = out.split()
    assert name == "stdin" and int(size) == len(text.replace("\n", "\r\n"))
    with open_board(image) as board:
        (msg,) = board.messages("alice")
        wire = b"".join(board.read_wire("alice", msg.uid))
    assert wire == text.replace("\n", "\r\n").encode()


def test_box_messages_json_is_the_apis_message_shape(image: Path) -> None:
    # One message summary everywhere: `from` (not the dataclass's `sender`) and `number`,
    # as GET /api/v1/boxes/{box}/messages lists it (firmware/ops/messages.py MESSAGE_FIELDS).
    dpfw("deliver", str(image), "alice", "-", stdin="From: a@example.test\nSubject: s\n\nbody\n")
    listing = json.loads(dpfw("box", "messages", str(image), "alice", "--json").stdout)
    (row,) = listing["messages"]
    assert row["from"] == "a@example.test" and row["subject"] == "s" and row["number"] == 1
    assert "sender" not in row
