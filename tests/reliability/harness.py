"""Shared tools of the reliability campaign: a `dpfw run` process we can limit and kill, a
console terminal on its pty, POP3 clients from chosen loopback addresses, /proc probes.

Everything here drives the real product from outside: a child process on a real image file,
real sockets on 127.0.0.0/8, the real console over a real pty.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import poplib
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import serial

from firmware.config.profile import factory
from firmware.device.boards import create_board, open_board
from tests.support import DeviceProcess

REPO = Path(__file__).resolve().parents[2]
DEMO_ADMIN = "admin-lab"
DEMO_BOXES = {"alice": "alice-lab", "bob": "bob-lab"}
MIB = 1 << 20

# Log lines that are part of the design (a client misbehaving, a limit reached); anything
# else at WARNING or above during a reliability run is a finding.
DESIGNED_WARNINGS = (
    "TLS disabled: the image holds no certificate",
    "plaintext USER/PASS allowed",
    "discarded a torn tail",
    "cannot create the control socket",  # a read-only directory beside the image
    "dpfw.auth: dpfw pop3 event=",  # the key=value auth log: limits, evictions, failures
)


# Run a command in a private mount namespace where every file system is read-only except the
# image file itself (a bind mount of just that file). /proc, /dev and /sys stay as they are
# (the pty and sockets live there). unshare execs, sh execs: the PID stays the device's.
READONLY_ROOT = """
set -e
img="$1"; shift
mount --make-rprivate /
for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
  case "$m" in /proc|/proc/*|/dev|/dev/*|/sys|/sys/*) continue;; esac
  mount -o remount,bind,ro "$m"
done
mount --bind "$img" "$img"
mount -o remount,bind,rw "$img"
exec "$@"
"""


def readonly_root_available() -> bool:
    """Private mount namespaces need root (CI and the dev machines run as root)."""
    script = "mount --make-rprivate / && mount -o remount,bind,ro /"
    try:
        probe = subprocess.run(
            ["unshare", "--mount", "sh", "-c", script], capture_output=True, timeout=10
        )
    except FileNotFoundError:
        return False
    return probe.returncode == 0


class Device(DeviceProcess):
    """A `dpfw run` child on IMG, optionally with a console, rlimits, a read-only root."""

    def __init__(
        self,
        image: Path,
        *args: str,
        console: bool = False,
        limit_as: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        readonly_root: bool = False,
    ) -> None:
        prefix = ["unshare", "--mount", "sh", "-c", READONLY_ROOT, "sh", str(image)]
        super().__init__(
            image,
            *(["--console", "pty"] if console else []),
            *args,
            prefix=prefix if readonly_root else (),
            limit_as=limit_as,
            env=env,
            cwd=cwd or REPO,
        )
        self._want_console = console

    def wait_booted(self, timeout: float = 30.0) -> int:
        port = super().wait_booted(timeout)
        if self._want_console:
            assert self.console_path is not None, self.output()
        return port

    def unexpected_log_lines(self, allowed: Iterable[str] = ()) -> list[str]:
        """WARNING/ERROR/CRITICAL lines and tracebacks that are not designed ones."""
        allowed = (*DESIGNED_WARNINGS, *allowed)
        bad = []
        for line in self.lines:
            if not re.search(r" (WARNING|ERROR|CRITICAL) |Traceback", line):
                continue
            if not any(text in line for text in allowed):
                bad.append(line)
        return bad


# ----- /proc probes -----------------------------------------------------------------------


def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def rss_kib(pid: int) -> int:
    """Resident memory of the process's own making (heap, stacks): RssAnon. Pages of the image
    file mapped for direct RETR copies (RssFile) are page cache the kernel can drop at will,
    so they are no measure of a leak; VmRSS counts them too."""
    return proc_status_kib(pid, "RssAnon")


def open_fds(pid: int) -> list[str]:
    """What the process's descriptors point at (sockets, the image, the pty, pipes)."""
    base = f"/proc/{pid}/fd"
    out = []
    for name in os.listdir(base):
        try:
            out.append(os.readlink(f"{base}/{name}"))
        except FileNotFoundError:
            continue
    return sorted(out)


def written_files(pid: int) -> list[str]:
    """Regular files the process holds open for writing (from /proc/PID/fdinfo flags)."""
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
            with open(f"/proc/{pid}/fdinfo/{name}", encoding="ascii") as f:
                flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
        except (FileNotFoundError, StopIteration):
            continue
        regular = target.startswith("/") and not target.startswith(("/dev/", "/proc/"))
        if regular and flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
            out.append(target)
    return sorted(out)


# ----- images -----------------------------------------------------------------------------


def demo_image(path: Path, size: str = "32MiB") -> Path:
    subprocess.run(
        [sys.executable, "-m", "firmware", "image", "demo", str(path), "--size", size],
        check=True,
        capture_output=True,
        cwd=REPO,
        timeout=60,
    )
    return path


def add_boxes(image: Path, names: Iterable[str], messages: int = 0, size: int = 2000) -> None:
    """Boxes (password = name + '-pw') with a few messages each, through the real store API."""
    with open_board(image) as board:
        for name in names:
            board.add_box(name, f"{name}-pw")
            for i in range(messages):
                body = (f"line {i} of {name}\r\n" * (size // 20)).encode()
                board.deliver(name, b"Subject: m%d\r\n\r\n%s" % (i, body))


def new_image(path: Path, model: str = "DP-3530", size: str = "32MiB") -> Path:
    """An image of MODEL with plaintext POP3 allowed (lab setting), admin password admin-lab."""
    profile = factory(model)
    profile = profile.with_value("pop3.plaintext_auth", "always")
    profile = profile.with_value("pop3.apop", "false")
    create_board(path, profile, DEMO_ADMIN, size=_parse_size(size)).close()
    return path


def _parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)(MiB|KiB)?", text)
    assert match, text
    return int(match.group(1)) * {"MiB": MIB, "KiB": 1024, None: 1}[match.group(2)]


# ----- clients ----------------------------------------------------------------------------


class Pop3From(poplib.POP3):
    """poplib with a chosen source address (127.0.0.N), so per-client limits can be spread."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 15.0) -> None:
        self._source = source
        super().__init__("127.0.0.1", port, timeout=timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )


def login(port: int, box: str, password: str, source: str = "127.0.0.1") -> Pop3From:
    client = Pop3From(port, source)
    client.user(box)
    client.pass_(password)
    return client


def message_digest(lines: list[bytes]) -> str:
    """sha256 of a message as RETR delivered it (poplib has already removed stuffing dots)."""
    return hashlib.sha256(b"".join(line + b"\r\n" for line in lines)).hexdigest()


def raw_connect(port: int, source: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout, source_address=(source, 0))


def read_line(sock: socket.socket, limit: int = 4096) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") and len(data) < limit:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


class Console:
    """The admin console over the device's pty, driven with pyserial like a terminal."""

    def __init__(self, path: str, prompt: str = "DP-3530> ", timeout: float = 20.0) -> None:
        self.port = serial.Serial(path, 115200, timeout=timeout)
        self.prompt = prompt

    def expect(self, marker: str) -> str:
        text = self.port.read_until(marker.encode()).decode("ascii", "replace")
        if not text.endswith(marker):
            raise ConsoleTimeout(f"expected {marker!r}, got {text!r}")
        return text.replace("\r\n", "\n")

    def login(self, password: str = DEMO_ADMIN) -> None:
        self.port.write(b"\r")
        self.expect("Password: ")
        self.port.write(password.encode() + b"\r")
        self.expect(self.prompt)

    def run(self, line: str) -> str:
        self.port.write(line.encode() + b"\r")
        return self.expect(self.prompt)

    def scan(self, box: str, *options: str) -> str | None:
        """Run a scan job; the stored uid, or None if the console reported an error."""
        out = self.run(" ".join(["scan", box, *options]))
        match = re.search(r"stored in box \S+ as (\S+)", out)
        return match.group(1) if match else None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.port.close()


class ConsoleTimeout(AssertionError):
    pass


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
