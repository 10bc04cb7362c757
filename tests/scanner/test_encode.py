"""Every format opens in an independent reader with the right pages, pixels and coding.

TIFF and JPEG are read back with Pillow; PDF with poppler (`pdfinfo`, `pdfimages`, `pdftoppm`),
which shares no code with the Pillow writer.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from firmware.scanner.encode import EncodedFile, open_writer
from firmware.scanner.render import PageSpec, page_pixels, parse_resolution, render_page

WHEN = datetime(2026, 11, 27, 10, 15, tzinfo=UTC)
poppler = pytest.mark.skipif(
    shutil.which("pdfinfo") is None, reason="poppler-utils not installed (apt-get install)"
)


def encode(fmt: str, mode: str, dpi: str, pages: int) -> tuple[list[EncodedFile], list[int]]:
    x, y = parse_resolution(dpi)
    writer = open_writer(fmt, (x, y), "test job", WHEN)
    grown = []
    for n in range(1, pages + 1):
        page = render_page(PageSpec("DP-3530", "h.local", "alice", 7, n, pages, WHEN, x, y, mode))
        grown.append(writer.add_page(page))
    return writer.finish(), grown


def frames(data: bytes) -> list[Image.Image]:
    image = Image.open(io.BytesIO(data))
    out = []
    for i in range(getattr(image, "n_frames", 1)):
        image.seek(i)
        image.load()
        out.append(image.copy())
        out[-1].info = dict(image.info)
    return out


@pytest.mark.parametrize("dpi", ["200x100", "200x200"])
def test_tiff_is_multipage_group4(dpi: str) -> None:
    files, grown = encode("tiff", "mono", dpi, 3)
    assert len(files) == 1 and files[0].content_type == "image/tiff"
    data = files[0].data
    assert sum(grown) == len(data)  # what the job holds is exactly the document
    pages = frames(data)
    assert len(pages) == 3
    for page in pages:
        assert page.mode == "1"
        assert page.size == page_pixels(*parse_resolution(dpi))
        assert page.info["compression"] == "group4"
        assert tuple(round(v) for v in page.info["dpi"]) == parse_resolution(dpi)


def test_tiff_at_600_dpi() -> None:
    files, _ = encode("tiff", "mono", "600", 1)
    (page,) = frames(files[0].data)
    assert page.size == (4961, 7016)
    assert page.info["compression"] == "group4"


@pytest.mark.parametrize(("mode", "pil_mode"), [("gray", "L"), ("color", "RGB")])
def test_jpeg_is_one_file_per_page(mode: str, pil_mode: str) -> None:
    files, grown = encode("jpeg", mode, "200x100", 2)
    assert [len(f.data) for f in files] == grown
    for f in files:
        assert f.content_type == "image/jpeg" and f.extension == "jpg"
        image = Image.open(io.BytesIO(f.data))
        assert image.format == "JPEG"
        assert image.mode == pil_mode
        assert image.size == (1654, 1169)
        assert tuple(round(v) for v in image.info["dpi"]) == (200, 100)


def _pdf(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "scan.pdf"
    path.write_bytes(data)
    return path


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout


@poppler
@pytest.mark.parametrize(
    ("mode", "dpi", "colour", "bpc", "coding"),
    [
        ("mono", "200x100", "gray", "1", "ccitt"),
        ("gray", "200x200", "gray", "8", "jpeg"),
        ("color", "200x100", "rgb", "8", "jpeg"),
    ],
)
def test_pdf_pages_read_by_poppler(
    tmp_path: Path, mode: str, dpi: str, colour: str, bpc: str, coding: str
) -> None:
    files, grown = encode("pdf", mode, dpi, 3)
    assert files[0].content_type == "application/pdf"
    assert sum(grown) == len(files[0].data)
    path = _pdf(tmp_path, files[0].data)
    info = _run("pdfinfo", str(path))
    assert re.search(r"^Pages:\s+3$", info, re.M), info
    assert "(A4)" in info
    width, height = page_pixels(*parse_resolution(dpi))
    rows = [line.split() for line in _run("pdfimages", "-list", str(path)).splitlines()[2:]]
    assert len(rows) == 3
    x, y = parse_resolution(dpi)
    for row in rows:
        # page num type width height color comp bpc enc interp object ID x-ppi y-ppi ...
        assert row[3:6] == [str(width), str(height), colour]
        assert row[7:9] == [bpc, coding]
        assert row[12:14] == [str(x), str(y)]


@poppler
@pytest.mark.parametrize("mode", ["mono", "gray", "color"])
def test_pdf_renders_at_its_resolution_with_pdftoppm(tmp_path: Path, mode: str) -> None:
    files, _ = encode("pdf", mode, "200x100", 2)
    path = _pdf(tmp_path, files[0].data)
    out = tmp_path / "page"
    _run("pdftoppm", "-rx", "200", "-ry", "100", "-gray", "-f", "2", "-l", "2", str(path), str(out))
    (rendered,) = tmp_path.glob("page*.pgm")
    image = Image.open(rendered)
    assert image.size == (1654, 1169)
    dark = sum(image.histogram()[:64]) / (image.width * image.height)
    assert 0.01 < dark < 0.5  # a page with print on it, not blank and not black


@poppler
def test_pdf_at_600_dpi(tmp_path: Path) -> None:
    files, _ = encode("pdf", "mono", "600", 1)
    rows = _run("pdfimages", "-list", str(_pdf(tmp_path, files[0].data))).splitlines()[2:]
    assert rows[0].split()[3:5] == ["4961", "7016"]


def test_same_job_same_bytes() -> None:
    assert encode("pdf", "mono", "200x100", 2)[0] == encode("pdf", "mono", "200x100", 2)[0]


@pytest.mark.parametrize(("fmt", "mode"), [("tiff", "gray"), ("jpeg", "mono")])
def test_writer_refuses_a_page_it_cannot_carry(fmt: str, mode: str) -> None:
    writer = open_writer(fmt, (200, 100), "t", WHEN)
    page = render_page(PageSpec("DP-3530", "h", "b", 1, 1, 1, WHEN, 200, 100, mode))
    with pytest.raises(ValueError, match="page"):
        writer.add_page(page)
