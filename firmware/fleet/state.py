"""What a fleet directory says about its fleet: the pid file, the state file, `fleet status`.

    DIR/fleet.toml        the manifest (`fleet up --count ...` writes it)
    DIR/fleet.pid         the running fleet's process id; removed when it stops
    DIR/fleet.json        the devices as last started: names, serials, addresses, console
                          ptys, the manifest's path; `ready` once every device serves
    DIR/devices/NAME/board.img

`fleet status` reads the state file; while the fleet runs it asks each device's POP3 port
for its greeting, and when it does not, it opens each image read-only to count its boxes
and messages. `fleet down` sends SIGTERM to the pid and waits for the process to end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firmware.device.boards import open_board
from firmware.errors import DeviceError
from firmware.fleet.plan import DevicePlan
from firmware.text import file_problem, host_port

MANIFEST = "fleet.toml"
PID_FILE = "fleet.pid"
STATE_FILE = "fleet.json"


@dataclass(frozen=True)
class DeviceStatus:
    """One device as `fleet status` sees it. `state`: "serving" (its POP3 port greets),
    "not answering" (the fleet runs but the port does not greet), "stopped" (image present,
    no fleet running), "no image" (not created yet), or "in use" (locked by another process)."""

    name: str
    serial: str
    model: str
    hostname: str
    image: str
    pop3: str
    pop3s: str | None
    http: str | None
    console: str | None
    state: str
    faults: str | None = None  # the fault scenario file the manifest names, if any
    greeting: str | None = None
    boxes: int | None = None
    messages: int | None = None


@dataclass(frozen=True)
class FleetStatus:
    directory: str
    running: bool
    pid: int | None
    ready: bool
    manifest: str | None
    devices: list[DeviceStatus] = field(default_factory=list)


def device_record(plan: DevicePlan, console: str | None = None) -> dict[str, Any]:
    """A device's entry in the state file (plain JSON)."""
    return {
        "name": plan.name,
        "index": plan.index,
        "serial": plan.serial,
        "model": plan.model,
        "hostname": plan.hostname,
        "image": str(plan.image),
        "pop3": host_port(*plan.pop3),
        "pop3s": host_port(*plan.pop3s) if plan.pop3s else None,
        "http": host_port(*plan.http) if plan.http else None,
        "console": console,
        "faults": plan.faults,  # as the manifest names it (relative to the manifest)
        "scan_feed_per_min": plan.scan_feed_per_min,
    }


def write_state(fleet_dir: Path, state: dict[str, Any]) -> None:
    """Replace DIR/fleet.json atomically."""
    path = fleet_dir / STATE_FILE
    partial = path.with_name(path.name + ".tmp")
    try:
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.replace(path)
    except OSError as exc:
        raise DeviceError(file_problem(path, exc, "write")) from None


def read_state(fleet_dir: Path) -> dict[str, Any] | None:
    """DIR/fleet.json, or None if the fleet never started (or the file is unreadable)."""
    try:
        data = json.loads((fleet_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def running_pid(fleet_dir: Path) -> int | None:
    """The pid in DIR/fleet.pid if that process is alive, else None."""
    try:
        pid = int((fleet_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    """True while process `pid` exists and is not a zombie (an exited child not yet reaped
    by its parent, e.g. a test's `fleet up` subprocess, is gone for our purposes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill()
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def claim(fleet_dir: Path) -> None:
    """Write our pid to DIR/fleet.pid; DeviceError if a fleet already runs from DIR."""
    other = running_pid(fleet_dir)
    if other is not None and other != os.getpid():
        raise DeviceError(f"{fleet_dir}: a fleet already runs from here (pid {other})")
    path = fleet_dir / PID_FILE
    try:
        path.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        raise DeviceError(file_problem(path, exc, "write")) from None


def release(fleet_dir: Path) -> None:
    """Remove DIR/fleet.pid if it names this process."""
    path = fleet_dir / PID_FILE
    try:
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def greeting(address: str, timeout: float = 2.0) -> str | None:
    """The POP3 greeting line at HOST:PORT, or None if nothing greets within `timeout`."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = b""
            while b"\r\n" not in data and len(data) < 1024:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                data += chunk
            with_quit = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
            sock.sendall(b"QUIT\r\n")
            return with_quit or None
    except (OSError, ValueError):
        return None


def fleet_status(fleet_dir: Path) -> FleetStatus:
    """The fleet in DIR: running or not, and each device. DeviceError if DIR holds no fleet."""
    state = read_state(fleet_dir)
    if state is None:
        raise DeviceError(f"{fleet_dir}: no fleet has started here ({STATE_FILE} missing)")
    pid = running_pid(fleet_dir)
    devices = []
    records: Sequence[dict[str, Any]] = state.get("devices", [])
    for record in records:
        base: dict[str, Any] = {
            k: record.get(k) for k in ("name", "serial", "model", "hostname", "image")
        }
        base.update({k: record.get(k) for k in ("pop3", "pop3s", "http", "faults")})
        console = record.get("console") if pid is not None else None
        if pid is not None:
            line = greeting(str(record["pop3"]))
            devices.append(
                DeviceStatus(
                    **base,
                    console=console,
                    state="serving" if line and line.startswith("+OK") else "not answering",
                    greeting=line,
                )
            )
            continue
        devices.append(_offline(fleet_dir, base))
    return FleetStatus(
        directory=str(fleet_dir),
        running=pid is not None,
        pid=pid,
        ready=bool(state.get("ready")) and pid is not None,
        manifest=state.get("manifest"),
        devices=devices,
    )


def _offline(fleet_dir: Path, base: dict[str, Any]) -> DeviceStatus:
    path = fleet_dir / str(base["image"])
    if not path.exists():
        return DeviceStatus(**base, console=None, state="no image")
    try:
        with open_board(path, repair=False) as board:
            infos = board.boxes()
    except DeviceError as exc:
        state = "in use" if "in use" in str(exc) else f"unreadable: {exc}"
        return DeviceStatus(**base, console=None, state=state)
    return DeviceStatus(
        **base,
        console=None,
        state="stopped",
        boxes=len(infos),
        messages=sum(info.messages for info in infos),
    )


def stop(fleet_dir: Path, timeout: float) -> int | None:
    """SIGTERM the running fleet and wait up to `timeout` s for it to end; its pid, or None
    if none was running. DeviceError if it is still running after `timeout`."""
    pid = running_pid(fleet_dir)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return pid
        time.sleep(0.05)
    raise DeviceError(f"{fleet_dir}: the fleet (pid {pid}) is still running after {timeout:.0f} s")


def as_json(status: FleetStatus) -> dict[str, Any]:
    return asdict(status)
