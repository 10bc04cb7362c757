"""`tools/board`: target-like board images for dpfw, built with mmdebstrap, booted under qemu-user.

    tools/board build [--arch amd64|arm64|armhf] [--data-mib N] OUT.img
    tools/board run [--port N] [--sessions-s SECONDS] [--keep-running] OUT.img

A board image is one file with a GPT and two partitions, as a small board's eMMC would have:

    1  dpfw-root  squashfs, mounted read-only: Debian bookworm `essential` + python3, and the dpfw
                  wheel with its dependency wheels (for the target architecture, from the package
                  index) in /usr/local/lib/python3.11/dist-packages, byte-compiled at build time;
                  no compiler, no pip, no apt. /usr/local/bin/dpfw starts it.
    2  dpfw-data  ext4, the only writable partition, mounted at /data: the flash image
                  /data/board.img (the demo image, so the smoke test has lab passwords).

`run` mounts both in a private mount namespace (`unshare --mount`), chroots into the read-only
root and starts `dpfw run /data/board.img` under an address-space limit equal to the board's
RAM (below), with the console on a pty. A foreign architecture runs under qemu-user through
binfmt_misc (qemu-user-static registers the F flag, so the host's emulator is used inside the
chroot). It then smoke-tests the device from the host: POP3 greeting, login, RETR of a scanned
message, the console over its pty (login, `status`), sessions per second, and stops it with
SIGTERM as an init system would, checking the image closed cleanly. It prints figures:
boot time, RSS, sessions/s.

Board RAM: the profile's memory.image_ram_mib (what scan jobs may reserve) plus dpfw's measured
address-space floor (firmware.cli.limits.FLOOR_MIB) plus, under emulation, QEMU_OVERHEAD_MIB
for the emulator's own mappings (its translation cache).

Needs root (or a user namespace that may mount loop devices), mmdebstrap, squashfs-tools,
e2fsprogs, util-linux (sfdisk, unshare, mount) and, for a foreign arch, qemu-user-static,
binfmt-support and arch-test. Every failure is one `board: ...` line and exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import poplib
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = "bookworm"
MIRROR = os.environ.get("BOARD_MIRROR", "http://deb.debian.org/debian")
PYTHON = "3.11"  # bookworm's python3; the wheels are chosen for it
MIB = 1024 * 1024
SECTOR = 512
# qemu-user's own mappings on top of the guest's (measured with `run --as-mib`, arm64 guest,
# qemu 7.2: the device boots and serves at 240 MiB in all, and at 224 qemu fails with
# "aarch64-binfmt-P: /usr/bin/python3: Error mapping file: Cannot allocate memory").
QEMU_OVERHEAD_MIB = 256

# Debian arch -> (PyPI manylinux arch, qemu-user binary, GPT root partition type from the UAPI
# Discoverable Partitions Specification: `run` reads the arch back from it).
ARCHES = {
    "amd64": ("x86_64", "qemu-x86_64-static", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
    "arm64": ("aarch64", "qemu-aarch64-static", "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"),
    "armhf": ("armv7l", "qemu-arm-static", "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3"),
}
# glibc 2.36 in bookworm: every manylinux tag up to it fits.
MANYLINUX = [f"manylinux_2_{minor}" for minor in range(36, 16, -1)] + ["manylinux2014"]

DEMO_BOX, DEMO_PASSWORD, DEMO_ADMIN = "alice", "alice-lab", "admin-lab"


class BoardError(Exception):
    """A refusal or a failed step: printed as one `board: ...` line."""


def host_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf"}.get(machine, machine)


def sh(*cmd: str | Path, what: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure a BoardError naming the step and the command's last words."""
    try:
        proc = subprocess.run(
            [str(c) for c in cmd],
            capture_output=True,
            text=True,
            input=input,
        )
    except FileNotFoundError:
        raise BoardError(f"{what}: {cmd[0]} is not installed (see docs/packaging.md)") from None
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        tail = [line for line in said if not line.startswith("WARNING")][-4:] or said[-4:]
        raise BoardError(f"{what} failed ({proc.returncode}): " + " | ".join(tail))
    return proc


# ---------------------------------------------------------------------------------- build


def build_wheels(arch: str, into: Path) -> list[Path]:
    """The dpfw wheel from this checkout and its dependencies' wheels for `arch` (binary only:
    the board has no compiler)."""
    into.mkdir(parents=True)
    sh(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        into,
        ROOT,
        what="building the dpfw wheel",
    )
    (dpfw_wheel,) = into.glob("dpfw-*.whl")
    sh(
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        *target_flags(arch),
        "-d",
        into,
        dpfw_wheel,
        what=f"fetching the dependency wheels for {arch} (binary wheels only: no compiler on "
        "the board)",
    )
    return sorted(into.glob("*.whl"))


def target_flags(arch: str) -> list[str]:
    """pip's flags to choose binary wheels for bookworm's python3 on `arch`."""
    return [
        "--only-binary=:all:",
        *(f"--platform={tag}_{ARCHES[arch][0]}" for tag in MANYLINUX),
        f"--python-version={PYTHON}",
        "--implementation=cp",
        f"--abi=cp{PYTHON.replace('.', '')}",
    ]


def install_wheels(arch: str, wheels: list[Path], rootfs: Path) -> None:
    """Unpack the wheels into the rootfs's /usr/local/lib/python3.X/dist-packages (Debian's
    python3 has it on sys.path), byte-compile them with the host's python3.X (same bytecode),
    and write /usr/local/bin/dpfw."""
    site = rootfs / f"usr/local/lib/python{PYTHON}/dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    sh(
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-compile",
        "--no-index",
        "--target",
        site,
        *target_flags(arch),
        *wheels,
        what="unpacking the wheels into the root file system",
    )
    # pip --target puts console scripts in site/bin with this venv's python: ours instead.
    # The wheel's data (the man page) goes to site/share: no man on the board either.
    shutil.rmtree(site / "bin", ignore_errors=True)
    shutil.rmtree(site / "share", ignore_errors=True)
    if f"{sys.version_info.major}.{sys.version_info.minor}" == PYTHON:
        sh(
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "-j0",
            "--invalidation-mode",
            "unchecked-hash",
            site,
            what="byte-compiling the wheels",
        )
    launcher = rootfs / "usr/local/bin/dpfw"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(
        "#!/usr/bin/python3\nimport sys\nfrom firmware.cli import main\nsys.exit(main())\n"
    )
    launcher.chmod(0o755)


def make_rootfs(arch: str, rootfs: Path, wheels: list[Path]) -> None:
    if arch != host_arch() and shutil.which(ARCHES[arch][1]) is None:
        raise BoardError(
            f"--arch {arch}: {ARCHES[arch][1]} is missing "
            "(apt-get install qemu-user-static binfmt-support arch-test)"
        )
    excludes = [
        f"--dpkgopt=path-exclude=/usr/share/{d}/*"
        for d in ("doc", "man", "locale", "info", "lintian")
    ]
    sh(
        "mmdebstrap",
        "--quiet",
        "--variant=essential",
        "--include=python3",
        f"--arch={arch}",
        *excludes,
        SUITE,
        rootfs,
        MIRROR,
        what=f"mmdebstrap ({SUITE}, {arch})",
    )
    install_wheels(arch, wheels, rootfs)
    # Mount points of the read-only root; /tmp gets a small tmpfs at boot.
    for d in ("data", "proc", "dev", "tmp", "run"):
        (rootfs / d).mkdir(exist_ok=True)
    # Not needed on a board: the package database's caches and apt's lists.
    for junk in ("var/cache/apt", "var/lib/apt/lists"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)


def make_data(data_dir: Path, flash_mib: int) -> None:
    """The flash image the device boots from: the demo image (lab passwords) with one real
    scan (a TIFF G4 page) added to box alice, made by this checkout's dpfw."""
    data_dir.mkdir()
    image = data_dir / "board.img"
    dpfw = (sys.executable, "-m", "firmware")
    sh(*dpfw, "image", "demo", image, "--size", f"{flash_mib}MiB", what="making the demo image")
    scan = ("--pages", "1", "--dpi", "200x200", "--mode", "mono", "--format", "tiff")
    sh(*dpfw, "scan", image, DEMO_BOX, *scan, what="scanning a page into the flash image")


def pack(out: Path, arch: str, squash: Path, data_dir: Path, data_mib: int) -> None:
    """GPT disk image: p1 the squashfs root, p2 an ext4 data partition made from data_dir."""
    root_sectors = -(-squash.stat().st_size // MIB) * MIB // SECTOR
    data_sectors = data_mib * MIB // SECTOR
    start1 = MIB // SECTOR
    start2 = start1 + root_sectors
    total = (start2 + data_sectors) * SECTOR + MIB  # + room for the backup GPT
    tmp = out.with_name(out.name + ".part")
    with tmp.open("wb") as f:
        f.truncate(total)
    layout = (
        "label: gpt\n"
        f"start={start1}, size={root_sectors}, type={ARCHES[arch][2]}, name=dpfw-root\n"
        f"start={start2}, size={data_sectors}, type=linux, name=dpfw-data\n"
    )
    sh("sfdisk", "--quiet", tmp, input=layout, what="writing the partition table")
    with tmp.open("r+b") as f, squash.open("rb") as src:
        f.seek(start1 * SECTOR)
        shutil.copyfileobj(src, f, 4 * MIB)
    data = out.with_name(out.name + ".data")
    sh(
        "mkfs.ext4",
        "-q",
        "-F",
        "-L",
        "dpfw-data",
        "-d",
        data_dir,
        data,
        f"{data_mib}M",
        what="making the ext4 data partition",
    )
    with tmp.open("r+b") as f, data.open("rb") as src:
        f.seek(start2 * SECTOR)
        shutil.copyfileobj(src, f, 4 * MIB)
    data.unlink()
    tmp.replace(out)


def build(arch: str, out: Path, data_mib: int, flash_mib: int) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="board-", dir=os.environ.get("TMPDIR")) as t:
        work = Path(t)
        # The quick steps first: a refusal comes before the minutes of mmdebstrap.
        wheels = build_wheels(arch, work / "wheels")
        make_data(work / "data", flash_mib)
        rootfs = work / "rootfs"
        make_rootfs(arch, rootfs, wheels)
        squash = work / "root.squashfs"
        sh(
            "mksquashfs",
            rootfs,
            squash,
            "-quiet",
            "-noappend",
            "-comp",
            "gzip",
            "-all-root",
            what="packing the squashfs root",
        )
        pack(out, arch, squash, work / "data", data_mib)
        root_mib = squash.stat().st_size / MIB
    took = time.monotonic() - started
    print(
        f"board: built {out} ({arch}): root {root_mib:.1f} MiB squashfs (read-only), "
        f"data {data_mib} MiB ext4 with a {flash_mib} MiB flash image; {took:.0f} s"
    )


# ------------------------------------------------------------------------------------ run


@dataclass
class Partition:
    name: str
    type: str  # GPT partition type GUID
    offset: int  # bytes
    size: int  # bytes


def partitions(image: Path) -> dict[str, Partition]:
    table = json.loads(sh("sfdisk", "--json", image, what=f"reading {image}'s partitions").stdout)[
        "partitiontable"
    ]
    sector = int(table.get("sectorsize", SECTOR))
    found = {
        p.get("name", ""): Partition(
            p.get("name", ""), p.get("type", ""), p["start"] * sector, p["size"] * sector
        )
        for p in table.get("partitions", [])
    }
    if not {"dpfw-root", "dpfw-data"} <= set(found):
        raise BoardError(f"{image}: not a board image (no dpfw-root and dpfw-data partitions)")
    return found


def image_arch(parts: dict[str, Partition]) -> str:
    """The architecture of the root partition, from its GPT type (the Discoverable Partitions
    Specification's root partition type of each architecture, written by `build`)."""
    guid = parts["dpfw-root"].type.upper()
    for arch, (_pypi, _qemu, root_type) in ARCHES.items():
        if guid == root_type:
            return arch
    raise BoardError(f"the dpfw-root partition has type {guid}, no root type known here")


def board_ram_mib(emulated: bool) -> int:
    from firmware.cli.limits import FLOOR_MIB
    from firmware.config.profile import factory

    profile = factory("DP-3530")  # the demo image's model (make_data)
    ram = int(str(profile["memory.image_ram_mib"])) + FLOOR_MIB
    return ram + (QEMU_OVERHEAD_MIB if emulated else 0)


BOOT_SCRIPT = r"""
set -eu
m="$1"; img="$2"; ro="$3"; rs="$4"; do="$5"; ds="$6"; as="$7"; shift 7
mount -t squashfs -o loop,ro,offset="$ro",sizelimit="$rs" "$img" "$m"
mount -t ext4 -o loop,offset="$do",sizelimit="$ds" "$img" "$m/data"
mount -t proc proc "$m/proc"
mount --rbind /dev "$m/dev"
mount -t tmpfs -o size=8m,mode=1777 tmpfs "$m/tmp"
mount -t tmpfs -o size=1m tmpfs "$m/run"
exec prlimit --as="$as" -- chroot "$m" "$@"
"""


class Device:
    """The device process: `unshare --mount` -> sh -> prlimit -> chroot -> dpfw, one PID."""

    def __init__(self, image: Path, parts: dict[str, Partition], port: int, ram_mib: int):
        self.mnt = Path(tempfile.mkdtemp(prefix="board-root-"))
        root, data = parts["dpfw-root"], parts["dpfw-data"]
        cmd = [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", BOOT_SCRIPT, "boot", str(self.mnt), str(image),
            str(root.offset), str(root.size), str(data.offset), str(data.size),
            str(ram_mib * MIB),
            "/usr/local/bin/dpfw", "run", "/data/board.img",
            "--pop3", f"127.0.0.1:{port}", "--console", "pty",
        ]  # fmt: skip
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.ended = False
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        """Drain the device's output all along (a full pipe would stall the device)."""
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching `pattern` (searched from the start)."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.changed:
            while True:
                for line in self.lines[seen:]:
                    if match := re.search(pattern, line):
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    break
                self.changed.wait(left)
        raise BoardError(
            f"the device did not print /{pattern}/ in {timeout:.0f} s; it said:\n"
            + "\n".join(self.lines[-20:])
        )

    def mounts(self) -> str:
        """How the device process sees / and /data (from its mountinfo): e.g.
        "/ squashfs ro, /data ext4 rw"; a BoardError if the root is not read-only."""
        seen: dict[str, tuple[str, str]] = {}
        for line in Path(f"/proc/{self.popen.pid}/mountinfo").read_text().splitlines():
            fields = line.split()
            sep = fields.index("-")
            point, options, fstype = fields[4], fields[5].split(","), fields[sep + 1]
            if point in ("/", "/data"):
                seen[point] = (fstype, "ro" if "ro" in options else "rw")
        if seen.get("/") != ("squashfs", "ro") or seen.get("/data", ("", ""))[1] != "rw":
            raise BoardError(f"the device's mounts are not as built: {seen}")
        return ", ".join(f"{point} {fs} {mode}" for point, (fs, mode) in sorted(seen.items()))

    def rss_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the device process in KiB (under emulation: qemu's, which
        includes the guest's)."""
        status = Path(f"/proc/{self.popen.pid}/status").read_text()
        values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
        return int(values.get("VmRSS", 0)), int(values.get("VmHWM", 0))

    def stop(self, timeout: float = 60) -> tuple[int, str]:
        """SIGTERM, as an init system would; SIGKILL after `timeout`. (status, all output)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        with self.changed:
            self.changed.wait_for(lambda: self.ended, 10)
        with contextlib.suppress(OSError):
            self.mnt.rmdir()
        return self.popen.returncode, "\n".join(self.lines)


def pop3_smoke(port: int) -> str:
    """Greeting, login, RETR of a scanned message; returns a line for the report."""
    client = poplib.POP3("127.0.0.1", port, timeout=60)
    try:
        greeting = client.getwelcome().decode()
        if not greeting.startswith("+OK"):
            raise BoardError(f"POP3 greeting: {greeting!r}")
        client.user(DEMO_BOX)
        client.pass_(DEMO_PASSWORD)
        count, _size = client.stat()
        if count < 1:
            raise BoardError("POP3: box alice is empty on the demo image")
        # build scanned one page into alice last: the newest message
        _resp, lines, octets = client.retr(count)
        text = b"\n".join(lines)
        if b"Content-Type: multipart/" not in text or b"Content-Type: image/tiff" not in text:
            raise BoardError(f"POP3: message {count} is not the TIFF scan build put there")
    finally:
        with contextlib.suppress(OSError, poplib.error_proto):
            client.quit()
    return (
        f"POP3 ok: greeting, login {DEMO_BOX}, {count} messages, "
        f"RETR {count} (the scan) = {octets} octets"
    )


def console_smoke(path: str, timeout: float = 60) -> str:
    """Log in on the pty console as admin and run `status`; returns the firmware line."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)
        termios.tcflush(fd, termios.TCIOFLUSH)
        buf = b""

        def until(token: bytes) -> bytes:
            nonlocal buf
            deadline = time.monotonic() + timeout
            while token not in buf:
                if time.monotonic() > deadline:
                    raise BoardError(
                        f"console: no {token!r} in {timeout:.0f} s; got {buf[-200:]!r}"
                    )
                if select.select([fd], [], [], 1.0)[0]:
                    buf += os.read(fd, 4096)
            head, _, buf = buf.partition(token)
            return head

        os.write(fd, b"\r")
        until(b"Password:")
        os.write(fd, DEMO_ADMIN.encode() + b"\r")
        until(b"> ")
        os.write(fd, b"status\r")
        out = until(b"> ")
        os.write(fd, b"logout\r")
    finally:
        os.close(fd)
    firmware = re.search(rb"firmware\s+([^\r\n]+)", out)
    if firmware is None:
        raise BoardError(f"console: `status` printed no firmware line: {out!r}")
    return "console ok: admin login, status: firmware " + firmware.group(1).decode()


def sessions_per_second(port: int, seconds: float) -> float:
    """Whole POP3 sessions (connect, greeting, USER, PASS, STAT, QUIT) one after another."""
    done = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            f = sock.makefile("rwb")
            for command in (None, f"USER {DEMO_BOX}", f"PASS {DEMO_PASSWORD}", "STAT", "QUIT"):
                if command is not None:
                    f.write(command.encode() + b"\r\n")
                    f.flush()
                try:
                    reply = f.readline()
                except OSError as exc:
                    raise BoardError(
                        f"session {done + 1}: {command or 'greeting'}: {exc}"
                    ) from None
                if not reply.startswith(b"+OK"):
                    raise BoardError(f"session {done + 1}: {command}: {reply!r}")
        done += 1
    return done / (time.monotonic() - started)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(image: Path, port: int, sessions_s: float, keep: bool, ram_mib: int | None) -> None:
    if not image.is_file():
        raise BoardError(f"{image}: no such board image")
    parts = partitions(image)
    arch = image_arch(parts)
    emulated = arch != host_arch()
    if emulated and not Path(f"/proc/sys/fs/binfmt_misc/{_binfmt_name(arch)}").exists():
        raise BoardError(
            f"{image} is {arch}: binfmt_misc has no {_binfmt_name(arch)} entry; "
            f"run `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; "
            f"update-binfmts --enable {_binfmt_name(arch)}` (as root)"
        )
    ram = ram_mib if ram_mib is not None else board_ram_mib(emulated)
    device = Device(image, parts, port or free_port(), ram)
    ok = False
    try:
        console = device.wait_for(r"^dpfw: console: (/dev/\S+)", 600).group(1)
        pop3_port = int(device.wait_for(r"^dpfw: POP3 on \S+:(\d+)", 600).group(1))
        boot_s = time.monotonic() - device.started
        print(
            f"board: {arch}{' under qemu-user' if emulated else ''}, root read-only, "
            f"RLIMIT_AS {ram} MiB; booted in {boot_s:.1f} s; POP3 on 127.0.0.1:{pop3_port}, "
            f"console {console}",
            flush=True,
        )
        print(f"board: the device sees {device.mounts()}", flush=True)
        print("board: " + pop3_smoke(pop3_port), flush=True)
        print("board: " + console_smoke(console), flush=True)
        rate = sessions_per_second(pop3_port, sessions_s)
        rss, hwm = device.rss_kib()
        print(
            f"board: {rate:.1f} POP3 sessions/s (one client, login + STAT); "
            f"RSS {rss / 1024:.1f} MiB, peak {hwm / 1024:.1f} MiB",
            flush=True,
        )
        if keep:
            print("board: running; Ctrl-C stops it", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                device.popen.wait()
        ok = True
    finally:
        code, out = device.stop()
        if ok:
            if code != 0 or "board image closed cleanly" not in out:
                raise BoardError(
                    f"the device did not stop cleanly (status {code}):\n" + out[-2000:]
                )
            print("board: stopped by SIGTERM; the flash image closed cleanly", flush=True)


def _binfmt_name(arch: str) -> str:
    return {"arm64": "qemu-aarch64", "armhf": "qemu-arm", "amd64": "qemu-x86_64"}[arch]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/board", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a board image (mmdebstrap, squashfs, ext4 data)")
    b.add_argument("--arch", choices=sorted(ARCHES), default=host_arch())
    b.add_argument("--data-mib", type=int, default=24, help="data partition size (default 24)")
    b.add_argument(
        "--flash-mib",
        type=int,
        default=16,
        help="flash image size on the data partition (default 16)",
    )
    b.add_argument("out", type=Path, metavar="OUT.img")
    r = sub.add_parser("run", help="boot a board image and smoke-test it from the host")
    r.add_argument("--port", type=int, default=0, help="POP3 port (default: a free one)")
    r.add_argument(
        "--sessions-s",
        type=float,
        default=3.0,
        help="seconds of back-to-back POP3 sessions to measure (default 3)",
    )
    r.add_argument(
        "--keep-running",
        action="store_true",
        help="after the smoke test, keep the device up until Ctrl-C",
    )
    r.add_argument(
        "--as-mib",
        type=int,
        help="the address-space limit in MiB (default: the board RAM, see the module's doc)",
    )
    r.add_argument("image", type=Path, metavar="OUT.img")
    args = parser.parse_args(argv)
    try:
        if os.geteuid() != 0:
            raise BoardError("needs root (mmdebstrap, loop mounts, chroot); see docs/packaging.md")
        if args.command == "build":
            if args.flash_mib + 4 > args.data_mib:
                raise BoardError(
                    f"--flash-mib {args.flash_mib} does not fit in --data-mib "
                    f"{args.data_mib} (leave 4 MiB for ext4)"
                )
            build(args.arch, args.out, args.data_mib, args.flash_mib)
        else:
            run(args.image, args.port, args.sessions_s, args.keep_running, args.as_mib)
    except BoardError as exc:
        print(f"board: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("board: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
