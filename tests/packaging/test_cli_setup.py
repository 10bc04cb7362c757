"""`dpfw --version` (one source of truth) and shell completion through argcomplete."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import firmware
from tests.support import dpfw


def test_version_is_the_package_version() -> None:
    out = dpfw("--version").stdout.strip()
    assert out == f"dpfw {firmware.__version__}"
    # pyproject's version is dynamic, read from firmware.__version__: the installed metadata
    # (what pip and the wheel name show) says the same.
    assert importlib.metadata.version("dpfw") == firmware.__version__
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]


def _complete(tmp_path: Path, line: str) -> list[str]:
    """Run dpfw as the bash hook from `register-python-argcomplete dpfw` does; the candidates."""
    out = tmp_path / "candidates"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_SHELL": "bash",
        "_ARGCOMPLETE_IFS": "\n",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "COMP_TYPE": "9",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "firmware", *line.split()[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return out.read_text().split("\n")


def test_completion_offers_sub_commands(tmp_path: Path) -> None:
    assert set(_complete(tmp_path, "dpfw ")) >= {"image", "box", "profile", "run", "tls"}
    assert _complete(tmp_path, "dpfw pro") == ["profile "]
    assert set(_complete(tmp_path, "dpfw profile ")) >= {"list", "keys", "show", "set"}


def test_completion_offers_options_and_files(tmp_path: Path) -> None:
    assert set(_complete(tmp_path, "dpfw run --pop3")) == {"--pop3", "--pop3s"}
    (tmp_path / "board.img").write_bytes(b"")
    assert "board.img " in _complete(tmp_path, "dpfw image inspect bo")
