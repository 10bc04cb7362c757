"""Power cuts (SIGKILL of the whole `dpfw run` process group) at the durable steps that came
after the first campaign (issue 17): API delivery, a profile change over the API, Internet Fax
store-then-delete. After each cut, offline: fsck clean and the step's own rule:

- API delivery: every message the API acknowledged (201 and a uid) is there byte for byte;
  every message there is one that was sent (nothing half-stored);
- profile over the API: each PATCH sets five keys to values of one generation n; the saved
  profile is one generation whole (never a mix), at least the last acknowledged one;
- Internet Fax: the device polls its own POP3 box `fax` (store in the tray, then DELE); no fax
  is lost (each is on the server or in the tray), and after the last boot drains the box
  every fax is in the tray exactly once (a cut between the store and DELE must not print twice).

Cuts per step: DPFW_STEP_CUTS (CI 6).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.pop3_procs import free_port
from firmware.device.boards import open_board, saved_profile
from tests.http.conftest import wait_http
from tests.ifax.conftest import tiff_g4
from tests.ifax.dovecot import fax_message
from tests.reliability.harness import new_image
from tests.support import DeviceProcess, dpfw

ADMIN = ("admin", "admin-lab")
CUTS = int(os.environ.get("DPFW_STEP_CUTS", "6"))
RNG = random.Random(int(os.environ.get("DPFW_POWERCUT_SEED", "20261130")))


def boot(image: Path, *args: str) -> tuple[DeviceProcess, str]:
    device = DeviceProcess(image, "--http", "127.0.0.1:0", *args)
    device.wait_booted()
    return device, wait_http(device)


def fsck_clean(image: Path) -> None:
    board = open_board(image, repair=False)
    try:
        report = board.fsck()
        assert report.clean, report.problems
    finally:
        board.close()


def cut_while(image: Path, work: Callable[[str, threading.Event], None], *args: str) -> str:
    """Boot, run `work(base, stop)` in a thread, SIGKILL after a random moment; the output."""
    device, base = boot(image, *args)
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            work(base, stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=guarded)
    thread.start()
    time.sleep(RNG.uniform(0.05, 1.5))
    device.kill()
    stop.set()
    thread.join(60)
    out = device.output()
    assert not errors, errors
    assert "Traceback" not in out, out
    return out


def test_power_cuts_during_api_deliveries(tmp_path: Path) -> None:
    image = new_image(tmp_path / "api.img", size="8MiB")
    dpfw("box", "add", str(image), "alice", "--password", "alice-pw")
    sent: set[bytes] = set()
    acked: dict[str, bytes] = {}
    counter = iter(range(1_000_000))

    def deliver(base: str, stop: threading.Event) -> None:
        with httpx.Client(base_url=base, auth=ADMIN, timeout=10) as api:
            while not stop.is_set():
                n = next(counter)
                body = b"".join(b"api cut line %d of %d\r\n" % (i, n) for i in range(n % 9 * 400))
                data = b"Subject: cut %d\r\n\r\n" % n + body
                sent.add(data)
                try:
                    got = api.post(
                        "/api/v1/boxes/alice/messages",
                        content=data,
                        headers={"Content-Type": "message/rfc822"},
                    )
                except httpx.HTTPError:
                    return  # the cut
                if got.status_code == 201:
                    acked[got.json()["uid"]] = data

    for _ in range(CUTS):
        cut_while(image, deliver)
        fsck_clean(image)
        board = open_board(image, repair=False)
        try:
            have = {
                m.uid: b"".join(board.read_wire("alice", m.uid)) for m in board.messages("alice")
            }
        finally:
            board.close()
        for uid, data in acked.items():
            assert have.get(uid) == data, f"acknowledged {uid} lost or changed by a cut"
        assert all(data in sent for data in have.values()), "a half-stored message"
    assert len(acked) >= CUTS, acked.keys()
    print(f"{CUTS} cuts, {len(acked)} deliveries acknowledged, {len(sent)} sent")


def generation(n: int) -> dict[str, object]:
    """Five keys (live and after-reboot) that together name generation n."""
    return {
        "ifax.user": f"generation-{n}",
        "mailbox.max_messages": 1000 + n,
        "scan.max_pages_per_job": 1 + n % 900,
        "pop3.idle_timeout_s": 600 + n,
        "pop3.expire_days": n % 3000,
    }


def test_power_cuts_during_profile_changes_over_the_api(tmp_path: Path) -> None:
    image = new_image(tmp_path / "profile.img", size="4MiB")
    acked = [0]
    counter = iter(range(1, 1_000_000))
    keys = set(generation(0))

    def patch(base: str, stop: threading.Event) -> None:
        with httpx.Client(base_url=base, auth=ADMIN, timeout=10) as api:
            while not stop.is_set():
                n = next(counter)
                try:
                    got = api.patch("/api/v1/profile", json=generation(n))
                except httpx.HTTPError:
                    return
                assert got.status_code == 200, got.text
                acked[0] = n

    for _ in range(CUTS):
        cut_while(image, patch)
        fsck_clean(image)
        board = open_board(image, repair=False)
        try:
            profile = saved_profile(board)
        finally:
            board.close()
        if acked[0] == 0:
            continue
        n = int(str(profile["ifax.user"]).removeprefix("generation-"))
        assert {k: profile[k] for k in keys} == generation(n), "a profile saved half"
        assert n >= acked[0], (n, acked[0])
    assert acked[0] > CUTS, acked


def test_power_cuts_during_internet_fax_store_then_delete(tmp_path: Path) -> None:
    image = new_image(tmp_path / "ifax.img", size="8MiB")
    dpfw("box", "add", str(image), "fax", "--password", "fax-pw")
    page = tiff_g4(1)
    subjects: list[str] = []

    def settings(port: int) -> list[str]:
        values = {
            "ifax.enabled": "true", "ifax.server": "127.0.0.1", "ifax.port": str(port),
            "ifax.tls": "none", "ifax.user": "fax", "ifax.password": "fax-pw",
            "ifax.poll_interval_s": "1",
        }  # fmt: skip
        args = ["--pop3", f"127.0.0.1:{port}"]
        for key, value in values.items():
            args += ["--set", f"{key}={value}"]
        return args

    def nothing(base: str, stop: threading.Event) -> None:
        stop.wait(5)  # the poller works by itself

    def tray_subjects() -> list[str]:
        docs = json.loads(dpfw("ifax", "tray", "list", str(image), "--json").stdout)
        return [str(d.get("subject", "")) for d in docs]

    def on_server() -> list[str]:
        board = open_board(image, repair=False)
        try:
            return [
                b"".join(board.read_wire("fax", m.uid)).decode("ascii", "replace")
                for m in board.messages("fax")
            ]
        finally:
            board.close()

    for cut in range(CUTS):
        for k in range(4):
            name = f"c{cut}p{k}.tif"
            raw = fax_message(page, "image/tiff", name, "sender@example.test")
            dpfw("deliver", str(image), "fax", "-", stdin=raw.decode())
            subjects.append(f"fax {name}")
        cut_while(image, nothing, *settings(free_port()))
        fsck_clean(image)
        tray, server = tray_subjects(), on_server()
        for subject in subjects:
            assert subject in tray or any(subject in m for m in server), f"{subject} lost"
    # The last boot drains the box; each fax is printed once.
    port = free_port()
    device, base = boot(image, *settings(port))
    try:
        with httpx.Client(base_url=base, auth=ADMIN, timeout=30) as api:
            for _ in range(20):
                if api.get("/api/v1/boxes/fax").json()["box"]["messages"] == 0:
                    break
                api.post("/api/v1/ifax/poll")
                time.sleep(0.2)
        assert device.stop() == 0
    finally:
        device.kill()
    tray = tray_subjects()
    for subject in subjects:
        assert tray.count(subject) == 1, (subject, tray.count(subject))
    print(f"{CUTS} cuts, {len(subjects)} faxes, tray {len(tray)}")
