"""`dpfw fleet up` for real: 3 devices in one child process, on real images, real ports, real
ptys; clients are poplib, urllib (the HTTP API) and pyserial (the consoles)."""

from __future__ import annotations

import base64
import json
import poplib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from benchmarks.pop3_procs import free_base
from tests.support import Fleet, dpfw

ADMIN = "Fleet-admin-pw-1"
COUNT = 3


def write_manifest(directory: Path, name: str = "lab", **overrides: str) -> tuple[int, int]:
    """DIR/fleet.toml for COUNT devices with APOP on (so the greeting names the host) and one
    box per device (`scan{index}`); returns (pop3 base, http base)."""
    base = free_base(2 * COUNT)
    fields = {
        "models": '["DP-3510", "DP-6030"]',
        "hostname": '"{name}.lab.test"',
        "console": '"pty"',
    }
    fields.update(overrides)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fleet.toml").write_text(
        f"""
[fleet]
name = "{name}"
count = {COUNT}
template = "DP-4530"
models = {fields["models"]}
pop3_base_port = {base}
http_base_port = {base + COUNT}
console = {fields["console"]}
hostname = {fields["hostname"]}
flash_mib = 8
settings = {{ "pop3.apop" = true, "pop3.plaintext_auth" = "always" }}

[[fleet.boxes]]
name = "scan{{index}}"
password = "Scan-pw-{{index}}-xyz"
legacy = true

[[device]]
index = 2
scan_feed_per_min = {fields.get("feed", "0")}
"""
        + fields.get("extra", "")
    )
    return base, base + COUNT


def status(directory: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(dpfw("fleet", "status", str(directory), "--json").stdout)
    return result


def api(http: str, path: str, body: dict[str, Any] | None = None) -> Any:
    auth = base64.b64encode(f"admin:{ADMIN}".encode()).decode()
    request = urllib.request.Request(
        f"http://{http}/api/v1{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("fleet") / "lab"
    # The lab feeder on device 2 only; a fault scenario on device 1 only.
    (directory / "noop-fails.toml").parent.mkdir(parents=True, exist_ok=True)
    (directory / "noop-fails.toml").write_text(
        'seed = 7\n[[fault]]\naction = "reply-error"\ncommand = "NOOP"\ncode = "SYS/TEMP"\n'
    )
    write_manifest(
        directory, feed="120", extra='\n[[device]]\nindex = 1\nfaults = "noop-fails.toml"\n'
    )
    running = Fleet(directory, "--admin-password", ADMIN)
    running.wait_ready()
    yield running
    running.kill()


def test_status_lists_every_device_serving_with_its_pty(fleet: Fleet) -> None:
    found = status(fleet.directory)
    assert found["running"] and found["ready"] and found["pid"] == fleet.popen.pid
    devices = found["devices"]
    assert [d["name"] for d in devices] == ["lab-000", "lab-001", "lab-002"]
    assert [d["state"] for d in devices] == ["serving"] * COUNT
    assert [d["model"] for d in devices] == ["DP-3510", "DP-6030", "DP-3510"]
    assert len({d["serial"] for d in devices}) == COUNT
    assert all(d["console"].startswith("/dev/pts/") for d in devices)
    assert len({d["console"] for d in devices}) == COUNT


def test_each_device_greets_with_its_host_and_serves_only_its_boxes(fleet: Fleet) -> None:
    devices = status(fleet.directory)["devices"]
    for index, device in enumerate(devices):
        host, port = device["pop3"].rsplit(":", 1)
        client = poplib.POP3(host, int(port), timeout=10)
        try:
            greeting = client.getwelcome().decode()
            assert greeting.startswith(f"+OK {device['model']} POP3 service ready")
            assert greeting.endswith(f"@{device['name']}.lab.test>")  # APOP names the host
            other = (index + 1) % COUNT
            with pytest.raises(poplib.error_proto):
                client.user(f"scan{other}")
                client.pass_(f"Scan-pw-{other}-xyz")
        finally:
            client.close()
        client = poplib.POP3(host, int(port), timeout=10)
        client.user(f"scan{index}")
        client.pass_(f"Scan-pw-{index}-xyz")
        count, _ = client.stat()
        assert count >= 0 if index == 2 else count == 0  # device 2 runs the scan feeder
        client.quit()


def test_each_api_reports_its_own_serial_and_controls_only_its_device(fleet: Fleet) -> None:
    devices = status(fleet.directory)["devices"]
    for device in devices:
        got = api(device["http"], "/status")
        assert got["serial"] == device["serial"]
        assert got["model"] == device["model"]
    # A box added through device 1's API exists on device 1 only.
    api(devices[1]["http"], "/boxes", {"name": "extra", "password": "Extra-pw-123"})
    assert "extra" in [b["name"] for b in api(devices[1]["http"], "/boxes")["boxes"]]
    assert "extra" not in [b["name"] for b in api(devices[0]["http"], "/boxes")["boxes"]]


def test_a_devices_fault_scenario_applies_to_that_device_only(fleet: Fleet) -> None:
    devices = status(fleet.directory)["devices"]
    for index, device in enumerate(devices):
        host, port = device["pop3"].rsplit(":", 1)
        client = poplib.POP3(host, int(port), timeout=10)
        client.user(f"scan{index}")
        client.pass_(f"Scan-pw-{index}-xyz")
        if index == 1:
            with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
                client.noop()
        else:
            client.noop()
        client.quit()
    faults = api(devices[1]["http"], "/faults")
    assert faults["seed"] == 7 and [f["action"] for f in faults["faults"]] == ["reply-error"]
    assert api(devices[0]["http"], "/faults")["faults"] == []


def test_dpfw_commands_reach_a_fleet_device_through_its_control_socket(fleet: Fleet) -> None:
    image = fleet.directory / "devices" / "lab-001" / "board.img"
    listed = json.loads(dpfw("fault", "list", str(image), "--json").stdout)
    assert [f["action"] for f in listed["faults"]] == ["reply-error"]
    got = json.loads(dpfw("status", str(image), "--json").stdout)
    assert got["serial"] == status(fleet.directory)["devices"][1]["serial"]


def test_the_scan_feed_runs_on_the_device_the_manifest_names_only(fleet: Fleet) -> None:
    devices = status(fleet.directory)["devices"]
    deadline = time.monotonic() + 30
    while api(devices[2]["http"], "/status")["scans_done"] == 0:
        assert time.monotonic() < deadline, "device 2's feeder made no scan in 30 s"
        time.sleep(0.1)
    assert [api(d["http"], "/status")["scans_done"] for d in devices[:2]] == [0, 0]
    assert api(devices[2]["http"], "/status")["feeder"] is not None
    assert api(devices[0]["http"], "/status")["feeder"] is None
    boxes = api(devices[2]["http"], "/boxes")["boxes"]
    assert sum(b["messages"] for b in boxes) > 0


def test_each_console_answers_on_its_pty_with_its_own_serial_and_log(fleet: Fleet) -> None:
    devices = status(fleet.directory)["devices"]
    for device in devices:
        port = serial.serial_for_url(device["console"], baudrate=115200, timeout=10)
        try:
            port.write(b"\r")
            assert port.read_until(b"Password: ").endswith(b"Password: ")
            port.write(ADMIN.encode() + b"\r")
            prompt = f"{device['model']}> ".encode()
            assert port.read_until(prompt).endswith(prompt)
            port.write(b"status\r")
            text = port.read_until(prompt).decode()
            assert f"serial     {device['serial']}" in text
            # Its log holds its own lines only, though every device logs in one process.
            port.write(b"log\r")
            text = port.read_until(prompt).decode()
            if device is not devices[2]:  # device 2's feeder fills the shown tail of its log
                assert f"console on {device['console']}" in text
            others = [d["console"] for d in devices if d is not device]
            assert not any(f"console on {other}\r" in text for other in others), text
            port.write(b"logout\r")
        finally:
            port.close()


def test_an_image_of_the_running_fleet_is_locked_and_the_others_are_its_own(fleet: Fleet) -> None:
    image = fleet.directory / "devices" / "lab-001" / "board.img"
    # Read-only commands go through the device's control socket; one that would open the
    # image itself (fsck) finds it held.
    refused = dpfw("image", "fsck", str(image), check=False)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "in use" in refused.stderr
    # Nothing else under the directory is the fleet's: a stray image there opens fine.
    stray = fleet.directory / "devices" / "stray.img"
    dpfw(
        "image",
        "create",
        str(stray),
        "--profile",
        "DP-3510",
        "--size",
        "1MiB",
        "--admin-password",
        ADMIN,
    )
    assert "DP-3510" in dpfw("image", "inspect", str(stray)).stdout


def test_down_drains_then_up_again_reuses_the_images(tmp_path: Path) -> None:
    directory = tmp_path / "floor"
    base = free_base(2 * COUNT)
    args = [
        "--count",
        "3",
        "--template",
        "DP-3510",
        "--pop3-base-port",
        str(base),
        "--http-base-port",
        str(base + COUNT),
        "--console",
        "none",
    ]
    first = Fleet(directory, *args, "--admin-password", ADMIN)
    try:
        first.wait_ready()
        serials = [d["serial"] for d in status(directory)["devices"]]
        down = dpfw("fleet", "down", str(directory))
        assert "stopped" in down.stdout
        assert first.popen.wait(30) == 0
    finally:
        first.kill()
    out = first.output()
    assert out.count("board image closed cleanly") == COUNT
    assert "3 images created, 0 reused" in out
    assert not (directory / "fleet.pid").exists()
    stopped = status(directory)
    assert not stopped["running"]
    assert [d["state"] for d in stopped["devices"]] == ["stopped"] * COUNT
    again = Fleet(directory, *args)  # no admin password needed: nothing to create
    try:
        again.wait_ready()
        assert "0 images created, 3 reused" in "\n".join(again.lines)
        assert [d["serial"] for d in status(directory)["devices"]] == serials
        assert dpfw("fleet", "down", str(directory)).returncode == 0
        assert again.popen.wait(30) == 0
    finally:
        again.kill()
    assert "no fleet running" in dpfw("fleet", "down", str(directory)).stdout


def test_a_manifest_that_no_longer_fits_an_image_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "lab"
    write_manifest(directory)
    first = Fleet(directory, "--admin-password", ADMIN)
    try:
        first.wait_ready()
        dpfw("fleet", "down", str(directory))
        first.popen.wait(30)
    finally:
        first.kill()
    write_manifest(directory, models='["DP-3510", "DP-3510"]', hostname='"{name}.other.test"')
    refused = dpfw("fleet", "up", str(directory), check=False)
    assert refused.returncode == 1
    lines = refused.stderr.splitlines()
    assert all(line.startswith("dpfw: ") for line in lines), refused.stderr
    assert "Traceback" not in refused.stderr
    assert any("lab-001" in line and "DP-6030" in line for line in lines)
    assert sum("host name" in line for line in lines) == COUNT


def test_a_device_whose_image_is_held_elsewhere_stops_the_start_with_one_line(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "lab"
    write_manifest(directory)
    first = Fleet(directory, "--admin-password", ADMIN)
    try:
        first.wait_ready()
        dpfw("fleet", "down", str(directory))
        first.popen.wait(30)
    finally:
        first.kill()
    image = directory / "devices" / "lab-002" / "board.img"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'r+b');"
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(image),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        refused = dpfw("fleet", "up", str(directory), check=False)
        assert time.monotonic() - start < 60
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("dpfw: ") and "lab-002" in last and "in use" in last


def test_a_port_another_program_holds_stops_the_start_naming_device_and_address(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "lab"
    pop3_base, _ = write_manifest(directory)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", pop3_base + 1))
    squatter.listen()
    try:
        refused = dpfw("fleet", "up", str(directory), "--admin-password", ADMIN, check=False)
    finally:
        squatter.close()
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"dpfw: lab-001: cannot listen for POP3 on 127.0.0.1:{pop3_base + 1}")
    assert not (directory / "fleet.pid").exists()
    assert "board image closed cleanly" in refused.stderr  # the others stopped cleanly


def test_sigterm_while_the_fleet_starts_stops_every_device_cleanly(tmp_path: Path) -> None:
    directory = tmp_path / "lab"
    write_manifest(directory)
    starting = Fleet(directory, "--admin-password", ADMIN)
    try:
        deadline = time.monotonic() + 60
        while not any("booted from" in line for line in starting.lines):
            assert time.monotonic() < deadline and starting.popen.poll() is None
            time.sleep(0.01)
        starting.popen.send_signal(signal.SIGTERM)
        assert starting.popen.wait(30) == 0
    finally:
        starting.kill()
    assert starting.output().count("board image closed cleanly") == COUNT
    assert not (directory / "fleet.pid").exists()


def test_every_manifest_mistake_is_found_at_once_before_anything_is_made(
    tmp_path: Path,
) -> None:
    # Each of these used to be found late (a scenario after the images were made, a setting
    # at boot, a password during image creation, the address at listen time) or hidden by
    # an earlier mistake (the port collision behind a typo).
    directory = tmp_path / "lab"
    directory.mkdir()
    (directory / "faults.toml").write_text(
        '[[fault]]\naction = "boom"\n\n[[fault]]\naction = "delay"\ntimes = 0\n'
    )
    (directory / "fleet.toml").write_text(
        '[fleet]\nname = "lab"\ncount = 2\ntemplate = "DP-3510"\naddress = "999.1.1.1"\n'
        "pop3_base_port = 11000\nhttp_base_port = 11001\ncolour = 1\n"
        'faults = "faults.toml"\nsettings = { "pop3.max_sessions" = "x" }\n'
        '[[fleet.boxes]]\nname = "bad/name"\npassword = "abc"\n'
    )
    refused = dpfw("fleet", "up", str(directory), "--admin-password", ADMIN, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    lines = refused.stderr.splitlines()
    assert all(line.startswith("dpfw: ") for line in lines), refused.stderr
    for expected in (
        "[fleet] colour: unknown key",
        '[fleet] address: "999.1.1.1" is not an IP address or host name',
        '[fleet] settings.pop3.max_sessions: pop3.max_sessions = "x" is not allowed',
        "[fleet] boxes[1].name: box name 'bad/name' cannot be addressed",
        "[fleet] boxes[1].password:",
        "[fleet] faults: " + str(directory / "faults.toml") + ": fault 1: unknown action 'boom'",
        "fault 2 delay: times 0 is out of range 1..1000000000",
        "port collision: lab-001 POP3 and lab-000 HTTP",
    ):
        assert any(expected in line for line in lines), (expected, refused.stderr)
    assert sorted(p.name for p in directory.iterdir()) == ["faults.toml", "fleet.toml"]


def _stops_within(fleet: Fleet, seconds: float) -> int:
    try:
        return fleet.popen.wait(seconds)
    except subprocess.TimeoutExpired:
        fleet.kill()
        raise AssertionError(
            f"the fleet still ran {seconds} s after SIGINT:\n" + fleet.output()
        ) from None


def test_an_early_sigint_always_stops_the_fleet(tmp_path: Path) -> None:
    # SIGINT at several moments of the start: before the images are checked, in the gap
    # before the event loop's receiver exists, while devices boot. Each run must end (no
    # second Ctrl-C needed) and leave no pid file.
    directory = tmp_path / "lab"
    write_manifest(directory, console='"none"')
    first = Fleet(directory, "--admin-password", ADMIN)  # the images, made once
    first.wait_ready()
    first.popen.send_signal(signal.SIGINT)
    assert _stops_within(first, 30) == 0
    moments = ("dpfw: fleet lab:", "booted from", None)  # None: at once
    for moment in moments:
        fleet = Fleet(directory, "--admin-password", ADMIN)
        deadline = time.monotonic() + 60
        while moment is not None and not any(moment in line for line in fleet.lines):
            assert time.monotonic() < deadline and fleet.popen.poll() is None, fleet.lines
            time.sleep(0.001)
        fleet.popen.send_signal(signal.SIGINT)
        _stops_within(fleet, 30)
        fleet.output()
        assert not (directory / "fleet.pid").exists(), moment


def test_a_second_sigint_stops_the_fleet_without_waiting_for_the_drain(tmp_path: Path) -> None:
    directory = tmp_path / "lab"
    pop3_base, _ = write_manifest(directory, console='"none"')
    fleet = Fleet(directory, "--admin-password", ADMIN)
    fleet.wait_ready()
    client = poplib.POP3("127.0.0.1", pop3_base, timeout=10)  # open: the drain waits for it
    try:
        fleet.popen.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while not any("no new POP3 sessions" in line for line in fleet.lines):
            assert time.monotonic() < deadline, fleet.lines
            time.sleep(0.01)
        fleet.popen.send_signal(signal.SIGINT)
        _stops_within(fleet, 30)
    finally:
        client.sock.close()
    assert "again: stopping every device now" in fleet.output()
