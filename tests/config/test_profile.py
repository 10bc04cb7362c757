"""The profile schema: the nine factory files, and clear errors for everything else."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.config.profile import (
    MODELS,
    SCHEMA,
    factory,
    factory_text,
    flatten,
    parse_toml,
    validate,
)
from firmware.errors import ProfileError


@pytest.mark.parametrize("model", MODELS)
def test_every_factory_profile_validates_and_names_its_model(model: str) -> None:
    profile = factory(model)
    assert profile.model == model
    assert profile.int("pop3.idle_timeout_s") >= 600
    assert profile.int("pop3.port") == 110
    assert profile.str("pop3.plaintext_auth") == "tls_only"


@pytest.mark.parametrize("model", MODELS)
def test_every_factory_profile_says_its_values_are_modelled(model: str) -> None:
    header = factory_text(model).split("[identity]")[0]
    assert "MODELLED, NOT SOURCED" in header
    assert "invented" in header


@pytest.mark.parametrize("series", ["35", "45", "60"])
@pytest.mark.parametrize(
    "key", ["memory.image_ram_mib", "storage.flash_mib", "pop3.max_sessions", "mailbox.max_boxes"]
)
def test_tiers_grow_x10_x20_x30(series: str, key: str) -> None:
    values = [factory(f"DP-{series}{tier}").int(key) for tier in ("10", "20", "30")]
    assert values[0] < values[1] < values[2]


@pytest.mark.parametrize("series, ppm", [("35", 35), ("45", 45), ("60", 60)])
def test_engine_speed_follows_the_model_number(series: str, ppm: int) -> None:
    for tier in ("10", "20", "30"):
        assert factory(f"DP-{series}{tier}").int("engine.ppm") == ppm


def _with(model: str, section: str, line: str) -> str:
    text = factory_text(model)
    return text.replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)


def test_unknown_key_is_named() -> None:
    text = _with("DP-3530", "pop3", "max_sesions = 3")
    with pytest.raises(ProfileError, match=r"lab\.toml: unknown key 'pop3\.max_sesions'"):
        parse_toml(text, "lab.toml")


def test_wrong_type_names_key_value_and_what_is_allowed() -> None:
    text = factory_text("DP-3530").replace("max_sessions = 16", 'max_sessions = "16"')
    with pytest.raises(ProfileError) as err:
        parse_toml(text, "lab.toml")
    message = str(err.value)
    assert "lab.toml" in message and "pop3.max_sessions" in message and "'16'" in message
    assert "an integer from 1 to 4096" in message


def test_out_of_range_value_is_refused() -> None:
    text = factory_text("DP-3530").replace("ppm = 35", "ppm = 0")
    with pytest.raises(ProfileError, match=r"engine\.ppm = 0 is not allowed; expected an integer"):
        parse_toml(text, "x.toml")


def test_bad_list_member_is_refused() -> None:
    text = factory_text("DP-3530").replace('formats = ["tiff", "pdf", "jpeg"]', 'formats = ["gif"]')
    with pytest.raises(ProfileError, match=r"scan\.formats.*a list drawn from tiff, pdf, jpeg"):
        parse_toml(text, "x.toml")


def test_missing_key_is_named() -> None:
    text = factory_text("DP-3530").replace("max_boxes = 100\n", "")
    with pytest.raises(ProfileError, match=r"missing key 'mailbox\.max_boxes'"):
        parse_toml(text, "x.toml")


def test_not_toml_is_a_profile_error() -> None:
    with pytest.raises(ProfileError, match="not valid TOML"):
        parse_toml("[pop3\nport = ", "x.toml")


def test_with_value_parses_text_like_a_person_types_it() -> None:
    profile = factory("DP-3530")
    assert profile.with_value("pop3.apop", "off").bool("pop3.apop") is False
    assert (
        profile.with_value("pop3.auth_failure_delay_s", "0.5").float("pop3.auth_failure_delay_s")
        == 0.5
    )
    assert profile.with_value("scan.formats", "pdf, tiff").list("scan.formats") == ("pdf", "tiff")
    with pytest.raises(ProfileError, match=r"pop3\.max_sessions = 'many'"):
        profile.with_value("pop3.max_sessions", "many")
    with pytest.raises(ProfileError, match=r"unknown key 'pop3\.nope'"):
        profile.with_value("pop3.nope", "1")


@pytest.mark.parametrize("model", MODELS)
def test_to_toml_round_trips(model: str) -> None:
    profile = factory(model)
    again = parse_toml(profile.to_toml(), "export")
    assert again == profile
    assert not profile.diff(again)


def test_diff_lists_changed_keys() -> None:
    a = factory("DP-3530")
    b = a.with_value("pop3.max_sessions", "3")
    assert a.diff(b) == [("pop3.max_sessions", 16, 3)]


_ANY_VALUE = st.none() | st.integers() | st.text(max_size=5) | st.booleans() | st.floats()


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(SCHEMA)), _ANY_VALUE | st.lists(_ANY_VALUE)))
def test_any_value_gives_a_profile_or_a_profile_error(changes: dict[str, object]) -> None:
    values: dict[str, object] = dict(factory("DP-3530"))
    values.update(changes)
    try:
        validate(values, "fuzz")
    except ProfileError as exc:
        assert str(exc).startswith("fuzz: ")


def test_sections_must_be_tables() -> None:
    with pytest.raises(ProfileError, match="must be a \\[section\\] table"):
        flatten(tomllib.loads("pop3 = 3"), "x.toml")
