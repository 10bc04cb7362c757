"""packaging/container: build the image without a registry and run it as docs/packaging.md says.

Needs root, podman, runc and mmdebstrap (not installed by .ci/run: marked slow and skipped
without them). About a minute: mmdebstrap makes the base once, then podman builds.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "packaging" / "container" / "containers.conf"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or any(shutil.which(t) is None for t in ("podman", "runc", "mmdebstrap")),
        reason="needs root, podman, runc and mmdebstrap",
    ),
]


def podman(*args: str, check: bool = True, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
        env={**os.environ, "CONTAINERS_CONF": str(CONF)},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {proc.stderr}")
    return proc.stdout + proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(900)
def test_the_container_creates_its_image_from_the_secret_serves_and_stops_cleanly() -> None:
    built = subprocess.run(
        [str(ROOT / "packaging" / "container" / "build")], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr[-3000:]
    tag = f"dpfw-test-{os.getpid()}"
    podman("secret", "create", tag, "-", stdin="container-admin-pw\n")
    podman("volume", "create", tag)
    port = _free_port()
    try:
        # without the secret, on an empty volume: one line, non-zero
        refused = subprocess.run(
            ["podman", "run", "--rm", "-v", f"{tag}:/data", "localhost/dpfw"],
            capture_output=True,
            text=True,
            env={**os.environ, "CONTAINERS_CONF": str(CONF)},
            timeout=120,
        )
        assert refused.returncode == 1
        assert "there is no admin password secret" in refused.stderr
        podman(
            "run", "-d", "--name", tag, "--secret", f"{tag},target=dpfw_admin_password",
            "-v", f"{tag}:/data", "-p", f"127.0.0.1:{port}:1110", "localhost/dpfw",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while "POP3 on 0.0.0.0:1110" not in podman("logs", tag):
            assert time.monotonic() < deadline, podman("logs", tag)
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert sock.recv(512).startswith(b"+OK")
            sock.sendall(b"QUIT\r\n")
        podman("stop", tag)
        logs = podman("logs", tag)
        assert "created /data/board.img: DP-3530" in logs
        assert "board image closed cleanly" in logs
        assert podman("inspect", tag, "--format", "{{.State.ExitCode}}").strip() == "0"
    finally:
        podman("rm", "-f", tag, check=False)
        podman("volume", "rm", "-f", tag, check=False)
        podman("secret", "rm", tag, check=False)
