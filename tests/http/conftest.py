"""A real `dpfw run --http 127.0.0.1:0` on a demo image, and an httpx client logged in."""

from __future__ import annotations

import re
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import DeviceProcess, dpfw

ADMIN = ("admin", "admin-lab")  # what `dpfw image demo` sets
BOXES = {"alice": "alice-lab", "bob": "bob-lab"}
_URL = re.compile(r"^dpfw: HTTP API on (https?://\S+?)/api/v1 ")


def wait_http(device: DeviceProcess, timeout: float = 30.0) -> str:
    """The base URL (scheme://host:port) the device printed for its HTTP API."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(device.lines):
            if match := _URL.match(line):
                return match.group(1)
        if not device.alive():
            break
        time.sleep(0.02)
    raise AssertionError("no HTTP API line:\n" + device.output())


@dataclass
class Lab:
    device: DeviceProcess
    image: Path
    base: str
    pop3_port: int
    api: httpx.Client  # logged in as admin

    def client(self, auth: tuple[str, str] | None = ADMIN) -> httpx.Client:
        return httpx.Client(base_url=self.base, auth=auth, timeout=30)


def start_lab(
    start_device: type[DeviceProcess], image: Path, *args: str
) -> Generator[Lab, None, None]:
    device = start_device(image, "--http", "127.0.0.1:0", *args)
    port = device.wait_booted()
    base = wait_http(device)
    with httpx.Client(base_url=base, auth=ADMIN, timeout=30) as api:
        yield Lab(device, image, base, port, api)


@pytest.fixture
def lab(demo_image: Path, start_device: type[DeviceProcess]) -> Iterator[Lab]:
    yield from start_lab(start_device, demo_image)


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One demo device for a module of tests that change nothing (refusals, fuzzing)."""
    image = tmp_path_factory.mktemp("shared") / "demo.img"
    dpfw("image", "demo", str(image))
    started: list[DeviceProcess] = []

    class Tracked(DeviceProcess):
        def __init__(self, image: Path, *args: str) -> None:
            super().__init__(image, *args)
            started.append(self)

    try:
        yield from start_lab(Tracked, image)
    finally:
        for device in started:
            device.kill()
