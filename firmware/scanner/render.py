"""Synthetic originals: an A4 test chart per page, drawn with Pillow.

The simulator has no paper, so it draws what a person would recognise as a scanned page: a
test chart naming the model, job, page and time, with text, rules, line-pair patches and a
grey wedge. The page is drawn at a square resolution and then resampled to the scan grid,
as a fax-class scanner does for 200x100 dpi. Pure computation: no files, no clocks.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image, ImageFont


A4_MM = (210.0, 297.0)
MM_PER_INCH = 25.4
MODES = ("mono", "gray", "color")
# Pillow image mode per colour mode: 1-bit for mono, 8-bit grey, 24-bit RGB.
PIL_MODES = {"mono": "1", "gray": "L", "color": "RGB"}

_FILLER_TEXT = (
    "scan mailbox device flash memory page chart engine toner drum paper tray document "
    "office report invoice letter memo copy print network station address budget image "
    "resolution contrast density margin line column header footer quarter summary "
    "delivery archive record folder approval schedule meeting minutes agenda the of and "
    "to in for with on by at from as is was be are this that which"
)
_WORDS = tuple(_FILLER_TEXT.split())

_local = threading.local()  # FreeType faces are not shared between threads


def parse_resolution(dpi: str) -> tuple[int, int]:
    """'200x100' -> (200, 100); '300' -> (300, 300). Horizontal first, as fax does."""
    try:
        if "x" in dpi:
            x_text, y_text = dpi.split("x", 1)
            x, y = int(x_text), int(y_text)
        else:
            x = y = int(dpi)
    except ValueError:
        raise ValueError(f"{dpi!r} is not a resolution such as 300 or 200x100") from None
    if not (50 <= x <= 1200 and 50 <= y <= 1200):
        raise ValueError(f"resolution {dpi!r} is outside 50..1200 dpi")
    return x, y


def page_pixels(xdpi: int, ydpi: int) -> tuple[int, int]:
    """Pixel size of an A4 page at the given resolution (rounded to the nearest pixel)."""
    return (
        round(A4_MM[0] / MM_PER_INCH * xdpi),
        round(A4_MM[1] / MM_PER_INCH * ydpi),
    )


@dataclass(frozen=True)
class PageSpec:
    """Everything that goes onto one page; the same spec always draws the same pixels."""

    model: str
    hostname: str
    box: str
    job_number: int
    page_number: int
    pages: int
    timestamp: datetime
    xdpi: int
    ydpi: int
    mode: str


def render_page(spec: PageSpec) -> Image.Image:
    """Draw the test chart for `spec`; returns a Pillow image in the mode's pixel format."""
    if spec.mode not in MODES:
        raise ValueError(f"colour mode {spec.mode!r} is not one of {', '.join(MODES)}")
    from PIL import Image  # lazy: Pillow loads with the first scan, not at boot

    square = max(spec.xdpi, spec.ydpi)
    canvas_size = page_pixels(square, square)
    canvas = Image.new("RGB" if spec.mode == "color" else "L", canvas_size, "white")
    wedge_box = _draw_chart(canvas, spec, square)
    target = page_pixels(spec.xdpi, spec.ydpi)
    if target != canvas_size:
        canvas = canvas.resize(target, Image.Resampling.BOX)
        wedge_box = _scale_box(wedge_box, canvas_size, target)
    if spec.mode != "mono":
        return canvas
    # Text mode thresholds at 50% (crisp glyphs, small G4 output); the photo wedge is
    # halftoned by error diffusion, as a copier's text/photo mode does.
    wedge = canvas.crop(wedge_box).convert("1")
    mono = canvas.convert("1", dither=Image.Dither.NONE)
    del canvas  # a 600 dpi grey canvas is 35 MB; do not keep it past the conversion
    mono.paste(wedge, wedge_box[:2])
    return mono


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    cache: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] | None = getattr(
        _local, "fonts", None
    )
    if cache is None:
        cache = _local.fonts = {}
    if px not in cache:
        from PIL import ImageFont

        cache[px] = ImageFont.load_default(size=px)
    return cache[px]


def _scale_box(
    box: tuple[int, int, int, int], old: tuple[int, int], new: tuple[int, int]
) -> tuple[int, int, int, int]:
    sx, sy = new[0] / old[0], new[1] / old[1]
    return (int(box[0] * sx), int(box[1] * sy), int(box[2] * sx), int(box[3] * sy))


def _draw_chart(canvas: Image.Image, spec: PageSpec, dpi: int) -> tuple[int, int, int, int]:
    """Draw the chart; returns the grey wedge's box (halftoned separately in mono)."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size

    def mm(v: float) -> int:
        return round(v / MM_PER_INCH * dpi)

    def pt(v: float) -> int:
        return max(6, round(v / 72 * dpi))

    ink = (0, 0, 0) if canvas.mode == "RGB" else 0
    margin = mm(12)
    # Frame and corner registration marks.
    draw.rectangle((margin, margin, width - margin, height - margin), outline=ink, width=mm(0.5))
    for cx, cy in (
        (margin, margin),
        (width - margin, margin),
        (margin, height - margin),
        (width - margin, height - margin),
    ):
        r = mm(4)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=ink, width=max(1, mm(0.3)))
        draw.line((cx - 2 * r, cy, cx + 2 * r, cy), fill=ink, width=max(1, mm(0.2)))
        draw.line((cx, cy - 2 * r, cx, cy + 2 * r), fill=ink, width=max(1, mm(0.2)))

    x0, y = margin + mm(8), margin + mm(8)
    draw.text((x0, y), f"{spec.model} SCAN TEST CHART", font=_font(pt(22)), fill=ink)
    y += pt(30)
    header = (
        f"Job {spec.job_number:04d}    Page {spec.page_number} of {spec.pages}",
        f"Scanned {spec.timestamp:%Y-%m-%d %H:%M:%S %Z}".rstrip(),
        f"Resolution {spec.xdpi}x{spec.ydpi} dpi    Mode {spec.mode}",
        f"Device {spec.hostname}    Box {spec.box}",
    )
    for line in header:
        draw.text((x0, y), line, font=_font(pt(12)), fill=ink)
        y += pt(16)
    y += mm(4)
    draw.line((x0, y, width - x0, y), fill=ink, width=mm(0.7))
    y += mm(6)

    # Rules of increasing weight.
    for i, weight_mm in enumerate((0.1, 0.2, 0.3, 0.5, 0.8, 1.2)):
        draw.line((x0, y, x0 + mm(80), y), fill=ink, width=max(1, mm(weight_mm)))
        draw.text((x0 + mm(84), y - pt(4)), f"{weight_mm} mm", font=_font(pt(7)), fill=ink)
        y += mm(5) if i < 5 else mm(8)

    # Line-pair patches: 1, 2, 3, 4 line pairs per mm (resolution check).
    px = x0 + mm(110)
    py = y - mm(38)
    for lpmm in (1, 2, 3, 4):
        step = 1 / (2 * lpmm)
        x = px
        while x < px + mm(12):
            draw.rectangle((round(x), py, round(x + mm(step)) - 1, py + mm(12)), fill=ink)
            x += mm(2 * step)
        draw.text((px, py + mm(13)), f"{lpmm} lp/mm", font=_font(pt(7)), fill=ink)
        px += mm(18)

    # Grey wedge: eleven steps from black to white.
    wedge = (x0, y, x0 + mm(165), y + mm(14))
    step_w = (wedge[2] - wedge[0]) // 11
    for i in range(11):
        level = round(255 * i / 10)
        fill: tuple[int, int, int] | int = (level, level, level) if canvas.mode == "RGB" else level
        draw.rectangle(
            (wedge[0] + i * step_w, wedge[1], wedge[0] + (i + 1) * step_w - 1, wedge[3]), fill=fill
        )
    draw.rectangle(wedge, outline=ink, width=max(1, mm(0.2)))
    y = wedge[3] + mm(6)

    if canvas.mode == "RGB":  # colour patches: primaries and secondaries
        colours = (
            (220, 30, 30),
            (30, 160, 40),
            (30, 60, 200),
            (0, 170, 220),
            (210, 40, 160),
            (240, 210, 20),
        )
        for i, colour in enumerate(colours):
            cx = x0 + i * mm(28)
            draw.rectangle((cx, y, cx + mm(24), y + mm(12)), fill=colour)
        y += mm(18)

    # Body text: pseudo-random words, different per job and page, same for the same spec.
    rng = random.Random(spec.job_number * 100_003 + spec.page_number)
    body_font = _font(pt(10))
    line_h = pt(14)
    chars_per_line = int((width - 2 * x0) / (pt(10) * 0.55))
    bottom = height - margin - mm(20)
    while y < bottom:
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < chars_per_line - 12:
            words.append(rng.choice(_WORDS))
        draw.text((x0, y), " ".join(words).capitalize() + ".", font=body_font, fill=ink)
        y += line_h
    footer = f"{spec.model}  job {spec.job_number:04d}  page {spec.page_number}/{spec.pages}"
    draw.text((x0, height - margin - mm(12)), footer, font=_font(pt(8)), fill=ink)
    return wedge
