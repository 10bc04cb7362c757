"""Fleet soak: a real `dpfw fleet up` of 20 devices under mixed load from threads of this
process, with faults on a few devices whose effects are counted as expected errors.

    python -m tests.reliability.fleet_soak --seconds 1800     # the documented release run

Load (all at once, for `seconds`):
- one fetch-and-delete client per device, alternating POP3 (USER/PASS) and POP3S (implicit
  TLS, the certificate verified against that device's own self-signed one, read from its image
  before the load, and its host name checked): UIDL, RETR each, DELE each, QUIT;
- API uploads (POST /api/v1/boxes/{box}/messages), round robin over the devices, each
  message named by a token in its Subject;
- API scans (POST /api/v1/scans, followed to `done`), round robin;
- three trace streams held open (GET /api/v1/trace, Server-Sent Events);
- faults set through the API: reply-error on STAT (device 1), retr-break (device 2), delay
  on RETR (device 3). Every client error on those devices is held against the faults' own
  `fired` counts: they must be equal, so an error the fault did not cause is not excused.

Every few seconds the fleet process's descriptors (/proc/PID/fd) and RssAnon are sampled.
`check` asserts the bounds (see docs/reliability.md, "Fleet soak").
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import poplib
import random
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.pop3_procs import free_base
from firmware.device.boards import open_board
from firmware.ops import storage
from firmware.ops import tls as ops_tls
from firmware.ops.context import OpsContext
from firmware.ops.status import SERIAL_SETTING
from tests.reliability.harness import open_fds, rss_kib, wait_until
from tests.support import Fleet

ADMIN = "Soak-admin-pw-1"
COUNT = 20
FAULTS: dict[int, dict[str, Any]] = {
    1: {"action": "reply-error", "command": "STAT", "probability": 0.3},
    2: {"action": "retr-break", "probability": 0.2, "after_percent": 40},
    3: {"action": "delay", "command": "RETR", "seconds": 0.2},
}
# RSS growth allowed after warm-up (median of the last 15 % of samples against the highest
# sample of the first 45 %), from measurement: docs/reliability.md, "Fleet soak".
CI_GROWTH_LIMIT_KIB = 6 * 1024
RELEASE_GROWTH_LIMIT_KIB = 6 * 1024
FD_SLACK = 4  # descriptors above the pre-load baseline allowed once the load has stopped


def write_manifest(directory: Path, count: int = COUNT, name: str = "soak") -> None:
    base = free_base(3 * count)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fleet.toml").write_text(
        f"""
[fleet]
name = "{name}"
count = {count}
template = "DP-3510"
pop3_base_port = {base}
pop3s_base_port = {base + count}
http_base_port = {base + 2 * count}
console = "none"
hostname = "{{name}}.soak.test"
flash_mib = 16
settings = {{ "pop3.plaintext_auth" = "always", "scan.resolutions" = "200x100", \
"scan.color_modes" = "mono", "pop3.max_sessions_per_client" = 8 }}

[[fleet.boxes]]
name = "load{{index}}"
password = "Load-pw-{{index}}-xyz"

[[fleet.boxes]]
name = "scan{{index}}"
password = "Scan-pw-{{index}}-xyz"
"""
    )


def fleet_status(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "firmware", "fleet", "status", str(directory), "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    devices: list[dict[str, Any]] = json.loads(out)["devices"]
    return devices


def images(directory: Path) -> list[Path]:
    return sorted((directory / "devices").glob("*/board.img"))


def fsck_all(directory: Path) -> dict[str, str]:
    """Each image's fsck, in this process (the fleet is down): name -> problem, {} if clean."""
    bad = {}
    for image in images(directory):
        with open_board(image, repair=False) as board:
            report = storage.fsck(OpsContext.offline(board))
        if not report.clean:
            bad[image.parent.name] = repr(report)
    return bad


def read_identities(directory: Path) -> dict[str, tuple[str | None, str]]:
    """Each image's serial number and certificate PEM, read while the fleet is down."""
    out = {}
    for image in images(directory):
        with open_board(image, repair=False) as board:
            ctx = OpsContext.offline(board)
            out[image.parent.name] = (
                board.settings().get(SERIAL_SETTING),
                ops_tls.tls_pem(ctx).pem,
            )
    return out


# ----- clients ----------------------------------------------------------------------------


class Api:
    def __init__(self, address: str) -> None:
        self.address = address
        token = base64.b64encode(f"admin:{ADMIN}".encode()).decode()
        self.auth = f"Basic {token}"

    def call(
        self, method: str, path: str, body: bytes | None = None, kind: str = "application/json"
    ) -> Any:
        request = urllib.request.Request(
            f"http://{self.address}/api/v1{path}",
            data=body,
            method=method,
            headers={"Authorization": self.auth, "Content-Type": kind},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
        return json.loads(data) if data else None

    def json(self, method: str, path: str, obj: Any = None) -> Any:
        return self.call(method, path, None if obj is None else json.dumps(obj).encode())


class Pop3sVerified(poplib.POP3_SSL):
    """POP3S whose certificate is checked against `context` for `server_name`."""

    def __init__(self, host: str, port: int, server_name: str, context: ssl.SSLContext) -> None:
        self.server_name = server_name
        self.verified = context
        super().__init__(host, port, timeout=30, context=context)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout)
        return self.verified.wrap_socket(sock, server_hostname=self.server_name)


@dataclass
class Dev:
    index: int
    name: str
    host: str
    pop3: int
    pop3s: int
    api: Api
    context: ssl.SSLContext
    uploaded: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    scans_done: int = 0
    scans_deleted: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Report:
    sessions: int = 0
    pop3s_sessions: int = 0
    retrieved: int = 0
    uploads: int = 0
    scans: int = 0
    trace_events: int = 0
    errors: list[str] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # t, fds, RssAnon KiB
    base_fds: int = 0
    end_fds: int = 0
    warm_rss: int = 0
    figures: dict[str, Any] = field(default_factory=dict)


def _fail(report: Report, what: str, exc: BaseException) -> None:
    report.errors.append(f"{what}: {exc!r}")


def fetch_session(dev: Dev, box: str, password: str, tls: bool, report: Report) -> None:
    """One fetch-and-delete session; client errors a fault on `dev` explains are counted
    in dev.injected, others raised."""
    client: poplib.POP3 = (
        Pop3sVerified(dev.host, dev.pop3s, dev.name + ".soak.test", dev.context)
        if tls
        else poplib.POP3(dev.host, dev.pop3, timeout=30)
    )
    stage = "login"
    try:
        client.user(box)
        client.pass_(password)
        stage = "STAT"
        count, _ = client.stat()
        stage = "UIDL"
        uids = [line.split()[1].decode() for line in client.uidl()[1]]
        assert len(uids) == count, (uids, count)
        tokens = []
        stage = "RETR"
        for n in range(1, count + 1):
            _, lines, _ = client.retr(n)
            subject = next((x for x in lines if x.startswith(b"Subject: ")), b"")
            tokens.append(subject[9:].decode())
            report.retrieved += 1
        stage = "DELE"
        for n in range(1, count + 1):
            client.dele(n)
        stage = "QUIT"
        assert client.quit().startswith(b"+OK")
        report.sessions += 1
        report.pop3s_sessions += tls
        with dev.lock:
            if box.startswith("load"):
                dev.deleted.update(tokens)
            else:
                dev.scans_deleted += len(tokens)
    except (poplib.error_proto, OSError, EOFError) as exc:
        if stage == "STAT" and dev.index == 1 and b"fault injected" in str(exc).encode():
            dev.injected["reply-error"] += 1
        elif stage == "RETR" and dev.index == 2:
            dev.injected["retr-break"] += 1
        else:
            raise AssertionError(
                f"{dev.name} {box} {stage} ({'POP3S' if tls else 'POP3'})"
            ) from exc
    finally:
        client.close()


def fetch_loop(dev: Dev, stop: threading.Event, report: Report) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        box, password = (
            (f"scan{dev.index}", f"Scan-pw-{dev.index}-xyz")
            if n % 3 == 0
            else (f"load{dev.index}", f"Load-pw-{dev.index}-xyz")
        )
        try:
            fetch_session(dev, box, password, tls=n % 2 == 0, report=report)
        except Exception as exc:  # every unexplained client error is a finding
            _fail(report, f"fetch {dev.name}", exc)
            stop.wait(0.5)
        stop.wait(0.3)


def message(token: str, size: int) -> bytes:
    body = ("soak line " + "x" * 60 + "\r\n") * (size // 72 + 1)
    return (
        f"From: soak@example.test\r\nTo: load@example.test\r\nSubject: {token}\r\n"
        f"Message-ID: <{token}@soak.test>\r\n\r\n{body}"
    ).encode()


def upload_loop(devs: list[Dev], stop: threading.Event, report: Report) -> None:
    n = 0
    rng = random.Random(5)
    while not stop.is_set():
        dev = devs[n % len(devs)]
        token = f"soak-{dev.index}-{n}"
        n += 1
        try:
            dev.api.call(
                "POST",
                f"/boxes/load{dev.index}/messages",
                message(token, rng.choice([500, 4000, 30000])),
                "message/rfc822",
            )
            with dev.lock:
                dev.uploaded.add(token)
            report.uploads += 1
        except Exception as exc:
            _fail(report, f"upload {dev.name}", exc)
            stop.wait(0.5)
        stop.wait(0.05)


def scan_loop(devs: list[Dev], stop: threading.Event, report: Report) -> None:
    n = 0
    while not stop.is_set():
        dev = devs[n % len(devs)]
        n += 1
        try:
            job = dev.api.json("POST", "/scans", {"box": f"scan{dev.index}", "pages": 1})
            number = job.get("job", job.get("number"))
            deadline = time.monotonic() + 60
            while True:
                got = dev.api.json("GET", f"/scans/{number}")
                if got["state"] != "running":
                    break
                assert time.monotonic() < deadline, f"scan {number} still running"
                time.sleep(0.05)
            assert got["state"] == "done", got
            with dev.lock:
                dev.scans_done += 1
            report.scans += 1
        except Exception as exc:
            _fail(report, f"scan {dev.name}", exc)
            stop.wait(0.5)
        stop.wait(0.5)


def trace_loop(dev: Dev, stop: threading.Event, report: Report, conns: list[socket.socket]) -> None:
    """Hold GET /api/v1/trace open, counting events, until `stop` (then the main thread
    shuts the socket down, which ends the blocked read)."""
    host, port = dev.api.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("GET", "/api/v1/trace", headers={"Authorization": dev.api.auth})
        response = conn.getresponse()
        assert response.status == 200, response.status
        assert conn.sock is not None
        conns.append(conn.sock)
        first = response.readline()
        assert first.startswith(b": trace stream open"), first
        while True:
            line = response.readline()
            if not line:
                if stop.is_set():
                    return
                raise AssertionError("the trace stream ended")
            if line.startswith(b"event: trace"):
                report.trace_events += 1
    except Exception as exc:
        if not stop.is_set():
            _fail(report, f"trace {dev.name}", exc)
    finally:
        conn.close()


# ----- the run ----------------------------------------------------------------------------


def start(directory: Path) -> tuple[Fleet, dict[str, tuple[str | None, str]]]:
    """Create the images (a first `fleet up`, then `fleet down`), read their serials and
    certificates, and start the fleet again on the same images."""
    write_manifest(directory)
    first = Fleet(directory, "--admin-password", ADMIN)
    try:
        first.wait_ready()
        assert first.down() == 0, first.output()
    finally:
        first.kill()
    identities = read_identities(directory)
    fleet = Fleet(directory)
    fleet.wait_ready()
    return fleet, identities


def devices(fleet: Fleet, identities: dict[str, tuple[str | None, str]]) -> list[Dev]:
    out = []
    for index, d in enumerate(fleet_status(fleet.directory)):
        host, pop3 = d["pop3"].rsplit(":", 1)
        context = ssl.create_default_context(cadata=identities[d["name"]][1])
        assert identities[d["name"]][0] == d["serial"]
        out.append(
            Dev(
                index,
                d["name"],
                host,
                int(pop3),
                int(d["pop3s"].rsplit(":", 1)[1]),
                Api(d["http"]),
                context,
            )
        )
    return out


def run(directory: Path, seconds: float, sample_every: float = 2.0) -> tuple[Fleet, Report]:
    """Start the fleet, warm up, run the load; returns the running fleet (the caller checks
    and stops it) and the report."""
    fleet, identities = start(directory)
    try:
        return fleet, load(fleet, identities, seconds, sample_every)
    except BaseException:
        fleet.kill()
        raise


def load(
    fleet: Fleet,
    identities: dict[str, tuple[str | None, str]],
    seconds: float,
    sample_every: float,
) -> Report:
    pid = fleet.popen.pid
    devs = devices(fleet, identities)
    report = Report()
    # Warm-up: one of everything on every device (TLS contexts, the scanner, upload paths).
    for dev in devs:
        dev.api.call(
            "POST", f"/boxes/load{dev.index}/messages", message("warm", 200), "message/rfc822"
        )
        fetch_session(dev, f"load{dev.index}", f"Load-pw-{dev.index}-xyz", True, report)
        fetch_session(dev, f"load{dev.index}", f"Load-pw-{dev.index}-xyz", False, report)
    scan_loop_once(devs[:2], report)
    for dev in devs:
        dev.deleted.clear()  # the warm-up message
    for index, fault in FAULTS.items():
        devs[index].api.json("POST", "/faults", {**fault, "box": f"load{index}"})
    # The baseline: the fewest descriptors over 2 s once the warm-up's clients are gone.
    report.base_fds = len(open_fds(pid))
    for _ in range(20):
        time.sleep(0.1)
        report.base_fds = min(report.base_fds, len(open_fds(pid)))
    base_list = open_fds(pid)
    report.warm_rss = rss_kib(pid)
    stop = threading.Event()
    threads = [threading.Thread(target=fetch_loop, args=(d, stop, report)) for d in devs]
    threads.append(threading.Thread(target=upload_loop, args=(devs, stop, report)))
    threads.append(threading.Thread(target=scan_loop, args=(devs, stop, report)))
    traced = [devs[0], devs[7], devs[14]]
    streams: list[socket.socket] = []
    threads += [
        threading.Thread(target=trace_loop, args=(d, stop, report, streams)) for d in traced
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        while time.monotonic() - started < seconds:
            if fleet.popen.poll() is not None:
                raise AssertionError("the fleet died:\n" + fleet.output()[-3000:])
            report.samples.append(
                (round(time.monotonic() - started, 1), len(open_fds(pid)), rss_kib(pid))
            )
            time.sleep(sample_every)
    finally:
        stop.set()
        for sock in streams:
            sock.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(60)
    # Back to the baseline once every client has closed (the device closes its end when it
    # reads EOF; the trace streams end when the device notices the closed socket).
    wait_until(lambda: len(open_fds(pid)) <= report.base_fds + FD_SLACK, timeout=30)
    report.end_fds = len(open_fds(pid))
    report.figures["fds_gone_by_end"] = kinds(base_list, open_fds(pid))
    settle(devs, report)
    return report


def scan_loop_once(devs: list[Dev], report: Report) -> None:
    stop = threading.Event()
    for dev in devs:
        scan_loop([dev], _once(stop), report)


class _once(threading.Event):
    """An Event that reads set after its first check: one round of a loop."""

    def __init__(self, _: threading.Event) -> None:
        super().__init__()
        self.checks = 0

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks > 1

    def wait(self, timeout: float | None = None) -> bool:
        return True


def kinds(before: list[str], after: list[str]) -> dict[str, int]:
    """What kind of descriptor (socket, pipe, a file's name) `before` had more of than `after`."""

    def kind(link: str) -> str:
        return link.split(":", 1)[0] if ":" in link and not link.startswith("/") else link

    diff = Counter(kind(x) for x in before) - Counter(kind(x) for x in after)
    return dict(diff)


def settle(devs: list[Dev], report: Report) -> None:
    """Count what every box holds and what each device's faults fired; findings go to
    report.errors."""
    present = 0
    for dev in devs:
        listing = dev.api.json("GET", f"/boxes/load{dev.index}/messages")
        items = listing["messages"] if isinstance(listing, dict) else listing
        subjects = [m["subject"] for m in items if m["subject"] != "warm"]
        present += len(subjects)
        if len(set(subjects)) != len(subjects):
            report.errors.append(f"{dev.name}: a message is in its box twice")
        if set(subjects) & dev.deleted:
            report.errors.append(f"{dev.name}: deleted yet present: {set(subjects) & dev.deleted}")
        if set(subjects) | dev.deleted != dev.uploaded:
            lost = dev.uploaded - set(subjects) - dev.deleted
            extra = (set(subjects) | dev.deleted) - dev.uploaded
            report.errors.append(f"{dev.name}: uploads lost {sorted(lost)[:5]} extra {extra}")
        scans = dev.api.json("GET", f"/boxes/scan{dev.index}/messages")
        scans = scans["messages"] if isinstance(scans, dict) else scans
        if len(scans) + dev.scans_deleted != dev.scans_done:
            report.errors.append(
                f"{dev.name}: {dev.scans_done} scans done {dev.scans_deleted} "
                f"fetched and deleted, {len(scans)} present"
            )
        if dev.index in FAULTS:
            fired = dev.api.json("GET", "/faults")["fired"]
            for action in ("reply-error", "retr-break"):
                if dev.injected[action] != fired.get(action, 0):
                    report.errors.append(
                        f"{dev.name}: clients met {dev.injected[action]} {action} errors, "
                        f"the device fired {fired.get(action, 0)}"
                    )
            report.figures.setdefault("fired", {})[dev.name] = fired
    report.figures["present_after"] = present


def figures(report: Report, seconds: float) -> dict[str, Any]:
    rss = [(t, kib) for t, _, kib in report.samples]
    warm = [kib for t, kib in rss if t < seconds * 0.45] or [report.warm_rss]
    last = [kib for t, kib in rss if t >= seconds * 0.85] or [rss[-1][1]]
    warm_max = max(report.warm_rss, *warm)
    return {
        **report.figures,
        "seconds": seconds,
        "sessions": report.sessions,
        "pop3s_sessions": report.pop3s_sessions,
        "retrieved": report.retrieved,
        "uploads": report.uploads,
        "scans": report.scans,
        "trace_events": report.trace_events,
        "fds_base": report.base_fds,
        "fds_max": max(f for _, f, _ in report.samples),
        "fds_end": report.end_fds,
        "rss_warm_max_kib": warm_max,
        "rss_end_kib": statistics.median(last),
        "rss_max_kib": max(kib for _, kib in rss),
        "rss_growth_kib": statistics.median(last) - warm_max,
    }


def unexpected_lines(fleet: Fleet) -> list[str]:
    """WARNING/ERROR lines and tracebacks of the fleet that no fault or design explains."""
    designed = (
        "plaintext USER/PASS allowed",
        "dpfw.auth: dpfw pop3 event=",
        "dpfw.fault",
        "fault injected",
    )
    return [
        line
        for line in fleet.lines
        if (" WARNING " in line or " ERROR " in line or "Traceback" in line)
        and not any(text in line for text in designed)
    ]


def check(fleet: Fleet, report: Report, seconds: float, growth_limit_kib: int) -> dict[str, Any]:
    """Assert the soak's bounds, stop the fleet, fsck every image; returns the figures."""
    try:
        found = figures(report, seconds)
        print("fleet soak figures:", json.dumps(found))
        assert fleet.popen.poll() is None, fleet.output()[-3000:]
        assert not report.errors, report.errors[:10]
        assert report.trace_events > 0
        assert report.sessions >= seconds and report.pop3s_sessions > 0
        assert report.uploads >= seconds and report.scans > 0
        assert report.end_fds <= report.base_fds + FD_SLACK, found
        assert found["rss_growth_kib"] <= growth_limit_kib, found
        assert fleet.down() == 0
        bad = unexpected_lines(fleet)
        assert not bad, bad[:10]
        assert fleet.output().count("board image closed cleanly") == COUNT
    finally:
        fleet.kill()
    assert fsck_all(fleet.directory) == {}
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write figures and samples (JSON)")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir or Path(tmp) / "soak"
        fleet, report = run(directory, args.seconds, sample_every=max(2.0, args.seconds / 300))
        limit = CI_GROWTH_LIMIT_KIB if args.seconds < 600 else RELEASE_GROWTH_LIMIT_KIB
        try:
            found = check(fleet, report, args.seconds, limit)
        finally:
            if args.out:
                args.out.write_text(
                    json.dumps(
                        {
                            "figures": figures(report, args.seconds),
                            "errors": report.errors,
                            "samples": report.samples,
                        }
                    )
                )
    print(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
