"""End to end: `dpfw run --console pty`, a pyserial terminal on the pty, real POP3 clients."""

from __future__ import annotations

import poplib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from tests.support import DeviceProcess

DEMO_ADMIN_PASSWORD = "admin-lab"  # what `dpfw image demo` sets
PROMPT = "DP-3530> "


class Terminal:
    def __init__(self, path: str) -> None:
        self.port = serial.Serial(path, 115200, timeout=15)

    def expect(self, marker: str) -> str:
        text = self.port.read_until(marker.encode()).decode("ascii")
        assert text.endswith(marker), f"expected {marker!r}, got {text!r}"
        return text.replace("\r\n", "\n")

    def login(self) -> None:
        self.port.write(b"\r")
        self.expect("Password: ")
        self.port.write(DEMO_ADMIN_PASSWORD.encode() + b"\r")
        self.expect(PROMPT)

    def run(self, line: str, until: str = PROMPT) -> str:
        self.port.write(line.encode() + b"\r")
        return self.expect(until)

    def close(self) -> None:
        self.port.close()


@pytest.fixture
def console_device(
    demo_image: Path, start_device: type[DeviceProcess]
) -> Iterator[tuple[DeviceProcess, Terminal]]:
    device = start_device(demo_image, "--console", "pty")
    device.wait_booted()
    assert device.console_path is not None, device.output()
    terminal = Terminal(device.console_path)
    try:
        terminal.login()
        yield device, terminal
    finally:
        terminal.close()


def pop3_client(port: int) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", port, timeout=15)


def third_client_refused(port: int) -> None:
    held = [pop3_client(port), pop3_client(port)]
    try:
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            pop3_client(port)
    finally:
        for client in held:
            client.quit()


def wait_second_boot(device: DeviceProcess) -> int:
    """The POP3 port of the next boot (each boot prints one 'dpfw: POP3 on' line)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ports = [
            m.group(1)
            for line in device.lines
            if line.startswith("dpfw: ") and (m := re.search(r"POP3 on \S+:(\d+)", line))
        ]
        if len(ports) >= 2:
            return int(ports[-1])
        time.sleep(0.05)
    raise AssertionError("no second boot:\n" + device.output())


def test_a_live_session_bound_an_invalid_import_and_a_reboot(
    console_device: tuple[DeviceProcess, Terminal],
) -> None:
    device, term = console_device
    out = term.run("status")
    assert re.search(r"^TLS        STLS offered; \d+ handshakes, \d+ failed$", out, re.M)
    assert re.search(r"^logins     \d+ ok, \d+ failed; \d+ evicted before login$", out, re.M)
    out = term.run("tls show")
    assert "usable:      yes\n" in out and "in service:  STLS/POP3S" in out
    out = term.run("profile set pop3.max_sessions 2")
    assert "pop3.max_sessions = 2 (saved; applied now)" in out
    third_client_refused(device.pop3_port)

    term.run("profile import", until="(Ctrl-C cancels)\r\n")
    term.port.write(b"[pop3]\r\nmax_sessions = 64\r\n# END DPFW PROFILE\r\n")
    out = term.expect(PROMPT)
    assert "error: profile import: missing key" in out and "nothing changed" in out
    assert term.run("profile get pop3.max_sessions").startswith(
        "profile get pop3.max_sessions\npop3.max_sessions = 2\n"
    )

    term.run("reboot", until="Password: ")
    port = wait_second_boot(device)
    term.login()
    assert "pop3.max_sessions = 2\n" in term.run("profile get pop3.max_sessions")
    third_client_refused(port)

    term.run("shutdown", until="shutting down ...\r\n")
    assert device.popen.wait(30) == 0


def test_first_contact_one_prompt_then_history_and_tab_over_a_real_pty(
    demo_image: Path, start_device: type[DeviceProcess]
) -> None:
    """What a picocom/miniterm user does first: Enter, log in, Tab, Up, a CLI-style --set."""
    device = start_device(demo_image, "--console", "pty")
    device.wait_booted()
    assert device.console_path is not None, device.output()
    term = Terminal(device.console_path)
    try:
        term.port.write(b"\r")  # wake the line, as everyone does
        screen = term.expect("\rPassword: ")  # the Enter's answer: the prompt redrawn in place
        assert screen.count("Password: ") <= 2 and "\n" not in screen.split("Password: ", 1)[1]
        term.port.write(DEMO_ADMIN_PASSWORD.encode() + b"\r")
        term.expect(PROMPT)

        term.port.write(b"sta\t")
        term.expect("status ")
        term.port.write(b"\r")
        assert "uptime" in term.expect(PROMPT)
        term.port.write(b"profile get pop3.max_sessions_p\t")
        term.expect("pop3.max_sessions_per_client ")
        term.port.write(b"\r")
        term.expect(PROMPT)
        term.port.write(b"staus\r")
        assert 'did you mean "status"?' in term.expect(PROMPT)
        term.port.write(b"profile set pop3.max_sessions=3\r")
        assert "pop3.max_sessions = 3" in term.expect(PROMPT)

        term.port.write(b"\x1b[A\x1b[A\x1b[A")  # Up: the set, `staus`, then the get
        term.expect("profile get pop3.max_sessions_per_client ")
        term.port.write(b"\x1bOA")  # application-cursor Up (screen, vim-style terminals)
        term.expect("status")
        term.port.write(b"\r")
        assert "uptime" in term.expect(PROMPT)
    finally:
        term.close()


def test_stdio_console_over_a_pipe(demo_image: Path) -> None:
    """`--console stdio` on a pipe: no terminal to put in raw mode, same shell."""
    command = [sys.executable, "-m", "firmware", "run", str(demo_image), "--pop3", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*command, "--console", "stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        out, _ = proc.communicate(f"{DEMO_ADMIN_PASSWORD}\rstatus\rshutdown\r".encode(), 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode("ascii")
    assert "DP-3530 admin console\r\nPassword: " in text
    assert DEMO_ADMIN_PASSWORD not in text
    assert "model      DP-3530\r\n" in text
    assert text.endswith("shutting down ...\r\nsession closed by shutdown\r\nPassword: ")
    assert proc.returncode == 0


def lab_lines(device: DeviceProcess, boots: int = 1) -> list[str]:
    """The LAB IMAGE banner lines, once `boots` of them were printed (after 'POP3 on')."""
    deadline = time.monotonic() + 30
    while True:
        lines = [line for line in device.lines if line.startswith("dpfw: LAB IMAGE: ")]
        if len(lines) >= boots or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_the_boot_banner_prints_only_lab_passwords_still_true(
    demo_image: Path, start_device: type[DeviceProcess]
) -> None:
    """Console `passwd` and `box passwd alice`, `reboot`: the banner drops both passwords;
    a second `dpfw run` of the same image still does."""
    device = start_device(demo_image, "--console", "pty")
    device.wait_booted()
    assert lab_lines(device) == [
        "dpfw: LAB IMAGE: POP3 boxes (user/password) alice/alice-lab, bob/bob-lab; "
        "console admin password admin-lab"
    ]
    assert device.console_path is not None
    term = Terminal(device.console_path)
    try:
        term.login()
        term.run("passwd", until="Current password: ")
        term.run(DEMO_ADMIN_PASSWORD, until="New password: ")
        term.run("admin-new-1", until="Again: ")
        assert "password changed" in term.run("admin-new-1")
        term.run("box passwd alice", until="New password for box alice: ")
        term.run("alice-new-1", until="Again: ")
        term.run("alice-new-1")
        term.run("reboot", until="Password: ")
        wait_second_boot(device)
    finally:
        term.close()
    expected = (
        "dpfw: LAB IMAGE: POP3 boxes (user/password) bob/bob-lab; changed since the image "
        "was made (not shown): box alice, console admin"
    )
    assert lab_lines(device, boots=2)[-1] == expected
    assert device.stop() == 0

    again = start_device(demo_image)
    again.wait_booted()
    assert lab_lines(again) == [expected]
    assert not any("alice-lab" in line or "admin-lab" in line for line in again.lines)
    assert again.stop() == 0
