"""Page-by-page document encoders: multi-page TIFF (CCITT G4), PDF and JPEG, all by Pillow.

A job must hold each compressed page in the RAM budget as it is produced, and a 600 dpi job
must not keep every raw bitmap alive, so each writer takes one rendered page at a time and
says how many bytes it added. Pillow does all encoding (libtiff for G4, libjpeg); the writers
only drive its page-appending modes: `AppendingTiffWriter` for TIFF and `append=True` for PDF.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from PIL import Image


FORMATS = ("tiff", "pdf", "jpeg")
# Which colour modes each format carries: TIFF is the fax-world G4 format (bilevel only);
# JPEG has no bilevel mode.
FORMAT_MODES = {"tiff": ("mono",), "pdf": ("mono", "gray", "color"), "jpeg": ("gray", "color")}
CONTENT_TYPES = {"tiff": "image/tiff", "pdf": "application/pdf", "jpeg": "image/jpeg"}
EXTENSIONS = {"tiff": "tif", "pdf": "pdf", "jpeg": "jpg"}
JPEG_QUALITY = 75


@dataclass(frozen=True)
class EncodedFile:
    """One finished attachment: its bytes and MIME type."""

    data: bytes
    content_type: str
    extension: str


class DocumentWriter(Protocol):
    """Takes rendered pages one by one; `finish` returns the encoded file(s)."""

    def add_page(self, page: Image.Image) -> int:
        """Encode one page; return how many bytes the document grew by."""
        ...

    def finish(self) -> list[EncodedFile]: ...


class TiffG4Writer:
    """One multi-page TIFF, every page CCITT Group 4 (bilevel pages only)."""

    def __init__(self, dpi: tuple[int, int]) -> None:
        self._dpi = dpi
        self._buffer = io.BytesIO()
        from PIL import TiffImagePlugin  # lazy: Pillow loads with the first scan, not at boot

        self._tiff = TiffImagePlugin.AppendingTiffWriter(self._buffer, new=True)

    def add_page(self, page: Image.Image) -> int:
        if page.mode != "1":
            raise ValueError(f"TIFF G4 needs a bilevel page, not mode {page.mode}")
        before = self._buffer.getbuffer().nbytes
        page.save(self._tiff, format="TIFF", compression="group4", dpi=self._dpi)
        self._tiff.newFrame()
        return self._buffer.getbuffer().nbytes - before

    def finish(self) -> list[EncodedFile]:
        return [EncodedFile(self._buffer.getvalue(), CONTENT_TYPES["tiff"], EXTENSIONS["tiff"])]


class PdfWriter:
    """One multi-page PDF; Pillow stores mono pages as CCITT G4, grey and colour as JPEG."""

    def __init__(self, dpi: tuple[int, int], title: str, created: datetime) -> None:
        self._dpi = dpi
        self._title = title
        self._created = created.utctimetuple()  # not the wall clock: same job, same bytes
        self._buffer = io.BytesIO()
        self._pages = 0

    def add_page(self, page: Image.Image) -> int:
        before = self._buffer.getbuffer().nbytes
        self._buffer.seek(0)  # Pillow's PDF appender reads the document from the start
        # `quality` reaches the inner encoder: JPEG takes it, the G4 TIFF encoder refuses it.
        extra = {} if page.mode == "1" else {"quality": JPEG_QUALITY}
        page.save(
            self._buffer,
            format="PDF",
            append=self._pages > 0,
            dpi=self._dpi,
            title=self._title,
            producer="dpfw scanner",
            creationDate=self._created,
            modDate=self._created,
            **extra,
        )
        self._pages += 1
        return self._buffer.getbuffer().nbytes - before

    def finish(self) -> list[EncodedFile]:
        return [EncodedFile(self._buffer.getvalue(), CONTENT_TYPES["pdf"], EXTENSIONS["pdf"])]


class JpegWriter:
    """One baseline JPEG per page (grey or colour)."""

    def __init__(self, dpi: tuple[int, int]) -> None:
        self._dpi = dpi
        self._files: list[EncodedFile] = []

    def add_page(self, page: Image.Image) -> int:
        if page.mode not in ("L", "RGB"):
            raise ValueError(f"JPEG needs a grey or colour page, not mode {page.mode}")
        out = io.BytesIO()
        page.save(out, format="JPEG", quality=JPEG_QUALITY, dpi=self._dpi, optimize=True)
        data = out.getvalue()
        self._files.append(EncodedFile(data, CONTENT_TYPES["jpeg"], EXTENSIONS["jpeg"]))
        return len(data)

    def finish(self) -> list[EncodedFile]:
        return list(self._files)


def open_writer(fmt: str, dpi: tuple[int, int], title: str, created: datetime) -> DocumentWriter:
    """A fresh writer for `fmt` ('tiff', 'pdf' or 'jpeg'); `title`/`created` go into PDFs."""
    if fmt == "tiff":
        return TiffG4Writer(dpi)
    if fmt == "pdf":
        return PdfWriter(dpi, title, created)
    if fmt == "jpeg":
        return JpegWriter(dpi)
    raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
