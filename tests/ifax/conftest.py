"""Fixtures for the Internet Fax tests: a board, a private Dovecot, fax documents."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from firmware.config.profile import Profile, factory
from firmware.device.boards import create_board
from firmware.store.board import Board
from tests.ifax.dovecot import PASSWORD, USER, Dovecot


def tiff_g4(pages: int, dpi: tuple[int, int] = (200, 100)) -> bytes:
    """A multi-page bilevel TIFF, CCITT G4 (MMR), A4 width at fax resolution."""
    frames = []
    for n in range(pages):
        page = Image.new("1", (1728, 1144), 1)
        ImageDraw.Draw(page).text((100, 100 + 40 * n), f"page {n + 1}", fill=0)
        frames.append(page)
    out = io.BytesIO()
    frames[0].save(
        out, format="TIFF", compression="group4", dpi=dpi, save_all=True, append_images=frames[1:]
    )
    return out.getvalue()


def pdf_page() -> bytes:
    out = io.BytesIO()
    Image.new("L", (200, 200), 255).save(out, format="PDF")
    return out.getvalue()


def ifax_profile(dovecot: Dovecot, **extra: str) -> Profile:
    prof = factory("DP-3530").with_values(
        [
            ("ifax.enabled", "true"),
            ("ifax.server", "127.0.0.1" if dovecot.ca_file is None else "localhost"),
            ("ifax.port", str(dovecot.port)),
            ("ifax.tls", "none" if dovecot.ca_file is None else "stls"),
            ("ifax.ca_file", str(dovecot.ca_file or "")),
            ("ifax.user", USER),
            ("ifax.password", PASSWORD),
            ("ifax.poll_interval_s", "0"),
            *extra.items(),
        ],
        "test",
    )
    return prof


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    b = create_board(tmp_path / "b.img", factory("DP-3530"), "admin-pw", size=4 << 20)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dovecot_tls() -> Iterator[Dovecot]:
    server = Dovecot(tls=True)
    try:
        yield server
    finally:
        server.stop()
