"""`dpfw profile ...` on a real image, run as a user runs it (device off)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from firmware.config.profile import MODELS, factory
from tests.support import DeviceProcess, create_image, dpfw


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
    assert "pop3.max_sessions = 0 is not allowed" in bad.stderr
    assert "from 1 to 4096" in bad.stderr
    unknown = dpfw("profile", "set", str(image), "pop3.nope", "1", check=False)
    assert unknown.returncode == 1 and 'unknown key "pop3.nope"' in unknown.stderr
    # nothing of the refused changes was written
    assert tomllib.loads(dpfw("profile", "show", str(image)).stdout)["pop3"]["max_sessions"] == 3


def test_set_prints_values_as_typed_not_python_reprs(image: Path) -> None:
    out = dpfw("profile", "set", str(image), "scan.formats", "tiff,PDF").stdout
    assert out == "scan.formats = tiff, pdf (saved; applies at next boot)\n"
    bad = dpfw("profile", "set", str(image), "scan.formats", "tiff,pdf,bmp", check=False)
    assert bad.returncode == 1
    assert "scan.formats = tiff, pdf, bmp is not allowed" in bad.stderr
    assert "[" not in bad.stderr and "'" not in bad.stderr


@pytest.mark.parametrize("name", ["", "my host", "dp-.lan"])
def test_set_refuses_a_bad_host_name(image: Path, name: str) -> None:
    bad = dpfw("profile", "set", str(image), "identity.hostname", name, check=False)
    assert bad.returncode == 1
    assert f'identity.hostname = "{name}" is not allowed; expected a host name (RFC 1123)' in (
        bad.stderr
    )
    assert len(bad.stderr.strip().splitlines()) == 1
    assert tomllib.loads(dpfw("profile", "show", str(image)).stdout)["identity"]["hostname"] == (
        "dp3520.local"
    )


def test_apply_switches_model_in_any_case_and_keeps_site_settings(image: Path) -> None:
    dpfw("profile", "set", str(image), "pop3.plaintext_auth", "always")
    out = dpfw("profile", "apply", str(image), "dp-6030").stdout
    assert "profile apply DP-6030 changes" in out
    assert "  identity.model: DP-3520 -> DP-6030\n" in out
    assert "plaintext_auth" not in out and out.endswith("saved; applies at next boot\n")
    shown = tomllib.loads(dpfw("profile", "show", str(image)).stdout)
    assert shown["identity"]["model"] == "DP-6030"
    assert shown["identity"]["hostname"] == "dp3520.local"
    assert shown["pop3"]["plaintext_auth"] == "always"
    assert shown["memory"]["image_ram_mib"] == factory("DP-6030").int("memory.image_ram_mib")


def test_apply_factory_and_reset_take_every_factory_value(image: Path) -> None:
    dpfw("profile", "set", str(image), "pop3.plaintext_auth", "always")
    dry = dpfw("profile", "apply", str(image), "DP-6030", "--factory", "--dry-run").stdout
    assert "  pop3.plaintext_auth: always -> tls_only\n" in dry
    assert dry.endswith("nothing changed (--dry-run)\n")
    assert tomllib.loads(dpfw("profile", "show", str(image)).stdout)["pop3"]["plaintext_auth"] == (
        "always"
    )
    dpfw("profile", "apply", str(image), "DP-6030", "--factory")
    assert tomllib.loads(dpfw("profile", "show", str(image)).stdout) == tomllib.loads(
        factory("DP-6030").to_toml()
    )
    dpfw("profile", "set", str(image), "pop3.apop", "true")
    out = dpfw("profile", "reset", str(image)).stdout
    assert "  pop3.apop: true -> false\n" in out
    assert "no value changed" in dpfw("profile", "reset", str(image)).stdout


def test_unknown_model_is_one_clear_line(image: Path) -> None:
    bad = dpfw("profile", "apply", str(image), "dp-1", check=False)
    assert bad.returncode == 2 and 'unknown model "dp-1"; known models: DP-3510' in bad.stderr


def test_validate_reports_each_bad_file(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(factory("DP-3530").to_toml())
    bad = tmp_path / "bad.toml"
    bad.write_text(factory("DP-3530").to_toml().replace("ppm = 35", "ppm = 900"))
    proc = dpfw("profile", "validate", str(good), str(bad), check=False)
    assert proc.returncode == 1
    assert "good.toml: valid profile for DP-3530" in proc.stdout
    assert "bad.toml: engine.ppm = 900 is not allowed" in proc.stdout


def test_set_refuses_non_finite_numbers_and_the_model_alone(image: Path) -> None:
    before = dpfw("profile", "show", str(image)).stdout
    for pair in (["pop3.auth_failure_delay_s", "nan"], ["pop3.auth_failure_delay_s=inf"]):
        bad = dpfw("profile", "set", str(image), *pair, check=False)
        assert bad.returncode == 1 and "is not allowed" in bad.stderr, bad
        assert "(a finite number)" in bad.stderr
    bad = dpfw("profile", "set", str(image), "identity.model", "DP-4520", check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("dpfw: profile set: identity.model cannot be set alone")
    assert "use `profile apply MODEL`" in bad.stderr and bad.stderr.count("\n") == 1
    assert dpfw("profile", "show", str(image)).stdout == before  # nothing saved


def test_set_takes_key_equals_value_like_the_console(image: Path) -> None:
    out = dpfw("profile", "set", str(image), "pop3.apop=true", "pop3.max_sessions=", "5").stdout
    assert out.startswith("profile set: 2 values changed and saved\n")
    saved = tomllib.loads(dpfw("profile", "show", str(image)).stdout)["pop3"]
    assert saved["apop"] is True and saved["max_sessions"] == 5


def test_a_new_host_name_warns_that_the_certificate_names_the_old_one(
    image: Path, start_device: type[DeviceProcess]
) -> None:
    out = dpfw("profile", "set", str(image), "identity.hostname", "copier.example").stdout
    assert out.splitlines() == [
        "identity.hostname = copier.example (saved; applies at next boot)",
        "WARNING: the TLS certificate names dp3520.local, localhost, not copier.example;"
        " `dpfw tls selfsign IMG` makes one for copier.example",
    ]
    device = start_device(image)
    device.wait_booted()
    assert device.stop() == 0
    assert (
        "WARNING: the TLS certificate names dp3520.local, localhost, not copier.example;"
        " `tls selfsign` makes one for copier.example" in device.output()
    )
    dpfw("tls", "selfsign", str(image))
    out = dpfw("profile", "set", str(image), "identity.hostname=COPIER.example").stdout
    assert "WARNING" not in out  # host names compare in any case
    device = start_device(image)
    device.wait_booted()
    assert device.stop() == 0
    assert "TLS certificate names" not in device.output()


def test_validate_reports_every_bad_key_of_a_file(tmp_path: Path) -> None:
    text = (
        factory("DP-3530")
        .to_toml()
        .replace("ppm = 35", "ppm = 900")
        .replace("max_sessions = 16", 'max_sessions = "many"')
        .replace("[pop3]\n", "[pop3]\nprot = 1\n")
        .replace("max_boxes = 100\n", "")
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    proc = dpfw("profile", "validate", str(bad), check=False)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert len(lines) == 4, lines
    assert lines[0] == f'{bad}: unknown key "pop3.prot"; did you mean "pop3.port"?'
    assert lines[1].startswith(f'{bad}: missing key "mailbox.max_boxes"')
    assert lines[2].startswith(f"{bad}: engine.ppm = 900 is not allowed")
    assert lines[3].startswith(f'{bad}: pop3.max_sessions = "many" is not allowed')
