"""The direct RETR copy (firmware/pop3/direct.py) when the image cannot be mapped.

libfiu's `posix/mm/mmap` cannot aim at the image alone (it fails CPython's own arena and
thread-stack maps too, which once froze the device inside `threading.Thread.start`), so the
mapped-read path is failed here directly: an image that cannot be mapped mid-RETR is an
`ImageError` (one log line, the session ends, nothing is committed), not an `OSError` that
the session logged with a traceback as our own bug.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from firmware.errors import ImageError
from firmware.pop3.direct import send_from_image


@asynccontextmanager
async def nothing_held() -> AsyncIterator[None]:
    yield


async def test_an_image_that_cannot_be_mapped_is_an_image_error() -> None:
    unmappable, writer = os.pipe()  # mmap(2) of a pipe fails with ENODEV
    left, right = trio.socket.socketpair()
    try:
        with pytest.raises(ImageError, match="cannot be mapped for reading"):
            await send_from_image(
                left, unmappable, lambda at: [(at, 4096 - at)], nothing_held, 0, b"", lambda: None
            )
    finally:
        os.close(unmappable)
        os.close(writer)
        left.close()
        right.close()
