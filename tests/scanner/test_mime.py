"""The job's message: headers a mail client expects, the document intact, short CRLF lines."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

from firmware.scanner.encode import EncodedFile
from firmware.scanner.mime import ScanMessageInfo, build_message

WHEN = datetime(2026, 11, 27, 10, 15, 0, tzinfo=UTC)
DOC = bytes(range(256)) * 300  # every byte value, several base64 lines


def info(pages: int = 2, when: datetime = WHEN) -> ScanMessageInfo:
    return ScanMessageInfo("DP-3530", "dp3530.local", "alice", 42, pages, "200x100", "mono", when)


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_headers_name_the_device_the_box_and_the_job() -> None:
    msg = parse(build_message(info(), [EncodedFile(DOC, "image/tiff", "tif")]))
    assert msg["From"].addresses[0].addr_spec == "scanner@dp3530.local"
    assert msg["To"].addresses[0].addr_spec == "alice@dp3530.local"
    subject = str(msg["Subject"])
    assert "DP-3530" in subject and "0042" in subject and "2026-11-27 10:15" in subject
    assert parsedate_to_datetime(str(msg["Date"])) == WHEN
    assert re.fullmatch(r"<[^<>@\s]+@dp3530\.local>", str(msg["Message-ID"]))
    assert msg["MIME-Version"] == "1.0"


def test_text_part_and_tiff_attachment_round_trip() -> None:
    msg = parse(build_message(info(), [EncodedFile(DOC, "image/tiff", "tif")]))
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None and "Job:        0042" in body.get_content()
    (attachment,) = msg.iter_attachments()
    assert attachment.get_content_type() == "image/tiff"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert attachment.get_filename() == "scan_20261127_101500_0042.tif"
    assert attachment.get_content() == DOC


def test_jpeg_job_has_one_attachment_per_page() -> None:
    pages = [EncodedFile(DOC[i:], "image/jpeg", "jpg") for i in range(3)]
    msg = parse(build_message(info(pages=3), pages))
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == [
        f"scan_20261127_101500_0042_p{i:03d}.jpg" for i in (1, 2, 3)
    ]
    assert [a.get_content() for a in attachments] == [p.data for p in pages]
    assert all(a.get_content_type() == "image/jpeg" for a in attachments)


def test_pdf_content_type() -> None:
    msg = parse(build_message(info(), [EncodedFile(DOC, "application/pdf", "pdf")]))
    (attachment,) = msg.iter_attachments()
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == "scan_20261127_101500_0042.pdf"


def test_lines_are_crlf_and_at_most_76_characters() -> None:
    raw = build_message(info(), [EncodedFile(DOC, "image/tiff", "tif")])
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 76
    assert raw.endswith(b"\r\n")


def test_local_time_keeps_its_offset() -> None:
    local = datetime(2026, 11, 27, 11, 15, tzinfo=timezone(timedelta(hours=1)))
    msg = parse(build_message(info(when=local), [EncodedFile(DOC, "image/tiff", "tif")]))
    assert str(msg["Date"]).endswith("+0100")
    assert parsedate_to_datetime(str(msg["Date"])) == WHEN
