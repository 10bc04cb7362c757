"""The index checkpoint (firmware/store/checkpoint.py): a boot from it sees exactly what a full
walk sees; a corrupt, stale or half-written checkpoint falls back to the walk; a power cut at
any step of writing one loses nothing."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from firmware.config.profile import factory
from firmware.device.boards import create_board, open_board
from firmware.flash import nvram as nv
from firmware.flash.layout import NvramState
from firmware.store import checkpoint as ck
from firmware.store.board import Board
from tests.store.helpers import ADMIN
from tests.store.test_crash import contents, crash_states, rebuild, record_ops
from tests.store.test_scale import index_facts

SIZE = 1 << 20


def make(image: Path, n: int = 30) -> Board:
    board = create_board(image, factory("DP-3530"), ADMIN, size=SIZE)
    board.add_box("a", "pw-a")
    board.add_box("b", "pw-b")
    for i in range(n):
        board.deliver("ab"[i % 2], f"Subject: {i}\n\n{'x' * (i * 13)}\n".encode())
    board.delete("a", [m.uid for m in board.messages("a")][:3])
    board.tray_print({"status": "printed"}, b"II*\x00doc")
    return board


def full_walk_facts(image: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[object, ...]:
    with monkeypatch.context() as m:
        m.setattr(ck, "replay_from", lambda *a, **k: None)
        with open_board(image) as b:
            b._writable = False  # no checkpoint at close
            return index_facts(b)


def test_boot_from_a_checkpoint_is_a_full_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    image = tmp_path / "b.img"
    with make(image) as board:
        assert board.checkpoint(force=True)
        position = board._state.checkpoint
        # After it: deliveries, deletions, a new box, a purged box, a tray document.
        board.deliver("a", b"Subject: after\n\nnew\n")
        board.delete("b", [m.uid for m in board.messages("b")][:2])
        board.add_box("c", "pw-c")
        board.deliver("c", b"Subject: c\n\nc\n")
        board.add_box("d", "pw-d")
        board.deliver("d", b"Subject: d\n\nd\n")
        board.delete_box("d", purge=True)
        board.tray_print({"status": "printed"}, b"II*\x00two")
        board._writable = False
    want = full_walk_facts(image, monkeypatch)
    loaded: list[int] = []
    real = ck.load

    def load(*args: object) -> object:
        loaded.append(args[1])  # type: ignore[arg-type]
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ck, "load", load)
    with caplog.at_level(logging.WARNING), open_board(image) as b:
        b._writable = False
        assert index_facts(b) == want
        assert loaded == [position]
        assert "checkpoint" not in caplog.text
        nxt = b.deliver("a", b"Subject: next\n\n.\n")
        assert nxt.seq > max(m.seq for box in ("a", "b", "c") for m in b.messages(box)[:-1])


@pytest.mark.parametrize("where", ["payload", "header", "pointer", "head"])
def test_a_bad_checkpoint_falls_back_to_the_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    image = tmp_path / "b.img"
    with make(image) as board:
        assert board.checkpoint(force=True)
        position = board._state.checkpoint
        assert position is not None
        at = board.geometry.data_offset + position
        board.deliver("b", b"Subject: after\n\nafter\n")
        board._writable = False
        state = board._state
    raw = bytearray(image.read_bytes())
    if where == "payload":
        raw[at + 68 + 40] ^= 1
    elif where == "header":
        raw[at + 20] ^= 1
    image.write_bytes(bytes(raw))
    if where in ("pointer", "head"):
        with open_board(image) as b:
            b._writable = False
            if where == "pointer":
                b._commit(state.evolve(checkpoint=position + 16))
            else:
                b._commit(b._state.evolve(log_head=b._state.log_head, checkpoint=position))
                b._commit(b._state.evolve(checkpoint=b._log.tail + 4096))
    want = full_walk_facts(image, monkeypatch)
    with caplog.at_level(logging.WARNING), open_board(image) as b:
        b._writable = False
        assert "walking the whole log" in caplog.text
        assert index_facts(b) == want
        if where == "header":  # the checkpoint record itself is a corrupt record now
            assert [p.what for p in b.problems()] == ["corrupt"]
        else:
            assert b.problems() == []


def test_compaction_retires_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = tmp_path / "b.img"
    with make(image) as board:
        assert board.checkpoint(force=True)
        board.delete("b", [m.uid for m in board.messages("b")])
        board.compact()
        assert board._state.checkpoint is None
        board._writable = False
    want = full_walk_facts(image, monkeypatch)
    with open_board(image) as b:
        b._writable = False
        assert index_facts(b) == want


def test_inspect_and_fsck_walk_everything(tmp_path: Path) -> None:
    image = tmp_path / "b.img"
    with make(image) as board:
        assert board.checkpoint(force=True)
    calls: list[int] = []

    def replay_from(*args: object, **kwargs: object) -> None:
        calls.append(1)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(ck, "replay_from", replay_from)
        with open_board(image, repair=False) as b:
            assert b.fsck().clean
    assert calls == []


def test_power_cut_at_every_step_of_a_checkpoint(tmp_path: Path) -> None:
    image = tmp_path / "b.img"
    board = make(image)
    want = {box: contents(board, box) for box in ("a", "b")}
    board._writable = False
    board.close()
    base = image.read_bytes()
    board = open_board(image)
    ops = record_ops(board)
    assert board.checkpoint(force=True)
    board.deliver("a", b"Subject: after\n\nafter\n")  # a tail after it, too
    board._writable = False
    board.close()
    states = crash_states(ops)
    assert len(states) > 6
    cut = tmp_path / "cut.img"
    for state in states:
        rebuild(base, state, cut)
        with open_board(cut) as b:
            b._writable = False
            got = {box: contents(b, box) for box in ("a", "b")}
            assert got["b"] == want["b"]
            assert set(want["a"]) <= set(got["a"]) and len(got["a"]) <= len(want["a"]) + 1
            assert b.problems() in ([], [p for p in b.problems() if p.what == "torn"])
        shutil.copyfile(cut, tmp_path / "again.img")
        with open_board(tmp_path / "again.img") as b:  # and boots again the same
            b._writable = False
            assert {box: contents(b, box) for box in ("a", "b")} == got


def test_nvram_pointer_is_invisible_to_the_format_1_layout() -> None:
    """main's NvramState has no `checkpoint`: it parses past it (and drops it on write)."""
    state = nv.Nvram(profile_toml="x", admin=nv.CredentialRecord(b"s", 1, b"k", b"k"))
    data = nv.encode(state.evolve(checkpoint=4096))
    main_layout = NvramState.__class__(*[s for s in NvramState.subcons if s.name != "checkpoint"])
    assert main_layout.parse(data).seq_floor == 1
    assert nv.decode(nv.encode(state), "x").checkpoint is None
    assert nv.decode(data, "x").checkpoint == 4096


def test_close_writes_one_when_the_store_is_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.store import bulk_image

    image = tmp_path / "big.img"
    bulk_image(image, ck.MIN_MESSAGES, 100, 120)
    with open_board(image) as b:
        assert b._state.checkpoint is None
    with open_board(image) as b:
        assert b._state.checkpoint is not None
        assert len(b.messages("a")) == ck.MIN_MESSAGES // 2
        position = b._state.checkpoint
        from_checkpoint = index_facts(b)
    assert full_walk_facts(image, monkeypatch) == from_checkpoint
    with open_board(image) as b:  # a short tail since: no second checkpoint
        for n in range(5):
            b.deliver("a", f"Subject: {n}\n\n.\n".encode())
    with open_board(image) as b:
        assert b._state.checkpoint == position
        assert len(b.messages("a")) == ck.MIN_MESSAGES // 2 + 5
        for n in range(ck.MIN_TAIL):
            b.deliver("b", f"Subject: {n}\n\n.\n".encode())
    with open_board(image) as b:  # a long one: a new checkpoint
        assert b._state.checkpoint is not None and b._state.checkpoint > position
        assert len(b.messages("b")) == ck.MIN_MESSAGES // 2 + ck.MIN_TAIL
