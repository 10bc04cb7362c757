"""NVRAM contents: encode/decode round trip, and refusing what does not parse."""

from __future__ import annotations

import pytest

from firmware.config.profile import factory
from firmware.errors import DeviceError, ImageError
from firmware.flash.nvram import BoxRecord, Nvram, decode, encode, profile_from_nvram
from firmware.security.credentials import make_credentials


def test_round_trip() -> None:
    state = Nvram(
        profile=factory("DP-4520"),
        admin=make_credentials("admin"),
        log_head=1 << 33,
        seq_floor=77,
        next_box_id=9,
        boxes={
            "alice": BoxRecord(3, make_credentials("a", legacy=True)),
            "Bob!": BoxRecord(8, make_credentials("b")),
        },
        settings={"tls.key": "-----BEGIN PRIVATE KEY-----\n...", "empty": ""},
    )
    again = decode(encode(state), "test")
    assert again == state
    assert encode(again) == encode(state)


def test_garbage_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="NVRAM"):
        decode(b"\x00\x00\x00\x05abc", "slot")


def test_bad_profile_is_an_image_error() -> None:
    state = Nvram(profile=factory("DP-3510"), admin=make_credentials("x"))
    data = encode(state).replace(b"DP-3510", b"DP-9999")
    with pytest.raises(ImageError, match="unknown model 'DP-9999'"):
        decode(data, "slot")


def test_profile_from_another_firmware_version_still_boots(
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = factory("DP-3530")
    text = base.with_value("pop3.max_sessions", "5").to_toml()
    text = text.replace(f"apop = {str(base.bool('pop3.apop')).lower()}\n", "")  # unknown then
    text += "\n[future]\nfeature = 1\n"  # a key this firmware does not know
    text = text.replace("baud = 115200", "baud = 1234")  # no longer allowed
    profile = profile_from_nvram(text, "slot")
    assert profile.int("pop3.max_sessions") == 5
    assert profile.bool("pop3.apop") == base.bool("pop3.apop")
    assert profile.int("console.baud") == base.int("console.baud")
    assert "pop3.apop missing" in caplog.text
    assert "future.feature" in caplog.text and "console.baud" in caplog.text


def test_unknown_model_in_nvram_is_refused() -> None:
    text = factory("DP-3530").to_toml().replace("DP-3530", "XY-1")
    with pytest.raises(ImageError, match="unknown model"):
        profile_from_nvram(text, "slot")


def test_unstorable_value_is_a_device_error() -> None:
    state = Nvram(profile=factory("DP-3510"), admin=make_credentials("x" * 70_000, legacy=True))
    with pytest.raises(DeviceError, match="NVRAM cannot hold"):
        encode(state)
