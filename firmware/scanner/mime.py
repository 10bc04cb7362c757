"""One scan job as one MIME message, built with the stdlib `email` package.

The device mails the document to the box as any scanner-to-mail device does: a short text part
and the document as base64 attachment(s). Lines stay within 76 characters (base64 bodies and
folded headers) because POP3 clients such as poplib reject overlong lines.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import BinaryIO

from firmware.scanner.encode import EncodedFile

# SMTP policy: CRLF line ends, as POP3 sends them; headers folded within 76 characters.
WIRE_POLICY = policy.SMTP.clone(max_line_length=76)


@dataclass(frozen=True)
class ScanMessageInfo:
    """What goes into the headers and the text part."""

    model: str
    hostname: str
    box: str
    job_number: int
    pages: int
    resolution: str
    mode: str
    timestamp: datetime


def base_filename(timestamp: datetime, job_number: int) -> str:
    """'scan_20261127_101500_0042': the device's name for a job's document."""
    return f"scan_{timestamp:%Y%m%d_%H%M%S}_{job_number % 10000:04d}"


def attachment_names(timestamp: datetime, job_number: int, files: list[EncodedFile]) -> list[str]:
    """One name per file; a JPEG job (one file per page) numbers its pages."""
    stem = base_filename(timestamp, job_number)
    if len(files) == 1:
        return [f"{stem}.{files[0].extension}"]
    return [f"{stem}_p{i:03d}.{f.extension}" for i, f in enumerate(files, 1)]


def build_message(info: ScanMessageInfo, files: list[EncodedFile]) -> bytes:
    """The complete RFC 5322 message, CRLF line ends, ready for `board.deliver`."""
    out = io.BytesIO()
    write_message(info, files, out)
    return out.getvalue()


def write_message(info: ScanMessageInfo, files: list[EncodedFile], out: BinaryIO) -> None:
    """Write the message to `out`; saves the final copy `as_bytes` makes of a large document."""
    msg = EmailMessage(policy=WIRE_POLICY)
    msg["From"] = Address(
        display_name=f"{info.model} Scanner", username="scanner", domain=info.hostname
    )
    msg["To"] = Address(username=info.box, domain=info.hostname)
    msg["Subject"] = (
        f"Scan from {info.model}: job {info.job_number:04d}, {info.timestamp:%Y-%m-%d %H:%M}"
    )
    msg["Date"] = format_datetime(info.timestamp)
    msg["Message-ID"] = make_msgid(idstring=f"scan{info.job_number:04d}", domain=info.hostname)
    msg["X-Mailer"] = f"{info.model} scan-to-mailbox"
    names = attachment_names(info.timestamp, info.job_number, files)
    page_word = "page" if info.pages == 1 else "pages"
    text = (
        f"Scanned document from {info.model} ({info.hostname}).\n"
        f"\n"
        f"Job:        {info.job_number:04d}\n"
        f"Pages:      {info.pages} {page_word}\n"
        f"Resolution: {info.resolution} dpi\n"
        f"Mode:       {info.mode}\n"
        f"Scanned:    {info.timestamp:%Y-%m-%d %H:%M:%S %z}\n"
        f"Files:      {len(names)} attached\n"
    )
    msg.set_content(text, cte="7bit")
    for name, file in zip(names, files, strict=True):
        maintype, subtype = file.content_type.split("/", 1)
        msg.add_attachment(file.data, maintype=maintype, subtype=subtype, filename=name)
    for part in msg.iter_parts():
        del part["MIME-Version"]  # EmailMessage adds it to every part; it belongs on top only
    BytesGenerator(out, policy=WIRE_POLICY).flatten(msg)
