"""The device on a target-like board: an address-space limit the size of the profile's RAM,
and a read-only install in which only the board image is writable.

Profile: DP-3530 (128 MiB image RAM). The Python interpreter with trio, construct, Pillow and
cryptography loaded already maps about 67 MiB of address space (VmSize after boot), so the
32/48/64 MiB models cannot hold the interpreter at all; 128 MiB leaves the device about 60 MiB
for sessions and scan jobs, which is the honest analogue of a small board.

Read-only install: as root, file modes do not stop writes, so the device runs in a private
mount namespace where every file system is remounted read-only and only the image file is
bind-mounted read-write (see `READONLY_ROOT`). Any write elsewhere (a byte-code cache, a temp
file, a lock file beside the image) would fail there with EROFS, which the test would see as
an error in the device's log or a failed operation. /proc/PID/fdinfo shows in addition that
the only regular file it holds open for writing is the image.
"""

from __future__ import annotations

import os
import poplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.device.boards import open_board
from tests.reliability.harness import (
    Console,
    Device,
    add_boxes,
    login,
    message_digest,
    new_image,
    readonly_root_available,
    rss_kib,
    written_files,
)

MIB = 1 << 20
RAM_MIB = 128  # DP-3530 memory.image_ram_mib
BOUND = 16  # DP-3530 pop3.max_sessions
BOXES = [f"b{i:02d}" for i in range(1, BOUND + 1)]

pytestmark = pytest.mark.skipif(
    not readonly_root_available(), reason="needs root for a private read-only mount namespace"
)


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Device]:
    image = new_image(tmp_path / "board.img", "DP-3530", size="256MiB")  # the model's flash
    add_boxes(image, BOXES, messages=2, size=20_000)
    with open_board(image) as store:  # one long message: RETR's direct copy path under the limit
        store.deliver(
            BOXES[-1],
            b"Subject: long\r\n\r\n" + b"y" * 98 + b"\r\n" * 1 + (b"z" * 98 + b"\r\n") * 40_000,
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["TMPDIR"] = str(tmp_path)  # read-only too: a temp file would fail loudly
    device = Device(
        image,
        "--set",
        f"pop3.max_sessions_per_client={BOUND}",
        console=True,
        limit_as=RAM_MIB * MIB,
        env=env,
        readonly_root=True,
    )
    device.wait_booted()
    try:
        yield device
    finally:
        device.kill()


def test_serves_its_bound_under_the_ram_limit_with_only_the_image_writable(
    board: Device,
) -> None:
    limits = Path(f"/proc/{board.pid}/limits").read_text().splitlines()
    limit = int(next(line for line in limits if "address space" in line).split()[3])
    assert limit == RAM_MIB * MIB
    sessions = [login(board.pop3_port, box, f"{box}-pw") for box in BOXES]
    for client in sessions:
        count, _ = client.stat()
        for n in range(1, count + 1):
            assert message_digest(client.retr(n)[1])
    # One more than the bound is refused cleanly, and the device goes on.
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        login(board.pop3_port, BOXES[0], "whatever")
    # A scan job (page rendering, encoding, a durable append) under the same limits.
    assert board.console_path is not None
    console = Console(board.console_path)
    try:
        console.login()
        uid = console.scan(BOXES[0], "pages=2", "mode=gray", "format=pdf")
        assert uid is not None, board.output()
        assert "all clean" in console.run("fsck")
    finally:
        console.close()
    for client in sessions:
        assert client.quit().startswith(b"+OK")
    client = login(board.pop3_port, BOXES[0], f"{BOXES[0]}-pw")
    assert uid.encode() in b" ".join(client.uidl()[1])
    client.quit()
    assert written_files(board.pid) == [str(board.image)]
    status = Path(f"/proc/{board.pid}/status").read_text()
    peak = int(status.split("VmPeak:")[1].split()[0])
    print(f"board: VmPeak {peak} KiB of {RAM_MIB * 1024} KiB, RssAnon {rss_kib(board.pid)} KiB")
    assert board.alive() and not board.unexpected_log_lines(), board.unexpected_log_lines()
    time.sleep(0.1)
