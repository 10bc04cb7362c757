"""The profile schema: the nine factory files, and clear errors for everything else."""

from __future__ import annotations

import json
import math
import re
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.config.profile import (
    MODELS,
    SCHEMA,
    SITE_KEYS,
    canonical_model,
    factory,
    factory_text,
    flatten,
    for_model,
    is_hostname,
    parse_toml,
    render,
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
    with pytest.raises(ProfileError, match=r'lab\.toml: unknown key "pop3\.max_sesions"'):
        parse_toml(text, "lab.toml")


def test_wrong_type_names_key_value_and_what_is_allowed() -> None:
    text = factory_text("DP-3530").replace("max_sessions = 16", 'max_sessions = "16"')
    with pytest.raises(ProfileError) as err:
        parse_toml(text, "lab.toml")
    message = str(err.value)
    assert "lab.toml" in message and "pop3.max_sessions" in message and '"16"' in message
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
    with pytest.raises(ProfileError, match=r'missing key "mailbox\.max_boxes"'):
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
    with pytest.raises(ProfileError, match=r'pop3\.max_sessions = "many"'):
        profile.with_value("pop3.max_sessions", "many")
    with pytest.raises(ProfileError, match=r'unknown key "pop3\.nope"'):
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


@pytest.mark.parametrize("name", ["", "my host", "-dp.local", "dp-.local", "dp..local", "dp_1.lan"])
def test_a_bad_host_name_is_refused_on_every_path(name: str) -> None:
    """RFC 1123 labels; once an empty name gave scans `From: <scanner>`, `Message-ID: <..@>`."""
    profile = factory("DP-3530")
    expected = f"identity.hostname = {json.dumps(name)} is not allowed; expected a host name"
    with pytest.raises(ProfileError, match=re.escape(expected)):
        profile.with_value("identity.hostname", name)  # console, `dpfw profile set`, --set
    text = factory_text("DP-3530").replace('"dp3530.local"', json.dumps(name))
    with pytest.raises(ProfileError, match=re.escape(expected)):
        parse_toml(text, "import.toml")  # TOML files and `profile import`


@pytest.mark.parametrize("name", ["dp3530.local", "a", "3com.example", "x" * 63 + ".lan"])
def test_good_host_names_pass(name: str) -> None:
    assert factory("DP-3530").with_value("identity.hostname", name).str("identity.hostname") == name


def test_host_name_length_limits() -> None:
    assert is_hostname(".".join(["a" * 63] * 3) + "." + "b" * 61)  # 253
    assert not is_hostname(".".join(["a" * 63] * 3) + "." + "b" * 62)  # 254
    assert not is_hostname("a" * 64 + ".lan")


def test_listen_address_takes_ip_literals_and_host_names() -> None:
    profile = factory("DP-3530")
    for good in ("0.0.0.0", "::", "127.0.0.1", "dp.lan"):
        assert profile.with_value("pop3.address", good).str("pop3.address") == good
    with pytest.raises(ProfileError, match=r'pop3\.address = "my host" is not allowed'):
        profile.with_value("pop3.address", "my host")


def test_errors_show_values_as_typed_never_python_reprs() -> None:
    text = factory_text("DP-3530").replace(
        'formats = ["tiff", "pdf", "jpeg"]', 'formats = ["tiff", "pdf", "bmp"]'
    )
    with pytest.raises(ProfileError) as err:
        parse_toml(text, "x.toml")
    message = str(err.value)
    assert "scan.formats = tiff, pdf, bmp is not allowed" in message
    assert "(bmp is not offered)" in message
    assert "[" not in message and "'" not in message
    assert render(("tiff", "pdf")) == "tiff, pdf" and render(True) == "true"
    assert render(2.0) == "2.0"


def test_model_names_and_choices_in_any_case() -> None:
    assert canonical_model("dp-3530") == "DP-3530"
    assert factory("dp-4520").model == "DP-4520"
    profile = factory("DP-3530")
    assert for_model(profile, "dp-6030").model == "DP-6030"
    assert profile.with_value("scan.formats", "PDF, Tiff").list("scan.formats") == ("pdf", "tiff")
    assert (
        profile.with_value("pop3.plaintext_auth", "ALWAYS").str("pop3.plaintext_auth") == "always"
    )
    with pytest.raises(ProfileError, match=r'unknown model "dp-1"; known models: DP-3510'):
        canonical_model("dp-1")


def test_site_keys_survive_a_model_change_and_factory_resets_them() -> None:
    site = factory("DP-3530").with_value("pop3.plaintext_auth", "always")
    site = site.with_value("identity.hostname", "copier.lab").with_value("pop3.port", "1110")
    moved = for_model(site, "dp-6030")
    assert moved.model == "DP-6030"
    assert moved.int("memory.image_ram_mib") == factory("DP-6030").int("memory.image_ram_mib")
    assert moved.str("pop3.plaintext_auth") == "always"
    assert moved.str("identity.hostname") == "copier.lab" and moved.int("pop3.port") == 1110
    assert for_model(site, "DP-6030", keep_site=False) == factory("DP-6030")
    assert {"identity.hostname", "pop3.plaintext_auth", "pop3.apop", "pop3.port"} <= set(SITE_KEYS)
    assert not {"identity.model", "memory.image_ram_mib", "console.baud"} & set(SITE_KEYS)


FLOAT_KEYS = [key for key, spec in SCHEMA.items() if spec.kind is float]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "+inf"])
def test_every_float_key_refuses_non_finite_values_typed_or_in_toml(key: str, text: str) -> None:
    assert FLOAT_KEYS  # the schema has float keys; else this test checks nothing
    with pytest.raises(
        ProfileError, match=rf"{re.escape(key)} = (-?inf|nan) is not allowed.*finite"
    ):
        factory("DP-3530").with_value(key, text)
    name = key.split(".", 1)[1]
    toml, count = re.subn(
        rf"^{name} = .*$", f"{name} = {text.lower()}", factory_text("DP-3530"), flags=re.M
    )
    assert count == 1 and math.isnan(tomllib.loads(toml)[key.split(".")[0]][name]) == (
        "nan" in text.lower()
    )
    with pytest.raises(ProfileError, match=rf"lab\.toml: {re.escape(key)} = .* is not allowed"):
        parse_toml(toml, "lab.toml")


@pytest.mark.parametrize(
    ("key", "value"), [("identity.model", "DP-4520"), ("identity.series", "DP")]
)
def test_the_model_is_never_set_alone(key: str, value: str) -> None:
    """A device must not claim a model whose figures it lacks: `profile apply` changes both."""
    with pytest.raises(ProfileError) as caught:
        factory("DP-3530").with_value(key, value, "profile set")
    assert str(caught.value) == (
        f"profile set: {key} cannot be set alone: a model is its figures too (engine, RAM,"
        " limits); use `profile apply MODEL` (keeps site settings)"
    )
    assert "\n" not in str(caught.value)
