"""Storage faults from outside the process: libfiu's `fiu-run -x` over the real `dpfw`.

`tests/reliability/test_faults.py` injects faults through our own `FileOps` seam; this campaign
does not trust the seam. libfiu's POSIX preload library wraps the C library itself, so a fault
reaches every pread/pwrite/fsync/fdatasync/ftruncate the process makes, including the ones that
once bypassed `FileOps` (superblock, NVRAM slots, the sync at create). Python's own I/O (module
loading: read/open) is left alone, so the faults land on the board image only.

Every run must end in exit status 0, or 1 with exactly one `dpfw: ...` line and no traceback.
Afterwards, without faults: every acknowledged message is there byte for byte, every message
there is one that was sent (none garbled), and fsck is clean.
"""

from __future__ import annotations

import collections
import poplib
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from firmware.device.boards import open_board
from tests.support import DeviceProcess, create_image, dpfw

pytestmark = pytest.mark.skipif(
    shutil.which("fiu-run") is None, reason="fiu-run (Debian fiu-utils) is not installed"
)

# The image's own calls; `*/reduce` are short reads/writes (not errors: the store loops).
IO_POINTS = (
    "posix/io/rw/pread",
    "posix/io/rw/pwrite",
    "posix/io/rw/pwrite/reduce",
    "posix/io/rw/ftruncate",
    "posix/io/sync/fdatasync",
    "posix/io/sync/fsync",
)
BOX, PASSWORD = "alice", "alice-pw"
# Campaign size: about 40 s on two busy cores (each fiu-run start-up is ~0.4 s of Python).
DELIVER_RUNS = 20
BOOT_RUNS = 10
RUN_STARTS = 4
POP3_SESSIONS = 12


def _controls(probability: float) -> list[str]:
    args = []
    for point in IO_POINTS:
        args += ["-c", f"enable_random name={point},probability={probability}"]
    return args


def fiu_dpfw(
    *args: str, probability: float, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`dpfw ARGS` under fiu-run with every image I/O point failing at `probability`."""
    return subprocess.run(
        [
            "fiu-run",
            "-x",
            "-f",
            "",
            *_controls(probability),
            sys.executable,
            "-m",
            "firmware",
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def outcome(proc: subprocess.CompletedProcess[str]) -> str:
    """'ok' or 'refused'; fails the test on a traceback or a messy failure."""
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 0:
        return "ok"
    dpfw_lines = [line for line in proc.stderr.splitlines() if line.startswith("dpfw: ")]
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert len(dpfw_lines) == 1, proc.stderr
    return "refused: " + _kind(dpfw_lines[0])


def _kind(line: str) -> str:
    """'storage full' or the strerror at the end of 'dpfw: IMG: read failed: Bad address'."""
    return "storage full" if "storage full" in line else line.rsplit(": ", 1)[-1]


def message(n: int) -> bytes:
    """Message n: CRLF line ends, no leading dots, so its wire form is itself."""
    body = b"".join(b"line %d of message %d\r\n" % (i, n) for i in range(40 + n % 7 * 300))
    return b"Subject: fiu %d\r\nMessage-ID: <fiu-%d@test>\r\n\r\n" % (n, n) + body


def stored(image: Path) -> dict[str, bytes]:
    """uid -> wire bytes of every message in BOX, read without faults; fsck must be clean."""
    with open_board(image, repair=False) as board:
        report = board.fsck()
        assert report.clean, report.problems
        return {m.uid: b"".join(board.read_wire(BOX, m.uid)) for m in board.messages(BOX)}


def check_messages(image: Path, acked: dict[str, bytes], sent: Sequence[bytes]) -> None:
    have = stored(image)
    for uid, data in acked.items():
        assert have.get(uid) == data, f"acknowledged message {uid} lost or changed"
    sent_set = set(sent)
    assert all(data in sent_set for data in have.values()), "a stored message was garbled"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = create_image(tmp_path / "fiu.img", size="2MiB")
    dpfw("box", "add", str(path), BOX, "--password", PASSWORD)
    return path


def test_deliver_and_boot_under_random_io_faults(image: Path, tmp_path: Path) -> None:
    outcomes: collections.Counter[str] = collections.Counter()
    acked: dict[str, bytes] = {}
    sent: list[bytes] = []
    for n in range(DELIVER_RUNS):
        data = message(n)
        sent.append(data)
        eml = tmp_path / f"m{n}.eml"
        eml.write_bytes(data)
        proc = fiu_dpfw("deliver", str(image), BOX, str(eml), probability=0.15)
        result = outcome(proc)
        outcomes["deliver " + result] += 1
        if result == "ok":
            uid, _size, _name = proc.stdout.split()
            acked[uid] = data
        check_messages(image, acked, sent)
    for n in range(BOOT_RUNS):
        command = ("image", "inspect") if n % 2 else ("image", "fsck")
        outcomes[f"{command[1]} " + outcome(fiu_dpfw(*command, str(image), probability=0.1))] += 1
    check_messages(image, acked, sent)
    assert dpfw("image", "fsck", str(image)).returncode == 0
    print(dict(outcomes))
    # The campaign must have hit both sides, or it proved nothing.
    assert any(k.startswith("deliver refused") for k in outcomes), outcomes
    assert outcomes["deliver ok"] > 0, outcomes


class FiuDevice(DeviceProcess):
    """`dpfw run` under fiu-run with remote control: faults are switched on after boot."""

    def __init__(self, image: Path, ctrl: Path, probability: float = 0.0) -> None:
        prefix = ["fiu-run", "-x", "-f", str(ctrl)]
        if probability:
            prefix += _controls(probability)
        super().__init__(image, "--set", "pop3.plaintext_auth=always", prefix=prefix)
        self.ctrl = ctrl

    def faults(self, probability: float) -> None:
        verb = "enable_random" if probability else "disable"
        for point in IO_POINTS:
            command = f"{verb} name={point}" + (
                f",probability={probability}" if probability else ""
            )
            subprocess.run(
                ["fiu-ctrl", "-f", str(self.ctrl), "-c", command, str(self.pid)],
                check=True,
                timeout=10,
            )


def _device_outcome(device: DeviceProcess) -> str:
    code = device.stop()
    out = device.output()
    assert "Traceback" not in out, out
    assert code in (0, 1), (code, out)
    if code == 1:
        errors = [
            line
            for line in out.splitlines()
            if line.startswith("dpfw: ") and not line.startswith(("dpfw: POP3", "dpfw: RAM"))
        ]
        assert errors, out
        return "run refused: " + _kind(errors[-1])
    return "run ok"


def test_run_start_up_under_random_io_faults(image: Path, tmp_path: Path) -> None:
    acked = {}
    for n in range(3):
        proc = dpfw("deliver", str(image), BOX, "-", stdin=message(n).decode())
        acked[proc.stdout.split()[0]] = message(n)
    outcomes: collections.Counter[str] = collections.Counter()
    for n in range(RUN_STARTS):
        device = FiuDevice(image, tmp_path / f"ctl{n}", probability=0.2)
        deadline = time.monotonic() + 20
        while device.alive() and not device.pop3_port and time.monotonic() < deadline:
            time.sleep(0.05)
        outcomes[_device_outcome(device)] += 1
    check_messages(image, acked, list(acked.values()))
    assert dpfw("image", "fsck", str(image)).returncode == 0
    print(dict(outcomes))


def test_pop3_sessions_under_random_io_faults(image: Path, tmp_path: Path) -> None:
    """Faults switched on after boot: every session ends in +OK or -ERR, never a dead device;
    a deletion is gone exactly when QUIT said +OK; a message stays intact otherwise."""
    messages = [message(n) for n in range(POP3_SESSIONS + 2)]
    acked: dict[str, bytes] = {}
    for data in messages:
        proc = dpfw("deliver", str(image), BOX, "-", stdin=data.decode())
        acked[proc.stdout.split()[0]] = data
    device = FiuDevice(image, tmp_path / "ctl")
    port = device.wait_booted()
    device.faults(0.08)
    replies: collections.Counter[str] = collections.Counter()
    deleted: set[str] = set()
    for _ in range(POP3_SESSIONS):
        client = poplib.POP3("127.0.0.1", port, timeout=20)
        step = "login"
        try:
            client.user(BOX)
            client.pass_(PASSWORD)
            uids = {
                int(num): uid
                for num, uid in (line.split() for line in map(bytes.decode, client.uidl()[1]))
            }
            first = min(uids)
            step = "RETR"
            lines = client.retr(first)[1]
            assert b"\r\n".join(lines) + b"\r\n" == acked[uids[first]]
            step = "DELE"
            client.dele(first)
            step = "QUIT"
            client.quit()
            replies["session +OK"] += 1
            deleted.add(uids[first])
        except poplib.error_proto as exc:
            reply = exc.args[0].decode()
            assert reply.startswith("-ERR [SYS/"), reply
            replies[f"{step} " + reply.split("]")[0] + "]"] += 1
        finally:
            client.close()
        assert device.alive(), device.output()
    device.faults(0.0)
    assert device.stop() == 0, device.output()
    assert "Traceback" not in device.output(), device.output()
    have = stored(image)
    for uid, data in acked.items():
        if uid in deleted:
            assert uid not in have, f"{uid}: QUIT said +OK but the message is still there"
        else:
            assert have.get(uid) == data, f"{uid}: lost or changed"
    print(dict(replies))
    assert replies["session +OK"] > 0, replies
