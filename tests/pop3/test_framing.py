"""The bounded line reader and the multi-line terminator, with plain bytes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.pop3.framing import (
    LINE_NEVER_ENDS,
    LINE_TOO_LONG,
    MAX_COMMAND_LINE,
    MAX_DISCARD,
    LineReader,
    LineTooLong,
    MultilineBody,
    fixed_body,
)


def drain(reader: LineReader) -> list[bytes | LineTooLong]:
    out: list[bytes | LineTooLong] = []
    while (item := reader.next_line()) is not None:
        out.append(item)
    return out


def feed_in_pieces(data: bytes, cuts: list[int], limit: int = MAX_COMMAND_LINE) -> list[object]:
    reader = LineReader(limit)
    out: list[object] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        reader.feed(data[start:cut])
        out += drain(reader)
        start = cut
        assert reader.buffered <= limit + len(data)
    return out


def test_lines_split_on_crlf_and_bare_lf() -> None:
    reader = LineReader()
    reader.feed(b"USER a\r\nPASS b c\nNOOP")
    assert drain(reader) == [b"USER a", b"PASS b c"]
    reader.feed(b"\r\n")
    assert drain(reader) == [b"NOOP"]
    assert reader.buffered == 0


def test_a_line_of_exactly_255_octets_is_accepted() -> None:
    reader = LineReader()
    line = b"PASS " + b"x" * (MAX_COMMAND_LINE - 7)
    reader.feed(line + b"\r\n")
    assert drain(reader) == [line]


def test_a_line_of_256_octets_is_too_long_once_and_the_next_line_survives() -> None:
    reader = LineReader()
    reader.feed(b"PASS " + b"x" * (MAX_COMMAND_LINE - 6) + b"\r\nNOOP\r\n")
    assert drain(reader) == [LINE_TOO_LONG, b"NOOP"]


def test_a_long_line_is_reported_once_and_never_buffered() -> None:
    reader = LineReader()
    reports = []
    for _ in range(MAX_DISCARD // 4096):
        reader.feed(b"y" * 4096)
        reports += drain(reader)
        assert reader.buffered < 2 * MAX_COMMAND_LINE
    assert reports == [LINE_TOO_LONG]
    reader.feed(b"\r\nSTAT\r\n")  # with its CR, one octet more than MAX_DISCARD before LF
    assert drain(reader) == [LINE_NEVER_ENDS]


def test_a_line_of_max_discard_octets_before_its_lf_is_only_too_long() -> None:
    reader = LineReader()
    reader.feed(b"y" * (MAX_DISCARD - 1))
    assert drain(reader) == [LINE_TOO_LONG]
    reader.feed(b"\r\nSTAT\r\n")
    assert drain(reader) == [b"STAT"]


def test_an_endless_line_is_given_up_after_max_discard() -> None:
    # Public bug report: a peer streaming a line that never ends stayed connected after 4 MiB.
    reader = LineReader()
    reports = []
    sent = 0
    while LINE_NEVER_ENDS not in reports:
        reader.feed(b"y" * 4096)
        sent += 4096
        reports += drain(reader)
        assert reader.buffered < 2 * MAX_COMMAND_LINE
        assert sent <= MAX_DISCARD + 4096
    assert reports == [LINE_TOO_LONG, LINE_NEVER_ENDS]
    reader.feed(b"\r\nSTAT\r\n")  # too late: nothing more is read from this peer
    assert drain(reader) == []
    assert reader.buffered == 0


@given(
    length=st.integers(min_value=250, max_value=1200),
    cuts=st.lists(st.integers(min_value=0, max_value=1300), max_size=12),
)
def test_giving_up_on_a_line_depends_on_its_length_not_its_chunks(
    length: int, cuts: list[int]
) -> None:
    reader = LineReader(64, max_discard=600)
    data = b"x" * length + b"\r\nNOOP\r\n"
    out: list[object] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        reader.feed(data[start:cut])
        out += drain(reader)
        start = cut
    if length + 1 > 600:  # the CR counts: it is not a line end by itself
        assert out == [LINE_TOO_LONG, LINE_NEVER_ENDS]
    else:
        assert out == [LINE_TOO_LONG, b"NOOP"]


@given(
    lines=st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=8000), max_size=30),
)
def test_any_chunking_gives_the_same_lines(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    expected = [line if len(line) + 2 <= MAX_COMMAND_LINE else LINE_TOO_LONG for line in lines]
    assert feed_in_pieces(data, [c % (len(data) + 1) for c in cuts]) == expected


def chunks_of(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in [*sorted(set(c % (len(data) + 1) for c in cuts)), len(data)]:
        yield data[start:cut]
        start = cut


@given(body=st.binary(max_size=200), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_body_ends_in_exactly_one_crlf_dot_crlf(body: bytes, cuts: list[int]) -> None:
    sent = b"".join(MultilineBody(chunks_of(body, cuts)))
    assert sent.startswith(body)
    assert sent.endswith(b"\r\n.\r\n") or (body == b"" and sent == b".\r\n")
    assert len(sent) - len(body) == (3 if body == b"" or body.endswith(b"\r\n") else 5)


def test_crlf_split_across_chunks_is_seen() -> None:
    assert b"".join(MultilineBody(iter([b"a\r", b"\n"]))) == b"a\r\n.\r\n"
    assert b"".join(MultilineBody(iter([b"a\r\n", b"", b""]))) == b"a\r\n.\r\n"
    assert b"".join(MultilineBody(iter([b"a"]), first=b"x\r\n")) == b"x\r\na\r\n.\r\n"
    taken = MultilineBody(iter([b"b"]), first=b"x\r\na")
    assert taken.take_first() == b"x\r\na" and taken.take_first() == b""
    assert b"".join(taken) == b"b\r\n.\r\n"  # iteration goes on after the taken chunk
    ends_open = MultilineBody(iter([]), first=b"x")
    assert ends_open.take_first() == b"x" and b"".join(ends_open) == b"\r\n.\r\n"


def test_close_releases_once_and_closes_the_source() -> None:
    released: list[int] = []
    closed: list[int] = []

    def source() -> Iterator[bytes]:
        try:
            yield b"x\r\n"
            yield b"y\r\n"
        finally:
            closed.append(1)

    body = MultilineBody(source(), on_close=lambda: released.append(1))
    assert next(body) == b"x\r\n"
    body.close()
    body.close()
    assert released == [1]
    assert closed == [1]
    assert list(body) == []


def test_fixed_body() -> None:
    assert b"".join(fixed_body([b"TOP\r\n", b"UIDL\r\n"])) == b"TOP\r\nUIDL\r\n.\r\n"
    assert b"".join(fixed_body([])) == b".\r\n"


def test_the_limit_can_be_raised_and_lowered_between_lines() -> None:
    reader = LineReader()
    long_line = b"A" * 1000
    reader.feed(b"AUTH PLAIN\r\n" + long_line + b"\r\n" + long_line + b"\r\n")
    assert reader.next_line() == b"AUTH PLAIN"
    reader.limit = 2000  # a SASL exchange waits for its response
    assert reader.next_line() == long_line
    reader.limit = 255
    assert reader.next_line() is LINE_TOO_LONG
    assert reader.next_line() is None and reader.buffered == 0
    with pytest.raises(ValueError):
        reader.limit = 2
