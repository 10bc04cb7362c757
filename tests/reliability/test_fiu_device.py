"""libfiu against a running device under its whole workload (issue 17, storage faults).

One `dpfw run` under `fiu-run -x` (the preload reaches the `python -m firmware run` process:
it is the process fiu-run starts), booted without faults. Then, for each run, `fiu-ctrl`
switches faults on in the running process while, at the same time:

- a POP3 client logs in to `alice`, lists, RETRs everything (compared with what was stored
  under that uid), DELEs the first message and QUITs;
- an API client uploads messages to `alice` and fax messages (TIFF G4) to `fax`;
- the console scans into `bob` and compacts;
- the device's Internet Fax poller polls its own POP3 box `fax` every second (stores each fax
  in the tray, then deletes it from the server);

The faults are either random (every point below at a low probability) or targeted (one point
at a high one). After each run the faults go off, the device is stopped (SIGTERM) and the image
is checked offline: fsck clean; every acknowledged message (API 201, console "stored as") is
there byte for byte under its uid; a message whose QUIT said +OK is gone, one whose QUIT said
-ERR is there; every message in a box is one that was sent (nothing half-stored); every fax
that left the server is in the tray. The device must have kept serving, or stopped with one
`dpfw:` line; never a traceback. The next run boots the same image again.

`posix/io/rw/fallocate` does not exist: libfiu 1.1 wraps no fallocate; the store's hole punch
(Image.erase) falls back to writing zeros when fallocate fails (tests/store). `posix/mm/mmap`
is left out: it fails CPython's own arena and thread-stack maps as well as the image's direct
RETR window, and once froze the device in `threading.Thread.start` (CPython waits for a thread
that never started); the mapped read is failed directly in test_direct_faults.py.
Runs: DPFW_FIU_RUNS (CI: 4; a release: 40).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import poplib
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.pop3_procs import free_port
from firmware.device.boards import open_board
from tests.http.conftest import wait_http
from tests.ifax.conftest import tiff_g4
from tests.ifax.dovecot import fax_message
from tests.reliability.harness import Console, ConsoleTimeout, new_image
from tests.support import DeviceProcess, dpfw

pytestmark = pytest.mark.skipif(
    shutil.which("fiu-run") is None, reason="fiu-run (Debian fiu-utils) is not installed"
)

ADMIN = "admin-lab"  # new_image's admin password
POINTS = (
    "posix/io/oc/open",
    "posix/io/rw/pread",
    "posix/io/rw/pwrite",
    "posix/io/rw/pwrite/reduce",
    "posix/io/sync/fdatasync",
    "posix/io/sync/fsync",
    "posix/io/rw/ftruncate",
    "posix/io/dir/rename",
)
RUNS = int(os.environ.get("DPFW_FIU_RUNS", "4"))
RUN_S = 6.0


@dataclass
class Ledger:
    """What the clients were told, to judge the image by afterwards."""

    sent: dict[str, set[bytes]] = field(default_factory=lambda: collections.defaultdict(set))
    acked: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (box, uid) -> bytes
    deleted: set[tuple[str, str]] = field(default_factory=set)  # QUIT said +OK
    kept: set[tuple[str, str]] = field(default_factory=set)  # QUIT said -ERR
    unsure: set[tuple[str, str]] = field(default_factory=set)  # QUIT sent, no answer read
    faxes: dict[str, str] = field(default_factory=dict)  # fax uid -> subject
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


class FiuRun(DeviceProcess):
    def __init__(self, image: Path, ctrl: Path, port: int) -> None:
        super().__init__(
            image,
            "--pop3", f"127.0.0.1:{port}",
            "--console", "pty",
            "--http", "127.0.0.1:0",
            "--set", "ifax.enabled=true",
            "--set", "ifax.server=127.0.0.1",
            "--set", f"ifax.port={port}",
            "--set", "ifax.tls=none",
            "--set", "ifax.user=fax",
            "--set", "ifax.password=fax-pw",
            "--set", "ifax.poll_interval_s=1",
            prefix=["fiu-run", "-x", "-f", str(ctrl)],
            env=dict(os.environ, PYTHONFAULTHANDLER="1"),  # SIGABRT: every thread's stack
        )  # fmt: skip
        self.ctrl = ctrl

    def fiu(self, command: str) -> None:
        subprocess.run(
            ["fiu-ctrl", "-f", str(self.ctrl), "-c", command, str(self.pid)],
            check=True,
            timeout=10,
            capture_output=True,
        )


def mail(n: int, tag: str) -> bytes:
    body = b"".join(b"%s line %d of %d\r\n" % (tag.encode(), i, n) for i in range(20 + n % 5 * 200))
    return (
        b"Subject: %s %d\r\nMessage-ID: <%s-%d@fiu>\r\n\r\n" % (tag.encode(), n, tag.encode(), n)
        + body
    )


def pop3_worker(port: int, ledger: Ledger, stop: threading.Event) -> None:
    while not stop.is_set():
        step = "connect"
        try:
            client = poplib.POP3("127.0.0.1", port, timeout=20)
        except (OSError, poplib.error_proto):  # poplib: '-ERR EOF' when closed at once
            ledger.count("pop3 connect failed")
            time.sleep(0.1)
            continue
        try:
            step = "login"
            client.user("alice")
            client.pass_("alice-pw")
            listing = [line.decode().split() for line in client.uidl()[1]]
            uids = {int(num): uid for num, uid in listing}
            for num, uid in sorted(uids.items())[:4]:
                step = "RETR"
                lines = client.retr(num)[1]
                data = b"".join(line + b"\r\n" for line in lines)
                with ledger.lock:
                    known = ledger.acked.get(("alice", uid))
                assert known is None or data == known, f"RETR {uid} differs from what was stored"
            if not uids:
                client.quit()
                continue
            first = min(uids)
            client.dele(first)
            step = "QUIT"
            try:
                client.quit()
            except poplib.error_proto as exc:
                with ledger.lock:  # poplib's '-ERR EOF': closed, no answer: either way
                    eof = exc.args[0] == b"-ERR EOF"
                    (ledger.unsure if eof else ledger.kept).add(("alice", uids[first]))
                if os.environ.get("DPFW_FIU_KEEP"):
                    print(f"QUIT-ERR alice {uids[first]} {exc} {time.time():.3f}", flush=True)
                raise
            except (OSError, EOFError):
                with ledger.lock:
                    ledger.unsure.add(("alice", uids[first]))
                raise
            with ledger.lock:
                ledger.deleted.add(("alice", uids[first]))
            if os.environ.get("DPFW_FIU_KEEP"):
                print(f"QUIT+OK alice {uids[first]} {time.time():.3f}", flush=True)
            ledger.count("pop3 session +OK")
        except poplib.error_proto as exc:
            reply = exc.args[0].decode(errors="replace")
            assert reply.startswith("-ERR"), reply
            ledger.count(f"pop3 {step} -ERR")
        except (OSError, EOFError):
            ledger.count(f"pop3 {step} connection lost")
        finally:
            client.close()


def api_worker(base: str, ledger: Ledger, stop: threading.Event, start: int) -> None:
    fax_page = tiff_g4(1)
    n = start
    with httpx.Client(base_url=base, auth=("admin", ADMIN), timeout=30) as api:
        while not stop.is_set():
            n += 1
            if n % 3 == 0:
                box = "fax"  # Subject: fax f{n}.tif
                data = fax_message(fax_page, "image/tiff", f"f{n}.tif", "fax@example.test")
            else:
                box, data = "alice", mail(n, "api")
            with ledger.lock:
                ledger.sent[box].add(data)
            try:
                got = api.post(
                    f"/api/v1/boxes/{box}/messages",
                    content=data,
                    headers={"Content-Type": "message/rfc822"},
                )
            except httpx.HTTPError:
                ledger.count("api connection lost")
                continue
            # An I/O error is the device's (503), never the request's (it was 422 "refused").
            assert got.status_code in (201, 413, 503, 507), (got.status_code, got.text)
            assert "Traceback" not in got.text
            if got.status_code == 201:
                uid = got.json()["uid"]
                if os.environ.get("DPFW_FIU_KEEP"):
                    print(f"ACK {box} {uid} {time.time():.3f}", flush=True)
                with ledger.lock:
                    ledger.acked[(box, uid)] = data
                    if box == "fax":
                        ledger.faxes[uid] = f"fax f{n}.tif"
                ledger.count(f"api {box} 201")
            else:
                ledger.count(f"api {got.status_code}")


def console_worker(path: str, ledger: Ledger, stop: threading.Event) -> None:
    console = Console(path)
    try:
        console.login(ADMIN)
        n = 0
        while not stop.is_set():
            n += 1
            if n % 4 == 0:
                out = console.run("compact")
                ledger.count("compact " + ("ok" if "error" not in out else "refused"))
                continue
            time.sleep(0.2)  # scans fill the flash fastest of all the workers
            uid = console.scan("bob", "pages=1", "dpi=200x100")
            ledger.count("scan stored" if uid else "scan refused")
            if uid:
                with ledger.lock:
                    ledger.acked[("bob", uid)] = b""  # the bytes are the scanner's: fsck reads
    except (ConsoleTimeout, OSError):
        ledger.count("console lost")
    finally:
        console.close()


def check_image(image: Path, ledger: Ledger) -> dict[str, int]:
    """The offline checks after a run; returns message counts per box."""
    board = open_board(image, repair=False)
    try:
        report = board.fsck()
        assert report.clean, report.problems
        have: dict[tuple[str, str], bytes] = {}
        for box in ("alice", "bob", "fax"):
            for m in board.messages(box):
                have[(box, m.uid)] = b"".join(board.read_wire(box, m.uid))
    finally:
        board.close()
    with ledger.lock:
        for key, data in ledger.acked.items():
            if key in ledger.deleted or key in ledger.unsure or key[0] == "fax":
                continue
            if key not in have and os.environ.get("DPFW_FIU_KEEP"):
                shutil.copy(image, os.environ["DPFW_FIU_KEEP"])
            assert key in have, f"acknowledged {key} is missing"
            if data:
                assert have[key] == data, f"acknowledged {key} changed"
        for key in ledger.deleted:
            assert key not in have, f"{key}: QUIT said +OK but it is still there"
        for key in ledger.kept - ledger.deleted - ledger.unsure:  # no later session took it
            assert key in have, f"{key}: QUIT said -ERR but it is gone"
        for (box, _uid), data in have.items():
            if box == "alice":
                assert data in ledger.sent[box] or data in _seeded, f"{box}: a message not sent"
        gone = [uid for uid in ledger.faxes if ("fax", uid) not in have]
    tray = json.loads(dpfw("ifax", "tray", "list", str(image), "--json").stdout)
    subjects = " ".join(str(doc.get("subject", "")) for doc in tray)
    for uid in gone:
        assert ledger.faxes[uid] in subjects, f"fax {uid} left the server but is not in the tray"
    return collections.Counter(box for box, _ in have)


_seeded: set[bytes] = set()


def guarded(errors: list[BaseException], fn: Callable[..., None], *args: Any) -> threading.Thread:
    """A worker thread whose failure (an assertion) is kept for the test to raise."""

    def run_it() -> None:
        try:
            fn(*args)
        except BaseException as exc:
            errors.append(exc)

    return threading.Thread(target=run_it)


def test_a_running_device_under_libfiu_faults(tmp_path: Path) -> None:
    image = new_image(tmp_path / "fiu.img", size="32MiB")
    for box in ("alice", "bob", "fax"):
        dpfw("box", "add", str(image), box, "--password", f"{box}-pw")
    for n in range(6):
        data = mail(n, "seed")
        _seeded.add(data)
        dpfw("deliver", str(image), "alice", "-", stdin=data.decode())
    ledger = Ledger()
    rng = random.Random(int(os.environ.get("DPFW_FIU_SEED", "17")))
    stops: collections.Counter[str] = collections.Counter()
    for run in range(RUNS):
        port = free_port()
        device = FiuRun(image, tmp_path / f"ctl{run}", port)
        device.wait_booted()
        base = wait_http(device)
        assert device.console_path is not None
        # The preload reached the device itself: the process serving is `python -m firmware
        # run` (fiu-run execs it) and has libfiu's POSIX wrapper mapped.
        assert b"firmware\x00run" in Path(f"/proc/{device.pid}/cmdline").read_bytes()
        assert "fiu_posix_preload" in Path(f"/proc/{device.pid}/maps").read_text()
        # Even runs random (every point, a little), odd runs targeted (one point, hard).
        chosen = [(p, 0.02) for p in POINTS] if run % 2 == 0 else [(rng.choice(POINTS), 0.3)]
        for point, probability in chosen:
            device.fiu(f"enable_random name={point},probability={probability}")
        stop = threading.Event()
        errors: list[BaseException] = []
        workers = [
            guarded(errors, pop3_worker, port, ledger, stop),
            guarded(errors, api_worker, base, ledger, stop, run * 1000),
            guarded(errors, console_worker, device.console_path, ledger, stop),
        ]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + RUN_S
        while time.monotonic() < deadline and device.alive():
            time.sleep(0.1)
        stop.set()
        for worker in workers:
            worker.join(60)
        alive = device.alive()
        if alive:
            with contextlib.suppress(subprocess.CalledProcessError):
                for point, _ in chosen:
                    device.fiu(f"disable name={point}")
        try:
            code = device.stop(30)
        except subprocess.TimeoutExpired:
            os.kill(device.pid, signal.SIGABRT)
            time.sleep(1)
            raise AssertionError("no stop 30 s after SIGTERM:\n" + device.output()) from None
        out = device.output()
        assert "Traceback" not in out, out
        if code != 0 or not alive:
            lines = [line for line in out.splitlines() if line.startswith("dpfw: ")]
            assert code == 1 and lines, (code, out)
            stops[f"stopped: {lines[-1][:90]}"] += 1
        else:
            stops["kept serving"] += 1
        assert not errors, errors
        notable = ("WARNING", "ERROR", "dpfw: ", "Fatal", "Thread 0x", "  File ")
        print("\n".join(line for line in out.splitlines() if any(w in line for w in notable)))
        counts = check_image(image, ledger)
        print(f"run {run}: {[p for p, _ in chosen]} {dict(counts)}")
    print(dict(ledger.counts), dict(stops))
    assert ledger.counts["pop3 session +OK"] > 0 and ledger.counts["api alice 201"] > 0
    assert ledger.counts["scan stored"] > 0
