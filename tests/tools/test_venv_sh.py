"""tools/_venv.sh: a .venv from a wrong or missing Python is made again; an old python3 is named.

Each test runs the real script with bash in a copy of the tools directory, so the .venv it
makes or removes is a temporary one; `make_venv` is the part before `pip install`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
OLD_PYTHON = "#!/bin/sh\necho 3.9.18\n"  # answers the version query as a Python 3.9 would


def checkout(where: Path) -> Path:
    (where / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "_venv.sh", where / "tools" / "_venv.sh")
    (where / "pyproject.toml").write_text("# not installed by these tests\n")
    return where


# The user's PATH without this test run's venv: python3 is the system's, as on a fresh clone.
PATH = os.pathsep.join(
    d for d in os.environ["PATH"].split(os.pathsep) if d and Path(d) != Path(sys.prefix) / "bin"
)


def make_venv(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": PATH, "HOME": str(root)}
    return subprocess.run(
        ["bash", "-c", f"source {root}/tools/_venv.sh; make_venv"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def fake_venv(root: Path, python: str | None) -> Path:
    """A .venv with pyvenv.cfg whose bin/python is the script `python` (None: dangling link)."""
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (root / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.9.18\n")
    if python is None:
        (bin_dir / "python").symlink_to("/nonexistent/python3.9")
    else:
        (bin_dir / "python").write_text(python)
        (bin_dir / "python").chmod(0o755)
    return root / ".venv"


def venv_version(venv: Path) -> tuple[int, int]:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1])


def python3_on_path() -> str:
    found = shutil.which("python3", path=PATH)
    assert found is not None
    return found


def test_a_venv_from_an_old_python_is_made_again_then_kept(tmp_path: Path) -> None:
    root = checkout(tmp_path / "repo")
    venv = fake_venv(root, OLD_PYTHON)
    done = make_venv(root)
    assert done.returncode == 0, done.stderr
    assert (
        f"tools: {venv} cannot be used: it was made by Python 3.9.18; dpfw needs Python >= 3.11; "
        "making it again\n" in done.stderr
    )
    assert venv_version(venv) >= (3, 11)
    (venv / "kept").touch()
    again = make_venv(root)
    assert again.returncode == 0 and again.stderr == ""
    assert (venv / "kept").exists()

    moved = tmp_path / "elsewhere"
    root.rename(moved)
    done = make_venv(moved)
    assert done.returncode == 0, done.stderr
    assert f"it was made at {root}/.venv and moved here; making it again" in done.stderr
    assert not (moved / ".venv" / "kept").exists()
    head = (moved / ".venv" / "bin" / "pip").read_text().splitlines()[0]
    assert head.startswith(f"#!{moved}/.venv/bin/python")


def test_a_venv_whose_python_is_gone_is_removed_and_an_old_python3_is_named(
    tmp_path: Path,
) -> None:
    root = checkout(tmp_path / "repo")
    venv = fake_venv(root, None)
    old = tmp_path / "python3.9"
    old.write_text(OLD_PYTHON)
    old.chmod(0o755)
    done = make_venv(root, DPFW_PYTHON=str(old))
    assert done.returncode == 1
    assert f"tools: {venv} cannot be used: its Python does not run" in done.stderr
    assert (
        f"tools: dpfw needs Python >= 3.11, but '{old}' is Python 3.9.18 ({old}); install "
        "Python 3.11 or newer and put it first on PATH as python3, or set "
        "DPFW_PYTHON=/path/to/python3.11\n"
    ) in done.stderr
    assert not venv.exists()
    assert "Traceback" not in done.stderr


def test_a_directory_that_is_not_a_venv_is_left_alone(tmp_path: Path) -> None:
    root = checkout(tmp_path / "repo")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "notes.txt").write_text("mine\n")
    done = make_venv(root, DPFW_PYTHON=python3_on_path())
    assert done.returncode == 1
    assert "is not a Python venv (no pyvenv.cfg)" in done.stderr
    assert (root / ".venv" / "notes.txt").read_text() == "mine\n"


@pytest.mark.slow
def test_the_editable_install_gives_no_setuptools_warning(tmp_path: Path) -> None:
    """The first run's `pip install -e` printed setuptools' BuildBackendWarning ("Please be
    careful with folders in your working directory with the same name as your package"):
    the flat layout is declared in pyproject.toml, so the install is a plain .pth entry."""
    project = tmp_path / "project"
    shutil.copytree(
        ROOT, project, ignore=shutil.ignore_patterns(".venv", ".dpfw", "*.egg-info", ".git")
    )
    venv = tmp_path / "venv"
    subprocess.run([python3_on_path(), "-m", "venv", str(venv)], check=True, env={"PATH": PATH})
    env = {"PATH": PATH, "HOME": str(tmp_path)}
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    # As tools/_venv.sh does: a current pip shows what the build backend warns.
    subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], env=env, check=True, timeout=300)
    proc = subprocess.run(
        [*pip, "install", "--no-deps", "-e", str(project)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert "Warning" not in output and "careful" not in output, output
    imported = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import firmware, device_profiles; print(firmware.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert imported.stdout.strip() == str(project / "firmware" / "__init__.py")
