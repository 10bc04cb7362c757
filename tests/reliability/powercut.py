"""The power-cut campaign: a real `dpfw run` on an image, POP3 sessions and console scans in
flight, SIGKILL at a random moment, reboot from the same image, check that nothing
acknowledged was lost and nothing unacknowledged half-happened. Repeat.

What counts as acknowledged (the `Ledger`):
- a scan job whose uid the console printed: present from then on, with the bytes of the first
  RETR of it (sha256) for ever after;
- a QUIT answered +OK: every message DELE'd in that session is gone for good;
- a session that ended without an answered QUIT (dropped, or cut by the kill before sending
  QUIT): none of its deletions happened;
- a QUIT sent but not answered when the power went: all of its deletions or none.

After every cut, before reboot: `dpfw image inspect --json` (only torn tails may be reported;
the space figures add up), and the store opened read-only in this process: the bytes of the
live records (header + wire form, padded) are exactly the `live` figure. After reboot: every
box read in full over POP3 against the ledger, and the console's `fsck` says all clean.

Run alone: `tools/powercut --kills 500` (or `DPFW_POWERCUT_KILLS=500 .venv/bin/pytest
tests/reliability/test_powercut.py -m slow`); see docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import poplib
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import serial

from firmware.device.boards import open_board
from firmware.flash.layout import RECORD_HEADER_SIZE, align
from tests.reliability.harness import (
    DEMO_BOXES,
    REPO,
    Console,
    Device,
    demo_image,
    login,
    message_digest,
)

BOXES = dict(DEMO_BOXES)
SCAN_OPTIONS = ("pages=1", "dpi=200x100", "mode=mono", "format=tiff")


class CampaignError(AssertionError):
    """A broken promise: what was acknowledged and what the image holds disagree."""


@dataclass
class Ledger:
    """What the device has acknowledged, box by box."""

    present: dict[str, dict[str, str | None]] = field(default_factory=dict)  # uid -> sha256
    deleted: dict[str, set[str]] = field(default_factory=dict)
    in_doubt: list[tuple[str, frozenset[str]]] = field(default_factory=list)  # QUIT in flight
    scans_in_flight: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for box in BOXES:
            self.present.setdefault(box, {})
            self.deleted.setdefault(box, set())
            self.scans_in_flight.setdefault(box, 0)


@dataclass
class Figures:
    kills: int = 0
    scans_acked: int = 0
    quits_committed: int = 0
    quits_in_doubt: int = 0
    quits_in_doubt_applied: int = 0
    sessions_dropped: int = 0
    deletions_committed: int = 0
    retrievals: int = 0
    torn_tails: int = 0
    unacked_scans_found: int = 0
    compactions: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return ", ".join(
            f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in vars(self).items()
        )


# ----- checks ---------------------------------------------------------------------------------


def check_offline(image: Path, figures: Figures) -> None:
    """With the device dead: inspect's report and the space accounting against the records."""
    proc = subprocess.run(
        [sys.executable, "-m", "firmware", "image", "inspect", "--json", str(image)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise CampaignError(f"inspect failed after a cut: {proc.stderr}")
    info = json.loads(proc.stdout)
    bad = [p for p in info["problems"] if p["what"] not in ("torn", "stale")]
    if bad:
        raise CampaignError(f"inspect reports damage after a power cut: {bad}")
    figures.torn_tails += sum(1 for p in info["problems"] if p["what"] == "torn")
    space = info["space"]
    if space["used"] + space["free"] != space["total"] or (
        space["live"] + space["reclaimable"] != space["used"]
    ):
        raise CampaignError(f"space figures do not add up: {space}")
    with open_board(image, repair=False) as board:
        live = 0
        for box in board.box_names():
            for msg in board.messages(box):
                wire = b"".join(board.read_wire(box, msg.uid))
                live += align(RECORD_HEADER_SIZE + len(wire))
        if board.usage().live != live or space["live"] != live:
            raise CampaignError(
                f"live space {board.usage().live} (inspect {space['live']}) but the live "
                f"records take {live} bytes"
            )


def check_online(port: int, ledger: Ledger, figures: Figures, first: bool = False) -> None:
    """Read every box in full and hold it against the ledger; resolve what was in doubt.

    The first read (before any cut) takes what the image holds as the starting ledger.
    """
    with ledger.lock:
        for box, password in BOXES.items():
            client = login(port, box, password)
            found: dict[str, str] = {}
            for line in client.uidl()[1]:
                number, uid = line.decode().split()
                found[uid] = message_digest(client.retr(int(number))[1])
            if not client.quit().startswith(b"+OK"):
                raise CampaignError("QUIT of a read-only session failed")
            figures.retrievals += len(found)
            doubt = {uid for b, group in ledger.in_doubt if b == box for uid in group}
            for uid, digest in ledger.present[box].items():
                if uid not in found and uid not in doubt:
                    raise CampaignError(f"acknowledged message {box}/{uid} is lost")
                if uid in found and digest is not None and found[uid] != digest:
                    raise CampaignError(f"message {box}/{uid} changed its bytes")
            resurrected = ledger.deleted[box] & found.keys()
            if resurrected:
                raise CampaignError(f"committed deletions came back in {box}: {resurrected}")
            for b, group in ledger.in_doubt:
                if b != box:
                    continue
                kept = group & found.keys()
                if kept and kept != group:
                    raise CampaignError(f"a QUIT in flight half-applied in {box}: kept {kept}")
                if not kept:
                    figures.quits_in_doubt_applied += 1
                    ledger.deleted[box] |= group
                    for uid in group:
                        ledger.present[box].pop(uid, None)
            unknown = found.keys() - ledger.present[box].keys()
            if len(unknown) > ledger.scans_in_flight[box] and not first:
                raise CampaignError(
                    f"{box} holds {len(unknown)} unacknowledged messages but only "
                    f"{ledger.scans_in_flight[box]} scan(s) were in flight: {unknown}"
                )
            figures.unacked_scans_found += 0 if first else len(unknown)
            for uid, digest in found.items():
                ledger.present[box][uid] = digest
            ledger.scans_in_flight[box] = 0
        ledger.in_doubt.clear()


# ----- the load while the power is on ---------------------------------------------------------


@dataclass
class Moments:
    """Set by the clients just before the riskiest steps, so some cuts can aim at them."""

    quit: threading.Event = field(default_factory=threading.Event)
    scan: threading.Event = field(default_factory=threading.Event)


def scanner(
    console: Console,
    ledger: Ledger,
    figures: Figures,
    rng: random.Random,
    stop: threading.Event,
    moments: Moments,
) -> None:
    while not stop.is_set():
        if rng.random() < 0.12:  # compaction moves live records: cut it too
            moments.scan.set()
            try:
                out = console.run("compact")
            except (OSError, serial.SerialException, AssertionError):
                return
            if "compact:" not in out:
                raise CampaignError(f"console compact failed: {out}")
            with ledger.lock:
                figures.compactions += 1
            continue
        box = rng.choice(list(BOXES))
        with ledger.lock:
            ledger.scans_in_flight[box] += 1
        moments.scan.set()
        try:
            uid = console.scan(box, *SCAN_OPTIONS)
        except (OSError, serial.SerialException, AssertionError):
            return  # the power went: this scan stays in flight
        with ledger.lock:
            ledger.scans_in_flight[box] -= 1
            if uid is not None:
                # A reader may have seen, deleted and committed it before the console's
                # answer reached us: then it is rightly gone.
                if uid not in ledger.deleted[box]:
                    ledger.present[box].setdefault(uid, None)
                figures.scans_acked += 1


def reader(
    port: int,
    box: str,
    ledger: Ledger,
    figures: Figures,
    rng: random.Random,
    stop: threading.Event,
    moments: Moments,
) -> None:
    password = BOXES[box]
    while not stop.is_set():
        marked: set[str] = set()
        quit_sent = False
        try:
            try:
                client = login(port, box, password)
            except poplib.error_proto as exc:
                # A dropped session's lock is released when the device notices the drop.
                if "[IN-USE]" in str(exc) and not stop.wait(0.05):
                    continue
                raise
            listing = [line.decode().split() for line in client.uidl()[1]]
            # Delete more from full boxes and nothing from nearly empty ones: the boxes hold
            # a handful of messages to lose, and the scans keep up with the deletions.
            p_dele = 0.5 if len(listing) > 8 else 0.2 if len(listing) > 3 else 0.0
            for number, uid in listing:
                if rng.random() < 0.5:
                    digest = message_digest(client.retr(int(number))[1])
                    with ledger.lock:
                        known = ledger.present[box].get(uid)
                        if known is not None and known != digest:
                            raise CampaignError(f"{box}/{uid} read back different bytes")
                        if uid in ledger.present[box]:
                            ledger.present[box][uid] = digest
                if rng.random() < p_dele:
                    client.dele(int(number))
                    marked.add(uid)
            if rng.random() < 0.25:  # a client that just goes away: nothing is committed
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                client.file.close()  # poplib's reader holds the socket open too
                client.sock.close()
                with ledger.lock:
                    figures.sessions_dropped += 1
                continue
            quit_sent = True
            if marked:
                moments.quit.set()
            answer = client.quit()
            if not answer.startswith(b"+OK"):
                raise CampaignError(f"QUIT answered {answer!r}")
            with ledger.lock:
                figures.quits_committed += 1
                figures.deletions_committed += len(marked)
                ledger.deleted[box] |= marked
                for uid in marked:
                    ledger.present[box].pop(uid, None)
        except (OSError, EOFError, poplib.error_proto) as exc:
            if quit_sent and marked:
                with ledger.lock:
                    ledger.in_doubt.append((box, frozenset(marked)))
                    figures.quits_in_doubt += 1
            if not stop.is_set() and not isinstance(exc, OSError | EOFError):
                raise CampaignError(f"{box}: unexpected POP3 error {exc}") from exc
            return
        stop.wait(rng.uniform(0.02, 0.1))


# ----- the campaign -----------------------------------------------------------------------


def _guarded(target: threading.Thread, errors: list[BaseException]) -> None:
    """Run a client; its failure is re-raised by the campaign in the main thread."""
    try:
        target.run()
    except BaseException as exc:
        errors.append(exc)


def boot(image: Path, booted: list[Device]) -> tuple[Device, Console]:
    device = Device(image, console=True)
    booted.clear()  # the earlier ones are dead already
    booted.append(device)
    device.wait_booted()
    assert device.console_path is not None
    console = Console(device.console_path, timeout=10)
    console.login()
    return device, console


def run_campaign(workdir: Path, kills: int, seed: int, log: bool = False) -> Figures:
    # 2 MiB: the log wraps around the ring within a few dozen cuts and compaction (automatic
    # and from the console) runs under the cuts too.
    image = demo_image(workdir / "powercut.img", size="2MiB")
    booted: list[Device] = []
    try:
        return _cuts(image, kills, random.Random(seed), booted, log)
    finally:  # whatever happened, no device outlives the campaign
        for device in booted:
            device.kill()


def _cuts(image: Path, kills: int, rng: random.Random, booted: list[Device], log: bool) -> Figures:
    ledger = Ledger()
    figures = Figures()
    started = time.monotonic()
    device, console = boot(image, booted)
    check_online(device.pop3_port, ledger, figures, first=True)
    for cycle in range(kills):
        stop = threading.Event()
        moments = Moments()
        workers = [
            threading.Thread(
                target=scanner,
                args=(console, ledger, figures, random.Random(rng.random()), stop, moments),
            )
        ]
        workers += [
            threading.Thread(
                target=reader,
                args=(
                    device.pop3_port,
                    box,
                    ledger,
                    figures,
                    random.Random(rng.random()),
                    stop,
                    moments,
                ),
            )
            for box in BOXES
        ]
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_guarded, args=(w, errors), daemon=True) for w in workers
        ]
        for t in threads:
            t.start()
        # One cut in three is random; the others aim at a QUIT that commits deletions or at a
        # scan job's append, a few milliseconds after the client sent it.
        aim = cycle % 3
        time.sleep(rng.uniform(0.2, 1.5) if aim == 0 else 0.2)
        if aim:
            target = moments.quit if aim == 1 else moments.scan
            target.clear()
            target.wait(3.0)
            time.sleep(rng.uniform(0, 0.001 if aim == 1 else 0.3))
        stop.set()
        device.kill()  # the power cut
        figures.kills += 1
        for t in threads:  # the console's pty and the sockets report the cut at once
            t.join(20)
        console.close()
        if errors:
            raise CampaignError(f"cycle {cycle}: {errors[0]}\n" + device.output()) from errors[0]
        if any(t.is_alive() for t in threads):
            raise CampaignError(f"cycle {cycle}: a client did not notice the power cut")
        check_offline(image, figures)
        device, console = boot(image, booted)
        check_online(device.pop3_port, ledger, figures)
        fsck = console.run("fsck")
        if "all clean" not in fsck:
            raise CampaignError(f"console fsck after cut {cycle + 1}: {fsck}")
        if log:
            print(f"cut {cycle + 1}/{kills}: {figures.line()}", flush=True)
    console.close()
    device.stop()
    figures.seconds = time.monotonic() - started
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="power-cut campaign against `dpfw run`")
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep the image")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"power-cut campaign: {args.kills} cuts, seed {seed}", flush=True)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        figures = run_campaign(args.keep, args.kills, seed, log=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            figures = run_campaign(Path(tmp), args.kills, seed, log=True)
    print(f"PASSED: {figures.line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
