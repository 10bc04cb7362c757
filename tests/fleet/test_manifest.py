"""The fleet manifest and the plan made from it (sans-IO: text in, values or lines out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.config.profile import factory
from firmware.errors import DeviceError
from firmware.fleet import manifest as mf
from firmware.fleet.manifest import BoxSpec, ManifestError, parse
from firmware.fleet.plan import collisions, device_name, plan, profile_for, serial_number

GOOD = """
[fleet]
name = "floor3"
count = 4
template = "DP-4530"
models = ["DP-3510", "dp-6030"]
pop3_base_port = 11000
http_base_port = 12000
hostname = "{name}.lab"
settings = { "pop3.max_sessions" = 8, "pop3.apop" = true }

[[fleet.boxes]]
name = "scan{index}"
password = "Pw-{index}-long-enough"

[[device]]
index = 2
model = "DP-4530"
hostname = "special.lab"
settings = { "pop3.max_sessions" = 2 }
boxes = [ { name = "only", password = "Only-pw-123" } ]
scan_feed_per_min = 6
"""


def test_a_good_manifest_gives_every_device_its_own_values() -> None:
    manifest = parse(GOOD, "fleet.toml")
    devices = plan(manifest)
    assert [d.name for d in devices] == ["floor3-000", "floor3-001", "floor3-002", "floor3-003"]
    assert [d.model for d in devices] == ["DP-3510", "DP-6030", "DP-4530", "DP-6030"]
    assert [d.pop3[1] for d in devices] == [11000, 11001, 11002, 11003]
    assert [d.http[1] for d in devices if d.http] == [12000, 12001, 12002, 12003]
    assert all(d.pop3s is None for d in devices)
    assert devices[0].hostname == "floor3-000.lab" and devices[2].hostname == "special.lab"
    assert devices[0].boxes == (BoxSpec("scan0", "Pw-0-long-enough"),)
    assert devices[2].boxes == (BoxSpec("only", "Only-pw-123"),)
    assert devices[0].settings == {"pop3.max_sessions": "8", "pop3.apop": "true"}
    assert devices[2].settings["pop3.max_sessions"] == "2"
    assert devices[2].scan_feed_per_min == 6.0 and devices[0].scan_feed_per_min == 0.0
    assert str(devices[1].image) == "devices/floor3-001/board.img"


def test_serial_numbers_are_deterministic_distinct_and_fleet_specific() -> None:
    a = [serial_number("floor3", i) for i in range(1000)]
    assert a == [serial_number("floor3", i) for i in range(1000)]
    assert len(set(a)) == 1000
    assert serial_number("floor4", 0) != a[0]
    assert a[7].startswith("SIM-") and a[7].endswith("-00007")
    assert device_name("x", 7) == "x-007" and device_name("x", 1234) == "x-1234"


def test_every_mistake_is_one_line_naming_file_table_and_key() -> None:
    bad = """
[fleet]
name = "Bad Name"
count = 0
template = "DP-9999"
models = ["DP-3510", 7]
console = "serial"
colour = "red"
settings = { "pop3.nonsense" = 1 }

[[fleet.boxes]]
name = "a"

[[fleet.boxes]]
name = "bad/name"
password = "abc"

[[device]]
index = 9
surprise = 1
"""
    with pytest.raises(ManifestError) as caught:
        parse(bad, "lab/fleet.toml")
    lines = caught.value.lines
    assert all(line.startswith("lab/fleet.toml: [") for line in lines), lines
    assert all("\n" not in line for line in lines)
    joined = "\n".join(lines)
    for expected in (
        "[fleet] name:",
        "[fleet] count:",
        "[fleet] template:",
        "[fleet] models: 7 is not a model",
        "[fleet] console:",
        "[fleet] colour: unknown key",
        "[fleet] settings.pop3.nonsense: not a profile key",
        "[fleet] boxes[1].password: missing",
        "[fleet] boxes[2].name: box name 'bad/name' cannot be addressed in a URL path",
        "[fleet] boxes[2].password: the box password:",
        "[device #1] surprise: unknown key",
    ):
        assert expected in joined, (expected, joined)
    # The command line shows each as its own `dpfw:` line.
    assert str(caught.value).count("\ndpfw: ") == len(lines) - 1


def test_index_beyond_count_and_duplicates_are_refused() -> None:
    text = GOOD + "\n[[device]]\nindex = 2\n\n[[device]]\nindex = 4\n"
    with pytest.raises(ManifestError) as caught:
        parse(text, "f.toml")
    joined = "\n".join(caught.value.lines)
    assert "[device index=2] index: a second [[device]] table" in joined
    assert "[device index=4] index: 4 is not below [fleet] count (4)" in joined


def test_not_toml_and_missing_fleet_table_are_one_line() -> None:
    with pytest.raises(ManifestError) as caught:
        parse("[fleet\n", "f.toml")
    assert len(caught.value.lines) == 1 and "not valid TOML" in caught.value.lines[0]
    with pytest.raises(ManifestError) as caught:
        parse("[[device]]\nindex = 0\n", "f.toml")
    assert caught.value.lines == ["f.toml: [fleet]: missing: a manifest needs a [fleet] table"]


def test_files_the_manifest_names_must_exist(tmp_path: Path) -> None:
    (tmp_path / "faults.toml").write_text("# a scenario\n")
    path = tmp_path / "fleet.toml"
    path.write_text(
        '[fleet]\nname = "a"\ncount = 2\ntemplate = "DP-3510"\nfaults = "faults.toml"\n'
        '[[device]]\nindex = 1\nfaults = "missing.toml"\n'
    )
    with pytest.raises(ManifestError) as caught:
        mf.load(path)
    assert caught.value.lines == [
        f"{path}: [device index=1] faults: {tmp_path / 'missing.toml'} is not a file"
    ]
    (tmp_path / "missing.toml").write_text("")
    devices = plan(mf.load(path))
    assert [d.faults for d in devices] == ["faults.toml", "missing.toml"]


def test_written_manifest_parses_back_to_the_options() -> None:
    text = mf.write(
        name="lab",
        count=3,
        template="DP-4530",
        models=["DP-3510"],
        pop3_base_port=2000,
        http_base_port=3000,
        boxes=[BoxSpec("a{index}", 'pw "quoted" \\ long')],
    )
    manifest = parse(text, "written")
    assert (manifest.name, manifest.count, manifest.template) == ("lab", 3, "DP-4530")
    assert manifest.models == ("DP-3510",)
    assert (manifest.pop3_base_port, manifest.http_base_port) == (2000, 3000)
    assert manifest.boxes == (BoxSpec("a{index}", 'pw "quoted" \\ long'),)


def test_port_collisions_name_both_listeners() -> None:
    text = '[fleet]\nname = "a"\ncount = 3\ntemplate = "DP-3510"\n'
    text += "pop3_base_port = 5000\nhttp_base_port = 5002\n"
    lines = collisions(plan(parse(text, "f")))
    assert lines == ["port collision: a-002 POP3 and a-000 HTTP both on 127.0.0.1:5002"]
    text = '[fleet]\nname = "a"\ncount = 3\ntemplate = "DP-3510"\npop3_base_port = 65534\n'
    with pytest.raises(DeviceError, match="passes port 65535"):
        plan(parse(text, "f"))


def test_profile_for_sets_model_and_host_name_and_keeps_site_settings() -> None:
    template = factory("DP-4530").with_values([("pop3.plaintext_auth", "always")], "t")
    device = plan(parse(GOOD, "f"))[0]
    profile = profile_for(device, template)
    assert profile.model == "DP-3510"
    assert profile.str("identity.hostname") == "floor3-000.lab"
    assert profile.str("pop3.plaintext_auth") == "always"
    text = GOOD.replace('hostname = "special.lab"', 'hostname = "bad host"')
    bad = plan(parse(text, "f"))[2]
    with pytest.raises(DeviceError, match=r"^floor3-002: host name \"bad host\""):
        profile_for(bad, template)
