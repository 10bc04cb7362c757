"""Shared values for store tests."""

from __future__ import annotations

from firmware.config.profile import Profile, factory

ADMIN = "admin-pw"


def lab_profile(**values: str) -> Profile:
    """DP-3530 with some keys changed (the dotted key's '.' written as '__')."""
    profile = factory("DP-3530")
    for key, text in values.items():
        profile = profile.with_value(key.replace("__", "."), text)
    return profile
