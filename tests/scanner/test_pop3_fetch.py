"""A scan fetched by a real POP3 client (poplib) is the document the job encoded, byte for byte."""

from __future__ import annotations

import email
import email.policy
import hashlib
import poplib
from datetime import UTC, datetime
from email.message import EmailMessage

import trio

from firmware.config.budget import RamBudget
from firmware.device.boards import saved_profile
from firmware.pop3.server import Pop3Service
from firmware.scanner.job import ScanRequest, run_scan_async
from firmware.store.board import Board
from tests.scanner.conftest import BOX, BOX_PASSWORD, MiB

WHEN = datetime(2026, 11, 27, 10, 15, tzinfo=UTC)


def fetch_all(port: int) -> list[bytes]:
    """Log in with USER/PASS, RETR every message, QUIT (without deleting)."""
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        client.user(BOX)
        client.pass_(BOX_PASSWORD)
        count, _ = client.stat()
        return [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in range(1, count + 1)]
    finally:
        client.quit()


async def test_scans_fetched_over_pop3_are_byte_identical(board: Board) -> None:
    profile = saved_profile(board)
    budget = RamBudget(profile.int("memory.image_ram_mib") * MiB)
    service = Pop3Service(board, lambda: profile, budget)
    requests = [
        ScanRequest(BOX, pages=2, dpi="200x100", mode="mono", format="tiff"),
        ScanRequest(BOX, pages=2, dpi="200x200", mode="color", format="pdf"),
        ScanRequest(BOX, pages=3, dpi="200x100", mode="gray", format="jpeg"),
    ]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(service.serve, "127.0.0.1", 0)
        results = [
            await run_scan_async(r, board, budget, profile, job_number=n, now=WHEN)
            for n, r in enumerate(requests, 1)
        ]
        raw_messages = await trio.to_thread.run_sync(fetch_all, port)
        nursery.cancel_scope.cancel()

    assert len(raw_messages) == len(results)
    for raw, result in zip(raw_messages, results, strict=True):
        assert len(raw) == result.size  # the size POP3 LIST reports is the size RETR delivers
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        assert msg["From"].addresses[0].addr_spec == "scanner@dp3530.local"
        attachments = list(msg.iter_attachments())
        assert [a.get_filename() for a in attachments] == list(result.filenames)
        fetched = [hashlib.sha256(a.get_content()).hexdigest() for a in attachments]
        assert fetched == list(result.digests)
    assert budget.used == 0 and budget.holders == 0
