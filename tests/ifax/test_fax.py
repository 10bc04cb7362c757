"""Reading one received message into a tray document: what is printed, what is refused."""

from __future__ import annotations

import io
from email.message import EmailMessage

import pytest
from PIL import Image

from firmware.config.budget import RamBudget
from firmware.errors import MemoryFullError
from firmware.ifax.fax import read_fax, sender_accepted
from tests.ifax.conftest import pdf_page, tiff_g4
from tests.ifax.dovecot import fax_message


def tiff(compression: str, dpi: tuple[int, int], mode: str = "1") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (1728, 200), 1 if mode == "1" else 255).save(
        out, format="TIFF", compression=compression, dpi=dpi
    )
    return out.getvalue()


@pytest.mark.parametrize(
    ("compression", "name"), [("group4", "MMR"), ("group3", "MH"), ("tiff_ccitt", "MH")]
)
def test_profile_s_compressions_print(compression: str, name: str) -> None:
    raw = fax_message(tiff(compression, (204, 98)), "image/tiff", "f.tif", "a@b.example")
    doc = read_fax(raw, "u1")
    assert doc.printed and doc.meta["compression"] == name
    assert doc.meta["resolution"] == "200x100" and doc.meta["pages"] == 1


@pytest.mark.parametrize(
    ("data", "ctype", "reason"),
    [
        (tiff("tiff_lzw", (200, 200)), "image/tiff", "not TIFF-FX profile S"),
        (tiff("group4", (300, 300)), "image/tiff", "resolution 300x300"),
        (tiff("raw", (200, 200), "L"), "image/tiff", "not TIFF-FX profile S"),
        (b"II*\x00garbage", "image/tiff", "does not decode"),
        (pdf_page(), "application/pdf", "application/pdf, not a TIFF-FX fax"),
    ],
)
def test_other_documents_become_error_reports(data: bytes, ctype: str, reason: str) -> None:
    doc = read_fax(fax_message(data, ctype, "x", "a@b.example"), "u1")
    assert not doc.printed and reason in str(doc.meta["error"])
    assert b"INTERNET FAX RECEPTION ERROR" in doc.data


def test_two_attachments_or_none_are_refused() -> None:
    msg = EmailMessage()
    msg["From"] = "a@b.example"
    msg.set_content("hello")
    assert "no attachment" in str(read_fax(msg.as_bytes(), "u").meta["error"])
    msg.add_attachment(tiff_g4(1), maintype="image", subtype="tiff", filename="1.tif")
    msg.add_attachment(tiff_g4(1), maintype="image", subtype="tiff", filename="2.tif")
    assert "2 attachments" in str(read_fax(msg.as_bytes(), "u").meta["error"])


def test_a_tiff_sent_as_octet_stream_with_a_tif_name_prints() -> None:
    raw = fax_message(tiff_g4(2), "application/octet-stream", "scan.TIF", "a@b.example")
    assert read_fax(raw, "u").meta["pages"] == 2


def test_accept_from() -> None:
    assert sender_accepted("Fax <fax@Example.org>", "")
    assert sender_accepted("Fax <fax@Example.org>", "other@x.org, example.org")
    assert sender_accepted("fax@example.org", "@example.org")
    assert sender_accepted("fax@example.org", "FAX@example.org")
    assert not sender_accepted("fax@evil.example", "example.org")
    raw = fax_message(tiff_g4(1), "image/tiff", "f.tif", "fax@evil.example")
    assert "not accepted" in str(read_fax(raw, "u", accept_from="example.org").meta["error"])


def test_pages_are_reserved_from_the_ram_budget() -> None:
    budget = RamBudget(1728 * 1144 // 8 * 2)  # room for two pages
    raw = fax_message(tiff_g4(3), "image/tiff", "f.tif", "a@b.example")
    with budget.reserve(0, "fax") as held, pytest.raises(MemoryFullError):
        read_fax(raw, "u", reserve=held.grow)
    assert budget.used == 0
