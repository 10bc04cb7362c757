"""Reading one received Internet Fax message (RFC 3965 simple mode) into a tray document.

Simple mode (RFC 3965 §2, §4): a MIME message carrying one TIFF file of TIFF-FX profile S
(RFC 3949 §4: bilevel, MH/MR/MMR compression, 200x100 or 200x200 dots per inch; RFC 3250's
`image/tiff` with `application=faxbw`). A message that carries exactly that is *printed*: its
TIFF decoded page by page with Pillow, within the RAM budget. Anything else (no attachment,
another type such as a PDF, several attachments, a TIFF that does not decode or is not
profile S, a sender not accepted, a message too large) becomes an *error report* in the tray,
as a real device prints one. Pure: bytes in, a `Document` out; nothing here writes flash.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING

from firmware.errors import DeviceError

if TYPE_CHECKING:
    from PIL import Image

# TIFF tag 259 values of profile S (RFC 3949 §4.2.1): 2 = MH (modified Huffman, RLE),
# 3 = T.4 (MH, or MR when bit 0 of T4Options, tag 292, is set), 4 = T.6 (MMR, "G4").
PROFILE_S_COMPRESSION = {2: "MH", 3: "MH", 4: "MMR"}
T4_OPTIONS = 292
TIFF_TYPES = ("image/tiff", "image/tiff-fx")


@dataclass(frozen=True)
class Document:
    """What goes into one tray record: `meta` (JSON-able) and the bytes kept (the TIFF, or the
    error report's text)."""

    meta: dict[str, object]
    data: bytes = field(repr=False)

    @property
    def printed(self) -> bool:
        return self.meta.get("status") == "printed"


def sender_accepted(sender: str, accept_from: str) -> bool:
    """True if `accept_from` is empty or names the sender's address or its domain."""
    rules = [r.strip().lower() for r in accept_from.split(",") if r.strip()]
    if not rules:
        return True
    address = email.utils.parseaddr(sender)[1].lower()
    domain = address.rpartition("@")[2]
    return any(r == address or r.lstrip("@") == domain for r in rules)


def _headers(msg: EmailMessage) -> dict[str, object]:
    def h(name: str) -> str:
        value = msg.get(name, "")
        return " ".join(str(value).split())[:200]

    return {"from": h("From"), "subject": h("Subject"), "date": h("Date")}


def error_document(meta: dict[str, object], reason: str) -> Document:
    """An error report: what came, from whom, and why it was not printed."""
    meta = {**meta, "status": "error", "error": reason, "pages": 0, "resolution": ""}
    report = (
        "INTERNET FAX RECEPTION ERROR\r\n"
        f"From: {meta.get('from', '')}\r\nSubject: {meta.get('subject', '')}\r\n"
        f"Date: {meta.get('date', '')}\r\nReason: {reason}\r\n"
    )
    return Document(meta, report.encode("utf-8", "replace"))


def too_large(uidl: str, size: int, limit: int) -> Document:
    """The error report for a message left unread because LIST says it is over the limit."""
    meta: dict[str, object] = {"uidl": uidl, "from": "", "subject": "", "date": "", "bytes": size}
    return error_document(meta, f"message of {size} bytes exceeds ifax.max_message_kib ({limit})")


def read_fax(
    raw: bytes,
    uidl: str,
    *,
    accept_from: str = "",
    reserve: Callable[[int], object] | None = None,
    capacity: int | None = None,
) -> Document:
    """The tray document for one received message (never raises for bad input).

    `reserve(nbytes)` takes decoded page bytes from the RAM budget (raising DeviceError
    "MEMORY FULL ...", which propagates: the fax stays on the server, nothing is stored).
    `capacity` is the most `reserve` could ever give (the budget's total less what is already
    held): a fax whose pages need more can never print, so it is an error report at once
    instead of MEMORY FULL at every poll.
    """
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    meta: dict[str, object] = {"uidl": uidl, **_headers(msg), "bytes": len(raw)}
    if not sender_accepted(str(meta["from"]), accept_from):
        return error_document(meta, "sender not accepted (ifax.accept_from)")
    parts = [p for p in msg.walk() if not p.is_multipart()]
    attachments = [p for p in parts if p.get_content_maintype() != "text"]
    if not attachments:
        return error_document(meta, "no attachment: nothing to print")
    if len(attachments) > 1:
        kinds = ", ".join(p.get_content_type() for p in attachments)
        return error_document(
            meta, f"{len(attachments)} attachments ({kinds}); simple mode has one TIFF"
        )
    part = attachments[0]
    ctype = part.get_content_type()
    name = part.get_filename() or ""
    meta["attachment"] = name[:100]
    if ctype not in TIFF_TYPES and not (
        ctype == "application/octet-stream" and name.lower().endswith((".tif", ".tiff"))
    ):
        return error_document(meta, f"attachment {name or ctype} is {ctype}, not a TIFF-FX fax")
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return error_document(meta, "attachment does not decode")
    return _decode_tiff(meta, data, reserve, capacity)


def _decode_tiff(
    meta: dict[str, object],
    data: bytes,
    reserve: Callable[[int], object] | None,
    capacity: int | None = None,
) -> Document:
    # lazy: Pillow loads on first use, not at boot
    from PIL import Image, TiffImagePlugin, UnidentifiedImageError

    needed = 0
    try:
        with Image.open(io.BytesIO(data)) as img:
            if not isinstance(img, TiffImagePlugin.TiffImageFile):
                return error_document(meta, f"attachment is {img.format}, not TIFF")
            pages = getattr(img, "n_frames", 1)
            resolutions = set()
            for index in range(pages):
                img.seek(index)
                compression = img.tag_v2.get(259, 1)
                if compression not in PROFILE_S_COMPRESSION or img.mode != "1":
                    return error_document(
                        meta,
                        f"page {index + 1} is not TIFF-FX profile S "
                        f"(compression {compression}, mode {img.mode}; MH/MR/MMR bilevel)",
                    )
                resolution = _resolution(img)
                if resolution is None:
                    return error_document(
                        meta,
                        f"page {index + 1}: resolution {_dpi(img)} is not 200x100 or 200x200",
                    )
                resolutions.add(resolution)
                page_bytes = img.size[0] * img.size[1] // 8
                needed += page_bytes
                if capacity is not None and needed > capacity:
                    return error_document(
                        meta,
                        f"the fax needs {needed} bytes of image RAM to print (page {index + 1}),"
                        f" more than the device has ({capacity})",
                    )
                if reserve is not None:
                    reserve(page_bytes)
                img.load()  # decode the page: a damaged G4 stream fails here
                name = PROFILE_S_COMPRESSION[compression]
                if compression == 3 and int(img.tag_v2.get(T4_OPTIONS, 0)) & 1:
                    name = "MR"
                meta["compression"] = name
    except DeviceError:
        raise
    except UnidentifiedImageError:
        return error_document(meta, "TIFF does not decode: not an image file Pillow can read")
    except Image.DecompressionBombError as exc:  # declared size past Pillow's pixel limit
        return error_document(meta, f"TIFF page too large to print: {exc}")
    except Exception as exc:  # hostile input: Pillow's TIFF reader raises many kinds
        detail = str(exc) or type(exc).__name__
        return error_document(meta, f"TIFF does not decode: {detail}")
    meta.update(status="printed", pages=pages, resolution=",".join(sorted(resolutions)))
    return Document(meta, data)


def _dpi(img: Image.Image) -> str:
    x, y = img.info.get("dpi", (0, 0))
    return f"{float(x):g}x{float(y):g}"


def _resolution(img: Image.Image) -> str | None:
    """'200x100' or '200x200' (T.4 standard and fine; 204x98/196 count as such), or None."""
    x, y = (float(v) for v in img.info.get("dpi", (0, 0)))
    if not 195 <= x <= 210:
        return None
    if 95 <= y <= 105:
        return "200x100"
    if 190 <= y <= 210:
        return "200x200"
    return None


__all__ = ["Document", "error_document", "read_fax", "sender_accepted", "too_large"]
