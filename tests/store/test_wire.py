"""Wire form: CRLF normalisation, dot-stuffing, sizes and the header boundary, any chunking."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from firmware.store.wire import WireEncoder, encode, take_lines, unstuff


def reference(message: bytes) -> tuple[bytes, bytes]:
    """(normalised, wire) computed the obvious, whole-message way."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    lines = text[:-2].split(b"\r\n")
    wire = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return text, wire


def test_examples() -> None:
    cases = {
        b"a\nb": b"a\r\nb\r\n",
        b"a\r\nb\r\n": b"a\r\nb\r\n",
        b"a\rb\r": b"a\r\nb\r\n",
        b"a\r\r\nb": b"a\r\n\r\nb\r\n",
        b".start\n..two\nmid.dle\n.": b"..start\r\n...two\r\nmid.dle\r\n..\r\n",
        b"": b"\r\n",
    }
    for raw, wire in cases.items():
        assert encode(raw)[0] == wire, raw


def test_sizes_count_crlf_but_not_stuffing() -> None:
    wire, enc = encode(b"Subject: x\n\n.dot\n")
    assert wire == b"Subject: x\r\n\r\n..dot\r\n"
    assert enc.pop3_size == len(b"Subject: x\r\n\r\n.dot\r\n")
    assert enc.wire_size == len(wire)
    assert enc.header_len == len(b"Subject: x\r\n\r\n")


def test_header_boundary_variants() -> None:
    assert encode(b"\nbody\n")[1].header_len == 2  # empty header section
    assert encode(b"A: b\nC: d\n")[1].header_len == len(b"A: b\r\nC: d\r\n")  # no body
    assert encode(b"A: b\r\rbody")[1].header_len == len(b"A: b\r\n\r\n")


messages = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b"Subject: x", b"\x00", b" "]),
    max_size=40,
).map(b"".join)


@given(messages, st.lists(st.integers(min_value=0, max_value=50), max_size=8))
def test_any_chunking_matches_reference(message: bytes, cuts: list[int]) -> None:
    normalised, wire = reference(message)
    points = sorted({min(c, len(message)) for c in cuts})
    pieces = [message[a:b] for a, b in zip([0, *points], [*points, len(message)], strict=True)]
    enc = WireEncoder()
    out = b"".join(enc.feed(p) for p in pieces) + enc.finish()
    assert out == wire
    assert enc.pop3_size == len(normalised)
    assert enc.wire_size == len(wire)
    assert unstuff(out) == normalised
    blank = normalised.find(b"\r\n\r\n")
    if normalised.startswith(b"\r\n"):
        expected_body = normalised[2:]
    elif blank >= 0:
        expected_body = normalised[blank + 4 :]
    else:
        expected_body = b""
    assert enc.header_len is not None
    assert unstuff(out[enc.header_len :]) == expected_body


@given(
    st.lists(st.sampled_from([b"a\r\n", b"..\r\n", b"\r\n", b"xyz\r\n"]), max_size=20),
    st.integers(min_value=0, max_value=25),
    st.integers(min_value=1, max_value=7),
)
def test_take_lines(lines: list[bytes], n: int, size: int) -> None:
    data = b"".join(lines)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    assert b"".join(take_lines(iter(chunks), n)) == b"".join(lines[:n])
