"""A profile as a board image stores it (TOML text in NVRAM), read back through the schema."""

from __future__ import annotations

import pytest

from firmware.config.profile import factory, from_stored
from firmware.errors import ImageError


def test_round_trip_of_every_factory_profile() -> None:
    for model in ("DP-3510", "DP-4520", "DP-6030"):
        assert from_stored(factory(model).to_toml(), "slot") == factory(model)


def test_profile_from_another_firmware_version_still_boots(
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = factory("DP-3530")
    text = base.with_value("pop3.max_sessions", "5").to_toml()
    text = text.replace(f"apop = {str(base.bool('pop3.apop')).lower()}\n", "")  # unknown then
    text += "\n[future]\nfeature = 1\n"  # a key this firmware does not know
    text = text.replace("baud = 115200", "baud = 1234")  # no longer allowed
    profile = from_stored(text, "slot")
    assert profile.int("pop3.max_sessions") == 5
    assert profile.bool("pop3.apop") == base.bool("pop3.apop")
    assert profile.int("console.baud") == base.int("console.baud")
    assert "pop3.apop missing" in caplog.text
    assert "future.feature" in caplog.text and "console.baud" in caplog.text


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (factory("DP-3530").to_toml().replace("DP-3530", "XY-1"), "slot: unknown model 'XY-1'"),
        ("not [toml", "slot: not valid TOML"),
        ("identity = 3\n", "slot: identity must be a \\[section\\] table"),
    ],
)
def test_what_cannot_be_fitted_is_an_image_error(text: str, error: str) -> None:
    with pytest.raises(ImageError, match=error):
        from_stored(text, "slot")
