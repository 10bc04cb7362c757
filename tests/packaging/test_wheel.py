"""The built wheel and sdist, as a user gets them: `python -m build`, then pip into a fresh venv.

Everything runs from a temporary directory outside the checkout, with the venv's own `dpfw`, so
nothing can be imported from the source tree: what passes here is what the wheel holds.
Dependencies come from the package index pip is configured with (no other network).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import firmware

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted(p.name for p in (ROOT / "device_profiles").glob("*.toml"))


@dataclass
class Installed:
    wheel: Path
    sdist: Path
    venv: Path
    work: Path  # a directory outside the checkout to run in

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.venv / "bin" / "dpfw"), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.work,
            env=_clean_env(),
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"dpfw {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc


def _clean_env() -> dict[str, str]:
    """The environment without anything that points Python at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _check(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_clean_env())
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    assert not base.is_relative_to(ROOT)
    dist = base / "dist"
    _check([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=base)
    (wheel,) = dist.glob("dpfw-*.whl")
    (sdist,) = dist.glob("dpfw-*.tar.gz")
    venv = base / "venv"
    # The base interpreter, not this venv's: a fresh venv as a user would make it.
    _check([sys.executable, "-m", "venv", str(venv)], cwd=base)
    _check([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], cwd=base)
    work = base / "work"
    work.mkdir()
    yield Installed(wheel, sdist, venv, work)


def test_the_wheel_is_named_for_the_version_and_holds_profiles_and_man_page(
    installed: Installed,
) -> None:
    assert installed.wheel.name == f"dpfw-{firmware.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert sorted(n.split("/")[-1] for n in names if n.startswith("device_profiles/")) == sorted(
        [*PROFILES, "__init__.py"]
    )
    assert f"dpfw-{firmware.__version__}.data/data/share/man/man1/dpfw.1" in names
    assert not any(n.startswith("tests/") for n in names)


def test_the_sdist_is_the_whole_source_release(installed: Installed) -> None:
    with tarfile.open(installed.sdist) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {f"device_profiles/{p}" for p in PROFILES} <= names
    assert {"docs/dpfw.1", "docs/packaging.md", "pyproject.toml", "tools/board"} <= names
    # every test module, not only the ones setuptools picks by default
    tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")}
    assert tests <= names, sorted(tests - names)[:5]
    assert not any("__pycache__" in name for name in names)


def test_the_installed_command_runs_from_the_venv_only(installed: Installed) -> None:
    assert installed.run("--version").stdout.strip() == f"dpfw {firmware.__version__}"
    listed = installed.run("profile", "list").stdout
    for profile in PROFILES:
        assert profile.removesuffix(".toml") in listed
    # the package imported is the installed one, not the checkout
    where = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", "import firmware; print(firmware.__file__)"],
        capture_output=True,
        text=True,
        cwd=installed.work,
        env=_clean_env(),
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.venv), where
    assert (installed.venv / "share" / "man" / "man1" / "dpfw.1").is_file()
    assert (installed.venv / "bin" / "register-python-argcomplete").is_file()


def test_the_installed_device_boots_and_serves_pop3(installed: Installed) -> None:
    image = installed.work / "demo.img"
    installed.run("image", "demo", str(image))
    proc = subprocess.Popen(
        [str(installed.venv / "bin" / "dpfw"), "run", str(image), "--pop3", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=installed.work,
        env=_clean_env(),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        port = 0
        seen: list[str] = []
        for line in proc.stdout:
            seen.append(line)
            if match := re.search(r"^dpfw: POP3 on \S+:(\d+)", line):
                port = int(match.group(1))
                break
        assert port, "".join(seen)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert sock.recv(512).startswith(b"+OK")
            sock.sendall(b"QUIT\r\n")
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, "".join(seen) + rest
        assert "board image closed cleanly" in rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
