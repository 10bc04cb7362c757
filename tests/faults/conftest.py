"""A real running Device (POP3 and POP3S on loopback) on a demo image, faults set through
firmware.ops as the console and the API set them, met by real clients in threads."""

from __future__ import annotations

import contextlib
import poplib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from firmware.device.demo import create_demo
from firmware.device.device import Device, RunOptions
from firmware.ops import faults as ops_faults
from firmware.ops.context import OpsContext
from firmware.ops.faults import FaultInfo

PASSWORDS = {"alice": "alice-lab", "bob": "bob-lab"}


async def wait_booted(device: Device, boots: int = 1) -> None:
    """Until the device's `boots`-th boot serves POP3."""
    with trio.fail_after(30):
        while device.boots < boots or not device.pop3_addresses:
            await trio.sleep(0.01)
        await device.wait_booted()


@contextlib.asynccontextmanager
async def running_device(image: Path) -> AsyncIterator[Device]:
    options = RunOptions(image=image, pop3=("127.0.0.1", 0), pop3s=("127.0.0.1", 0))
    device = Device(options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(device.run)
        await wait_booted(device)
        try:
            yield device
        finally:
            device.request_shutdown()


@dataclass
class Lab:
    device: Device
    image: Path

    @property
    def ctx(self) -> OpsContext:
        return OpsContext.running(self.device)

    @property
    def port(self) -> int:
        return self.device.pop3_addresses[0][1]

    @property
    def pop3s_port(self) -> int:
        return self.device.pop3s_addresses[0][1]

    def fault(self, **obj: Any) -> FaultInfo:
        return ops_faults.add_fault(self.ctx, obj)

    def fired(self, fault_id: int) -> int:
        return self.device.faults.get(fault_id).fired

    def login(self, box: str = "alice") -> poplib.POP3:
        pop = poplib.POP3("127.0.0.1", self.port, timeout=15)
        pop.user(box)
        pop.pass_(PASSWORDS[box])
        return pop

    def retr(self, number: int, box: str = "alice") -> bytes:
        """RETR `number` with poplib, the session ended with QUIT: the message as lines."""
        pop = self.login(box)
        try:
            return b"\r\n".join(pop.retr(number)[1])
        finally:
            pop.quit()

    def uidl(self, box: str = "alice") -> list[bytes]:
        pop = self.login(box)
        try:
            return [line.split()[1] for line in pop.uidl()[1]]
        finally:
            pop.quit()

    def serves_others(self) -> None:
        """Another client (bob) is served as usual while or after alice meets a fault."""
        pop = self.login("bob")
        try:
            assert pop.stat()[0] == 3
            assert len(pop.retr(1)[1]) > 3
        finally:
            pop.quit()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "demo.img"
    create_demo(path).close()
    return path


@pytest.fixture
async def lab(image: Path) -> AsyncIterator[Lab]:
    async with running_device(image) as device:
        yield Lab(device, image)


@pytest.fixture
def in_thread() -> Iterator[Any]:
    yield trio.to_thread.run_sync
