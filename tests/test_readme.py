"""The README's first-contact commands, run as written: ./tools/emulator, then its curl lines.

The emulator runs on a fresh demo image in a temporary directory (DPFW_IMAGE) with its ports
moved to free ones (extra arguments win over the script's own), and the curl lines are taken
from README.md with only the port numbers changed, run from that directory so the relative
`.dpfw/demo-cert.pem` is the file the running device wrote.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def readme_curl_lines() -> list[str]:
    """Every `curl ...` line of the README's sh blocks, without its trailing comment."""
    text = README.read_text()
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.startswith("curl "):
                lines.append(line.split("  #")[0].strip())
    return lines


class Emulator:
    """`./tools/emulator` as a user starts it, in `cwd`, with extra `dpfw run` arguments."""

    def __init__(self, cwd: Path, *args: str) -> None:
        env = dict(os.environ, DPFW_IMAGE=str(cwd / ".dpfw" / "demo.img"))
        self.popen = subprocess.Popen(
            [str(ROOT / "tools" / "emulator"), *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 120.0) -> re.Match[str]:
        """The first output line matching `pattern` (the first run may install .venv)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.popen.poll() is not None and not self.lines[-1:]:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.wait(10)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[tuple[Emulator, int, int]]:
    """A running emulator on a fresh demo image: (emulator, POP3 port, POP3S port)."""
    emu = Emulator(
        tmp_path,
        *("--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--console", "none"),
        *("--http", "127.0.0.1:0"),  # the script's 8080 may be taken on the test machine
    )
    try:
        pop3s = int(emu.wait_for(r"^dpfw: POP3S on 127\.0\.0\.1:(\d+) ")[1])
        pop3 = int(emu.wait_for(r"^dpfw: POP3 on 127\.0\.0\.1:(\d+) ")[1])
        yield emu, pop3, pop3s
    finally:
        assert emu.stop() == 0, "\n".join(emu.lines)


def run_curl(line: str, cwd: Path, pop3: int, pop3s: int) -> subprocess.CompletedProcess[str]:
    line = line.replace(":1110/", f":{pop3}/").replace(":1995/", f":{pop3s}/")
    return subprocess.run(
        [*shlex.split(line), "--silent", "--show-error", "--max-time", "20"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_readme_shows_verifying_curl_lines() -> None:
    lines = readme_curl_lines()
    assert (
        "curl --ssl-reqd --cacert .dpfw/demo-cert.pem -u alice:alice-lab pop3://localhost:1110/"
        in lines
    )
    assert "curl --cacert .dpfw/demo-cert.pem -u alice:alice-lab pop3s://localhost:1995/" in lines


@needs_curl
def test_every_readme_curl_line_works_against_the_emulator(
    emulator: tuple[Emulator, int, int], tmp_path: Path
) -> None:
    emu, pop3, pop3s = emulator
    path = emu.wait_for(r"^dpfw: TLS certificate \(PEM, for a client's CA file\): (\S+)$")[1]
    assert Path(path) == tmp_path / ".dpfw" / "demo-cert.pem"
    assert emu.wait_for(r"^emulator: dpfw is (\S+) ")[1] == str(ROOT / ".venv" / "bin" / "dpfw")
    lines = readme_curl_lines()
    assert len(lines) >= 4
    for line in lines:
        done = run_curl(line, tmp_path, pop3, pop3s)
        assert done.returncode == 0, f"{line}: {done.stderr}"
        if line.endswith("/"):  # a LIST: "n size" per message
            assert re.match(r"1 \d+\n2 \d+\n", done.stdout), (line, done.stdout)
        else:
            assert "Subject:" in done.stdout, (line, done.stdout)


@needs_curl
def test_the_cacert_line_verifies_for_real(
    emulator: tuple[Emulator, int, int], tmp_path: Path
) -> None:
    """A certificate other than the device's fails verification: the check is not a no-op."""
    _, pop3, pop3s = emulator
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "from firmware.security.tls import make_self_signed; "
            "print(make_self_signed('localhost')[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (tmp_path / "other.pem").write_text(other)
    line = "curl --cacert other.pem -u alice:alice-lab pop3s://localhost:1995/"
    done = run_curl(line, tmp_path, pop3, pop3s)
    assert done.returncode == 60, done.stderr  # CURLE_PEER_FAILED_VERIFICATION


def test_the_readme_says_the_demo_image_has_apop_on_with_legacy_secrets(tmp_path: Path) -> None:
    text = " ".join((ROOT / "README.md").read_text().split())
    assert "the legacy login methods APOP and CRAM-MD5 on (`pop3.apop = true`" in text
    assert "with every demo box holding the legacy secret they need" in text
    image = tmp_path / "demo.img"
    subprocess.run([sys.executable, "-m", "firmware", "image", "demo", str(image)], check=True)
    shown = subprocess.run(
        [sys.executable, "-m", "firmware", "profile", "show", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "apop = true" in shown
    boxes = subprocess.run(
        [sys.executable, "-m", "firmware", "box", "list", str(image), "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = json.loads(boxes)["boxes"]
    assert {b["name"] for b in listed} == {"alice", "bob"}
    assert all(b["legacy_secret"] for b in listed)
