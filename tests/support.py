"""Helpers shared by every test area: real `dpfw` processes on real board images."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ADMIN_PASSWORD = "admin-test-pw"


def dpfw(
    *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `python -m firmware ARGS` to completion, as a user would from a shell."""
    proc = subprocess.run(
        [sys.executable, "-m", "firmware", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"dpfw {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def create_image(path: Path, model: str = "DP-3510", size: str = "1MiB") -> Path:
    """`dpfw image create` with the test admin password; returns `path`."""
    dpfw(
        "image",
        "create",
        str(path),
        "--profile",
        model,
        "--size",
        size,
        "--admin-password",
        ADMIN_PASSWORD,
    )
    return path


class DeviceProcess:
    """A `dpfw run` child process; knows its POP3 port once it has booted.

    `prefix` runs the command under another (e.g. `unshare`); `limit_as` caps its address
    space (RLIMIT_AS); `env` and `cwd` replace the child's environment and directory.
    """

    def __init__(
        self,
        image: Path,
        *args: str,
        prefix: Sequence[str] = (),
        limit_as: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.image = image

        def limits() -> None:
            if limit_as is not None:
                resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

        self.popen = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "firmware",
                "run",
                str(image),
                "--pop3",
                "127.0.0.1:0",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=limits if limit_as is not None else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        self.pid = self.popen.pid
        self.lines: list[str] = []
        self._booted = threading.Event()
        self.pop3_port = 0
        self.console_path: str | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))
            if match := re.search(r"^dpfw: console: (/dev/\S+)", line):
                self.console_path = match.group(1)
            if match := re.search(r"^dpfw: POP3 on \S+:(\d+)", line):
                self.pop3_port = int(match.group(1))
                self._booted.set()
        self._booted.set()

    def wait_booted(self, timeout: float = 30.0) -> int:
        if not self._booted.wait(timeout) or not self.pop3_port:
            self.kill()
            raise AssertionError("device did not boot:\n" + self.output())
        self._booted.clear()
        return self.pop3_port

    def wait_reboot(self, timeout: float = 30.0) -> int:
        """Wait for the next 'POP3 on' line (after a console reboot)."""
        self.pop3_port = 0
        return self.wait_booted(timeout)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, as an init system would; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL to the whole process group: a power cut."""
        if self.popen.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(10)

    def output(self) -> str:
        time.sleep(0.05)
        return "\n".join(self.lines)


class Fleet:
    """A `dpfw fleet up DIR` child process; its output collected; ready once it says so."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.directory = directory
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "firmware", "fleet", "up", str(directory), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("dpfw: fleet ready:"):
                self._ready.set()
        self._ready.set()

    def output(self) -> str:
        self._reader.join(10)
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 120.0) -> None:
        if not self._ready.wait(timeout) or self.popen.poll() is not None:
            self.kill()
            raise AssertionError("fleet did not start:\n" + "\n".join(self.lines[-40:]))

    def down(self) -> int:
        """`dpfw fleet down DIR`, then the exit status of `fleet up`."""
        subprocess.run(
            [sys.executable, "-m", "firmware", "fleet", "down", str(self.directory)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return self.popen.wait(60)

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
