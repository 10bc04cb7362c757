"""A scan job end to end: check, render and encode page by page, hold, wrap, store, release.

Each compressed page is held in the device's RAM budget from the moment it exists until the
job's message is stored in the box, as the real board keeps pages in image memory. When a page
does not fit, the job fails with MEMORY FULL and nothing is stored. The CPU-heavy part
(`_JobPages`) is plain code with no budget or board access, so the async variant can run it in
a worker thread while the budget and the single-threaded Board stay on the trio thread.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime

import trio

from firmware.config.budget import RamBudget, Reservation
from firmware.config.profile import Profile
from firmware.errors import BoxError, DeviceError
from firmware.scanner.encode import FORMAT_MODES, FORMATS, DocumentWriter, open_writer
from firmware.scanner.mime import ScanMessageInfo, attachment_names, write_message
from firmware.scanner.render import MODES, PageSpec, parse_resolution, render_page
from firmware.store.board import Board, MessageInfo
from firmware.store.worker import StoreWorker
from firmware.text import os_reason, plural

JOB_NUMBER_LIMIT = 10000  # job numbers run 0001..9999 and wrap, as on the device panel


@dataclass(frozen=True)
class ScanRequest:
    """What the user pressed on the panel (or typed on the console)."""

    box: str
    pages: int
    dpi: str  # "200x100" | "200x200" | "300" | "400" | "600"
    mode: str  # "mono" | "gray" | "color"
    format: str  # "tiff" | "pdf" | "jpeg"


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


class _JobPages:
    """The CPU-heavy part of one job: draws and encodes pages, then builds the message."""

    def __init__(self, req: ScanRequest, profile: Profile, job_number: int, now: datetime) -> None:
        self.req = req
        self.job_number = job_number
        self.now = now
        self.model = profile.model
        self.hostname = profile.str("identity.hostname")
        self.xdpi, self.ydpi = parse_resolution(req.dpi)
        title = f"{self.model} scan job {job_number:04d}"
        self._writer: DocumentWriter | None = open_writer(
            req.format, (self.xdpi, self.ydpi), title, now
        )

    def encode_page(self, page_number: int) -> int:
        """Render and encode one page; return the compressed bytes it added."""
        spec = PageSpec(
            model=self.model,
            hostname=self.hostname,
            box=self.req.box,
            job_number=self.job_number,
            page_number=page_number,
            pages=self.req.pages,
            timestamp=self.now,
            xdpi=self.xdpi,
            ydpi=self.ydpi,
            mode=self.req.mode,
        )
        assert self._writer is not None, "pages added after the message was built"
        try:
            return self._writer.add_page(render_page(spec))
        except OSError as exc:
            raise _job_failed(self.job_number, exc) from None

    def message(self) -> tuple[io.BytesIO, tuple[str, ...], tuple[str, ...]]:
        """The MIME message (rewound), the attachment names and their SHA-256 digests."""
        assert self._writer is not None, "message built twice"
        try:
            files = self._writer.finish()
        except OSError as exc:
            raise _job_failed(self.job_number, exc) from None
        self._writer = None  # frees the writer's buffer before the MIME copy is made
        info = ScanMessageInfo(
            model=self.model,
            hostname=self.hostname,
            box=self.req.box,
            job_number=self.job_number,
            pages=self.req.pages,
            resolution=self.req.dpi,
            mode=self.req.mode,
            timestamp=self.now,
        )
        names = tuple(attachment_names(self.now, self.job_number, files))
        digests = tuple(hashlib.sha256(f.data).hexdigest() for f in files)
        message = io.BytesIO()
        write_message(info, files, message)
        message.seek(0)
        return message, names, digests


def _job_failed(job_number: int, exc: OSError) -> DeviceError:
    """Pages are drawn and encoded in memory, so an OSError there is the host's (Pillow
    loads its encoder plugins from disk on first use; an injected or real I/O error can hit
    that): one line, and nothing was stored."""
    return DeviceError(f"scan job {job_number:04d} failed: {os_reason(exc)}; nothing was stored")


def _hold(budget: RamBudget, held: list[Reservation], job: _JobPages, page: int, size: int) -> None:
    purpose = f"scan job {job.job_number:04d} page {page} of {job.req.pages}"
    held.append(budget.reserve(size, purpose))


def _release(held: list[Reservation]) -> None:
    for reservation in held:
        reservation.release()


def _check_box(board: Board, box: str) -> None:
    """Refuse a job for a box that does not exist before drawing a single page."""
    if board.box_credentials(box) is None:
        raise BoxError(f"no box named {box!r}")


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now().astimezone()


def _start(
    req: ScanRequest, board: Board, profile: Profile, job_number: int, now: datetime | None
) -> _JobPages:
    """Refuse a job the device cannot do (before anything is drawn) or set it up."""
    check_request(req, profile)
    _check_box(board, req.box)
    return _JobPages(req, profile, job_number, _now(now))


def run_scan(
    req: ScanRequest,
    board: Board,
    budget: RamBudget,
    profile: Profile,
    *,
    job_number: int,
    now: datetime | None = None,
) -> ScanResult:
    """Run one job synchronously; raises DeviceError (MEMORY FULL, quota, ...) storing nothing."""
    job = _start(req, board, profile, job_number, now)
    held: list[Reservation] = []
    try:
        for page in range(1, req.pages + 1):
            _hold(budget, held, job, page, job.encode_page(page))
        message, names, digests = job.message()
        stored = board.deliver(req.box, message)
        return _result(req, job, stored, names, digests, held)
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
    """`run_scan` for the trio loop: drawing and encoding run in a worker thread, and the
    message is stored through `worker` (the device's store worker: the append, its fsync
    and any compaction run off the loop); without one, on the trio thread."""
    job = _start(req, board, profile, job_number, now)
    held: list[Reservation] = []
    try:
        for page in range(1, req.pages + 1):
            size = await trio.to_thread.run_sync(job.encode_page, page)
            _hold(budget, held, job, page, size)
        message, names, digests = await trio.to_thread.run_sync(job.message)
        if worker is not None:
            stored = await worker.run(board.deliver, req.box, message)
        else:
            stored = board.deliver(req.box, message)
        return _result(req, job, stored, names, digests, held)
    finally:
        _release(held)


def _result(
    req: ScanRequest,
    job: _JobPages,
    stored: MessageInfo,
    names: tuple[str, ...],
    digests: tuple[str, ...],
    held: list[Reservation],
) -> ScanResult:
    return ScanResult(
        box=req.box,
        uid=stored.uid,
        size=stored.size,
        pages=req.pages,
        job_number=job.job_number,
        filenames=names,
        digests=digests,
        bytes_encoded=sum(r.nbytes for r in held),
    )
