"""The board against a simple in-memory model: boxes, deliveries, deletions, compaction, reboots."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from firmware.device.boards import create_board, open_board
from firmware.errors import QuotaError, StorageFullError
from firmware.store.wire import encode
from tests.store.helpers import ADMIN, lab_profile

NAMES = ("alice", "Bob", "c.d")
bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b".\n", b"a\rb\r\n.c", b"x" * 40_000, b"Subject: s\n\n.body\n" * 4000]),
)


class BoardMachine(RuleBasedStateMachine):
    uids = Bundle("uids")

    @initialize()
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dpfw-model-"))
        self.path = self.dir / "board.img"
        profile = lab_profile(mailbox__max_boxes="2", mailbox__max_messages="40")
        self.board = create_board(self.path, profile, ADMIN, size=256 << 10)
        self.model: dict[str, dict[str, bytes]] = {}
        self.ever: set[str] = set()

    def teardown(self) -> None:
        if hasattr(self, "board"):
            self.board.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(name=st.sampled_from(NAMES))
    def add_box(self, name: str) -> None:
        if name in self.model:
            return
        if len(self.model) >= 2:
            try:
                self.board.add_box(name, "pw")
            except QuotaError:
                return
            raise AssertionError("max_boxes not enforced")
        self.board.add_box(name, "pw")
        self.model[name] = {}

    @precondition(lambda self: bool(self.model))
    @rule(target=uids, data=st.data(), body=bodies)
    def deliver(self, data: st.DataObject, body: bytes) -> tuple[str, str]:
        box = data.draw(st.sampled_from(sorted(self.model)))
        before = self.board.messages(box)
        try:
            info = self.board.deliver(box, body)
        except (StorageFullError, QuotaError) as exc:
            event(f"deliver refused: {type(exc).__name__}")
            assert self.board.messages(box) == before
            return (box, "")
        wire, enc = encode(body)
        assert info.size == enc.pop3_size
        assert info.uid not in self.ever, "uid reused"
        self.ever.add(info.uid)
        self.model[box][info.uid] = wire
        return (box, info.uid)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def fill_up(self, data: st.DataObject) -> None:
        """Deliver 40 KB messages until the flash (or the box) is full."""
        box = data.draw(st.sampled_from(sorted(self.model)))
        for n in range(12):
            before = self.board.messages(box)
            usage = self.board.usage()
            try:
                info = self.board.deliver(box, b"Subject: fill\n\n" + bytes([65 + n]) * 40_000)
            except (StorageFullError, QuotaError) as exc:
                event(f"fill stopped: {type(exc).__name__}")
                assert self.board.messages(box) == before
                if isinstance(exc, StorageFullError):
                    assert self.board.usage().free == usage.free or usage.reclaimable
                return
            assert info.uid not in self.ever
            self.ever.add(info.uid)
            wire, _ = encode(b"Subject: fill\n\n" + bytes([65 + n]) * 40_000)
            self.model[box][info.uid] = wire

    @rule(picked=st.lists(consumes(uids), max_size=4))
    def delete_batch(self, picked: list[tuple[str, str]]) -> None:
        by_box: dict[str, list[str]] = {}
        for box, uid in picked:
            if uid and uid in self.model.get(box, {}):
                by_box.setdefault(box, []).append(uid)
        for box, batch in by_box.items():
            self.board.delete(box, batch)
            for uid in batch:
                del self.model[box][uid]

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def purge_box(self, data: st.DataObject) -> None:
        box = data.draw(st.sampled_from(sorted(self.model)))
        self.board.delete_box(box, purge=True)
        del self.model[box]

    @rule()
    def compact(self) -> None:
        report = self.board.compact()
        event(f"compaction moved records: {report.records_moved > 0}")
        usage = self.board.usage()
        # complete, or stalled on a live record at the head that does not fit in free space
        assert usage.reclaimable == 0 or usage.free < 50_000

    @rule()
    def reopen(self) -> None:
        self.board.close()
        self.board = open_board(self.path)
        self.check_contents()

    def check_contents(self) -> None:
        for box, msgs in self.model.items():
            for uid, wire in msgs.items():
                assert b"".join(self.board.read_wire(box, uid, 4096)) == wire

    @invariant()
    def agree(self) -> None:
        if not hasattr(self, "board"):
            return
        assert self.board.box_names() == sorted(self.model)
        for box, msgs in self.model.items():
            assert [m.uid for m in self.board.messages(box)] == list(msgs)
        usage = self.board.usage()
        assert usage.used + usage.free == usage.total
        assert 0 <= usage.reclaimable <= usage.used


TestBoardModel = BoardMachine.TestCase
TestBoardModel.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
