"""Log records: the fast header parser agrees with the interpreted construct layout."""

from __future__ import annotations

import zlib
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from firmware.flash.layout import RECORD_HEADER_SIZE, RECORD_VERSION, RecordHeader
from firmware.store.log import (
    KIND_DELETE,
    KIND_MESSAGE,
    Header,
    decode_delete,
    encode_delete,
    encode_delete_interpreted,
    parse_header,
    parse_header_interpreted,
)

headers = st.builds(
    Header,
    position=st.integers(0, 2**40).map(lambda n: n * 16),
    kind=st.sampled_from([KIND_MESSAGE, KIND_DELETE, 0, 3]),
    seq=st.integers(0, 2**64 - 1),
    payload_len=st.integers(0, 2**20),
    payload_crc=st.integers(0, 2**32 - 1),
    box_id=st.integers(0, 2**32 - 1),
    arrived=st.floats(allow_nan=False),
    pop3_size=st.integers(0, 2**63),
    header_len=st.integers(0, 2**20),
)


@given(headers, st.integers(0, 2**22), st.lists(st.integers(0, RECORD_HEADER_SIZE * 8 - 1)))
def test_fast_and_interpreted_parsers_agree(header: Header, room: int, flips: list[int]) -> None:
    raw = bytearray(header.build())
    for bit in flips:
        raw[bit // 8] ^= 1 << (bit % 8)
    for position in (header.position, header.position + 16):
        fast = parse_header(bytes(raw), position, room)
        slow = parse_header_interpreted(bytes(raw), position, room)
        assert fast == slow
        if fast is not None:
            assert (fast == header and not flips) or fast.build() == bytes(raw)


@given(st.binary(min_size=RECORD_HEADER_SIZE, max_size=RECORD_HEADER_SIZE))
def test_random_bytes(raw: bytes) -> None:
    assert parse_header(raw, 0, 1 << 30) == parse_header_interpreted(raw, 0, 1 << 30)


def test_crc_of_a_valid_header_is_checked_by_zlib_too() -> None:
    raw = Header(0, KIND_MESSAGE, 1, 10, 0).build()
    assert zlib.crc32(raw[:-4]) == int.from_bytes(raw[-4:], "big")
    assert parse_header(raw, 0, 1000) is not None
    assert parse_header(raw, 16, 1000) is None  # a record only counts where it was written
    assert parse_header(raw, 0, 10) is None  # longer than the room left


def test_delete_payload_round_trip() -> None:
    assert decode_delete(encode_delete([5, 1, 3])) == [1, 3, 5]


@given(st.lists(st.integers(0, 2**64 - 1), max_size=64))
def test_delete_payload_is_the_layout_build(seqs: list[int]) -> None:
    """`encode_delete` packs with `array` (a QUIT of 10,000); the bytes are the layout's."""
    assert encode_delete(seqs) == encode_delete_interpreted(seqs)
    assert decode_delete(encode_delete(seqs)) == sorted(seqs)


@given(headers, st.integers(0, 2**40).map(lambda n: n * 16))
def test_header_built_at_another_position_is_the_moved_header(header: Header, to: int) -> None:
    """Compaction builds a copy's header without making a new Header (`build_at`)."""
    assert header.build_at(to) == replace(header, position=to).build()


@given(headers)
def test_struct_build_is_the_layout_build(header: Header) -> None:
    """`Header.build` packs with struct (boot and append speed); the bytes are the layout's."""
    layout = RecordHeader.build(
        {
            "head": {
                "value": {
                    "version": RECORD_VERSION,
                    "kind": header.kind,
                    "flags": 0,
                    "position": header.position,
                    "seq": header.seq,
                    "payload_len": header.payload_len,
                    "payload_crc": header.payload_crc,
                    "box_id": header.box_id,
                    "arrived": header.arrived,
                    "pop3_size": header.pop3_size,
                    "header_len": header.header_len,
                }
            }
        }
    )
    assert header.build() == bytes(layout)
