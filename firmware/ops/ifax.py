"""Internet Fax: the poller's status, a poll now, and the output tray (list, show, clear).

`poll` needs the running device (it talks to the mail server); the others work offline on an
image too (`dpfw ifax tray list IMG`). Tray documents are read from flash, CRC-checked: run
them through `OpsContext.run_store` on a running device. JSON: `TrayDoc.json()` gives the
document with its sender under `from` (the key the HTTP API's `GET /api/v1/tray` promises).
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field

import trio

from firmware.errors import DeviceError, NotFoundError
from firmware.ifax.poller import PollReport, clear_tray
from firmware.ops.context import OpsContext


@dataclass(frozen=True)
class IfaxStatus:
    enabled: bool
    server: str  # host:port
    tls: str
    user: str
    auth: str
    leave_on_server: bool
    poll_interval_s: int  # 0: only on demand
    running: bool  # a poller runs (a running device)
    busy: bool  # a poll is under way
    polls: int
    received: int  # printed since boot
    errors: int  # error reports since boot
    last_poll_at: float | None  # Unix time
    last_result: str | None  # None: no poll yet
    next_poll_in_s: float | None  # None: no poll scheduled
    tray_documents: int


@dataclass(frozen=True)
class PollResult:
    received: int
    errors: int
    skipped: int
    deleted: int
    waiting: int
    failed: str | None
    code: str | None
    seconds: float


@dataclass(frozen=True)
class TrayDoc:
    number: int
    status: str  # "printed" | "error" | "corrupt"
    sender: str
    subject: str
    date: str
    pages: int
    resolution: str  # "200x100", "200x200" (several: comma-separated); "" for an error
    error: str | None
    received: float  # Unix time it was stored
    bytes: int  # of the document kept (the TIFF, or the error report)
    uidl: str
    page_sizes: list[tuple[int, int]] = field(default_factory=list)  # `show` only: pixels

    def json(self) -> dict[str, object]:
        """As JSON: the fields, with the sender under `from` as well."""
        out = dataclasses.asdict(self)
        out["from"] = self.sender
        return out


@dataclass(frozen=True)
class TrayList:
    documents: list[TrayDoc]

    def json(self) -> list[dict[str, object]]:
        return [d.json() for d in self.documents]


@dataclass(frozen=True)
class TrayCleared:
    removed: int


def status(ctx: OpsContext) -> IfaxStatus:
    prof = ctx.profile
    poller = ctx.device.ifax if ctx.device is not None else None
    st = poller.state if poller is not None else None
    last = None
    if st is not None and st.last is not None:
        last = describe(result_of(st.last))
    next_in = None
    if st is not None and st.next_at is not None:
        next_in = max(0.0, st.next_at - trio.current_time())
    return IfaxStatus(
        enabled=prof.bool("ifax.enabled"),
        server=f"{prof.str('ifax.server')}:{prof.int('ifax.port')}",
        tls=prof.str("ifax.tls"),
        user=prof.str("ifax.user"),
        auth=prof.str("ifax.auth"),
        leave_on_server=prof.bool("ifax.leave_on_server"),
        poll_interval_s=prof.int("ifax.poll_interval_s"),
        running=poller is not None,
        busy=poller.busy if poller is not None else False,
        polls=st.polls if st else 0,
        received=st.received if st else 0,
        errors=st.errors if st else 0,
        last_poll_at=st.last_at if st else None,
        last_result=last,
        next_poll_in_s=next_in,
        tray_documents=len(ctx.board.tray()),
    )


def result_of(report: PollReport) -> PollResult:
    return PollResult(**dataclasses.asdict(report))


def describe(result: PollResult) -> str:
    """'2 received, 1 error report, ...' in one line."""
    parts = [f"{result.received} received"]
    if result.errors:
        parts.append(f"{result.errors} refused (error report in the tray)")
    if result.skipped:
        parts.append(f"{result.skipped} already in the tray")
    if result.failed:
        parts.append(f"stopped: {' '.join(result.failed.split())}")
    return ", ".join(parts)


async def poll(ctx: OpsContext) -> PollResult:
    """Poll the mail server now (console `ifax poll`); DeviceError if off or offline."""
    device = ctx.require_device("ifax poll")
    if device.ifax is None:
        raise DeviceError("ifax poll: the device is booting")
    return result_of(await device.ifax.poll())


def _doc(ctx: OpsContext, number: int, seq: int, corrupt: bool, *, pages: bool) -> TrayDoc:
    board = ctx.board
    if corrupt:
        return TrayDoc(number, "corrupt", "", "", "", 0, "", "record fails its CRC", 0, 0, "")
    try:
        meta, data = board.tray_read(seq)
    except DeviceError as exc:
        return TrayDoc(number, "corrupt", "", "", "", 0, "", str(exc), 0, 0, "")

    def text(key: str) -> str:
        value = meta.get(key, "")
        return value if isinstance(value, str) else str(value)

    sizes: list[tuple[int, int]] = []
    if pages and meta.get("status") == "printed":
        from PIL import Image  # lazy: Pillow loads on first use, not at boot

        with Image.open(io.BytesIO(data)) as img:
            for index in range(getattr(img, "n_frames", 1)):
                img.seek(index)
                sizes.append((int(img.size[0]), int(img.size[1])))
    page_count = meta.get("pages", 0)
    received = meta.get("received", 0)
    return TrayDoc(
        number=number,
        status=text("status") or "error",
        sender=text("from"),
        subject=text("subject"),
        date=text("date"),
        pages=page_count if isinstance(page_count, int) else 0,
        resolution=text("resolution"),
        error=text("error") or None,
        received=float(received) if isinstance(received, int | float) else 0.0,
        bytes=len(data),
        uidl=text("uidl"),
        page_sizes=sizes,
    )


def tray_list(ctx: OpsContext) -> TrayList:
    """Every tray document, oldest first (each record read and CRC-checked)."""
    return TrayList([_doc(ctx, e.number, e.seq, e.corrupt, pages=False) for e in ctx.board.tray()])


def tray_show(ctx: OpsContext, number: int) -> TrayDoc:
    """One tray document with its page sizes; DeviceError naming the range if no such N."""
    entries = ctx.board.tray()
    if not 1 <= number <= len(entries):
        held = f"1 to {len(entries)}" if entries else "none: the tray is empty"
        raise NotFoundError(f"ifax tray show: no document {number} (documents: {held})")
    e = entries[number - 1]
    return _doc(ctx, e.number, e.seq, e.corrupt, pages=True)


def tray_clear(ctx: OpsContext) -> TrayCleared:
    """Empty the tray in one durable record (UIDLs kept in NVRAM: no re-print)."""
    return TrayCleared(clear_tray(ctx.board))
