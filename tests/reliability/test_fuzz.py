"""Property-based fuzzing of the POP3 core, the console shell, the profile loader and the
record parsers (targets in fuzz_targets.py), and the replay of every input that ever failed.

Inputs are drawn from a grammar of the real commands and layouts, then damaged (random
arguments, bit flips, truncation, control bytes), mixed with plain random bytes. Scale a run
with DPFW_FUZZ_SCALE (e.g. 20 for a long local run); a failing input is written to
tests/reliability/corpus/<target>/ before the test fails, and stays there as a regression test.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.config.profile import SCHEMA, factory_text
from firmware.console.shell import HELP
from firmware.flash.image import Image
from firmware.flash.layout import KIND_DELETE, KIND_MESSAGE
from firmware.store.log import Header, encode_delete
from tests.reliability import fuzz_targets
from tests.reliability.fuzz_targets import CORPUS, TARGETS, save

SCALE = float(os.environ.get("DPFW_FUZZ_SCALE", "1"))


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=max(10, int(examples * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


numbers = st.one_of(
    st.integers(-3, 12).map(str),
    st.sampled_from(["0", "-1", "99999999999999999999", "1e3", "0x1", " 1", "1 2", "", "+1"]),
)
words = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
noise = st.binary(max_size=300)
line_ends = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n", b""])


@st.composite
def pop3_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(noise)
    b64 = st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode())
    command: str = draw(
        st.one_of(
            st.sampled_from(["USER alice", "PASS alice-pw", "USER bob", "PASS bob-pw", "CAPA"]),
            st.sampled_from(["STAT", "NOOP", "RSET", "QUIT", "STLS", "LIST", "UIDL", "AUTH"]),
            st.tuples(st.sampled_from(["LIST", "RETR", "DELE", "UIDL", "TOP"]), numbers).map(
                " ".join
            ),
            st.tuples(st.just("TOP"), numbers, numbers).map(" ".join),
            st.tuples(st.just("APOP alice"), words).map(" ".join),
            st.tuples(
                st.just("AUTH"), st.sampled_from(["PLAIN", "SCRAM-SHA-256", "CRAM-MD5", "X"]), b64
            ).map(" ".join),
            b64,
            st.just("*"),
            st.tuples(words, words).map(" ".join),
        )
    )
    if draw(st.booleans()):
        command = command.lower() if draw(st.booleans()) else command.swapcase()
    return command.encode()


@st.composite
def pop3_stream(draw: st.DrawFn) -> bytes:
    lines = []
    if draw(st.integers(0, 3)):
        lines += [b"USER alice", b"PASS alice-pw"]
    lines += draw(st.lists(pop3_line(), max_size=25))
    return b"".join(line + draw(line_ends) for line in lines)


@st.composite
def console_stream(draw: st.DrawFn) -> bytes:
    names = sorted(HELP)
    parts = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 6))
        if kind == 0:
            parts.append(draw(st.binary(max_size=80)))
            continue
        name = draw(st.sampled_from([n for n in names if n not in ("reboot", "shutdown")]))
        args = draw(st.lists(st.one_of(words, numbers, st.sampled_from(list(SCHEMA))), max_size=4))
        line = " ".join([name, *args]).encode()
        if kind == 1:
            line += draw(st.sampled_from([b"\x03", b"\x15", b"\x7f", b"\x1b[A", b"\x04"]))
        parts.append(line + draw(st.sampled_from([b"\r", b"\n", b"\r\n"])))
    return b"".join(parts)


@st.composite
def profile_toml(draw: st.DrawFn) -> bytes:
    text = factory_text(draw(st.sampled_from(["DP-3510", "DP-3530", "DP-6030"])))
    lines = text.splitlines()
    for _ in range(draw(st.integers(0, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.integers(0, 3))
        if action == 0:
            del lines[i]
        elif action == 1 and "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            value = draw(
                st.one_of(
                    numbers,
                    words.map(repr),
                    st.sampled_from(
                        [
                            "true",
                            "[]",
                            "[1, 2]",
                            '"a"',
                            "1.5",
                            "-0",
                            "inf",
                            "nan",
                            "{}",
                            "1979-05-27",
                        ]
                    ),
                )
            )
            lines[i] = f"{key}= {value}"
        elif action == 2:
            lines.insert(i, draw(st.text(max_size=40)))
        else:
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    raw = bytearray(data)
    for at, bit in flips:
        if raw:
            raw[at % len(raw)] ^= 1 << bit
    return bytes(raw)


flips = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 7)), max_size=3)


@st.composite
def record_header(draw: st.DrawFn) -> bytes:
    position = draw(st.integers(0, 1 << 40)) // 16 * 16
    header = Header(
        position,
        draw(st.sampled_from([KIND_MESSAGE, KIND_DELETE, 0, 3, 255])),
        draw(st.integers(0, 1 << 40)),
        draw(st.integers(0, 1 << 31)),
        draw(st.integers(0, (1 << 32) - 1)),
        box_id=draw(st.integers(0, 1 << 31)),
        arrived=draw(st.floats(0, 4e9)),
        pop3_size=draw(st.integers(0, 1 << 31)),
        header_len=draw(st.integers(0, 1 << 31)),
    ).build()
    raw = flip(header, draw(flips))
    raw = raw[: draw(st.integers(0, len(raw)))] if draw(st.integers(0, 5)) == 0 else raw
    return raw + position.to_bytes(8, "big")


@st.composite
def delete_payload(draw: st.DrawFn) -> bytes:
    raw = encode_delete(draw(st.lists(st.integers(0, (1 << 63) - 1), max_size=20)))
    raw = flip(raw, draw(flips))
    return raw[: draw(st.integers(0, len(raw)))] if draw(st.booleans()) else raw


def valid_nvram() -> bytes:
    fuzz_targets._board().close()
    assert fuzz_targets._template is not None
    image, data = Image.open(fuzz_targets._template.path)
    image.close()
    return data


@st.composite
def nvram_bytes(draw: st.DrawFn) -> bytes:
    raw = flip(draw(st.just(valid_nvram())), draw(flips))
    return raw[: draw(st.integers(0, len(raw)))] if draw(st.booleans()) else raw


def template_geometry() -> tuple[int, int, int, int]:
    """(NVRAM offset, slot size, data offset, image size) of the fuzz template image."""
    board = fuzz_targets._board()
    g = board.geometry
    board.close()
    return g.nvram_offset, g.nvram_slot_size, g.data_offset, g.image_size


@st.composite
def image_patch(draw: st.DrawFn) -> bytes:
    nvram_offset, slot, data_offset, _size = template_geometry()
    start, length = draw(
        st.sampled_from(
            [
                (0, 128),  # the superblock
                (nvram_offset, 256),  # NVRAM slot 0 (the active one may be either)
                (nvram_offset + slot, 256),  # NVRAM slot 1
                (data_offset, 8192),  # the first records of the log
            ]
        )
    )
    offset = start + draw(st.integers(0, length - 1))
    if draw(st.booleans()):
        patch = draw(st.binary(min_size=1, max_size=16))
    else:  # a single bit flip of what is there
        template = fuzz_targets._template
        assert template is not None
        with open(template.path, "rb") as f:
            f.seek(offset)
            byte = f.read(1)[0]
        patch = bytes([byte ^ (1 << draw(st.integers(0, 7)))])
    return offset.to_bytes(4, "big") + patch


STRATEGIES = {
    "pop3": (pop3_stream(), 300),
    "console": (console_stream(), 150),
    "profile": (st.one_of(profile_toml(), st.binary(max_size=400)), 300),
    "record-header": (st.one_of(record_header(), st.binary(max_size=80)), 1500),
    "delete-payload": (st.one_of(delete_payload(), st.binary(max_size=80)), 500),
    "nvram": (st.one_of(nvram_bytes(), st.binary(max_size=200)), 300),
    "image": (image_patch(), 200),
}


@pytest.mark.parametrize("target", list(STRATEGIES))
def test_fuzz(target: str) -> None:
    strategy, examples = STRATEGIES[target]
    failed: list[bytes] = []

    @fuzz_settings(examples)
    @given(data=strategy)
    def run(data: bytes) -> None:
        try:
            TARGETS[target](data)
        except BaseException:
            failed.append(data)
            raise

    try:
        run()
    except BaseException:
        # Hypothesis replays the shrunk example last: that one joins the corpus.
        if failed:
            print(f"failing input kept as {save(target, failed[-1])}")
        raise


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*/*") if p.is_file())


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_replay(path: Path) -> None:
    """Every input that ever failed (or was kept as an interesting seed) still passes."""
    TARGETS[path.parent.name](path.read_bytes())


def test_every_target_has_a_strategy_and_a_corpus() -> None:
    assert set(STRATEGIES) == set(TARGETS)
    assert {p.parent.name for p in corpus_files()} == set(TARGETS)
