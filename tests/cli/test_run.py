"""`dpfw run`: boot, serve POP3, refuse a second opener, stop cleanly on SIGTERM."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

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
    in_use = dpfw("image", "fsck", str(demo_image), check=False)  # needs the image itself
    assert in_use.returncode != 0
    assert f"in use by PID {device.popen.pid}" in in_use.stderr
    # a read-only inspect goes through the device's control socket (tests/http/test_control.py)
    assert "boxes: 2" in dpfw("image", "inspect", str(demo_image)).stdout
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


def test_one_address_for_pop3_and_pop3s_is_refused_naming_both(demo_image: Path) -> None:
    with socket.socket() as taken:  # a port nobody listens on, as the tester chose 2112
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
    for pop3, pop3s in ((f"127.0.0.1:{port}",) * 2, (f"0.0.0.0:{port}", f"127.0.0.1:{port}")):
        proc = dpfw("run", str(demo_image), "--pop3", pop3, "--pop3s", pop3s, check=False)
        assert proc.returncode == 1
        assert proc.stderr.splitlines() == [
            f"dpfw: --pop3 {pop3} and --pop3s {pop3s} are the same address; give each its own"
            " port (e.g. --pop3 127.0.0.1:1110 --pop3s 127.0.0.1:1995)"
        ], proc.stderr
    dpfw("profile", "set", str(demo_image), "pop3.port", str(port))  # POP3 from the profile
    proc = dpfw("run", str(demo_image), "--pop3s", f"127.0.0.1:{port}", check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith("dpfw: POP3 (") and (
        f"the profile's pop3.address and pop3.port) and --pop3s 127.0.0.1:{port} are the same"
        in proc.stderr
    ), proc.stderr


def test_an_ipv6_address_is_printed_in_brackets(
    demo_image: Path, start_device: type[DeviceProcess]
) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"cannot bind ::1: {exc.strerror}")
    device = start_device(demo_image, "--pop3", "[::1]:0", "--pop3s", "[::1]:0")
    device.wait_booted()
    out = device.output()
    assert re.search(r"^dpfw: POP3 on \[::1\]:\d+ ", out, re.M), out
    assert re.search(r"^dpfw: POP3S on \[::1\]:\d+ \(implicit TLS\)", out, re.M), out
    assert device.stop() == 0
