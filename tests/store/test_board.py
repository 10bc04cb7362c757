"""Board: boxes, credentials, settings, delivery, reading, deletion, limits, compaction."""

from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from firmware.config.profile import factory
from firmware.device.boards import create_board, open_board, save_profile, saved_profile
from firmware.errors import (
    BoxError,
    CorruptRecordError,
    ImageError,
    ImageInUseError,
    QuotaError,
    StorageFullError,
)
from firmware.security.credentials import verify_password
from firmware.store.board import Board
from firmware.store.wire import encode, unstuff
from tests.store.helpers import ADMIN, lab_profile

MSG = b"From: a@b\nSubject: test\n\nline 1\n.line 2\nline 3\n"


def wire(board: Board, box: str, uid: str, chunk: int = 65536) -> bytes:
    return b"".join(board.read_wire(box, uid, chunk))


def test_create_refuses_existing_file(image: Path) -> None:
    image.write_bytes(b"precious")
    with pytest.raises(ImageError, match="already exists"):
        create_board(image, factory("DP-3510"), ADMIN, size=1 << 20)
    assert image.read_bytes() == b"precious"


def test_default_size_is_the_profiles_and_sparse(image: Path) -> None:
    profile = factory("DP-3510")
    with create_board(image, profile, ADMIN) as board:
        assert board.geometry.image_size == profile.int("storage.flash_mib") << 20
    st = image.stat()
    assert st.st_size == profile.int("storage.flash_mib") << 20
    assert st.st_blocks * 512 < 8 << 20  # sparse


def test_admin_password_and_profile_persist(board: Board, image: Path) -> None:
    assert board.check_admin_password(ADMIN)
    assert not board.check_admin_password("wrong")
    board.set_admin_password("new-admin")
    new = saved_profile(board).with_value("pop3.max_sessions", "3")
    save_profile(board, new)
    board.close()
    with open_board(image) as again:
        assert again.check_admin_password("new-admin")
        assert not again.check_admin_password(ADMIN)
        assert saved_profile(again).int("pop3.max_sessions") == 3
        assert saved_profile(again) == new


def test_settings(board: Board, image: Path) -> None:
    factory_settings = dict(board.settings())
    assert set(factory_settings) == {"tls.cert_pem", "tls.key_pem"}  # its own certificate
    board.set_setting("note", "PEM\nTEXT")
    board.set_setting("x", "1")
    board.set_setting("x", None)
    board.set_setting("never-set", None)
    assert dict(board.settings()) == {**factory_settings, "note": "PEM\nTEXT"}
    board.set_settings({"tls.cert_pem": None, "tls.key_pem": None, "y": "2"})  # one update
    assert dict(board.settings()) == {"note": "PEM\nTEXT", "y": "2"}
    board.close()
    with open_board(image) as again:
        assert dict(again.settings()) == {"note": "PEM\nTEXT", "y": "2"}


def test_boxes(board: Board, image: Path) -> None:
    board.add_box("Alice", "pw2", legacy=True)  # case-sensitive: a different box
    with pytest.raises(BoxError, match="already exists"):
        board.add_box("alice", "x")
    for bad in ("", "a b", "x" * 41, "tab\t", "é"):
        with pytest.raises(BoxError, match="not allowed"):
            board.add_box(bad, "pw")
    board.add_box("x" * 40, "pw")
    board.add_box("!~", "pw")
    assert board.box_names() == sorted(["alice", "Alice", "x" * 40, "!~"])
    creds = board.box_credentials("Alice")
    assert creds is not None and creds.legacy_secret == "pw2"
    assert board.box_credentials("nobody") is None
    board.set_box_password("alice", "changed")
    board.close()
    with open_board(image) as again:
        creds = again.box_credentials("alice")
        assert creds is not None and verify_password(creds, "changed")
        infos = {b.name: b for b in again.boxes()}
        assert infos["Alice"].has_legacy_secret and not infos["alice"].has_legacy_secret
        again.delete_box("!~")
        assert "!~" not in again.box_names()
        with pytest.raises(BoxError, match="no box"):
            again.delete_box("!~")


def test_max_boxes(image: Path) -> None:
    with create_board(image, lab_profile(mailbox__max_boxes="2"), ADMIN, size=1 << 20) as b:
        b.add_box("a", "pw")
        b.add_box("b", "pw")
        with pytest.raises(QuotaError, match=r"mailbox\.max_boxes"):
            b.add_box("c", "pw")
        assert b.box_names() == ["a", "b"]


def test_deliver_read_top_and_sizes(board: Board) -> None:
    info = board.deliver("alice", MSG)
    expected = b"From: a@b\r\nSubject: test\r\n\r\nline 1\r\n..line 2\r\nline 3\r\n"
    assert wire(board, "alice", info.uid) == expected
    assert wire(board, "alice", info.uid, chunk=3) == expected
    assert info.size == len(unstuff(expected))
    assert board.messages("alice") == [info]
    top = b"".join(board.read_top("alice", info.uid, 0))
    assert top == b"From: a@b\r\nSubject: test\r\n\r\n"
    top2 = b"".join(board.read_top("alice", info.uid, 2, chunk_size=5))
    assert top2 == b"From: a@b\r\nSubject: test\r\n\r\nline 1\r\n..line 2\r\n"
    assert b"".join(board.read_top("alice", info.uid, 99)) == expected


def test_uid_format_and_order(board: Board) -> None:
    infos = [board.deliver("alice", MSG) for _ in range(5)]
    assert [m.uid for m in board.messages("alice")] == [i.uid for i in infos]
    assert len({i.uid for i in infos}) == 5
    for i in infos:
        assert 1 <= len(i.uid) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in i.uid)


def test_unknown_box_and_uid(board: Board) -> None:
    info = board.deliver("alice", MSG)
    board.add_box("bob", "pw")
    with pytest.raises(BoxError):
        board.deliver("nobody", MSG)
    with pytest.raises(BoxError):
        board.messages("nobody")
    with pytest.raises(BoxError):
        board.read_wire("bob", info.uid)  # not bob's
    with pytest.raises(BoxError):
        board.delete("alice", ["nonsense"])
    assert board.messages("alice") == [info]


def test_delete_is_atomic_batch(board: Board, image: Path) -> None:
    infos = [board.deliver("alice", MSG + bytes([65 + i])) for i in range(4)]
    board.delete("alice", [infos[0].uid, infos[2].uid])
    assert board.messages("alice") == [infos[1], infos[3]]
    board.delete("alice", [])
    board.close()
    with open_board(image) as again:
        assert again.messages("alice") == [infos[1], infos[3]]
        assert wire(again, "alice", infos[3].uid).endswith(b"line 3\r\nD\r\n")


def test_uids_never_reused_after_delete_compact_and_box_recreate(board: Board, image: Path) -> None:
    seen = set()
    for _ in range(3):
        info = board.deliver("alice", MSG)
        seen.add(info.uid)
        board.delete("alice", [info.uid])
        board.compact()
        assert board.usage().used == 0
        board.close()
        board = open_board(image)
    board.delete_box("alice")
    board.add_box("alice", "pw")
    info = board.deliver("alice", MSG)
    assert info.uid not in seen
    board.close()


def test_purge(board: Board, image: Path) -> None:
    for _ in range(3):
        board.deliver("alice", MSG)
    with pytest.raises(BoxError, match="holds 3 messages"):
        board.delete_box("alice")
    board.delete_box("alice", purge=True)
    board.add_box("alice", "pw")
    assert board.messages("alice") == []
    board.close()
    with open_board(image) as again:
        assert again.messages("alice") == []
        assert again.usage().live == 0


def test_quota_and_max_messages(image: Path) -> None:
    profile = lab_profile(mailbox__quota_mib="1", mailbox__max_messages="3")
    with create_board(image, profile, ADMIN, size=4 << 20) as board:
        board.add_box("a", "pw")
        big = b"x" * ((1 << 20) - 100) + b"\r\n"
        board.deliver("a", big)
        used = board.usage().used
        with pytest.raises(QuotaError, match="quota"):
            board.deliver("a", b"y" * 200)
        assert board.usage().used == used
        board.deliver("a", b"small")
        board.deliver("a", b"small")
        with pytest.raises(QuotaError, match=r"mailbox\.max_messages"):
            board.deliver("a", b"small")
        assert len(board.messages("a")) == 3


def test_storage_full_behind_a_large_live_message_says_which(image: Path) -> None:
    """Found in a user's trial: "storage full ... (67658720 reclaimable)" and a compact that
    reclaimed 0 B, without a word why: the live message at the head of the log is larger than
    the free space, so nothing behind it can be copied forward and erased."""
    with create_board(image, lab_profile(mailbox__quota_mib="64"), ADMIN, size=512 << 10) as b:
        b.add_box("a", "pw")
        b.add_box("b", "pw")
        capacity = b.usage().total
        big = b.deliver("a", b"a" * (capacity * 45 // 100))  # at the head of the log
        other = b.deliver("b", b"b" * (capacity * 45 // 100))
        b.delete("b", [other.uid])
        assert b.usage().reclaimable > capacity * 4 // 10 > b.usage().free
        head = f"behind message {big.uid} ("
        with pytest.raises(StorageFullError, match=re.escape(head)) as full:
            b.deliver("b", b"c" * (capacity * 30 // 100))
        assert str(full.value).endswith(
            "more than the free space: delete it to reclaim the rest); nothing was stored"
        )
        report = b.compact()
        assert report.bytes_reclaimed == 0 and report.stalled is not None
        assert report.stalled.startswith(head)
        b.delete("a", [big.uid])  # as the message says
        b.deliver("b", b"c" * (capacity * 30 // 100))
        assert b.compact().stalled is None


def test_storage_full_then_compaction_makes_room(image: Path) -> None:
    with create_board(image, lab_profile(mailbox__quota_mib="64"), ADMIN, size=512 << 10) as b:
        b.add_box("a", "pw")
        body = b"z" * 20_000
        stored = []
        with pytest.raises(StorageFullError, match="storage full"):
            for _ in range(100):
                stored.append(b.deliver("a", body))
        assert b.messages("a") == stored
        before = b.usage()
        with pytest.raises(StorageFullError, match="nothing was stored"):
            b.deliver("a", body)
        assert b.usage() == before
        b.delete("a", [m.uid for m in stored[:5]])  # deletions still fit (reserve)
        again = b.deliver("a", body)  # compaction makes room
        assert b.messages("a")[-1] == again
        for m in b.messages("a"):
            assert wire(b, "a", m.uid) == body + b"\r\n"


def test_compaction_keeps_everything_live(board: Board, image: Path) -> None:
    infos = [board.deliver("alice", MSG + str(i).encode()) for i in range(30)]
    board.delete("alice", [m.uid for m in infos[::2]])
    report = board.compact()
    assert report.bytes_reclaimed > 0
    assert board.usage().reclaimable == 0
    live = infos[1::2]
    assert board.messages("alice") == live
    board.close()
    with open_board(image) as again:
        assert again.messages("alice") == live
        for i, m in zip(range(1, 30, 2), live, strict=True):
            assert wire(again, "alice", m.uid).endswith(b"line 3\r\n" + str(i).encode() + b"\r\n")
        assert again.fsck().clean


def test_log_wraps_around_the_ring(board: Board, image: Path) -> None:
    capacity = board.usage().total
    body = os.urandom(30_000).hex().encode()  # 60 KB of text
    kept = None
    for n in range(3 * capacity // len(body)):
        info = board.deliver("alice", body + str(n).encode())
        if kept is not None:
            board.delete("alice", [kept.uid])
        kept = info
    assert board.messages("alice") == [kept]
    board.close()
    with open_board(image) as again:
        assert again.messages("alice") == [kept]
        assert kept is not None
        assert wire(again, "alice", kept.uid).startswith(body)
        assert again.fsck().clean


def test_second_open_is_refused(board: Board, image: Path) -> None:
    with pytest.raises(ImageInUseError, match=rf"in use by PID {os.getpid()}"):
        open_board(image)
    board.deliver("alice", MSG)  # the first opener is unharmed


def test_read_detects_corruption_after_boot(board: Board, image: Path) -> None:
    info = board.deliver("alice", MSG)
    offset = board.geometry.data_offset + 100  # inside the first record's payload
    with open(image, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(CorruptRecordError, match=info.uid):
        board.read_wire("alice", info.uid)
    with pytest.raises(CorruptRecordError):
        board.read_top("alice", info.uid, 1)
    assert [p.uid for p in board.fsck().problems] == [info.uid]
    assert board.messages("alice")[0].corrupt
    board.delete("alice", [info.uid])  # a corrupt message can still be deleted
    assert board.messages("alice") == []


def test_a_message_is_crc_checked_on_its_first_read_and_by_fsck_always(
    board: Board, image: Path
) -> None:
    info = board.deliver("alice", MSG)
    board.deliver("alice", MSG)  # so the damaged record is not the log's last (a torn tail)
    assert b"".join(board.read_wire("alice", info.uid)).startswith(b"From: a@b\r\n")
    offset = board.geometry.data_offset + 100  # inside the record's payload
    with open(image, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))
    # Later reads trust the first check (one flash read per RETR, not two)...
    board.read_wire("alice", info.uid)
    # ...but fsck reads everything again, and a reboot checks every record.
    assert [p.uid for p in board.fsck().problems] == [info.uid]
    board.close()
    with open_board(image) as again, pytest.raises(CorruptRecordError, match=info.uid):
        again.read_wire("alice", info.uid)


def test_streamed_delivery_from_a_file(board: Board, image: Path, tmp_path: Path) -> None:
    src = tmp_path / "m.eml"
    src.write_bytes(MSG * 1000)
    with open(src, "rb") as f:
        info = board.deliver("alice", f)
    assert info.size == len(MSG.replace(b"\n", b"\r\n")) * 1000
    # a non-seekable stream is spooled
    r, w = os.pipe()
    os.write(w, MSG)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        info2 = board.deliver("alice", pipe)
    assert (
        wire(board, "alice", info2.uid)
        == wire(board, "alice", info.uid)[: len(wire(board, "alice", info2.uid))]
    )
    assert board.deliver("alice", io.BytesIO(b"abc")).size == 5


@pytest.mark.slow
def test_50mb_message_in_bounded_memory(tmp_path: Path) -> None:
    image = tmp_path / "big.img"
    profile = lab_profile(mailbox__quota_mib="128")
    src = tmp_path / "big.eml"
    line = b"0123456789" * 7 + b"\n"
    with open(src, "wb") as f:
        f.write(b"Subject: big\n\n")
        for _ in range(50_000_000 // len(line)):
            f.write(line)
    with create_board(image, profile, ADMIN, size=128 << 20) as board:
        board.add_box("a", "pw")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with open(src, "rb") as f:
            info = board.deliver("a", f)
        total = 0
        for chunk in board.read_wire("a", info.uid):
            total += len(chunk)
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        assert total == info.size
        assert grown_mib < 30


def pipe_with(data: bytes) -> BinaryIO:
    """A non-seekable stream holding `data` (a thread feeds the pipe)."""
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as f, contextlib.suppress(BrokenPipeError):
            f.write(data)

    threading.Thread(target=feed, daemon=True).start()
    return os.fdopen(r, "rb")


def test_pipe_delivery_is_one_pass_and_limited(image: Path) -> None:
    profile = lab_profile(mailbox__quota_mib="1")
    with create_board(image, profile, ADMIN, size=1 << 20) as board:
        board.add_box("a", "pw")
        body = b"Subject: pipe\n\n" + b".x\n" * 100_000
        with pipe_with(body) as pipe:
            info = board.deliver("a", pipe)
        assert wire(board, "a", info.uid) == encode(body)[0]
        assert info.size == encode(body)[1].pop3_size
        used = board.usage()
        with pipe_with(b"y" * (1 << 20)) as pipe, pytest.raises(QuotaError, match="quota"):
            board.deliver("a", pipe)
        assert board.usage() == used and board.messages("a") == [info]
    tmp = image.with_name("full.img")
    with create_board(tmp, lab_profile(mailbox__quota_mib="64"), ADMIN, size=512 << 10) as b:
        b.add_box("a", "pw")
        with pipe_with(b"z" * (600 << 10)) as pipe, pytest.raises(StorageFullError):
            b.deliver("a", pipe)
        assert b.messages("a") == [] and b.usage().used == 0
        assert b.deliver("a", b"still fine").size == 12
    with open_board(tmp) as b:
        assert len(b.messages("a")) == 1 and b.problems() == []


def test_nvram_full_changes_nothing(board: Board, image: Path) -> None:
    slot = board.geometry.nvram_slot_size
    before = dict(board.settings())
    with pytest.raises(StorageFullError, match="NVRAM full"):
        board.set_setting("huge", "A" * slot)
    assert dict(board.settings()) == before
    board.add_box("bob", "pw")  # the board goes on
    board.close()
    with open_board(image) as again:
        assert again.box_names() == ["alice", "bob"]
        assert dict(again.settings()) == before


def read_extents(image: Path, extents: list[tuple[int, int]]) -> bytes:
    with open(image, "rb") as f:
        return b"".join(os.pread(f.fileno(), n, offset) for offset, n in extents)


def test_wire_extents_locate_the_wire_bytes_also_across_the_ring_end(
    board: Board, image: Path
) -> None:
    capacity = board.usage().total
    body = os.urandom(30_000).hex().encode()  # 60 KB of text
    kept = None
    wrapped = 0
    for n in range(2 * capacity // len(body)):
        info = board.deliver("alice", body + b"\n." + str(n).encode())
        if kept is not None:
            board.delete("alice", [kept.uid])
        kept = info
        extents = board.wire_extents("alice", info.uid)
        assert all(n > 0 for _, n in extents) and len(extents) <= 2
        wrapped += len(extents) == 2
        expected = wire(board, "alice", info.uid)
        assert read_extents(image, extents) == expected
        # Any sub-range, e.g. one that starts or ends on either side of the wrap point.
        ranges: list[tuple[int, int | None]] = [(3, None), (len(expected), None), (0, 0)]
        if len(extents) == 2:
            cut = extents[0][1]
            ranges += [(cut - 7, cut + 5), (cut, None), (0, cut)]
        for start, end in ranges:
            part = board.wire_extents("alice", info.uid, start, end)
            assert read_extents(image, part) == expected[start:end]
    assert wrapped >= 1  # at least one record wrapped around the end of the ring


def test_wire_extents_follow_compaction_and_check_like_read_wire(board: Board, image: Path) -> None:
    first = board.deliver("alice", MSG)
    second = board.deliver("alice", MSG + b"second\n")
    before = board.wire_extents("alice", second.uid)
    board.delete("alice", [first.uid])
    board.compact()
    after = board.wire_extents("alice", second.uid)
    assert after != before  # moved forward...
    assert read_extents(image, after) == wire(board, "alice", second.uid)  # ...and found again
    with pytest.raises(ValueError, match="outside message"):
        board.wire_extents("alice", second.uid, 0, 10**9)
    with pytest.raises(ValueError, match="outside message"):
        board.wire_extents("alice", second.uid, 5, 4)
    with pytest.raises(BoxError, match="no message with uid"):
        board.wire_extents("alice", first.uid)
    board.deliver("alice", MSG)  # so the damaged record is not the log's last
    offset, _ = after[0]
    with open(image, "r+b") as f:
        f.seek(offset + 3)
        byte = f.read(1)
        f.seek(offset + 3)
        f.write(bytes([byte[0] ^ 0x40]))
    board.close()
    with open_board(image) as again:  # boot finds the damage; checked or not, it is refused
        with pytest.raises(CorruptRecordError, match=second.uid):
            again.wire_extents("alice", second.uid)
        with pytest.raises(CorruptRecordError, match=second.uid):
            again.wire_extents("alice", second.uid, check=False)
        with pytest.raises(BoxError, match="no message with uid"):
            again.wire_extents("alice", first.uid, check=False)
