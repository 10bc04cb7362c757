"""NVRAM contents: encode/decode round trip, and refusing what does not parse.

NVRAM is plain records here: the profile stays its TOML text (tests/config reads it through the
schema) and credentials stay a record of salt and keys (firmware.store maps them).
"""

from __future__ import annotations

import pytest

from firmware.errors import DeviceError, ImageError
from firmware.flash.nvram import (
    BoxRecord,
    CredentialRecord,
    Nvram,
    decode,
    encode,
    encode_reference,
)

PROFILE = '[identity]\nmodel = "DP-4520"\n'


def record(n: int, legacy: str | None = None) -> CredentialRecord:
    return CredentialRecord(bytes([n]) * 16, 4096, bytes([n + 1]) * 32, bytes([n + 2]) * 32, legacy)


def test_round_trip() -> None:
    state = Nvram(
        profile_toml=PROFILE,
        admin=record(1),
        log_head=1 << 33,
        seq_floor=77,
        next_box_id=9,
        boxes={"alice": BoxRecord(3, record(5, legacy="a")), "Bob!": BoxRecord(8, record(9))},
        settings={"tls.key": "-----BEGIN PRIVATE KEY-----\n...", "empty": ""},
    )
    again = decode(encode(state), "test")
    assert again == state
    assert encode(again) == encode(state)


def test_garbage_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="NVRAM"):
        decode(b"\x00\x00\x00\x05abc", "slot")


def test_the_profile_text_is_kept_as_stored() -> None:
    """Whether it fits a schema is firmware.config's question (tests/config/test_stored.py)."""
    text = "not [valid toml\n\u00e9"
    assert decode(encode(Nvram(profile_toml=text, admin=record(1))), "slot").profile_toml == text


def test_unstorable_value_is_a_device_error() -> None:
    state = Nvram(profile_toml=PROFILE, admin=record(1, legacy="x" * 70_000))
    with pytest.raises(DeviceError, match="NVRAM cannot hold"):
        encode(state)


def _states() -> list[Nvram]:
    """NVRAM generations covering every optional and variable-length part of the layout."""
    many = {
        f"box{i}": BoxRecord(i, record(i % 200, legacy="s" * i if i % 2 else None))
        for i in range(40)
    }
    return [
        Nvram(profile_toml="", admin=record(0)),
        Nvram(profile_toml=PROFILE, admin=record(1, legacy=""), checkpoint=0),
        Nvram(
            profile_toml="\u00e9t\u00e9 = 1\n" * 300,
            admin=CredentialRecord(b"", 0, b"", b"", "\u2603" * 10),
            log_head=(1 << 64) - 1,
            seq_floor=(1 << 63) + 5,
            next_box_id=(1 << 32) - 1,
            boxes=many,
            settings={"": "", "tls.cert": "x" * 70_000, "\u00fcber": "\u00e9"},
            checkpoint=(1 << 40) + 16,
        ),
        Nvram(
            profile_toml=PROFILE,
            admin=CredentialRecord(b"s" * 255, 1, b"k" * 255, b"v" * 255, "p" * 65_535),
            boxes={"n" * 255: BoxRecord(1, record(3))},
        ),
    ]


@pytest.mark.parametrize("state", _states(), ids=["empty", "checkpoint-0", "big", "limits"])
def test_struct_encode_matches_the_construct_layout_byte_for_byte(state: Nvram) -> None:
    """`encode` packs with struct; `NvramState` (construct) stays the layout's reference."""
    assert encode(state) == encode_reference(state)
    assert decode(encode(state), "test") == state


@pytest.mark.parametrize(
    ("state", "field"),
    [
        (Nvram(profile_toml=PROFILE, admin=record(1, legacy="x" * 65_536)), "admin legacy secret"),
        (Nvram(profile_toml=PROFILE, admin=CredentialRecord(b"s" * 256, 1, b"", b"")), "salt"),
        (
            Nvram(profile_toml=PROFILE, admin=record(1), boxes={"\u00e9": BoxRecord(1, record(2))}),
            "box name",
        ),
        (
            Nvram(
                profile_toml=PROFILE, admin=record(1), boxes={"n" * 256: BoxRecord(1, record(2))}
            ),
            "box name",
        ),
        (
            Nvram(
                profile_toml=PROFILE, admin=record(1), boxes={"a": BoxRecord(1 << 32, record(2))}
            ),
            "box 'a' id",
        ),
        (Nvram(profile_toml=PROFILE, admin=record(1), log_head=-1), "log head"),
        (Nvram(profile_toml=PROFILE, admin=record(1), settings={"k" * 65_536: ""}), "setting name"),
        (Nvram(profile_toml=PROFILE, admin=record(1), checkpoint=1 << 64), "checkpoint"),
    ],
)
def test_what_does_not_fit_is_refused_by_both_naming_the_field(state: Nvram, field: str) -> None:
    with pytest.raises(DeviceError, match="NVRAM cannot hold this") as err:
        encode(state)
    assert field in str(err.value)
    assert "\n" not in str(err.value)
    if field == "checkpoint":
        # construct's Optional builds nothing for a value its Int64ub refuses: the reference
        # would drop the checkpoint pointer silently; the struct encoder refuses instead.
        assert decode(encode_reference(state), "test").checkpoint is None
        return
    with pytest.raises(DeviceError, match="NVRAM cannot hold this"):
        encode_reference(state)
