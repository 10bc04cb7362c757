"""A scan job end to end: check, render and encode page by page, hold, wrap, store, release.

Each compressed page is held in the device's RAM budget from the moment it exists until the
job's message is stored in the box, as the real board keeps pages in image memory. When a page
does not fit, the job fails with MEMORY FULL and nothing is stored.

The CPU-heavy part (`JobPages`, firmware/scanner/pages.py: drawing, encoding, the MIME message)
has no budget or board access. `run_scan` (offline: `dpfw scan IMG`, no event loop) calls it
in-process; `run_scan_async` (a running device) runs it in a scan engine, a child process per
job (firmware/scanner/engine.py), and keeps every decision on the trio thread: the budget page
by page, MEMORY FULL, every error line, and storing through the store worker. Pillow drawing
text on a worker thread kept the event loop waiting for the GIL (NOOP max 25-31 ms during a
50-page scan); a child process cannot take it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO

import trio

from firmware.config.budget import RamBudget, Reservation
from firmware.config.profile import Profile
from firmware.errors import BoxError, DeviceError
from firmware.scanner.encode import FORMAT_MODES, FORMATS
from firmware.scanner.engine import (
    GO,
    EngineFailed,
    EngineOutput,
    EngineProtocolError,
    MessageDone,
    PageDone,
    encode_request,
)
from firmware.scanner.pages import JobPages, JobSpec, job_failed
from firmware.scanner.pages import ScanRequest as ScanRequest
from firmware.scanner.render import MODES
from firmware.store.board import Board, MessageInfo
from firmware.store.delivery import over_quota
from firmware.store.worker import StoreWorker
from firmware.text import os_reason, plural

log = logging.getLogger("firmware.scanner")

ENGINE_ENV = "DPFW_SCAN_ENGINE"
"""If set, the command (split as a shell would) that starts a scan engine instead of
`python -m firmware.scanner.engine`: tests run real engines that misbehave this way."""
STDERR_TAIL = 4096  # the bytes of an engine's stderr kept for the log when it fails
JOB_NUMBER_LIMIT = 10000  # job numbers run 0001..9999 and wrap, as on the device panel


@dataclass(frozen=True)
class ScanResult:
    """A stored job: where it went and what it cost."""

    box: str
    uid: str
    size: int  # the stored message's size as POP3 counts it
    pages: int
    job_number: int
    filenames: tuple[str, ...]  # attachment names, one per file
    digests: tuple[str, ...]  # SHA-256 of each attachment's bytes, to check a fetched copy
    bytes_encoded: int  # compressed page bytes held in the RAM budget at the peak

    @property
    def filename(self) -> str:
        return self.filenames[0]


class JobNumbers:
    """The device's running job counter, 1..9999 then wrapping to 1."""

    def __init__(self, start: int = 1) -> None:
        self._next = start if 0 < start < JOB_NUMBER_LIMIT else 1

    def take(self) -> int:
        number = self._next
        self._next = number + 1 if number + 1 < JOB_NUMBER_LIMIT else 1
        return number


def check_request(req: ScanRequest, profile: Profile) -> None:
    """Refuse a job the device cannot do, before anything is rendered or held."""
    max_pages = profile.int("scan.max_pages_per_job")
    if req.pages < 1:
        raise DeviceError(f"a scan job needs at least 1 page, not {req.pages}")
    if req.pages > max_pages:
        raise DeviceError(
            f"scan job of {plural(req.pages, 'page')} refused: {profile.model} takes at most "
            f"{plural(max_pages, 'page')} per job (scan.max_pages_per_job)"
        )
    offered = (
        ("resolution", req.dpi, "scan.resolutions"),
        ("colour mode", req.mode, "scan.color_modes"),
        ("format", req.format, "scan.formats"),
    )
    for what, value, key in offered:
        choices = profile.list(key)
        if value not in choices:
            raise DeviceError(
                f"{what} {value!r} is not offered by this {profile.model}; "
                f"{key} offers {', '.join(choices)}"
            )
    if req.mode not in MODES or req.format not in FORMATS:
        raise DeviceError(f"unknown mode {req.mode!r} or format {req.format!r}")
    if req.mode not in FORMAT_MODES[req.format]:
        raise DeviceError(
            f"format {req.format} cannot carry {req.mode} pages; "
            f"{req.format} takes {', '.join(FORMAT_MODES[req.format])}"
        )


def _hold(budget: RamBudget, held: list[Reservation], spec: JobSpec, page: int, size: int) -> None:
    purpose = f"scan job {spec.job_number:04d} page {page} of {spec.request.pages}"
    held.append(budget.reserve(size, purpose))


def _release(held: list[Reservation]) -> None:
    """Give back a job's pages (once: the list is emptied)."""
    for reservation in held:
        reservation.release()
    held.clear()


def _check_box(board: Board, box: str) -> None:
    """Refuse a job for a box that does not exist before drawing a single page."""
    if board.box_credentials(box) is None:
        raise BoxError(f"no box named {box!r}")


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now().astimezone()


def _start(
    req: ScanRequest, board: Board, profile: Profile, job_number: int, now: datetime | None
) -> JobSpec:
    """Refuse a job the device cannot do (before anything is drawn) or say what it is."""
    check_request(req, profile)
    _check_box(board, req.box)
    hostname = profile.str("identity.hostname")
    return JobSpec(req, profile.model, hostname, job_number, _now(now))


def run_scan(
    req: ScanRequest,
    board: Board,
    budget: RamBudget,
    profile: Profile,
    *,
    job_number: int,
    now: datetime | None = None,
) -> ScanResult:
    """Run one job synchronously, in this process (`dpfw scan IMG` with no device running).

    Raises DeviceError (MEMORY FULL, quota, flash full, a host I/O error while encoding:
    `job_failed`), storing nothing and giving back everything the job held.
    """
    spec = _start(req, board, profile, job_number, now)
    held: list[Reservation] = []
    try:
        try:
            job = JobPages(spec)
            for page in range(1, req.pages + 1):
                _hold(budget, held, spec, page, job.encode_page(page))
            message, names, digests = job.message()
        except OSError as exc:
            raise job_failed(job_number, os_reason(exc)) from None
        stored = board.deliver(req.box, message)
        return _result(spec, stored, names, digests, held)
    finally:
        _release(held)


async def run_scan_async(
    req: ScanRequest,
    board: Board,
    budget: RamBudget,
    profile: Profile,
    *,
    job_number: int,
    now: datetime | None = None,
    worker: StoreWorker | None = None,
) -> ScanResult:
    """`run_scan` for the trio loop: the pages and the message are made by a scan engine
    (a child process for this job, `python -m firmware.scanner.engine`), the pages are held
    in `budget` here as the engine reports them, and the message is stored through `worker`
    (the device's store worker: the append, its fsync and any compaction run off the loop);
    without one, on the trio thread.

    Raises what `run_scan` raises; an engine that cannot start, dies, exits non-zero or
    writes anything the protocol does not allow is `job_failed` ("scan job 0007 failed: the
    scan engine was killed by SIGKILL; nothing was stored"). Cancelled (device shutdown,
    reboot, power cut, Ctrl-C), the job kills and reaps its engine before the Cancelled goes
    on; no engine outlives its job. There is no timer: a stuck engine holds its job until the
    job is cancelled (a job's length depends on its pages, resolution and the host's load).
    """
    spec = _start(req, board, profile, job_number, now)
    held: list[Reservation] = []
    room = board.room_left(req.box)  # quota left: a job that cannot fit stops early
    pages_bytes = 0

    def hold(page: int, size: int) -> None:
        nonlocal pages_bytes
        try:
            _hold(budget, held, spec, page, size)
            pages_bytes += size
            at_least = pages_bytes * 4 // 3  # the pages' base64 alone, in the message
            if at_least > room:  # deliver would refuse it after the last page: say it now
                raise over_quota(req.box, at_least, room, board.limits.quota_mib)
        except BaseException:
            # MEMORY FULL or over quota: the pages go back now, not after the engine is killed
            # (meanwhile another job's next page was refused for want of them).
            _release(held)
            raise

    try:
        done = await _run_engine(spec, hold)
        if worker is not None:
            stored = await worker.run(board.deliver, req.box, done.data)
        else:
            stored = board.deliver(req.box, done.data)
        return _result(spec, stored, done.names, done.digests, held)
    finally:
        _release(held)


def engine_command() -> list[str]:
    """The command that starts a scan engine: $DPFW_SCAN_ENGINE if set, else this
    interpreter with `-m firmware.scanner.engine`. OSError if there is none to run."""
    override = os.environ.get(ENGINE_ENV, "").strip()
    if override:
        try:
            return shlex.split(override)
        except ValueError as exc:
            raise OSError(f"{ENGINE_ENV} is not a command: {exc}") from None
    if not sys.executable:
        raise OSError("no Python interpreter to run it (sys.executable is empty)")
    return [sys.executable, "-m", "firmware.scanner.engine"]


async def _run_engine(spec: JobSpec, hold: Callable[[int, int], None]) -> MessageDone:
    """Start an engine for `spec`, hold each page it reports (`hold(page, size)` may raise
    MEMORY FULL), and return its message; the engine has exited with status 0 by then.
    Whatever happens, the engine is killed (if still running) and reaped before this returns."""
    number = spec.job_number
    try:
        command = engine_command()
        stderr = _stderr_file()
    except OSError as exc:
        raise _could_not_start(number, os_reason(exc)) from None
    with stderr:
        try:
            proc = await trio.lowlevel.open_process(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,  # a terminal's Ctrl-C goes to the device, which decides
            )
        except OSError as exc:
            why = os_reason(exc)
            if exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR):
                why = f"{command[0]}: {why}"  # the program itself: name it
            raise _could_not_start(number, why) from None
        try:
            return await _talk(proc, spec, hold, stderr)
        finally:
            with trio.CancelScope(shield=True):
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
                for stream in (proc.stdin, proc.stdout):
                    if stream is not None:
                        await stream.aclose()


def _could_not_start(number: int, why: str) -> DeviceError:
    """The job's line when no engine could be started, also logged (a killed engine's is)."""
    log.warning("scan job %04d: the scan engine could not start: %s", number, why)
    return job_failed(number, f"the scan engine could not start: {why}")


def _stderr_file() -> IO[bytes]:
    """Where an engine's stderr goes: an anonymous file in memory (memfd), for a board
    writes no file but its image (tests/reliability/test_board.py: read-only root and TMPDIR);
    a temporary file where there is no memfd_create."""
    if hasattr(os, "memfd_create"):
        return os.fdopen(os.memfd_create("dpfw-scan-engine-stderr", os.MFD_CLOEXEC), "w+b")
    return tempfile.TemporaryFile()


async def _talk(
    proc: trio.Process, spec: JobSpec, hold: Callable[[int, int], None], stderr: IO[bytes]
) -> MessageDone:
    """The device's side of the protocol (firmware/scanner/engine.py) with one engine."""
    assert proc.stdin is not None and proc.stdout is not None
    number = spec.job_number
    output = EngineOutput(spec.request.pages)
    done: MessageDone | None = None
    try:
        await _send(proc.stdin, encode_request(spec))
        while True:
            data = await proc.stdout.receive_some()
            for event in output.feed(data):
                if isinstance(event, PageDone):
                    hold(event.page, event.size)  # MEMORY FULL: the engine is killed
                    await _send(proc.stdin, GO)
                elif isinstance(event, EngineFailed):
                    raise job_failed(number, event.reason)
                else:
                    done = event
            if not data:
                break
    except EngineProtocolError as exc:
        # Output that ended early: an engine that died says why by its exit status. Garbage
        # is the engine's own doing; it is killed without waiting.
        raise await _engine_failed(proc, spec, stderr, str(exc), wait=exc.ended) from None
    assert done is not None  # the output ended whole: EngineOutput checked it
    status = await proc.wait()  # it closed its output by exiting
    if status != 0:  # a whole message, but the engine did not end well: store nothing
        raise await _engine_failed(proc, spec, stderr, f"exited with status {status}")
    return done


async def _send(stdin: trio.abc.SendStream, data: bytes) -> None:
    """Write to the engine; if it is gone, its output (read to the end) and its exit status
    will say why, so a broken pipe here is not the error."""
    with contextlib.suppress(trio.BrokenResourceError):
        await stdin.send_all(data)


async def _engine_failed(
    proc: trio.Process, spec: JobSpec, stderr: IO[bytes], problem: str, *, wait: bool = True
) -> DeviceError:
    """The one line for an engine that failed its job; its stderr goes to the log.

    With `wait` (its output ended: it is exiting), the engine's exit status is the reason
    when it died or exited non-zero; else (it exited with 0) `problem` is. Without `wait` (it
    wrote garbage) it is killed first and `problem` is the reason.
    """
    if not wait and proc.returncode is None:
        proc.kill()
    status = await proc.wait()
    tail = _stderr_tail(stderr)
    if wait and status != 0:
        reason = f"the scan engine {_describe_exit(status)}"
        if tail:
            reason += f" ({' '.join(tail[-1].split())[:200]})"
    else:
        reason = f"the scan engine {problem}"
    log.warning(
        "scan job %04d: %s; its stderr: %s",
        spec.job_number,
        reason,
        " | ".join(tail) if tail else "(empty)",
    )
    return job_failed(spec.job_number, reason)


def _describe_exit(status: int) -> str:
    """'was killed by SIGKILL', 'exited with status 1' (trio: a signal is a negative status)."""
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _stderr_tail(stderr: IO[bytes]) -> list[str]:
    """The last non-empty lines of what the engine wrote to stderr (STDERR_TAIL bytes)."""
    try:
        size = stderr.seek(0, os.SEEK_END)
        stderr.seek(max(0, size - STDERR_TAIL))
        text = stderr.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()]


def _result(
    spec: JobSpec,
    stored: MessageInfo,
    names: tuple[str, ...],
    digests: tuple[str, ...],
    held: list[Reservation],
) -> ScanResult:
    return ScanResult(
        box=spec.request.box,
        uid=stored.uid,
        size=stored.size,
        pages=spec.request.pages,
        job_number=spec.job_number,
        filenames=names,
        digests=digests,
        bytes_encoded=sum(r.nbytes for r in held),
    )
