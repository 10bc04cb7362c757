"""`Device.scan` on a running Device: a power cut while the job's engine draws its pages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from firmware.device.demo import create_demo
from firmware.errors import DeviceError
from firmware.ops import faults, scans, storage
from firmware.ops.context import OpsContext
from tests.faults.conftest import running_device, wait_booted
from tests.scanner.conftest import children_of


async def test_a_power_cut_while_the_engine_draws_stores_nothing(tmp_path: Path) -> None:
    """Found while testing the engine: a job started before a power cut finished after the
    next boot and tried to store into the board the cut had abandoned; it stored nothing but
    said only "IMG: write failed: Bad file descriptor" (the thread-based job did the same)."""
    image = tmp_path / "demo.img"
    create_demo(image).close()
    async with running_device(image) as device:
        ctx = OpsContext.running(device)
        before = [m.uid for m in device.board.messages("bob")]
        request = scans.prepare_scan(ctx, "bob", {"pages": "20", "dpi": "600"})  # ~5 s
        faults.add_fault(ctx, {"action": "power-cut", "after_s": 0.3})
        with pytest.raises(DeviceError) as caught:
            await device.scan(request)
        assert str(caught.value) == (
            "scan job 0001 failed: the device restarted during the job (power cut or reboot); "
            "nothing was stored"
        )
        await wait_booted(device, boots=2)
        assert device.power_cuts == 1
        assert [m.uid for m in device.board.messages("bob")] == before
        assert storage.fsck(ctx).clean
        assert children_of(os.getpid()) == {}
        done = await scans.run_scan(ctx, scans.prepare_scan(ctx, "bob", {}))  # and scans again
        assert done.box == "bob"
