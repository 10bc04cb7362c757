"""NVRAM contents: encode/decode round trip, and refusing what does not parse.

NVRAM is plain records here: the profile stays its TOML text (tests/config reads it through the
schema) and credentials stay a record of salt and keys (firmware.store maps them).
"""

from __future__ import annotations

import pytest

from firmware.errors import DeviceError, ImageError
from firmware.flash.nvram import BoxRecord, CredentialRecord, Nvram, decode, encode

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
