"""`dpfw profile ...` on a real image, run as a user runs it (device off)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from firmware.config.profile import MODELS, factory
from tests.support import create_image, dpfw


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = create_image(tmp_path / "board.img", "DP-3520", "16MiB")
    return path


def test_list_names_all_nine_models_and_says_they_are_modelled() -> None:
    out = dpfw("profile", "list").stdout
    for model in MODELS:
        assert model in out
    assert "modelled" in out


def test_show_prints_the_active_profile_as_toml(image: Path) -> None:
    shown = tomllib.loads(dpfw("profile", "show", str(image)).stdout)
    assert shown["identity"]["model"] == "DP-3520"
    assert shown["pop3"]["max_sessions"] == factory("DP-3520").int("pop3.max_sessions")


def test_set_is_validated_and_saved(image: Path) -> None:
    dpfw("profile", "set", str(image), "pop3.max_sessions", "3")
    assert tomllib.loads(dpfw("profile", "show", str(image)).stdout)["pop3"]["max_sessions"] == 3
    bad = dpfw("profile", "set", str(image), "pop3.max_sessions", "0", check=False)
    assert bad.returncode == 1
    assert "pop3.max_sessions = '0'" in bad.stderr or "pop3.max_sessions = 0" in bad.stderr
    assert "from 1 to 4096" in bad.stderr
    unknown = dpfw("profile", "set", str(image), "pop3.nope", "1", check=False)
    assert unknown.returncode == 1 and "unknown key 'pop3.nope'" in unknown.stderr
    # nothing of the refused changes was written
    assert tomllib.loads(dpfw("profile", "show", str(image)).stdout)["pop3"]["max_sessions"] == 3


def test_apply_switches_model(image: Path) -> None:
    out = dpfw("profile", "apply", str(image), "DP-6030").stdout
    assert "DP-3520 -> DP-6030" in out
    shown = tomllib.loads(dpfw("profile", "show", str(image)).stdout)
    assert shown["identity"]["model"] == "DP-6030"
    assert shown["memory"]["image_ram_mib"] == factory("DP-6030").int("memory.image_ram_mib")


def test_validate_reports_each_bad_file(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(factory("DP-3530").to_toml())
    bad = tmp_path / "bad.toml"
    bad.write_text(factory("DP-3530").to_toml().replace("ppm = 35", "ppm = 900"))
    proc = dpfw("profile", "validate", str(good), str(bad), check=False)
    assert proc.returncode == 1
    assert "good.toml: valid profile for DP-3530" in proc.stdout
    assert "bad.toml: engine.ppm = 900 is not allowed" in proc.stdout
