"""The scan engine: one child process per scan job of a running device (the copier's image
processor, separate hardware on the real board), and its wire protocol, sans-IO on both sides.

Pillow releases and re-takes the GIL so often while it draws text that a thread waiting for
the GIL gets it late (a probe thread woke with gaps of ~500 ms), and building the MIME message
holds it ~14 ms for a 3 MiB document. With the pages drawn on a worker thread, the device's
event loop answered NOOPs up to 25-31 ms late during a 50-page scan (issue 11 asks <= 20 ms).
So the device runs `python -m firmware.scanner.engine` per job (`firmware/scanner/job.py`,
`run_scan_async`) and keeps every decision: the RAM budget, MEMORY FULL, storing, every error.

The protocol, over the child's stdin and stdout (its stderr goes to an anonymous file in
memory that the device reads only when the job fails, for its log):

    device -> engine   one line, the request: a JSON object (`encode_request`)
    engine -> device   {"page": N, "size": BYTES}\\n      page N is encoded: it added BYTES
    device -> engine   next\\n                             page N is held in the RAM budget: go on
                       ... once per page, N = 1, 2, ... in order ...
    engine -> device   {"message": LENGTH, "names": [...], "digests": [...]}\\n, then LENGTH
                       bytes: the MIME message; then the engine exits with status 0
    or, at any step    {"failed": REASON}\\n: an OSError met drawing or encoding (the OS's words)

The engine draws no page before the previous one is held, as the in-process job does, so the
budget is held page by page exactly as before. EOF on its stdin (the device let go) ends the
engine quietly. `EngineOutput` reads the engine's output and refuses anything else (garbage,
a page out of order, an implausible length, bytes after the message, output that ends early)
with `EngineProtocolError`, whose text says what was wrong.

Imports are kept minimal (no trio, construct, store or profile): the child's start-up cost is
the interpreter, `email`, `json`, this package and Pillow at the first page.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import BinaryIO, TypeGuard

from firmware.scanner.pages import JobPages, JobSpec, ScanRequest
from firmware.text import os_reason

GO = b"next\n"
MAX_RECORD = 1024 * 1024  # a record line (a JPEG job's names and digests: ~110 bytes a page)
MESSAGE_SLACK = 1024 * 1024  # a message is base64 (4/3) of the pages plus headers: see below
# The engine's CPU priority below the device's. On 2 busy cores (load 3), tools/bench latency's
# scan case, 5 runs each, interleaved: at +0, NOOP max 8-36 ms (3 runs over 14 ms); at +10,
# 6-11 ms, and no slower a job (wall 1.7-2.8 s against 1.5-2.9 s).
NICE = 10


class EngineProtocolError(Exception):
    """The engine's output is not what the protocol allows; the text says what (one line).
    `ended`: the output ended early (the engine may have died), rather than being garbage."""

    def __init__(self, text: str, *, ended: bool = False) -> None:
        super().__init__(text)
        self.ended = ended


@dataclass(frozen=True)
class PageDone:
    """Page `page` is encoded; it added `size` bytes to the document."""

    page: int
    size: int


@dataclass(frozen=True)
class MessageDone:
    """The finished message (CRLF line ends), its attachment names and SHA-256 digests."""

    data: bytearray
    names: tuple[str, ...]
    digests: tuple[str, ...]


@dataclass(frozen=True)
class EngineFailed:
    """The engine met an OSError drawing or encoding; `reason` is the OS's words."""

    reason: str


EngineEvent = PageDone | MessageDone | EngineFailed


def encode_request(spec: JobSpec) -> bytes:
    """The request line for `spec`: JSON, one line, ending in LF. The timestamp travels as
    ISO 8601 text plus its zone's name, so `%Z` on a page prints the same in the engine."""
    req = spec.request
    stamp = spec.timestamp
    fields = {
        "box": req.box,
        "pages": req.pages,
        "dpi": req.dpi,
        "mode": req.mode,
        "format": req.format,
        "model": spec.model,
        "hostname": spec.hostname,
        "job_number": spec.job_number,
        "timestamp": stamp.isoformat(),
        "tzname": stamp.tzname(),
    }
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def decode_request(line: bytes) -> JobSpec:
    """`encode_request`'s line back as a JobSpec; ValueError names what is wrong."""
    try:
        fields = json.loads(line)
    except ValueError:
        raise ValueError("the request is not a JSON line") from None
    if not isinstance(fields, dict):
        raise ValueError("the request is not a JSON object")

    def text(key: str) -> str:
        value = fields.get(key)
        if not isinstance(value, str):
            raise ValueError(f"request key {key!r} must be text")
        return value

    def number(key: str) -> int:
        value = fields.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"request key {key!r} must be a positive whole number")
        return value

    stamp = datetime.fromisoformat(text("timestamp"))
    zone, offset = fields.get("tzname"), stamp.utcoffset()
    if isinstance(zone, str) and offset is not None:
        stamp = stamp.replace(tzinfo=timezone(offset, zone))
    request = ScanRequest(
        box=text("box"), pages=number("pages"), dpi=text("dpi"), mode=text("mode"),
        format=text("format"),
    )  # fmt: skip
    return JobSpec(request, text("model"), text("hostname"), number("job_number"), stamp)


def record(fields: dict[str, object]) -> bytes:
    """One record line of the engine's output."""
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


class EngineOutput:
    """The device's reader of one engine's stdout (sans-IO): bytes in, events out.

    `feed(data)` returns the events that `data` completes; `feed(b"")` is EOF and raises
    EngineProtocolError if the output ended before the message was whole. Any output the
    protocol does not allow raises EngineProtocolError at once.
    """

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.pages_done = 0
        self.held = 0  # bytes of the pages reported so far
        self.finished = False  # the message is whole (or the engine reported a failure)
        self._buffer = bytearray()
        self._body: bytearray | None = None
        self._filled = 0
        self._names: tuple[str, ...] = ()
        self._digests: tuple[str, ...] = ()

    def feed(self, data: bytes | bytearray) -> list[EngineEvent]:
        if not data:
            self._end()
            return []
        if self.finished:
            raise EngineProtocolError(f"wrote garbage after its last record: {_show(data)}")
        events: list[EngineEvent] = []
        if self._body is not None:
            self._fill(memoryview(data), events)
            return events
        self._buffer += data
        while not self.finished and self._body is None:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_RECORD:
                    raise EngineProtocolError(
                        f"wrote garbage: no record in {len(self._buffer)} bytes: "
                        f"{_show(self._buffer)}"
                    )
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            event = self._record(line)
            if event is not None:
                events.append(event)
        if self._body is not None:
            rest, self._buffer = self._buffer, bytearray()
            self._fill(memoryview(rest), events)
        elif self.finished and self._buffer:
            raise EngineProtocolError(f"wrote garbage after its last record: {_show(self._buffer)}")
        return events

    def _record(self, line: bytes) -> EngineEvent | None:
        try:
            fields = json.loads(line)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise EngineProtocolError(f"wrote garbage: not a record: {_show(line)}")
        if "failed" in fields:
            reason = fields["failed"]
            if not isinstance(reason, str) or not reason.strip() or "\n" in reason:
                raise EngineProtocolError(f"wrote garbage: a bad failure record: {_show(line)}")
            self.finished = True
            return EngineFailed(" ".join(reason.split())[:300])
        if "page" in fields:
            page, size = fields.get("page"), fields.get("size")
            expected = self.pages_done + 1
            if expected > self.pages:
                raise EngineProtocolError(
                    f"wrote garbage: page {page!r} of a {self.pages}-page job, "
                    "where the message was due"
                )
            if page != expected:
                raise EngineProtocolError(
                    f"wrote garbage: page {page!r} where page {expected} of {self.pages} was due"
                )
            if not _whole(size):
                raise EngineProtocolError(f"wrote garbage: page {page} has size {size!r}")
            self.pages_done, self.held = expected, self.held + size
            return PageDone(expected, size)
        if "message" in fields:
            self._message_header(fields, line)
            return None
        raise EngineProtocolError(f"wrote garbage: an unknown record: {_show(line)}")

    def _message_header(self, fields: dict[str, object], line: bytes) -> None:
        length, names, digests = fields["message"], fields.get("names"), fields.get("digests")
        if self.pages_done != self.pages:
            raise EngineProtocolError(
                f"sent the message after page {self.pages_done} of {self.pages}"
            )
        # base64 makes 4 bytes of 3 (plus CRLF every 76): twice the pages and 1 MiB for the
        # headers and the text part is far above any real message.
        if not _whole(length) or not 0 < length <= 2 * self.held + MESSAGE_SLACK:
            raise EngineProtocolError(
                f"announced an implausible message of {length!r} bytes ({self.held} bytes of pages)"
            )
        if not (
            isinstance(names, list)
            and isinstance(digests, list)
            and 0 < len(names) == len(digests) <= self.pages
            and all(isinstance(n, str) and n for n in names)
            and all(isinstance(d, str) and _is_sha256(d) for d in digests)
        ):
            raise EngineProtocolError(f"wrote garbage: a bad message record: {_show(line)}")
        self._names, self._digests = tuple(names), tuple(digests)
        self._body = bytearray(length)
        self._filled = 0

    def _fill(self, data: memoryview, events: list[EngineEvent]) -> None:
        body = self._body
        assert body is not None
        take = min(len(data), len(body) - self._filled)
        body[self._filled : self._filled + take] = data[:take]
        self._filled += take
        if self._filled == len(body):
            self._body = None
            self.finished = True
            events.append(MessageDone(body, self._names, self._digests))
        if take < len(data):
            raise EngineProtocolError(
                f"wrote garbage after its last record: {_show(bytes(data[take:]))}"
            )

    def _end(self) -> None:
        if self.finished:
            return
        if self._body is not None:
            where = f"inside the message ({self._filled} of {len(self._body)} bytes)"
        elif self.pages_done == self.pages:
            where = f"after page {self.pages} of {self.pages}, before the message"
        elif self.pages_done:
            where = f"after page {self.pages_done} of {self.pages}"
        else:
            where = f"before page 1 of {self.pages}"
        partial = " (in the middle of a record)" if self._buffer else ""
        raise EngineProtocolError(f"stopped writing {where}{partial}", ended=True)


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _show(data: bytes | bytearray) -> str:
    """A short, printable sample of unexpected output for an error line."""
    sample = bytes(data[:40])
    return repr(sample) + ("..." if len(data) > 40 else "")


def _write(out: BinaryIO, line: bytes, body: memoryview | None = None) -> None:
    out.write(line)
    if body is not None:
        out.write(body)
    out.flush()


def run(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """The engine: one job from `stdin`'s request line to the message on `stdout`.

    Returns the exit status: 0 when the message was written or the device let go (EOF on
    stdin); 1 after a `failed` record; 2 for a request that cannot be read (our own bug).
    """
    try:
        spec = decode_request(stdin.readline())
    except ValueError as exc:
        print(f"scan engine: {exc}", file=sys.stderr)
        return 2
    try:
        job = JobPages(spec)
        for page in range(1, spec.request.pages + 1):
            size = job.encode_page(page)
            _write(stdout, record({"page": page, "size": size}))
            if stdin.readline() != GO:
                return 0  # the device let go of the job (MEMORY FULL, cancelled)
        message, names, digests = job.message()
    except BrokenPipeError:
        return 0  # the device let go while a page was being written
    except OSError as exc:
        _write(stdout, record({"failed": os_reason(exc)}))
        return 1
    body = message.getbuffer()
    header = {"message": len(body), "names": list(names), "digests": list(digests)}
    _write(stdout, record(header), body)
    return 0


def main() -> int:
    """`python -m firmware.scanner.engine`: the device starts it in a session of its own
    (a terminal's Ctrl-C or Ctrl-Z reaches the device, which decides for its jobs). It runs
    at a lower CPU priority (NICE) than the device: on a busy host the device's event loop
    wins the CPU when it wakes (the real board's image processor is hardware of its own)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the device kills its engines; never Ctrl-C
    os.nice(NICE)
    try:
        return run(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:  # the device is gone: nobody to tell
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's exit flush is quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
