"""`dpfw scan IMG BOX`: one job into a box of a board image, uid and size printed."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest

from firmware.cli import COMMAND_MODULES
from firmware.cli import scan as scan_cli
from firmware.config.profile import factory
from firmware.device.boards import create_board, open_board
from firmware.errors import DeviceError

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
