"""The host's file system under the image fills up (issue 17).

The image is NOT preallocated: `image create` sizes it with ftruncate (a sparse file), and
compaction punches holes into freed space (Image.erase). So a write into a part of the image
that was never written, or was erased, needs a new block from the host, and a full host file
system fails it with ENOSPC. The device must say so and store nothing partial:

- a delivery over the API: 507 with `storage full: the file system holding IMG is full`;
- a scan from the console: the job fails with the same line, the device goes on;
- acknowledged messages stay intact, fsck is clean, and once the host has room again the
  same running device stores again (no restart).

A private tmpfs of 12 MiB holds an 8 MiB image and a filler file that takes the rest.
Needs root (mount); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from firmware.device.boards import open_board
from tests.http.conftest import wait_http
from tests.reliability.harness import Console, new_image
from tests.support import DeviceProcess, dpfw

ADMIN = ("admin", "admin-lab")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write to `path` until the file system is full (64 KiB writes, then 512-byte ones)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 512):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\1" * size)
    finally:
        os.close(fd)


def mail(n: int) -> bytes:
    body = b"".join(b"host-full line %d of %d\r\n" % (i, n) for i in range(400))
    return b"Subject: full %d\r\n\r\n" % n + body


def test_a_full_host_file_system_is_storage_full_and_nothing_partial(small_fs: Path) -> None:
    image = new_image(small_fs / "dev.img", size="8MiB")
    dpfw("box", "add", str(image), "alice", "--password", "alice-pw")
    filler = small_fs / "filler"
    fill(filler)
    with pytest.raises(OSError) as full:
        (small_fs / "probe").write_bytes(b"x" * 8192)
    assert full.value.errno == errno.ENOSPC
    device = DeviceProcess(image, "--http", "127.0.0.1:0", "--console", "pty")
    acked: dict[str, bytes] = {}
    try:
        device.wait_booted()
        base = wait_http(device)
        assert device.console_path is not None
        refused = []
        with httpx.Client(base_url=base, auth=ADMIN, timeout=30) as api:
            for n in range(40):
                got = api.post(
                    "/api/v1/boxes/alice/messages",
                    content=mail(n),
                    headers={"Content-Type": "message/rfc822"},
                )
                if got.status_code == 201:
                    acked[got.json()["uid"]] = mail(n)
                else:
                    refused.append(got)
                    break
            assert refused, "the host file system never filled up"
            answer = refused[0]
            assert answer.status_code == 507, answer.text
            assert "storage full: the file system holding" in answer.json()["message"]
            console = Console(device.console_path)
            try:
                console.login("admin-lab")
                out = console.run("scan alice pages=2 dpi=200x200")
                assert "storage full" in out, out
            finally:
                console.close()
            filler.unlink()  # the host has room again: the same device stores again
            got = api.post(
                "/api/v1/boxes/alice/messages",
                content=mail(99),
                headers={"Content-Type": "message/rfc822"},
            )
            assert got.status_code == 201, got.text
            acked[got.json()["uid"]] = mail(99)
        assert device.stop() == 0, device.output()
    finally:
        device.kill()
    out = device.output()
    assert "Traceback" not in out, out
    board = open_board(image, repair=False)
    try:
        report = board.fsck()
        assert report.clean, report.problems
        have = {m.uid: b"".join(board.read_wire("alice", m.uid)) for m in board.messages("alice")}
    finally:
        board.close()
    assert have == acked  # every acknowledged message, and nothing else (no half-stored one)
    print(f"{len(acked) - 1} stored before the host filled up; 507 and a refused scan after")
