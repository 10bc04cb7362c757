"""The CPU-heavy part of one scan job: draw and encode its pages, then build its message.

`JobPages` is the one copy of that work. The offline path (`run_scan`, `dpfw scan IMG` with no
device running) calls it in-process; a running device calls it in the scan engine, a child
process per job (firmware/scanner/engine.py), so that Pillow and the `email` package never hold
the device's GIL. It takes plain values (`JobSpec`), not a Profile, and imports no trio, store
or construct: the engine's start-up cost is Pillow, `email` and this package only.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime

from firmware.errors import DeviceError
from firmware.scanner.encode import DocumentWriter, open_writer
from firmware.scanner.mime import ScanMessageInfo, attachment_names, write_message
from firmware.scanner.render import PageSpec, parse_resolution, render_page


@dataclass(frozen=True)
class ScanRequest:
    """What the user pressed on the panel (or typed on the console)."""

    box: str
    pages: int
    dpi: str  # "200x100" | "200x200" | "300" | "400" | "600"
    mode: str  # "mono" | "gray" | "color"
    format: str  # "tiff" | "pdf" | "jpeg"


@dataclass(frozen=True)
class JobSpec:
    """Everything a job's pages and message depend on: the same spec gives the same bytes
    (but for the Message-ID, which is unique per message: RFC 5322 §3.6.4).

    `model` and `hostname` are the running profile's `identity` values the job uses;
    `timestamp` is the job's start (aware, as `datetime.now().astimezone()` gives it).
    """

    request: ScanRequest
    model: str
    hostname: str
    job_number: int
    timestamp: datetime


class JobPages:
    """Draws and encodes a job's pages one by one, then builds its MIME message.

    Raises OSError as the host gives it (Pillow loads its encoder plugins from disk on first
    use); the caller turns it into `job_failed`. ValueError is our own bug.
    """

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        req = spec.request
        self.xdpi, self.ydpi = parse_resolution(req.dpi)
        title = f"{spec.model} scan job {spec.job_number:04d}"
        self._writer: DocumentWriter | None = open_writer(
            req.format, (self.xdpi, self.ydpi), title, spec.timestamp
        )

    def encode_page(self, page_number: int) -> int:
        """Render and encode page `page_number` (1-based); return the compressed bytes it
        added to the document (what the job holds in the RAM budget for it)."""
        spec, req = self.spec, self.spec.request
        page = PageSpec(
            model=spec.model,
            hostname=spec.hostname,
            box=req.box,
            job_number=spec.job_number,
            page_number=page_number,
            pages=req.pages,
            timestamp=spec.timestamp,
            xdpi=self.xdpi,
            ydpi=self.ydpi,
            mode=req.mode,
        )
        assert self._writer is not None, "pages added after the message was built"
        return self._writer.add_page(render_page(page))

    def message(self) -> tuple[io.BytesIO, tuple[str, ...], tuple[str, ...]]:
        """The MIME message (rewound, CRLF line ends), the attachment names and the SHA-256
        digests (hex) of the attachments' bytes, one per file."""
        assert self._writer is not None, "message built twice"
        files = self._writer.finish()
        self._writer = None  # frees the writer's buffer before the MIME copy is made
        spec, req = self.spec, self.spec.request
        info = ScanMessageInfo(
            model=spec.model,
            hostname=spec.hostname,
            box=req.box,
            job_number=spec.job_number,
            pages=req.pages,
            resolution=req.dpi,
            mode=req.mode,
            timestamp=spec.timestamp,
        )
        names = tuple(attachment_names(spec.timestamp, spec.job_number, files))
        digests = tuple(hashlib.sha256(f.data).hexdigest() for f in files)
        message = io.BytesIO()
        write_message(info, files, message)
        message.seek(0)
        return message, names, digests


def job_failed(job_number: int, reason: str) -> DeviceError:
    """The one line of a job that failed before anything was stored: "scan job 0007 failed:
    Input/output error; nothing was stored". `reason` is the OS's words (`os_reason`) for an
    OSError met while drawing or encoding (in-process or in the engine), or what went wrong
    with the engine process itself."""
    return DeviceError(f"scan job {job_number:04d} failed: {reason}; nothing was stored")
