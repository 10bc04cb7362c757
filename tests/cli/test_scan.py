"""`dpfw scan IMG BOX`: one job into a box of a board image, uid and size printed."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest

from firmware.cli import COMMAND_MODULES
from firmware.cli import scan as scan_cli
from firmware.config.profile import factory
from firmware.device.boards import create_board, open_board
from firmware.errors import DeviceError
from firmware.scanner.job import ENGINE_ENV
from tests.scanner.conftest import ENGINES, children_of
from tests.support import DeviceProcess, dpfw

STORED = re.compile(r"stored job (\d{4}) in (\S+): uid (\S+) size (\d+) \((\d+) pages?, (.+)\)")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "board.img"
    with create_board(path, factory("DP-3530"), "admin-pw", size=8 << 20) as board:
        board.add_box("alice", "alice-pw")
    return path


def dpfw_scan(*argv: str) -> tuple[int, str, str]:
    """Run `dpfw scan ...` in-process through the sub-command's own parser and handler."""
    parser = argparse.ArgumentParser(prog="dpfw")
    scan_cli.register(parser.add_subparsers())
    args = parser.parse_args(["scan", *argv])
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = args.func(args)
        except DeviceError as exc:  # what firmware.cli.main does
            print(f"dpfw: {exc}", file=sys.stderr)
            code = 1
    return code, out.getvalue(), err.getvalue()


def test_scan_prints_uid_and_size_of_the_stored_message(image: Path) -> None:
    code, out, _ = dpfw_scan(str(image), "alice", "--pages", "2", "--dpi", "200x100", "--job", "42")
    assert code == 0
    match = STORED.fullmatch(out.strip())
    assert match, out
    job, box, uid, size, pages, files = match.groups()
    assert (job, box, pages) == ("0042", "alice", "2")
    assert re.fullmatch(r"scan_\d{8}_\d{6}_0042\.tif", files)
    with open_board(image) as board:
        (info,) = board.messages("alice")
    assert (info.uid, info.size) == (uid, int(size))


def test_defaults_come_from_the_profile(image: Path) -> None:
    code, out, _ = dpfw_scan(str(image), "alice", "--mode", "gray")
    assert code == 0
    assert out.strip().endswith(".pdf)")  # gray defaults to PDF
    assert "(1 page," in out


def test_jpeg_job_reports_its_files(image: Path) -> None:
    code, out, _ = dpfw_scan(
        str(image),
        "alice",
        "--pages",
        "3",
        "--dpi",
        "200x100",
        "--mode",
        "color",
        "--format",
        "jpeg",
    )
    assert code == 0 and "(3 pages, 3 files)" in out


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["nobody"], "no box named 'nobody'"),
        (["alice", "--pages", "201"], "at most 200 pages per job"),
        (["alice", "--format", "jpeg"], "jpeg cannot carry mono"),
        (["alice", "--job", "10000"], "--job 10000 is not allowed"),
    ],
)
def test_refusals_are_clear_and_store_nothing(image: Path, argv: list[str], why: str) -> None:
    code, out, err = dpfw_scan(str(image), *argv)
    assert code == 1 and out == ""
    assert why in err
    with open_board(image) as board:
        assert board.messages("alice") == []


@pytest.mark.skipif("scan" not in COMMAND_MODULES, reason="`scan` not yet in COMMAND_MODULES")
def test_python_dash_m_firmware_scan(image: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "firmware", "scan", str(image), "alice", "--dpi", "200x100"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert STORED.fullmatch(proc.stdout.strip())


# A running device: `dpfw scan` goes through its control socket, and the device runs the job
# in a scan engine (docs/scanner.md). What outlives a job is looked for in /proc.


def _wait(what: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.02)


RunDevice = Callable[..., DeviceProcess]


@pytest.fixture
def run_device(image: Path) -> Iterator[RunDevice]:
    """`run_device(engine=None)`: `dpfw run IMG`, with a misbehaving engine (ENGINES's MODE)
    if asked; killed at the end of the test if it still runs."""
    started: list[DeviceProcess] = []

    def run(engine: str | None = None) -> DeviceProcess:
        env = dict(os.environ)
        if engine is not None:
            env[ENGINE_ENV] = f"{sys.executable} {ENGINES} {engine}"
        device = DeviceProcess(image, env=env)
        started.append(device)
        device.wait_booted()
        _wait("control socket", lambda: image.with_name(image.name + ".ctl").exists())
        return device

    yield run
    for device in started:
        device.kill()


def test_a_running_device_scans_in_an_engine_that_does_not_outlive_the_job(
    image: Path, run_device: RunDevice
) -> None:
    device = run_device()
    done = dpfw("scan", str(image), "alice", "--pages", "2", "--dpi", "200x100")
    assert STORED.fullmatch(done.stdout.strip()), done.stdout
    assert children_of(device.pid) == {}
    assert device.stop() == 0
    with open_board(image) as board:
        assert len(board.messages("alice")) == 1


def test_an_engine_that_dies_is_one_dpfw_line(image: Path, run_device: RunDevice) -> None:
    device = run_device(engine="die")
    got = dpfw("scan", str(image), "alice", "--dpi", "200x100", "--pages", "2", check=False)
    assert (got.returncode, got.stdout) == (1, "")
    assert got.stderr == (
        "dpfw: scan job 0001 failed: the scan engine was killed by SIGKILL; nothing was stored\n"
    )
    assert children_of(device.pid) == {}
    assert device.stop() == 0
    with open_board(image) as board:
        assert board.messages("alice") == []


def test_device_shutdown_kills_a_stuck_engine(image: Path, run_device: RunDevice) -> None:
    device = run_device(engine="hang")
    scan = subprocess.Popen(
        [sys.executable, "-m", "firmware", "scan", str(image), "alice", "--pages", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait("engine", lambda: bool(children_of(device.pid)))
        (engine,) = children_of(device.pid)
        assert device.stop() == 0  # SIGTERM, as an init system would
        assert not Path(f"/proc/{engine}").exists()  # killed and reaped by the device
        out, err = scan.communicate(timeout=30)
    finally:
        scan.kill()
        scan.communicate(timeout=30)
    # The job's own line if the CLI asked before the device went, else that it went; never
    # "held by a running device, but its control socket does not answer" (a user's trial).
    assert (scan.returncode, out) == (1, ""), err
    assert err in (
        "dpfw: scan job 0001 stopped: the device shut down before the job was done (5 s grace); "
        "nothing was stored\n",
        f"dpfw: the device running {image} stopped before it answered (shut down, rebooted or "
        f"killed; No such file or directory); whether the scan was stored: dpfw box messages "
        f"{image} alice\n",
    ), err
    with open_board(image) as board:
        assert board.messages("alice") == []


def test_an_engine_ends_when_its_device_is_killed(image: Path, run_device: RunDevice) -> None:
    """SIGKILL (the host's OOM killer, `kill -9`) leaves the device no chance to kill its
    engine; the engine notices at its next page (EOF or a broken pipe) and ends too."""
    device = run_device()
    scan = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware",
            "scan",
            str(image),
            "alice",
            "--pages",
            "20",
            "--dpi",
            "600",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait("engine", lambda: bool(children_of(device.pid)))
        (engine,) = children_of(device.pid)
        device.kill()
        # Orphaned, it is reaped by init (or left a zombie where init does not reap).
        _wait("engine's end", lambda: _state(engine) in ("gone", "Z"))
    finally:
        scan.kill()
        scan.communicate(timeout=30)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
