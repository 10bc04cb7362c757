"""fetchmail and mpop (the OS's binaries) meet faults: a body cut mid-RETR, a power cut
right after QUIT's +OK. CI installs both; a test is skipped only where one is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from tests.faults.conftest import PASSWORDS, Lab, wait_booted


def need(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


async def mpop(lab: Lab, tmp_path: Path, keep: bool) -> subprocess.CompletedProcess[bytes]:
    binary = need("mpop")
    rc = tmp_path / "mpoprc"
    rc.write_text("")
    rc.chmod(0o600)
    return await trio.run_process(
        [
            binary,
            "-C",
            str(rc),
            "--host=127.0.0.1",
            f"--port={lab.port}",
            "--user=alice",
            f"--passwordeval=echo '{PASSWORDS['alice']}'",
            "--tls=off",
            "--auth=user",
            f"--delivery=mbox,{tmp_path / 'mpop.mbox'}",
            f"--keep={'on' if keep else 'off'}",
            "--only-new=off",
            f"--uidls-file={tmp_path / 'uidls'}",
        ],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def fetchmail(lab: Lab, tmp_path: Path, keep: bool) -> subprocess.CompletedProcess[bytes]:
    binary = need("fetchmail")
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 with proto POP3 port {lab.port}\n"
        f'  user "alice" there with password "{PASSWORDS["alice"]}" is "tester" here\n'
        f'  options {"keep" if keep else "no keep"} fetchall sslproto ""\n'
        f'  mda "cat >> {tmp_path / "fetched"}"\n'
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    return await trio.run_process(
        [binary, "-f", str(rc), "--nosyslog", "-N", "-d0", "--pidfile", str(tmp_path / "pid")],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_mpop_meets_a_broken_retr_and_deletes_nothing(lab: Lab, tmp_path: Path) -> None:
    fault = lab.fault(action="retr-break", box="alice", command="RETR", after_percent=30, times=1)
    broken = await mpop(lab, tmp_path, keep=False)
    assert broken.returncode != 0  # mpop says the server closed the connection
    assert lab.fired(fault.id) == 1
    assert len(await trio.to_thread.run_sync(lab.uidl)) == 3  # no QUIT: nothing deleted
    await trio.to_thread.run_sync(lab.serves_others)
    (tmp_path / "mpop.mbox").unlink(missing_ok=True)
    done = await mpop(lab, tmp_path, keep=False)
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "mpop.mbox").read_bytes().count(b"Subject:") >= 3
    assert await trio.to_thread.run_sync(lab.uidl) == []


async def test_fetchmail_then_a_power_cut_after_quit_ok(lab: Lab, tmp_path: Path) -> None:
    lab.fault(action="power-cut", at="after-quit-ok", box="alice", times=1)
    done = await fetchmail(lab, tmp_path, keep=False)
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    assert (tmp_path / "fetched").read_bytes().count(b"Subject:") >= 3
    await wait_booted(lab.device, boots=2)
    # QUIT's +OK was acknowledged before the cut: its deletions survived the crash.
    assert await trio.to_thread.run_sync(lab.uidl) == []
    await trio.to_thread.run_sync(lab.serves_others)
