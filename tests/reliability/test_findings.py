"""Defects the reliability campaign found in code it does not own, as failing tests.

Each is `xfail(strict=True)`: CI stays green while the defect is there and turns red (XPASS)
the moment it is fixed, so the marker is removed together with the fix.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.harness import REPO


@pytest.mark.xfail(
    strict=True,
    reason="firmware/device/device.py Device.run: an ImageError from Board.open at boot escapes "
    "the trio nursery as an ExceptionGroup, so `dpfw run` prints a traceback instead of one "
    "'dpfw: ...' line (firmware/cli/__init__.py catches DeviceError, not a group of them)",
)
def test_run_on_a_missing_image_is_one_clean_error_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "firmware", "run", str(tmp_path / "none.img"), "--pop3", ":0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("dpfw: "), proc.stderr
