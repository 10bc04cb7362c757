"""Device faults: power cuts through the real crash path and a boot from the image, flash
full and MEMORY FULL with the device's own refusals; then the reliability checks: nothing
acknowledged is lost, no half QUIT, the image checks clean."""

from __future__ import annotations

import poplib

import pytest
import trio

from firmware.errors import DeviceError, MemoryFullError, NotRunningError, StorageFullError
from firmware.ops import messages, scans, storage
from tests.faults.conftest import Lab, wait_booted

MESSAGE = b"From: lab@example.org\r\nSubject: fault test\r\n\r\nbody\r\n"


async def test_power_cut_after_quit_ok(lab: Lab) -> None:
    lab.fault(action="power-cut", at="after-quit-ok", box="alice", times=1)

    def sessions() -> None:
        bob = lab.login("bob")
        bob.dele(1)  # bob's session is open, uncommitted, when the power goes
        alice = lab.login()
        alice.dele(1)
        alice.dele(2)
        assert alice.quit().startswith(b"+OK")  # acknowledged: must survive the cut
        with pytest.raises((poplib.error_proto, OSError)):
            bob.stat()  # the device died under bob's session
            bob.quit()

    await trio.to_thread.run_sync(sessions)
    await wait_booted(lab.device, boots=2)
    assert lab.device.power_cuts == 1
    assert len(await trio.to_thread.run_sync(lab.uidl)) == 1  # nothing acknowledged lost
    assert len(await trio.to_thread.run_sync(lab.uidl, "bob")) == 3  # no half QUIT
    assert storage.fsck(lab.ctx).clean
    await trio.to_thread.run_sync(lab.serves_others)


async def test_nothing_is_committed_after_the_instant_of_a_power_cut(lab: Lab) -> None:
    """Found in CI: after alice's QUIT +OK cut the power, bob's session could still STAT and
    QUIT (commit its deletion) before the services stopped. The store now refuses every
    operation from the instant of the cut; the image is abandoned as a dead process would."""
    uids = await trio.to_thread.run_sync(lab.uidl, "bob")
    board = lab.device.board
    lab.device.power_cut()
    with pytest.raises(NotRunningError, match="lost power"):
        await lab.device.store_worker.run(board.delete, "bob", [uids[0].decode()])
    await wait_booted(lab.device, boots=2)
    assert await trio.to_thread.run_sync(lab.uidl, "bob") == uids
    assert storage.fsck(lab.ctx).clean


async def test_power_cut_now_boots_again_from_the_image(lab: Lab) -> None:
    before = await trio.to_thread.run_sync(lab.uidl)
    fault = lab.fault(action="power-cut")  # at=now
    await wait_booted(lab.device, boots=2)
    assert lab.fired(fault.id) == 1 and lab.device.power_cuts == 1
    assert await trio.to_thread.run_sync(lab.uidl) == before
    assert storage.fsck(lab.ctx).clean


async def test_power_cut_mid_scan_store(lab: Lab) -> None:
    lab.fault(action="power-cut", at="mid-scan-store", times=1)
    request = scans.prepare_scan(lab.ctx, "bob", {})
    with pytest.raises((DeviceError, trio.Cancelled)):
        await lab.device.scan(request)
    await wait_booted(lab.device, boots=2)
    assert len(await trio.to_thread.run_sync(lab.uidl, "bob")) == 3  # never acknowledged
    assert storage.fsck(lab.ctx).clean
    done = await scans.run_scan(lab.ctx, scans.prepare_scan(lab.ctx, "bob", {}))  # spent
    assert done.box == "bob"


async def test_flash_full_for_the_next_deliveries(lab: Lab) -> None:
    fault = lab.fault(action="flash-full", box="bob", times=2)
    for _ in range(2):
        with pytest.raises(StorageFullError, match=r"^storage full: .*nothing was stored$"):
            await lab.ctx.run_store(messages.deliver, lab.ctx, "bob", MESSAGE)
    await lab.ctx.run_store(messages.deliver, lab.ctx, "alice", MESSAGE)  # another box
    await lab.ctx.run_store(messages.deliver, lab.ctx, "bob", MESSAGE)  # spent
    assert lab.fired(fault.id) == 2
    assert len(await trio.to_thread.run_sync(lab.uidl, "bob")) == 4


async def test_memory_full_for_the_next_scan(lab: Lab) -> None:
    lab.fault(action="memory-full", times=1)
    request = scans.prepare_scan(lab.ctx, "alice", {})
    with pytest.raises(MemoryFullError, match=r"^MEMORY FULL: scan job \d+ needs \d+ bytes"):
        await scans.run_scan(lab.ctx, request)
    assert lab.device.scans_failed == 1
    await scans.run_scan(lab.ctx, request)
    assert len(await trio.to_thread.run_sync(lab.uidl)) == 4


async def test_power_cut_later(lab: Lab) -> None:
    fault = lab.fault(action="power-cut", after_s=0.2)
    assert lab.device.boots == 1 and lab.fired(fault.id) == 0
    await wait_booted(lab.device, boots=2)
    assert lab.fired(fault.id) == 1 and lab.device.power_cuts == 1
    await trio.to_thread.run_sync(lab.serves_others)
