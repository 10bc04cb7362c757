"""`dpfw run`: boot, serve POP3, refuse a second opener, stop cleanly on SIGTERM."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support import DeviceProcess, dpfw


def _greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        data = sock.recv(512)
        sock.sendall(b"QUIT\r\n")
        return data


def test_run_serves_pop3_and_stops_cleanly(
    demo_image: Path, start_device: type[DeviceProcess]
) -> None:
    device = start_device(demo_image)
    port = device.wait_booted()
    assert _greeting(port).startswith(b"+OK")
    out = device.output()
    assert "DP-3530" in out and "plaintext" in out  # the demo image allows plaintext, and says so
    in_use = dpfw("image", "inspect", str(demo_image), check=False)
    assert in_use.returncode != 0
    assert f"in use by PID {device.popen.pid}" in in_use.stderr
    assert device.stop() == 0
    assert "board image closed cleanly" in device.output()
    # after a clean stop the image opens again
    dpfw("image", "inspect", str(demo_image))


def test_set_overrides_apply_to_the_run_only(
    demo_image: Path, start_device: type[DeviceProcess]
) -> None:
    device = start_device(demo_image, "--set", "pop3.max_sessions=1")
    port = device.wait_booted()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as first:
        assert first.recv(512).startswith(b"+OK")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as second:
            assert second.recv(512).startswith(b"-ERR [SYS/TEMP]")
    assert "run-only settings: pop3.max_sessions=1" in device.output()
    assert device.stop() == 0
    shown = dpfw("profile", "show", str(demo_image)).stdout
    assert "max_sessions = 16" in shown


def test_bad_override_is_refused_before_boot(demo_image: Path) -> None:
    proc = dpfw("run", str(demo_image), "--set", "pop3.max_sessions=lots", check=False)
    assert proc.returncode == 1
    assert 'pop3.max_sessions = "lots" is not allowed' in proc.stderr


def test_a_missing_image_is_one_clean_error_line(tmp_path: Path) -> None:
    """Found by the reliability campaign: a refused boot used to print a traceback."""
    proc = dpfw("run", str(tmp_path / "none.img"), "--pop3", "127.0.0.1:0", check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"dpfw: {tmp_path / 'none.img'}: no such board image"
    ]
