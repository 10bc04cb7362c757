"""`dpfw fleet k8s`: the same manifest as Kubernetes objects, read back with a YAML parser,
checked against the Kubernetes schemas, and the pod's own command run here for real."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.pop3_procs import free_base
from firmware.fleet.k8s import PLACEHOLDER, to_yaml
from firmware.fleet.plan import serial_number
from tests.support import DeviceProcess, dpfw

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "packaging" / "k8s" / "fleet.toml"


def generated(manifest: Path, *args: str) -> list[dict[str, Any]]:
    text = dpfw("fleet", "k8s", str(manifest), *args).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in docs}


def test_the_objects_a_fleet_needs_are_there() -> None:
    docs = by_kind(generated(EXAMPLE, "--image", "registry.example/dpfw:0.1.0"))
    assert set(docs) == {"Secret", "ConfigMap", "Service", "StatefulSet"}
    service = docs["Service"]
    assert service["spec"]["clusterIP"] == "None"  # headless: one DNS name per pod
    sts = docs["StatefulSet"]
    assert sts["spec"]["serviceName"] == service["metadata"]["name"] == "floor3"
    assert sts["spec"]["replicas"] == 12
    claims = sts["spec"]["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == ["data"]
    assert claims[0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/dpfw:0.1.0"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    probe = " ".join(container["readinessProbe"]["exec"]["command"])
    assert "/api/v1/status" in probe
    secret = docs["Secret"]
    assert secret["stringData"] == {"admin-password": PLACEHOLDER}
    assert {"name": "admin", "secret": {"secretName": secret["metadata"]["name"]}} in pod["volumes"]
    # The pods read the very manifest `fleet up` reads.
    assert docs["ConfigMap"]["data"]["fleet.toml"] == EXAMPLE.read_text()
    assert sts["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_the_yaml_passes_the_kubernetes_schemas(tmp_path: Path) -> None:
    validator = shutil.which("kubernetes-validate") or str(
        Path(sys.executable).parent / "kubernetes-validate"
    )
    if not Path(validator).exists():
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    out = tmp_path / "fleet.yaml"
    out.write_text(dpfw("fleet", "k8s", str(EXAMPLE)).stdout)
    result = subprocess.run(
        [validator, "--strict", str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == 4


def test_files_the_manifest_names_travel_in_the_config_map(tmp_path: Path) -> None:
    (tmp_path / "faults").mkdir()
    flaky = '# scenario\n[[fault]]\naction = "drop-after-greeting"\n'  # checked: a real one
    (tmp_path / "faults" / "flaky.toml").write_text(flaky)
    (tmp_path / "dp.toml").write_text((ROOT / "device_profiles" / "DP-3510.toml").read_text())
    manifest = tmp_path / "fleet.toml"
    manifest.write_text(
        '[fleet]\nname = "f"\ncount = 2\ntemplate = "dp.toml"\npop3s_base_port = 2000\n'
        '[[device]]\nindex = 1\nfaults = "faults/flaky.toml"\n'
    )
    docs = by_kind(generated(manifest, "--namespace", "lab"))
    data = docs["ConfigMap"]["data"]
    assert data["faults_flaky.toml"] == flaky
    assert "[identity]" in data["dp.toml"]
    pod = docs["StatefulSet"]["spec"]["template"]["spec"]
    items = next(v for v in pod["volumes"] if v["name"] == "manifest")["configMap"]["items"]
    assert {"key": "faults_flaky.toml", "path": "faults/flaky.toml"} in items
    assert all(doc["metadata"]["namespace"] == "lab" for doc in docs.values())
    assert "--pop3s 0.0.0.0:1995" in pod["containers"][0]["command"][2]


def test_to_yaml_keeps_strings_strings() -> None:
    value: dict[str, Any] = {
        "a": ["no", "0755", "1e3", "null", "", "x: y", "- z", "#c", "tab\there", "é"],
        "b": {"multi": "line one\n  two\n", "trailing": "x\n\n"},
        "c": [True, 3, 2.5, None, [], {}],
    }
    assert yaml.safe_load(to_yaml(value)) == value


def test_the_pods_command_creates_and_serves_the_device_fleet_up_would(tmp_path: Path) -> None:
    """Run the container's command here (its shell line, with a pod's HOSTNAME) and probe it
    with the readiness probe's own code."""
    docs = by_kind(generated(EXAMPLE))
    container = docs["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    line = container["command"][2]
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "admin-password").write_text(PLACEHOLDER)
    base = free_base(2)
    line = (
        line.replace("/etc/dpfw/fleet/fleet.toml", str(EXAMPLE))
        .replace("/data/board.img", str(tmp_path / "board.img"))
        .replace("/run/secrets/dpfw", str(secret))
        .replace("0.0.0.0:1110", f"127.0.0.1:{base}")
        .replace("0.0.0.0:8080 --http-insecure", f"127.0.0.1:{base + 1}")
        .replace("exec dpfw", f"exec {sys.executable} -m firmware")
    )
    env = {"HOSTNAME": "floor3-4", "PATH": "/usr/bin:/bin"}
    refused = subprocess.run(
        ["/bin/sh", "-c", line], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert refused.returncode == 1 and "still the placeholder" in refused.stderr
    assert not (tmp_path / "board.img").exists()
    (secret / "admin-password").write_text("Pod-admin-pw-1\n")
    device = DeviceProcess(
        tmp_path / "board.img", prefix=["/bin/sh", "-c", line, "sh"], env=env, cwd=ROOT
    )
    try:
        assert device.wait_booted() == base
        probe = container["readinessProbe"]["exec"]["command"]
        code = probe[2].replace("/run/secrets/dpfw", str(secret)).replace(":8080/", f":{base + 1}/")
        ready = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
        assert ready.returncode == 0, ready.stderr
        auth = base64.b64encode(b"admin:Pod-admin-pw-1").decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{base + 1}/api/v1/status", headers={"Authorization": f"Basic {auth}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            status = json.loads(response.read())
        assert status["serial"] == serial_number("floor3", 4)
        assert status["model"] == "DP-4530"  # models cycle: index 4 of 3510, 4530, 6030
    finally:
        assert device.stop() == 0
    assert "board image closed cleanly" in device.output()
