"""No tracebacks anywhere a user can reach: every failure is one `dpfw: ...` line, non-zero exit.

Each case runs the real `dpfw` in a child process, as a user would: listener addresses that
cannot be bound, prompts answered with Ctrl-D or Ctrl-C on a real pty, an address-space limit
too small, OS errors on the image (libfiu's fiu-run, a read-only bind mount), unreadable inputs,
a closed stdout pipe, and a sweep of every sub-command with bad arguments.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from firmware.cli import main
from firmware.cli.limits import FLOOR_MIB
from tests.support import DeviceProcess, create_image, dpfw

MIB = 1 << 20


def one_error_line(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The single `dpfw: ` line of a failed run; asserts the exit code and no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("dpfw: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def run_dpfw(
    *args: str, prefix: Sequence[str] = (), limit_as: int | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    def limits() -> None:
        if limit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "firmware", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        preexec_fn=limits if limit_as is not None else None,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode()
    )


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = create_image(tmp_path / "board.img")
    dpfw("box", "add", str(path), "alice", "--password", "alice-pw")
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# --- listener addresses --------------------------------------------------------------------


def test_pop3_port_in_use_is_one_line(image: Path, busy_port: int) -> None:
    line = one_error_line(run_dpfw("run", str(image), "--pop3", f"127.0.0.1:{busy_port}"))
    assert f"cannot listen for POP3 on 127.0.0.1:{busy_port}: Address already in use" in line


def test_pop3s_port_in_use_is_one_line(image: Path, busy_port: int) -> None:
    proc = run_dpfw("run", str(image), "--pop3", "127.0.0.1:0", "--pop3s", f"127.0.0.1:{busy_port}")
    line = one_error_line(proc)
    assert f"cannot listen for POP3S on 127.0.0.1:{busy_port}" in line


def test_unassignable_address_is_one_line(image: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of this host.
    line = one_error_line(run_dpfw("run", str(image), "--pop3", "192.0.2.1:1110"))
    assert "cannot listen for POP3 on 192.0.2.1:1110: Cannot assign requested address" in line


def test_unknown_host_is_one_line(image: Path) -> None:
    # .invalid never resolves (RFC 2606); with no DNS at all it fails as well.
    line = one_error_line(run_dpfw("run", str(image), "--pop3", "nohost.invalid:1110"))
    assert "cannot listen for POP3 on nohost.invalid:1110: cannot resolve 'nohost.invalid'" in line


@pytest.mark.parametrize("rate", ["-1", "nan", "inf", "fast"])
def test_bad_scan_feed_is_refused(tmp_path: Path, rate: str) -> None:
    """These used to be accepted (and a negative or NaN rate silently meant 'off')."""
    proc = run_dpfw("run", str(tmp_path / "none.img"), "--scan-feed", rate)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "argument --scan-feed" in proc.stderr


# --- prompts on a real terminal ------------------------------------------------------------


# A busy machine (the whole suite on 2 shared cores) can take tens of seconds to start Python
# and import the firmware; these bound a hang, they are not how long things should take.
START_S = 120
EXIT_S = 120


def _on_pty(args: Sequence[str], prompt: bytes, answer: bytes) -> tuple[int, str]:
    """Run dpfw with a pty as its controlling terminal, answer the first `prompt` with
    `answer` (a control character) once the prompt is shown; its exit code and stderr.
    What the child writes to the terminal after the answer (the echoed ^C, a newline) is
    read too, so it never waits on a full terminal."""
    master, slave = os.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware", *args],
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + START_S
    try:
        while prompt not in seen:
            assert time.monotonic() < deadline, f"no prompt {prompt!r} in {START_S} s: {seen!r}"
            assert proc.poll() is None, f"exited {proc.returncode} before the prompt: {seen!r}"
            seen += _read_some(master)
        os.write(master, answer)
        deadline = time.monotonic() + EXIT_S
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"still running {EXIT_S} s after the answer"
            seen += _read_some(master)
        _, err = proc.communicate(timeout=EXIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, err.decode()


def _read_some(master: int) -> bytes:
    """What the terminal shows within 0.2 s (b"" if nothing, or the child closed it)."""
    ready, _, _ = select.select([master], [], [], 0.2)
    if not ready:
        return b""
    try:
        return os.read(master, 1024)
    except OSError:  # EIO: every slave descriptor closed (the child exited)
        return b""


def test_ctrl_d_at_the_image_create_prompt(tmp_path: Path) -> None:
    code, err = _on_pty(
        ["image", "create", str(tmp_path / "x.img"), "--profile", "DP-3510", "--size", "1MiB"],
        b"Admin password: ",
        b"\x04",
    )
    proc = subprocess.CompletedProcess([], code, "", err)
    assert "no admin password given (end of input)" in one_error_line(proc)
    assert not (tmp_path / "x.img").exists()


@pytest.mark.parametrize("command", ["add", "passwd"])
def test_ctrl_c_at_a_box_password_prompt(image: Path, command: str) -> None:
    name = "bob" if command == "add" else "alice"
    code, err = _on_pty(["box", command, str(image), name], b"Password: ", b"\x03")
    proc = subprocess.CompletedProcess([], code, "", err)
    assert one_error_line(proc, 130) == "dpfw: interrupted"
    assert "bob" not in dpfw("box", "list", str(image)).stdout


# --- the host's limits ---------------------------------------------------------------------


@pytest.mark.parametrize("command", [["image", "demo"], ["run", "--pop3", "127.0.0.1:0"]])
def test_address_space_limit_too_small(tmp_path: Path, command: list[str]) -> None:
    img = tmp_path / "demo.img"
    if command[0] == "run":
        create_image(img)
        args = ["run", str(img), *command[1:]]
    else:
        args = ["image", "demo", str(img)]
    line = one_error_line(run_dpfw(*args, limit_as=48 * MIB))
    assert "the address-space limit (RLIMIT_AS 48 MiB) is too small" in line
    assert f"dpfw needs at least {FLOOR_MIB} MiB" in line


def test_the_floor_is_enough_for_the_demo(tmp_path: Path) -> None:
    proc = run_dpfw("image", "demo", str(tmp_path / "demo.img"), limit_as=FLOOR_MIB * MIB)
    assert proc.returncode == 0, proc.stderr


def test_closed_stdout_pipe_is_quiet() -> None:
    """`dpfw profile keys | head -1` used to end in a BrokenPipeError traceback. `true` leaves
    before dpfw has started, so every write meets a closed pipe."""
    shell = f"{sys.executable} -m firmware profile keys | true"
    proc = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, timeout=60)
    assert proc.stderr == ""


# --- OS errors on the image path -----------------------------------------------------------

fiu = pytest.mark.skipif(shutil.which("fiu-run") is None, reason="fiu-utils not installed")


def _fiu(point: str, errno: int) -> list[str]:
    return ["fiu-run", "-x", "-f", "", "-c", f"enable name={point},failinfo={errno}"]


@fiu
def test_create_with_a_failing_fsync(tmp_path: Path) -> None:
    img = tmp_path / "x.img"
    proc = run_dpfw(
        "image", "create", str(img), "--profile", "DP-3510", "--admin-password", "test-pw",
        prefix=_fiu("posix/io/sync/fsync", 5),
    )  # fmt: skip
    assert "fsync failed: Input/output error" in one_error_line(proc)
    assert not img.exists()


@fiu
def test_create_on_a_full_disk(tmp_path: Path) -> None:
    img = tmp_path / "x.img"
    proc = run_dpfw(
        "image", "create", str(img), "--profile", "DP-3510", "--admin-password", "test-pw",
        prefix=_fiu("posix/io/rw/pwrite", 28),
    )  # fmt: skip
    assert "storage full" in one_error_line(proc)
    assert not img.exists()


@fiu
@pytest.mark.parametrize(
    "args",
    [
        ["image", "inspect"],
        ["image", "fsck"],
        ["image", "compact"],
        ["box", "list"],
        ["profile", "show"],
        ["tls", "show"],
        ["scan", "{img}", "alice"],
        ["run", "{img}", "--pop3", "127.0.0.1:0"],
    ],
)
def test_a_superblock_read_error(image: Path, args: list[str]) -> None:
    argv = [a.replace("{img}", str(image)) for a in args]
    if "{img}" not in args:
        argv.append(str(image))
    proc = run_dpfw(*argv, prefix=_fiu("posix/io/rw/pread", 5))
    assert "read of the superblock failed: Input/output error" in one_error_line(proc)


@fiu
@pytest.mark.parametrize("point", ["posix/io/rw/pwrite", "posix/io/sync/fdatasync"])
def test_deliver_write_errors_name_the_image(image: Path, tmp_path: Path, point: str) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    line = one_error_line(run_dpfw("deliver", str(image), "alice", str(eml), prefix=_fiu(point, 5)))
    assert line.startswith(f"dpfw: {image}: ") and "Input/output error" in line
    listing = json.loads(dpfw("box", "list", str(image), "--json").stdout)
    assert [(b["name"], b["messages"]) for b in listing["boxes"]] == [("alice", 0)]


def test_create_in_a_read_only_directory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", str(ro), "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip("no private mount namespace (needs root)")
    proc = run_dpfw(
        "image", "create", str(ro / "x.img"), "--profile", "DP-3510", "--admin-password", "test-pw",
        prefix=["unshare", "--mount", "sh", "-c", script, "sh", str(ro)],
    )  # fmt: skip
    assert "cannot create: Read-only file system" in one_error_line(proc)


# --- a sweep of every sub-command with bad inputs ------------------------------------------


def _sweep_cases(tmp: Path, img: Path) -> list[list[str]]:
    (tmp / "dir").mkdir()
    (tmp / "junk.img").write_bytes(os.urandom(300))
    (tmp / "empty.img").write_bytes(b"")
    (tmp / "latin1.toml").write_bytes(b'[identity]\nmodel = "caf\xe9"\n')
    d, junk, empty = str(tmp / "dir"), str(tmp / "junk.img"), str(tmp / "empty.img")
    i, missing, latin1 = str(img), str(tmp / "none.img"), str(tmp / "latin1.toml")
    cases = [
        ["image", "create", d, "--profile", "DP-3510", "--admin-password", "x"],
        ["image", "create", f"{d}/x/y.img", "--profile", "DP-3510", "--admin-password", "x"],
        ["image", "create", "/proc/x.img", "--profile", "DP-3510", "--admin-password", "x"],
        ["image", "create", str(tmp / "n.img"), "--profile", latin1, "--admin-password", "x"],
        ["image", "create", str(tmp / "n.img"), "--profile", d, "--admin-password", "x"],
        ["image", "create", str(tmp / "n.img"), "--profile", "DP-3510", "--admin-password", ""],
        ["image", "demo", d],
    ]
    for target in (d, junk, empty, missing, "/dev/null"):
        cases += [
            ["image", "inspect", target],
            ["image", "fsck", target],
            ["image", "compact", target],
            ["box", "list", target],
            ["profile", "show", target],
            ["tls", "show", target],
            ["deliver", target, "alice", junk],
            ["scan", target, "alice"],
            ["run", target, "--pop3", "127.0.0.1:0"],
        ]
    cases += [
        ["box", "add", i, "alice", "--password", "x"],
        ["box", "add", i, "b b", "--password", "x"],
        ["box", "add", i, "bob"],  # no terminal, no password
        ["box", "passwd", i, "nobody", "--password", "x"],
        ["box", "del", i, "nobody"],
        ["deliver", i, "alice", d],
        ["deliver", i, "alice", missing],
        ["deliver", i, "nobody", junk],
        ["scan", i, "alice", "--pages", "0"],
        ["scan", i, "alice", "--pages", "100000"],
        ["scan", i, "alice", "--job", "0"],
        ["scan", i, "nobody"],
        ["tls", "import", i, "--cert", d, "--key", d],
        ["tls", "import", i, "--cert", missing, "--key", missing],
        ["tls", "import", i, "--cert", junk, "--key", junk],
        ["tls", "import", i, "--cert", empty, "--key", empty],
        ["profile", "set", i, "pop3.port", "abc"],
        ["profile", "set", i, "no.key", "1"],
        ["profile", "validate", d, latin1, missing, junk],
        ["image", "create", str(tmp / "n.img"), "--profile", junk, "--admin-password", "x"],
        ["run", i, "--pop3", "127.0.0.1:0", "--set", "no.key=1"],
        ["run", i, "--pop3", "127.0.0.1:0", "--set", "pop3.port=-1"],
    ]
    return cases


def _main_in_process(args: list[str]) -> tuple[int, str, str]:
    """`dpfw ARGS` through firmware.cli.main in this process (a child per case would take a
    minute on a busy machine); any exception escaping main is a traceback a user would see."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        except BaseException:
            return -1, out.getvalue(), err.getvalue() + "Traceback\n" + traceback.format_exc()
    return code, out.getvalue(), err.getvalue()


# Python's own error text: "[Errno 21] Is a directory: '/tmp/x'", "'utf-8' codec can't decode
# byte 0xbf in position 5: invalid start byte". People get the OS's words and the path once.
PYTHON_TEXT = re.compile(r"\[Errno|codec can't|: '/|invalid start byte")


def test_sweep_every_command_with_bad_inputs(image: Path, tmp_path: Path) -> None:
    failures = []
    for args in _sweep_cases(tmp_path, image):
        if args[0] == "run":  # a child, so that a case that boots cannot hang the test
            proc = run_dpfw(*args)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            code, out, err = _main_in_process(args)
        if PYTHON_TEXT.search(out + err):
            failures.append(f"dpfw {' '.join(args)} shows Python's error text:\n{out}{err}")
        dpfw_lines = [line for line in err.splitlines() if line.startswith("dpfw: ")]
        clean = "Traceback" not in err and (
            code == 2  # argparse: usage and one error line
            or (code == 1 and (len(dpfw_lines) == 1 or args[1] == "validate"))
        )
        if not clean:
            failures.append(f"dpfw {' '.join(args)} -> {code}\n{err}")
    assert not failures, "\n".join(failures)


def _holds_lock(pid: int, image: Path) -> bool:
    """True when process `pid` holds the flock every open Board takes (from /proc/locks)."""
    st = image.stat()
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks", encoding="ascii", errors="replace") as f:
        return any(
            len(parts) >= 6 and parts[1] == "FLOCK" and parts[4] == str(pid) and parts[5] == ident
            for parts in (line.split() for line in f)
        )


def test_ctrl_c_during_a_scan(demo_image: Path) -> None:
    """SIGINT in the middle of a job: one line, status 130, the image consistent.

    The job is the largest the DP-3530 takes (200 pages at 400 dpi: tens of seconds on an idle
    machine, more on a busy one) and SIGINT goes once the scan holds the image open, so the
    job is under way whatever the machine's load; a scan that ignored Ctrl-C would exit 0."""
    before = dpfw("box", "list", str(demo_image)).stdout
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "firmware", "scan", str(demo_image), "alice"),
            *("--pages", "200", "--dpi", "400"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + START_S
        while not _holds_lock(proc.pid, demo_image):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"the scan did not open the image in {START_S} s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=EXIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    line = one_error_line(subprocess.CompletedProcess([], proc.returncode, out, err), 130)
    assert line == "dpfw: interrupted"
    assert dpfw("image", "fsck", str(demo_image)).returncode == 0
    assert dpfw("box", "list", str(demo_image)).stdout == before


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_console_that_can_never_be_a_serial_port(image: Path, tmp_path: Path, kind: str) -> None:
    """Used to run with a console retrying it for ever (ENOTTY / EISDIR, a WARNING each boot)."""
    target = tmp_path / "console"
    if kind == "file":
        target.write_bytes(b"")
    else:
        target.mkdir()
    proc = run_dpfw("run", str(image), "--pop3", "127.0.0.1:0", "--console", str(target))
    assert "not a serial port" in one_error_line(proc)


def test_unreadable_files_are_named_with_the_os_reason(image: Path, tmp_path: Path) -> None:
    """`PATH: cannot read: Is a directory` and `PATH: not UTF-8 text`, whichever command."""
    folder, binary = tmp_path / "adir", tmp_path / "binary.toml"
    folder.mkdir()
    binary.write_bytes(b"[ide\xbfntity]\n")
    code, out, _ = _main_in_process(["profile", "validate", str(folder), str(binary)])
    assert code == 1
    assert out.splitlines() == [
        f"{folder}: cannot read: Is a directory",
        f"{binary}: not UTF-8 text",
    ]
    code, _, err = _main_in_process(["deliver", str(image), "alice", str(folder)])
    assert (code, err) == (1, f"dpfw: {folder}: cannot read: Is a directory\n")
    args = ["tls", "import", str(image), "--cert", str(folder), "--key", str(folder)]
    code, _, err = _main_in_process(args)
    assert (code, err) == (1, f"dpfw: --cert {folder}: cannot read: Is a directory\n")


def test_a_console_port_that_is_missing_is_logged_in_the_os_words(
    image: Path, tmp_path: Path, start_device: type[DeviceProcess]
) -> None:
    """A serial port not there (yet) is retried; the log line says why without pyserial's
    "[Errno 2] could not open port X: [Errno 2] No such file or directory: 'X'"."""
    port = tmp_path / "ttyUSB9"
    device = start_device(image, "--console", str(port))
    device.wait_booted()
    deadline = time.monotonic() + 30
    while "not available" not in device.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    out = device.output()
    assert f"console: {port} not available (No such file or directory); retrying" in out, out
    assert not PYTHON_TEXT.search(out), out
    assert device.stop() == 0


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (["box", "list", "IMG", "extra"], "usage: dpfw box list "),
        (["image", "fsck", "IMG", "x", "y"], "usage: dpfw image fsck "),
        (["profile", "list", "--bogus"], "usage: dpfw profile list "),
        (["scan", "IMG", "alice", "more"], "usage: dpfw scan "),
    ],
)
def test_extra_arguments_get_the_sub_commands_usage(args: list[str], usage: str) -> None:
    proc = dpfw(*args, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(usage), proc.stderr
    command = usage.removeprefix("usage: ").strip()
    assert f"{command}: error: unrecognized arguments: " in proc.stderr
