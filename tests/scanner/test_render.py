"""The synthetic originals: A4 at the scan grid, the right pixel format, real content."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from firmware.scanner.render import PageSpec, page_pixels, parse_resolution, render_page

WHEN = datetime(2026, 11, 27, 10, 15, tzinfo=UTC)


def spec(dpi: str = "200x100", mode: str = "mono", page: int = 1, job: int = 42) -> PageSpec:
    x, y = parse_resolution(dpi)
    return PageSpec("DP-3530", "dp3530.local", "alice", job, page, 3, WHEN, x, y, mode)


@pytest.mark.parametrize(
    ("dpi", "expected"),
    [
        # A4 = 210 x 297 mm = 8.268 x 11.693 in, times dots per inch, rounded.
        ("200x100", (1654, 1169)),
        ("200x200", (1654, 2339)),
        ("300", (2480, 3508)),
        ("400", (3307, 4677)),
        ("600", (4961, 7016)),
    ],
)
def test_a4_pixel_size_per_resolution(dpi: str, expected: tuple[int, int]) -> None:
    assert page_pixels(*parse_resolution(dpi)) == expected


@pytest.mark.parametrize("text", ["", "x", "200x", "abc", "20", "5000"])
def test_bad_resolution_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="resolution"):
        parse_resolution(text)


@pytest.mark.parametrize(("mode", "pil_mode"), [("mono", "1"), ("gray", "L"), ("color", "RGB")])
@pytest.mark.parametrize("dpi", ["200x100", "200x200"])
def test_page_has_mode_and_size(mode: str, pil_mode: str, dpi: str) -> None:
    page = render_page(spec(dpi, mode))
    assert page.mode == pil_mode
    assert page.size == page_pixels(*parse_resolution(dpi))


def test_page_carries_ink_but_is_mostly_paper() -> None:
    page = render_page(spec("200x200", "mono")).convert("L")
    histogram = page.histogram()
    black = histogram[0] / (page.width * page.height)
    assert 0.02 < black < 0.5, black


def test_colour_page_has_colour() -> None:
    page = render_page(spec("200x100", "color"))
    saturation = page.convert("HSV").getchannel("S").histogram()
    assert sum(saturation[150:]) > 10_000


def test_same_spec_same_pixels_other_page_other_pixels() -> None:
    one = render_page(spec(page=1)).tobytes()
    assert render_page(spec(page=1)).tobytes() == one
    assert render_page(spec(page=2)).tobytes() != one


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="sepia"):
        render_page(spec(mode="sepia"))
