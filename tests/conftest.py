"""Fixtures shared by every test area: real `dpfw` processes on real board images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import DeviceProcess, dpfw


@pytest.fixture
def demo_image(tmp_path: Path) -> Path:
    """A fresh demo board image (DP-3530, boxes alice and bob with demo messages)."""
    image = tmp_path / "demo.img"
    dpfw("image", "demo", str(image))
    return image


@pytest.fixture
def start_device() -> Iterator[type[DeviceProcess]]:
    """Start `dpfw run` processes; every one still running is killed at the end of the test."""
    started: list[DeviceProcess] = []

    class Tracked(DeviceProcess):
        def __init__(self, image: Path, *args: str) -> None:
            super().__init__(image, *args)
            started.append(self)

    yield Tracked
    for device in started:
        device.kill()
