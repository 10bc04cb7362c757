"""Record headers are packed without construct (compaction builds one per moved record)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given

from firmware.device.boards import open_board
from firmware.store import log as log_module
from firmware.store.board import Board
from firmware.store.log import Header, parse_header
from tests.store.test_log import headers


@given(headers)
def test_packed_header_is_the_layouts_bytes(header: Header) -> None:
    raw = header.build()
    assert raw == header.build_interpreted()
    assert parse_header(raw, header.position, 1 << 62) in (header, None)


class _NoConstruct:
    def build(self, *args: object, **kwargs: object) -> bytes:
        raise AssertionError("a record header was built by construct")


def test_compaction_and_delivery_build_headers_without_construct(
    board: Board, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """construct's build costs ~20-50 us of Python per header, held against the event loop
    while the store worker compacts thousands of small records (NOOPs waited 30-50 ms)."""
    monkeypatch.setattr(log_module, "RecordHeader", _NoConstruct())
    uids = [board.deliver("alice", b"Subject: %d\r\n\r\nbody\r\n" % i).uid for i in range(40)]
    board.delete("alice", uids[:20])
    report = board.compact()
    assert report.records_moved >= 20
    kept = [m.uid for m in board.messages("alice")]
    board.close()
    reopened = open_board(image)
    try:
        assert [m.uid for m in reopened.messages("alice")] == kept == uids[20:]
    finally:
        reopened.close()
