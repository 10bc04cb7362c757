"""The store at scale: the compact index, boot's header walk, listings, old images.

Boot checks every header but not every payload (docs/storage.md, "Boot"); these tests pin what
that must not change: an image written by main boots unchanged, the index is the same whether
the walk maps the file or reads it, a bad payload is still refused before a byte is sent, and
the index stays within its memory budget per message.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from benchmarks.store import bulk_image
from firmware.config.profile import factory
from firmware.device.boards import create_board, open_board
from firmware.errors import CorruptRecordError
from firmware.flash.image import FileOps, Image
from firmware.store import log as log_module
from firmware.store.board import Board, Listing
from tests.store.helpers import ADMIN

FIXTURES = Path(__file__).parent / "fixtures"


def old_image(tmp_path: Path) -> Path:
    path = tmp_path / "main.img"
    path.write_bytes(gzip.decompress((FIXTURES / "main-42a6716.img.gz").read_bytes()))
    return path


def contents(board: Board, box: str) -> list[list[object]]:
    return [
        [m.uid, m.size, hashlib.sha256(b"".join(board.read_wire(box, m.uid))).hexdigest()]
        for m in board.messages(box)
    ]


def test_an_image_written_by_main_boots_unchanged(tmp_path: Path) -> None:
    """main (42a6716) wrote it: deliveries, deletions, a compaction (copies after newer
    records: the seqs are out of log order), a tray document, more deletions."""
    expect = json.loads((FIXTURES / "main-42a6716.json").read_text())
    path = old_image(tmp_path)
    with open_board(path) as b:
        assert b.problems() == []
        for box in ("alice", "bob"):
            assert contents(b, box) == expect[box]
        assert [[e.number, e.size] for e in b.tray()] == expect["tray"]
        assert b.usage().live == expect["usage_live"]
        assert b.fsck().clean
        seqs = [m.seq for box in ("alice", "bob") for m in b.messages(box)]
        new = b.deliver("alice", b"Subject: new\n\nafter the upgrade\n")
        assert new.seq > max(seqs)
        b.compact()
    with open_board(path) as b:  # and after this firmware appended and compacted
        assert contents(b, "bob") == expect["bob"]
        assert contents(b, "alice")[:-1] == expect["alice"]
        assert b.fsck().clean


def index_facts(board: Board) -> tuple[object, ...]:
    idx = board._index
    return (
        [(b.name, b.messages, b.bytes, b.corrupt) for b in board.boxes()],
        [board.messages(box) for box in board.box_names()],
        list(idx.extents),
        idx.next_seq,
        idx.live_bytes,
        board.usage(),
        board.problems(),
    )


def test_walk_windows_and_payload_checks_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk's read windows (a header cut by a window's end) and the every-payload mode of
    inspect/fsck give the same index as a boot."""
    path = old_image(tmp_path)
    with open_board(path) as b:
        want = index_facts(b)
    for window in (80, 100, 4096):
        monkeypatch.setattr(log_module, "WINDOW", window)
        with open_board(path) as b:
            assert index_facts(b) == want, window
    with open_board(path, repair=False) as b:
        assert index_facts(b) == want


def test_walk_reads_through_the_image_ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read of the walk goes through `Image.ops` (so an EIO is one ImageError line)."""
    path = old_image(tmp_path)
    reads: list[int] = []

    class Counting(FileOps):
        @staticmethod
        def pread(fd: int, n: int, offset: int) -> bytes:
            reads.append(n)
            return os.pread(fd, n, offset)

    real_open = Image.open

    def open_counting(p: Path) -> tuple[Image, bytes]:
        image, data = real_open(p)
        image.ops = Counting()
        return image, data

    monkeypatch.setattr(Image, "open", staticmethod(open_counting))
    with open_board(path) as b:
        assert len(b.messages("alice")) == 18
    assert reads


def test_listing_is_a_compact_snapshot(board: Board) -> None:
    for n in range(5):
        board.deliver("alice", f"Subject: {n}\n\n{'x' * n}\n".encode())
    listing = board.listing("alice")
    assert isinstance(listing, Listing)
    infos = board.messages("alice")
    assert [(m.uid, m.size) for m in listing] == [(m.uid, m.size) for m in infos]
    assert list(listing.uids) == [m.uid for m in infos]
    assert list(listing.sizes) == [m.size for m in infos]
    assert listing[-1].uid == infos[-1].uid and listing[1:3][0].uid == infos[1].uid
    lines = "".join(f"{n} {m.uid}\r\n" for n, m in enumerate(infos, 1))
    assert listing.uids.listing(0, 5) == lines  # UIDL's lines, formatted by the store's uids
    assert listing.uids.listing(2, 4) == "".join(lines.splitlines(keepends=True)[2:4])
    assert list(listing.uids.pick([4, 0, 2])) == [infos[4].uid, infos[0].uid, infos[2].uid]
    board.delete("alice", [infos[0].uid])
    assert len(listing) == 5  # a snapshot: the session numbers stay put until QUIT
    assert [m.uid for m in board.iter_messages("alice")] == [m.uid for m in infos[1:]]


def test_a_bad_payload_is_refused_at_first_read_after_boot(board: Board, image: Path) -> None:
    uids = [board.deliver("alice", f"Subject: {n}\n\nbody {n}\n".encode()).uid for n in range(3)]
    board.close()
    raw = bytearray(image.read_bytes())
    at = raw.find(b"body 1")
    raw[at] ^= 0x20
    image.write_bytes(bytes(raw))
    with open_board(image) as b:
        assert not b.message("alice", uids[1]).corrupt  # boot did not read that payload
        with pytest.raises(CorruptRecordError):
            b.read_wire("alice", uids[1])
        with pytest.raises(CorruptRecordError):
            b.read_top("alice", uids[1], 0)
        assert b.message("alice", uids[1]).corrupt
        assert [p.uid for p in b.problems()] == [uids[1]]
        assert [b.boxes()[0].corrupt] == [1]
        assert b"".join(b.read_wire("alice", uids[2])).endswith(b"body 2\r\n")


def test_index_costs_at_most_150_bytes_a_message(tmp_path: Path) -> None:
    """Old main kept a Msg and a Header object per message: ~800 bytes."""
    count = 20_000
    path = tmp_path / "many.img"
    bulk_image(path, count, 200, 400)
    empty = tmp_path / "empty.img"
    bulk_image(empty, 0, 200, 400)  # same geometry: NVRAM slots, buffers
    # Earlier tests' garbage freed by a collection inside a window would count against it
    # (a base below zero: 208 bytes a message once in a full run); collect first, then hold.
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with open_board(empty):
            base = tracemalloc.get_traced_memory()[0] - before
        before = tracemalloc.get_traced_memory()[0]
        with open_board(path) as b:
            held = tracemalloc.get_traced_memory()[0] - before - base
            assert sum(box.messages for box in b.boxes()) == count
            b.deliver("a", b"Subject: one more\n\n.\n")
            b.delete("b", [m.uid for m in b.messages("b")][:100])
    finally:
        tracemalloc.stop()
        gc.enable()
    assert held / count <= 150, f"{held / count:.0f} bytes a message"
    with open_board(path) as b:
        assert len(b.messages("a")) == count // 2 + 1
        assert len(b.messages("b")) == count // 2 - 100


def test_deleting_many_of_a_large_box(tmp_path: Path) -> None:
    path = tmp_path / "many.img"
    bulk_image(path, 10_000, 100, 200)
    with open_board(path) as b:
        uids = [m.uid for m in b.messages("a")]
        b.delete("a", uids[::3])
        left = [u for i, u in enumerate(uids) if i % 3]
        assert [m.uid for m in b.messages("a")] == left
        b.compact()
        assert [m.uid for m in b.messages("a")] == left
    with open_board(path) as b:
        assert [m.uid for m in b.messages("a")] == left
        assert b.fsck().clean


def test_new_image_then_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.img"
    with create_board(path, factory("DP-3530"), ADMIN, size=1 << 20) as b:
        b.add_box("x", "x-pw-1")
    with open_board(path) as b:
        assert b.messages("x") == [] and list(b.listing("x")) == []


def test_walk_across_the_ring_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ring.img"
    with create_board(path, factory("DP-3530"), ADMIN, size=256 * 1024) as b:
        b.add_box("x", "x-pw-1")
        capacity = b.geometry.capacity
        n = 0
        while b._log.head < capacity + capacity // 3:  # the log has wrapped around the ring
            uids = [
                b.deliver("x", f"Subject: {n + k}\n\n{'y' * 3000}\n".encode()).uid for k in range(8)
            ]
            n += 8
            b.delete("x", uids[:6])
            b.compact()
        assert b._log.tail // capacity != b._log.head // capacity or b._log.head >= capacity
        want = [(m.uid, m.size) for m in b.messages("x")]
    with open_board(path) as b:
        facts = index_facts(b)
        assert [(m.uid, m.size) for m in b.messages("x")] == want
    monkeypatch.setattr(log_module, "WINDOW", 100)
    with open_board(path) as b:
        assert index_facts(b) == facts
    with open_board(path, repair=False) as b:
        assert index_facts(b) == facts
        assert b.fsck().clean


def test_tombstones_are_squeezed_out(tmp_path: Path) -> None:
    path = tmp_path / "many.img"
    bulk_image(path, 10_000, 100, 200)
    with open_board(path) as b:
        keep = [m.uid for m in b.messages("b")][1000:]
        b.delete("a", [m.uid for m in b.messages("a")])
        msg = b._index.msgs[int(keep[0].split(".")[1])]
        b.delete("b", [m.uid for m in b.messages("b")][:1000])
        assert b._index._removed == 0  # 6,000 of 10,000 removed: the table was rebuilt
        assert len(b._index._seq) == len(keep)
        assert msg.header.seq == int(keep[0].split(".")[1])  # a view re-finds its slot
        assert [m.uid for m in b.messages("b")] == keep
        assert b"".join(b.read_wire("b", keep[-1])).startswith(b"From: ")
        new = b.deliver("a", b"Subject: new\n\n.\n")
    with open_board(path) as b:
        assert [m.uid for m in b.messages("b")] == keep
        assert [m.uid for m in b.messages("a")] == [new.uid]
