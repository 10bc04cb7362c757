"""The outside contract against a real `dpfw run --http --faults FILE`: POST/GET/DELETE
/api/v1/faults, /metrics, the fault log on stderr, curl meeting a fault, and a seeded
scenario run twice on two fresh devices giving the same fault sequence."""

from __future__ import annotations

import poplib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.faults.log import parse
from tests.http.conftest import Lab, start_lab
from tests.support import DeviceProcess, dpfw

SCENARIO = """
seed = 1234

[[fault]]
action = "reply-error"
command = "NOOP"
code = "SYS/TEMP"
probability = 0.5

[[fault]]
action = "delay"
command = "STAT"
seconds = 0.01
times = 2
"""


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(SCENARIO)
    return path


@pytest.fixture
def faulty_lab(
    demo_image: Path, start_device: type[DeviceProcess], scenario: Path
) -> Iterator[Lab]:
    yield from start_lab(start_device, demo_image, "--faults", str(scenario))


def fault_lines(device: DeviceProcess) -> list[dict[str, str]]:
    return [parse(line) for line in device.output().splitlines() if "dpfw fault " in line]


def test_the_contract(faulty_lab: Lab) -> None:
    api = faulty_lab.api
    listed = api.get("/api/v1/faults").json()
    assert listed["seed"] == 1234 and [f["action"] for f in listed["faults"]] == [
        "reply-error",
        "delay",
    ]
    added = api.post(
        "/api/v1/faults",
        json={"action": "retr-break", "box": "alice", "after_percent": 50, "times": 1},
    )
    assert added.status_code == 201
    fault_id = added.json()["id"]
    assert isinstance(fault_id, int)

    pop = poplib.POP3("127.0.0.1", faulty_lab.pop3_port, timeout=15)
    pop.user("alice")
    pop.pass_("alice-lab")
    with pytest.raises(poplib.error_proto):
        pop.retr(3)

    listed = api.get("/api/v1/faults").json()
    mine = next(f for f in listed["faults"] if f["id"] == fault_id)
    assert mine["fired"] == 1 and mine["remaining"] == 0 and not mine["live"]
    assert mine["spec"] == {
        "action": "retr-break",
        "box": "alice",
        "times": 1,
        "after_percent": 50.0,
    }
    assert api.get(f"/api/v1/faults/{fault_id}").json()["fired"] == 1
    metrics = api.get("/metrics").text
    assert 'dpfw_faults_fired_total{action="retr-break"} 1.0' in metrics
    logged = [f for f in fault_lines(faulty_lab.device) if f["action"] == "retr-break"]
    assert logged and logged[0]["box"] == "alice" and logged[0]["cmd"] == "RETR"
    assert logged[0]["id"] == str(fault_id) and logged[0]["rip"] == "127.0.0.1"

    assert api.delete(f"/api/v1/faults/{fault_id}").json() == {"ids": [fault_id]}
    assert api.get(f"/api/v1/faults/{fault_id}").status_code == 404
    assert api.delete(f"/api/v1/faults/{fault_id}").status_code == 404
    assert api.delete("/api/v1/faults").json()["ids"] == [1, 2]
    assert api.get("/api/v1/faults").json()["faults"] == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "boom"}, "fault: unknown action 'boom' (one of retr-break,"),
        ({"action": "delay", "seconds": "2"}, "fault delay: seconds must be a number, not '2'"),
        ({"action": "delay", "colour": 1}, "fault delay: unknown key 'colour'"),
        ({"action": "vanish", "message": 0}, "fault vanish: message 0 is out of range"),
    ],
)
def test_bad_faults_are_one_line(faulty_lab: Lab, body: dict[str, object], message: str) -> None:
    answer = faulty_lab.api.post("/api/v1/faults", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"] == "bad_fault"
    assert answer.json()["message"].startswith(message)


def test_curl_meets_a_fault(faulty_lab: Lab) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    api = faulty_lab.api
    api.post("/api/v1/faults", json={"action": "retr-break", "after_octets": 10, "times": 1})
    url = f"pop3://127.0.0.1:{faulty_lab.pop3_port}/1"
    cut = subprocess.run([curl, "-s", "-u", "alice:alice-lab", url], capture_output=True)
    whole = subprocess.run([curl, "-s", "-u", "alice:alice-lab", url], capture_output=True)
    assert whole.returncode == 0 and b"Welcome to the DP-3530 demo" in whole.stdout
    # What the lab is for: curl (7.88) takes a RETR cut after 10 octets, with no "."
    # line, for the whole message and exits 0. The test pins what the client got.
    assert cut.stdout == whole.stdout[:10]


def noop_errors(port: int, count: int = 40) -> list[int]:
    pop = poplib.POP3("127.0.0.1", port, timeout=15)
    pop.user("alice")
    pop.pass_("alice-lab")
    failed = []
    for n in range(count):
        try:
            pop.noop()
        except poplib.error_proto as exc:
            assert exc.args[0].startswith(b"-ERR [SYS/TEMP]")
            failed.append(n)
    pop.quit()
    return failed


def test_a_seeded_scenario_repeats(
    tmp_path: Path, start_device: type[DeviceProcess], scenario: Path
) -> None:
    runs = []
    for run in range(2):
        image = tmp_path / f"run{run}.img"
        dpfw("image", "demo", str(image))
        device = start_device(image, "--faults", str(scenario))
        port = device.wait_booted()
        runs.append(noop_errors(port))
        fired = [f["id"] for f in fault_lines(device)]
        device.stop()
        assert fired == ["1"] * len(runs[-1])  # every NOOP refusal was logged, nothing else
    assert runs[0] == runs[1]
    assert 5 < len(runs[0]) < 35  # about half of 40


def test_a_bad_scenario_file_is_refused_before_boot(demo_image: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[fault]]\naction = 'retr-break'\nafter_percent = 150\n")
    done = dpfw("run", str(demo_image), "--faults", str(bad), check=False)
    assert done.returncode == 1
    assert done.stderr == (
        f"dpfw: --faults {bad}: fault 1 retr-break: after_percent 150.0 is out of range 0..100\n"
    )
    missing = dpfw("run", str(demo_image), "--faults", str(tmp_path / "nope.toml"), check=False)
    assert missing.stderr.startswith(f"dpfw: --faults {tmp_path / 'nope.toml'}: cannot read: ")
