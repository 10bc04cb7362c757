"""The console's commands run on the event loop: they must not run while the store worker's
thread holds the board (found by the HTTP API under load: a listing iterated the board's
tables while the worker changed them, "dictionary changed size during iteration")."""

from __future__ import annotations

import threading

import trio

from firmware.console.port import serve_link
from firmware.console.shell import ConsoleShell
from firmware.device.device import Device
from firmware.ops.context import OpsContext
from tests.console.conftest import ADMIN_PASSWORD


class MemoryLink:
    """One peer that types what the test puts in `inbox` and reads what the console sends."""

    def __init__(self) -> None:
        self.inbox_send, self.inbox = trio.open_memory_channel[bytes](16)
        self.output = bytearray()
        self.sent = trio.Event()
        self._peered = False

    async def wait_peer(self) -> bool:
        if self._peered:
            await trio.sleep_forever()
        self._peered = True
        return True

    async def receive(self) -> bytes:
        return await self.inbox.receive()

    async def send(self, data: bytes) -> None:
        self.output += data
        self.sent.set()

    async def drain(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def type(self, text: str, until: bytes) -> str:
        """Type a line; return the console's output once `until` is in it."""
        start = len(self.output)
        await self.inbox_send.send(text.encode() + b"\r")
        while until not in self.output[start:]:
            self.sent = trio.Event()
            await self.sent.wait()
        return self.output[start:].decode(errors="replace")


async def test_a_console_command_waits_while_the_store_worker_holds_the_board(
    device: Device,
) -> None:
    shell = ConsoleShell(OpsContext.running(device), clock=trio.current_time)
    link = MemoryLink()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_link, shell, link)
        with trio.fail_after(20):
            assert "logged in" in await link.type(ADMIN_PASSWORD, b"> ")
        holding, release = threading.Event(), threading.Event()

        def hold_the_board() -> None:
            holding.set()
            release.wait(30)

        async with trio.open_nursery() as inner:
            inner.start_soon(device.store_worker.run, hold_the_board)
            try:
                await trio.to_thread.run_sync(holding.wait)
                with trio.move_on_after(0.5) as waited:
                    await link.type("box list", b"> ")
                assert waited.cancelled_caught, "`box list` ran while the worker held the board"
            finally:
                release.set()
        with trio.fail_after(20):
            while b"no boxes" not in link.output:
                link.sent = trio.Event()
                await link.sent.wait()
        nursery.cancel_scope.cancel()
