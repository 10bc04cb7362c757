"""The API in-process over a booted Device: its board reads wait for the store worker."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import trio

from firmware.config.profile import factory
from firmware.device.boards import create_board
from firmware.device.device import Device, RunOptions
from firmware.http.app import Api

ADMIN_PASSWORD = "admin-pw"


async def test_a_listing_waits_while_the_store_worker_holds_the_board(tmp_path: Path) -> None:
    """A board read on the loop while the worker thread writes iterated the board's tables
    as they changed (RuntimeError: dictionary changed size, a 500 under `tools/bench api`).
    Now it takes the board lock (StoreWorker.reading): it cannot run while the worker holds
    the board, and runs as soon as the worker lets go."""
    image = tmp_path / "board.img"
    create_board(image, factory("DP-3530"), ADMIN_PASSWORD, size=8 << 20).close()
    device = Device(RunOptions(image=image, pop3=("127.0.0.1", 0)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(device.run)
        await device.wait_booted()
        api = Api(device)
        transport = httpx.ASGITransport(app=api.app)
        client = httpx.AsyncClient(
            transport=transport, base_url="http://dpfw", auth=("admin", ADMIN_PASSWORD)
        )
        async with client:
            assert (await client.get("/api/v1/boxes")).status_code == 200
            holding, release = threading.Event(), threading.Event()

            def hold_the_board() -> None:
                holding.set()
                release.wait(30)

            async with trio.open_nursery() as inner:
                inner.start_soon(device.store_worker.run, hold_the_board)
                try:
                    await trio.to_thread.run_sync(holding.wait)
                    with trio.move_on_after(0.5) as waited:
                        await client.get("/api/v1/boxes")
                    assert waited.cancelled_caught, "the listing ran while the worker held it"
                finally:
                    release.set()
            got = await client.get("/api/v1/boxes")
            assert got.status_code == 200 and got.json()["boxes"] == []
        device.request_shutdown()
