"""RETR straight from the board image file to a plain TCP socket.

The store keeps each message in its wire form (dot-stuffed, CRLF) in the image file, so RETR is
a plain copy. Instead of reading 64 KiB chunks into Python bytes and sending those (two copies
and an allocation per chunk), this maps a window of the image file and writes the socket from
the mapping: one kernel copy, no Python buffers, in bounded memory (one window per session).

Why not `os.sendfile`: the kernel then queues *references* to the file's page-cache pages, and
the bytes are read from them only when the peer receives them (on loopback: when the client
reads). Compaction erases the old place of every record it moves (a hole punch or zeros), and
that reaches bytes still queued: the client gets zeros inside a message that ends with a valid
".". `write()` copies into the socket at once, so later changes to the file cannot reach it.

Compaction may also move the record between two writes (it runs on the store worker's thread),
so the record is looked up again before every write, as `Board.read_wire` does per chunk, and
the lookup and the write that follows it run inside `hold()` (the store worker's board lock):
compaction cannot erase the old place between the two. Nothing awaits inside `hold()` but
taking it.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Final

import trio

from firmware.errors import ImageError

WINDOW: Final = 256 * 1024
"""Bytes of the image file mapped at a time per session (resident only while mapped)."""

Extents = Callable[[int], list[tuple[int, int]]]
"""wire offset -> where the message's wire bytes from there to its end lie in the image file,
as (file offset, length) pieces; raises DeviceError if the message is gone or damaged."""


def can_map(fd: int) -> bool:
    """True if the file behind `fd` can be mapped (not every file system allows it)."""
    try:
        with mmap.mmap(fd, mmap.ALLOCATIONGRANULARITY, prot=mmap.PROT_READ):
            return True
    except (OSError, ValueError):
        return False


async def send_from_image(
    sock: trio.socket.SocketType,
    image_fd: int,
    extents: Extents,
    hold: Callable[[], AbstractAsyncContextManager[None]],
    start: int,
    tail: bytes,
    on_progress: Callable[[], None],
) -> bytes:
    """Send wire bytes from `start` to the message's end; returns the last two octets sent.

    `tail` holds the last two octets sent before `start` (for the caller's terminator).
    `on_progress` runs after every write that sent something (the idle timer restarts).
    Cancellation and a peer that goes away end it at a write boundary; the caller must then
    end the connection (the reply is incomplete). Raises trio.BrokenResourceError if the
    socket fails, DeviceError (from `extents`) if the message cannot be read any more, ImageError
    if the image cannot be mapped.
    """
    fileno = sock.fileno()
    at = start
    window: mmap.mmap | None = None
    window_start = window_end = 0
    try:
        while True:
            async with hold():  # no await inside: the record stays where extents says
                pieces = extents(at)  # again after every await: the record may have moved
                if not pieces:
                    return tail
                offset, length = pieces[0]
                if window is None or not window_start <= offset < window_end:
                    if window is not None:
                        window.close()
                        window = None
                    window_start = offset - offset % mmap.ALLOCATIONGRANULARITY
                    window_end = offset + min(length, WINDOW)
                    try:
                        window = mmap.mmap(
                            image_fd,
                            window_end - window_start,
                            prot=mmap.PROT_READ,
                            offset=window_start,
                        )
                    except (OSError, ValueError) as exc:  # an image I/O error, not our bug
                        why = getattr(exc, "strerror", None) or exc
                        raise ImageError(f"the image cannot be mapped for reading: {why}") from None
                count = min(length, window_end - offset)
                begin = offset - window_start
                try:
                    with memoryview(window)[begin : begin + count] as view:
                        sent = os.write(fileno, view)
                        if sent >= 2:
                            tail = bytes(view[sent - 2 : sent])
                        elif sent == 1:
                            tail = tail[-1:] + bytes(view[:1])
                except BlockingIOError:
                    sent = -1
                except OSError as exc:
                    raise trio.BrokenResourceError(f"socket write failed: {exc}") from exc
            if sent < 0:
                await trio.lowlevel.wait_writable(sock)
                continue
            if sent <= 0:
                raise trio.BrokenResourceError("the socket accepted nothing")
            at += sent
            on_progress()
            await trio.lowlevel.checkpoint()  # let other sessions run between writes
    finally:
        if window is not None:
            window.close()
