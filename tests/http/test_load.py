"""Deliveries through the store worker while the loop lists the same box: no 5xx, no loss."""

from __future__ import annotations

import asyncio

import httpx

from tests.http.conftest import ADMIN, Lab
from tests.http.test_api import message


def test_listings_while_deliveries_run_on_the_store_worker(lab: Lab) -> None:
    """Board reads on the loop hold the board against the worker thread's appends: without
    that a listing iterated the board's tables as they changed (RuntimeError, a 500)."""
    raw = message("load")  # small: many appends, a box of many messages to iterate
    before = len(lab.api.get("/api/v1/boxes/bob/messages").json()["messages"])

    async def run() -> tuple[list[int], int]:
        codes: list[int] = []
        delivered = 0
        async with httpx.AsyncClient(base_url=lab.base, auth=ADMIN, timeout=60) as client:

            async def deliverer() -> None:
                nonlocal delivered
                for _ in range(150):
                    got = await client.post(
                        "/api/v1/boxes/bob/messages",
                        content=raw,
                        headers={"Content-Type": "message/rfc822"},
                    )
                    codes.append(got.status_code)
                    delivered += got.status_code == 201

            async def reader() -> None:
                for n in range(300):
                    path = ("/api/v1/boxes", "/api/v1/status", "/api/v1/boxes/bob", "/metrics")
                    codes.append((await client.get(path[n % 4])).status_code)

            await asyncio.gather(*(deliverer() for _ in range(4)), *(reader() for _ in range(4)))
        return codes, delivered

    codes, delivered = asyncio.run(run())
    assert all(code < 500 for code in codes), sorted(set(codes))
    after = lab.api.get("/api/v1/boxes/bob/messages").json()["messages"]
    assert delivered == 600 and len(after) == before + delivered
