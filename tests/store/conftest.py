"""Fixtures for store tests: real board images in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.config.profile import factory
from firmware.device.boards import create_board
from firmware.store.board import Board
from tests.store.helpers import ADMIN


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return tmp_path / "board.img"


@pytest.fixture
def board(image: Path) -> Iterator[Board]:
    b = create_board(image, factory("DP-3530"), ADMIN, size=1 << 20)
    b.add_box("alice", "alice-pw")
    try:
        yield b
    finally:
        b.close()
