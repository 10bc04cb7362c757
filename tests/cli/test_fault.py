"""`dpfw fault add|list|clear IMG`: faults set on a running device from the command line,
through its control socket, and met by a real client (poplib)."""

from __future__ import annotations

import json
import poplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.device.demo import BOXES, create_demo
from tests.http.conftest import Lab, start_lab
from tests.support import DeviceProcess, dpfw


@pytest.fixture
def lab(demo_image: Path, start_device: type[DeviceProcess]) -> Iterator[Lab]:
    yield from start_lab(start_device, demo_image)


def _wait_line(device: DeviceProcess, text: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(text in line for line in device.lines):
            return
        time.sleep(0.02)
    raise AssertionError(f"no line with {text!r}:\n{device.output()}")


def test_fault_add_list_clear_through_the_running_device(lab: Lab) -> None:
    _wait_line(lab.device, "control socket")
    image = str(lab.image)
    added = dpfw("fault", "add", image, "reply-error", "command=STAT", "code=SYS/TEMP", "--json")
    fault_id = json.loads(added.stdout)["id"]

    pop = poplib.POP3("127.0.0.1", lab.pop3_port, timeout=10)
    pop.user("alice")
    pop.pass_(BOXES["alice"])
    with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
        pop.stat()
    pop.quit()

    listed = json.loads(dpfw("fault", "list", image, "--json").stdout)
    assert [(f["id"], f["action"], f["fired"]) for f in listed["faults"]] == [
        (fault_id, "reply-error", 1)
    ]
    assert f"{fault_id:>4} reply-error" in dpfw("fault", "list", image).stdout
    assert dpfw("fault", "clear", image, str(fault_id)).stdout == f"cleared 1 fault: {fault_id}\n"
    assert dpfw("fault", "list", image).stdout == "no faults set\n"

    pop = poplib.POP3("127.0.0.1", lab.pop3_port, timeout=10)
    pop.user("alice")
    pop.pass_(BOXES["alice"])
    assert pop.stat()[0] >= 1  # cleared: the real answer again
    pop.quit()


def test_fault_mistakes_and_a_stopped_device_are_one_line(lab: Lab, tmp_path: Path) -> None:
    _wait_line(lab.device, "control socket")
    bad = dpfw("fault", "add", str(lab.image), "retr-break", "after_percent=lots", check=False)
    assert bad.returncode == 1
    assert bad.stderr == (
        "dpfw: fault add retr-break: after_percent must be a number, not 'lots'\n"
    )
    unknown = dpfw("fault", "clear", str(lab.image), "99", check=False)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1
    # The command line's words, not the API's: the listing is `dpfw fault list IMG`.
    assert unknown.stderr == f"dpfw: no fault 99 (see `dpfw fault list {lab.image}`)\n"
    # An unknown action is the spec parser's one line naming the actions, not a usage block.
    boom = dpfw("fault", "add", str(lab.image), "boom", check=False)
    assert boom.returncode == 1
    assert boom.stderr.startswith("dpfw: fault add: unknown action 'boom' (one of retr-break,")
    assert boom.stderr.count("\n") == 1
    # A box name no URL path segment can carry is refused in one line, not "no route".
    slash = dpfw("box", "del", str(lab.image), "x/y", check=False)
    assert slash.returncode == 1 and slash.stderr.count("\n") == 1
    assert "cannot be addressed through the running device's API" in slash.stderr

    idle = tmp_path / "idle.img"
    create_demo(idle).close()
    offline = dpfw("fault", "list", str(idle), check=False)
    assert offline.returncode == 1
    assert offline.stderr.startswith(f"dpfw: fault list: no device is running {idle}")
    assert offline.stderr.count("\n") == 1
