"""`dpfw` commands on an image a running device holds: through its control socket IMG.ctl.

A real `dpfw run --http` on a demo image; the commands run as subprocesses, as a user
would type them, and their effect is read back through POP3 (poplib) and the HTTP API.
"""

from __future__ import annotations

import json
import os
import poplib
import re
import socket
import stat
import time
from pathlib import Path
from typing import cast

import httpx

from firmware.device.demo import BOXES
from tests.http.conftest import Lab, start_lab
from tests.support import DeviceProcess, dpfw

API = "/api/v1"


def _ctl(image: Path) -> Path:
    return image.with_name(image.name + ".ctl")


def _pop(lab: Lab, box: str, password: str) -> poplib.POP3:
    pop = poplib.POP3("127.0.0.1", lab.pop3_port, timeout=10)
    pop.user(box)
    pop.pass_(password)
    return pop


def _wait_line(device: DeviceProcess, text: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(text in line for line in device.lines):
            return
        time.sleep(0.02)
    raise AssertionError(f"no line with {text!r}:\n{device.output()}")


def test_the_control_socket_is_0600_and_removed_at_shutdown(lab: Lab) -> None:
    _wait_line(lab.device, "control socket")
    mode = os.lstat(_ctl(lab.image)).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert lab.device.stop() == 0
    assert not _ctl(lab.image).exists()


def test_deliver_goes_through_the_running_device_and_pop3_serves_it(
    lab: Lab, tmp_path: Path
) -> None:
    _wait_line(lab.device, "control socket")
    message = b"From: cli@example.test\r\nSubject: through the socket\r\n\r\nhello\r\n"
    (tmp_path / "m.eml").write_bytes(message)
    pop = _pop(lab, "alice", BOXES["alice"])
    before = pop.stat()[0]
    pop.quit()
    out = dpfw("deliver", str(lab.image), "alice", str(tmp_path / "m.eml"))
    uid, size, name = out.stdout.split()
    assert name == str(tmp_path / "m.eml") and int(size) == len(message)
    pop = _pop(lab, "alice", BOXES["alice"])
    count = pop.stat()[0]
    assert count == before + 1
    assert pop.uidl(count).split()[-1].decode() == uid
    assert b"\r\n".join(pop.retr(count)[1]) + b"\r\n" == message
    pop.quit()
    listing = lab.api.get(f"{API}/boxes/alice/messages").json()["messages"]
    assert listing[-1]["uid"] == uid and listing[-1]["subject"] == "through the socket"

    refused = dpfw("deliver", str(lab.image), "nobody", str(tmp_path / "m.eml"), check=False)
    assert refused.returncode == 1
    assert refused.stderr == "dpfw: no box named 'nobody' (see `box list`)\n"


def test_box_commands_change_the_running_device(lab: Lab) -> None:
    _wait_line(lab.device, "control socket")
    image = str(lab.image)
    added = dpfw("box", "add", image, "carol", "--password-stdin", stdin="Carol-pass-123\n")
    assert added.stdout.startswith("box carol added")
    pop = _pop(lab, "carol", "Carol-pass-123")  # POP3 knows the box at once
    assert pop.stat()[0] == 0
    pop.quit()
    again = dpfw("box", "add", image, "carol", "--password", "x", check=False)
    assert again.returncode == 1 and again.stderr.startswith("dpfw: box add: a box named")
    dpfw("box", "passwd", image, "carol", "--password", "Carol-new-456")
    _pop(lab, "carol", "Carol-new-456").quit()

    text = dpfw("box", "list", image).stdout
    listed = json.loads(dpfw("box", "list", image, "--json").stdout)
    assert listed == lab.api.get(f"{API}/boxes").json()
    for box in listed["boxes"]:  # the text shows the same facts
        assert re.search(rf"^{box['name']}\s+{box['messages']}\s", text, re.M), text

    shown = json.loads(dpfw("box", "show", image, "alice", "--json").stdout)
    assert shown == lab.api.get(f"{API}/boxes/alice").json()
    messages = json.loads(dpfw("box", "messages", image, "alice", "--json").stdout)
    assert [m["uid"] for m in messages["messages"]] == [
        m["uid"] for m in lab.api.get(f"{API}/boxes/alice/messages").json()["messages"]
    ]

    assert dpfw("box", "del", image, "carol").stdout.startswith("box carol deleted")
    assert lab.api.get(f"{API}/boxes/carol").status_code == 404
    missing = dpfw("box", "show", image, "carol", check=False)
    assert missing.returncode == 1
    assert missing.stderr == "dpfw: no box named 'carol' (see `box list`)\n"


def test_profile_commands_reach_the_running_profile(lab: Lab) -> None:
    _wait_line(lab.device, "control socket")
    image = str(lab.image)
    out = dpfw("profile", "set", image, "pop3.max_sessions", "20").stdout
    assert out == "pop3.max_sessions = 20 (saved; applied now)\n"
    keys = {k["key"]: k for k in lab.api.get(f"{API}/profile").json()["keys"]}
    assert keys["pop3.max_sessions"]["running"] == 20
    shown = json.loads(dpfw("profile", "show", image, "--json").stdout)
    assert {k["key"]: k["saved"] for k in shown["keys"]}["pop3.max_sessions"] == 20
    assert "max_sessions = 20\n" in dpfw("profile", "show", image).stdout
    bad = dpfw("profile", "set", image, "pop3.max_sessions", "many", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("dpfw: profile set: pop3.max_sessions")
    two = dpfw("profile", "set", image, "scan.formats", "pdf,tiff", "pop3.max_sessions", "10")
    assert two.stdout.startswith("profile set: 2 values changed and saved\n"), two.stdout
    assert "scan.formats: tiff, pdf, jpeg -> pdf, tiff (applies after reboot" in two.stdout
    model = dpfw("profile", "set", image, "identity.model", "DP-4520", check=False)
    assert model.stderr.startswith("dpfw: profile set: identity.model cannot be set alone")

    dry = dpfw("profile", "apply", image, "DP-4520", "--dry-run").stdout
    assert "identity.model: DP-3530 -> DP-4520 (after reboot)" in dry
    assert dry.endswith("nothing changed (--dry-run)\n")
    assert lab.api.get(f"{API}/status").json()["next_model"] == "DP-3530"
    dpfw("profile", "apply", image, "DP-4520")
    assert lab.api.get(f"{API}/status").json()["next_model"] == "DP-4520"
    dpfw("profile", "reset", image)
    keys = {k["key"]: k for k in lab.api.get(f"{API}/profile").json()["keys"]}
    assert keys["pop3.max_sessions"]["saved"] == 12  # DP-4520's factory value


def test_scan_status_sessions_and_inspect_through_the_device(lab: Lab) -> None:
    _wait_line(lab.device, "control socket")
    image = str(lab.image)
    out = dpfw("scan", image, "bob", "--pages", "2", "--format", "pdf").stdout
    match = re.match(r"stored job (\d{4}) in bob: uid (\S+) size (\d+) \(2 pages, \S+\.pdf\)", out)
    assert match, out
    pop = _pop(lab, "bob", BOXES["bob"])
    count, _ = pop.stat()
    assert pop.uidl(count).split()[-1].decode() == match.group(2)
    listed = cast(bytes, pop.list(count))  # one message: the +OK line (typeshed says tuple)
    assert int(listed.split()[-1]) == int(match.group(3))

    sessions = json.loads(dpfw("session", "list", image, "--json").stdout)  # bob is open
    assert [s["box"] for s in sessions["sessions"]] == ["bob"]
    text = dpfw("session", "list", image).stdout
    assert str(sessions["sessions"][0]["id"]) in text and "bob" in text
    pop.quit()

    status = json.loads(dpfw("status", image, "--json").stdout)
    assert status["running"] is True and status["model"] == "DP-3530"
    assert status["scans_done"] == 1
    assert "scans      1 done" in dpfw("status", image).stdout

    inspected = json.loads(dpfw("image", "inspect", image, "--json").stdout)
    assert inspected == lab.api.get(f"{API}/image").json()
    bob = next(b for b in inspected["boxes"] if b["name"] == "bob")
    assert bob["messages"] == count and inspected["problems"] == []
    text = dpfw("image", "inspect", image).stdout
    assert f"bob: {count} messages" in text and "no corrupt or torn records" in text


def test_a_stale_socket_from_a_killed_device_does_not_block_the_next_boot(
    demo_image: Path, start_device: type[DeviceProcess]
) -> None:
    first = next(start_lab(start_device, demo_image))
    _wait_line(first.device, "control socket")
    first.device.kill()  # SIGKILL: nothing is cleaned up
    assert stat.S_ISSOCK(os.lstat(_ctl(demo_image)).st_mode)
    # Nothing holds the image: commands open it themselves, the stale socket is ignored.
    assert "alice" in dpfw("box", "list", str(demo_image)).stdout
    labs = start_lab(start_device, demo_image)  # held: closing it closes the client
    second = next(labs)
    _wait_line(second.device, "control socket")
    assert "replaced a stale one" in second.device.output()
    assert "carol" not in dpfw("box", "list", str(demo_image)).stdout
    dpfw("box", "add", str(demo_image), "carol", "--password", "Carol-pass-123")
    assert second.api.get(f"{API}/boxes/carol").status_code == 200
    assert second.device.stop() == 0 and not _ctl(demo_image).exists()


def test_a_socket_that_does_not_answer_is_one_line(
    demo_image: Path, start_device: type[DeviceProcess]
) -> None:
    """The image is locked by a device, but IMG.ctl is a socket nobody listens on (replaced
    behind the device's back): one `dpfw:` line naming the socket, not a traceback."""
    lab = next(start_lab(start_device, demo_image))
    _wait_line(lab.device, "control socket")
    _ctl(demo_image).unlink()
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(_ctl(demo_image)))
    dead.close()  # a socket file with no listener: ECONNREFUSED
    got = dpfw("box", "list", str(demo_image), check=False)
    assert got.returncode == 1 and got.stderr.count("\n") == 1, got.stderr
    assert "control socket" in got.stderr and "does not answer" in got.stderr


def test_the_api_on_the_control_socket_needs_no_password(lab: Lab) -> None:
    _wait_line(lab.device, "control socket")
    transport = httpx.HTTPTransport(uds=str(_ctl(lab.image)))
    with httpx.Client(transport=transport, base_url="http://device", timeout=10) as ctl:
        assert ctl.get(f"{API}/status").json()["model"] == "DP-3530"
    assert httpx.get(f"{lab.base}{API}/status", timeout=10).status_code == 401  # TCP still asks
