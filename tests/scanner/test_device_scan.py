"""`Device.scan` on a running Device: a power cut while the job's engine draws its pages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

import firmware.device.device as device_module
from firmware.device.boards import open_board
from firmware.device.demo import create_demo
from firmware.errors import DeviceError
from firmware.ops import faults, scans, storage
from firmware.ops.context import OpsContext
from tests.faults.conftest import running_device, wait_booted
from tests.scanner.conftest import children_of
from tests.scanner.test_engine import misbehaving


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


async def test_a_shutdown_gives_scan_jobs_the_grace_then_stops_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in a user's trial: at Ctrl-C a scan job ran on and was stored if some POP3 session
    was open (the device waited for it), and was cut off at once if none was. Now the jobs get
    the sessions' grace whatever is open, new jobs are refused, and a job still running at the
    end of the grace stops with one line and stores nothing."""
    monkeypatch.setattr(device_module, "SHUTDOWN_GRACE_S", 1.0)
    misbehaving(monkeypatch, "hang")  # reports page 1, then never finishes
    image = tmp_path / "demo.img"
    create_demo(image).close()
    outcome: list[str] = []
    async with running_device(image) as device:
        ctx = OpsContext.running(device)
        before = [m.uid for m in device.board.messages("bob")]
        request = scans.prepare_scan(ctx, "bob", {"pages": "2"})

        async def job() -> None:
            try:
                await device.scan(request)
                outcome.append("stored")
            except DeviceError as exc:
                outcome.append(str(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job)
            with trio.fail_after(30):
                while device.budget.used == 0:  # the engine reported its first page
                    await trio.sleep(0.01)
            started = trio.current_time()
            device.request_shutdown()
            await trio.sleep(0)
            with pytest.raises(DeviceError, match="scan refused: the device is shutting down"):
                await device.scan(request)
        waited = trio.current_time() - started
        assert outcome == [
            "scan job 0001 stopped: the device shut down before the job was done (1 s grace); "
            "nothing was stored"
        ]
        assert 1.0 <= waited < 10  # the grace, not at once (no POP3 session was open)
    with open_board(image) as board:
        assert [m.uid for m in board.messages("bob")] == before
    assert children_of(os.getpid()) == {}
