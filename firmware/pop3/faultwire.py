"""Faults on the wire: how the POP3 adapter (server.py) applies what the fault plan decides.

server.py asks the plan (firmware/faults/plan.py) only while `plan.active`; when a fault
fires it calls one of these. Nothing here writes to the store: every action changes only
what goes on the wire (docs/faults.md), except a power cut, which the device performs.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from array import array
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

import trio

from firmware.faults.plan import Fault, FaultPlan
from firmware.pop3 import events
from firmware.pop3.connection import ServerConnection
from firmware.pop3.events import MultilineEnd
from firmware.pop3.protocol import Answer, Pop3Protocol, err, ok
from firmware.security.tls import make_self_signed, server_context
from firmware.text import plural

if TYPE_CHECKING:
    from firmware.pop3.protocol import Body

log = logging.getLogger(__name__)

WRONG_NAME: Final = "wrong-name.invalid"
"""The only name a `tls-fail cert=wrong-name` certificate is for."""
CHUNK_PAUSE_OCTETS: Final = 4096
"""A shaped session writes at most this much at a time (then waits its share of a second)."""


class ShapedStream(trio.abc.HalfCloseableStream):
    """A session's stream with `bandwidth`: each write waits `latency_s`, then goes out in
    pieces of at most CHUNK_PAUSE_OCTETS at `bytes_per_s` on average. Reads are untouched."""

    def __init__(
        self, inner: trio.abc.HalfCloseableStream, bytes_per_s: int, latency_s: float
    ) -> None:
        self.inner = inner
        self.bytes_per_s = bytes_per_s
        self.latency_s = latency_s

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.latency_s > 0:
            await trio.sleep(self.latency_s)
        view = memoryview(data)
        step = max(1, min(CHUNK_PAUSE_OCTETS, self.bytes_per_s))
        for at in range(0, len(view), step):
            piece = view[at : at + step]
            await trio.sleep(len(piece) / self.bytes_per_s)  # each piece arrives in its time
            await self.inner.send_all(piece)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


def reply_error(fault: Fault, keyword: str) -> Answer:
    """`reply-error`: -ERR [CODE] text instead of the command's reply (QUIT's closes, as an
    -ERR to QUIT does: RFC 1939 §6; nothing was committed)."""
    return Answer(err(fault.params["text"], fault.params["code"]), close=keyword == "QUIT")


def unreadable(protocol: Pop3Protocol, number: int) -> Answer:
    """`unreadable`: the answer the store's CRC-error path gives (Pop3Protocol.stream), for a
    message whose stored record is in fact intact."""
    uid = protocol.uids[number - 1] if 0 < number <= len(protocol.uids) else "?"
    text = f"message {uid} in box {protocol.box!r}: its record fails its CRC"
    log.error("POP3 RETR of %s/%s: %s (fault injected)", protocol.box, uid, text)
    return Answer(err(f"message {number} is damaged: {text}", "SYS/PERM"))


def vanish(plan: FaultPlan, fired: list[Fault], protocol: Pop3Protocol, answer: Answer) -> Answer:
    """After a login: hide what `vanish` faults hid (and `fired` now hide) from the session's
    snapshot, as if another client had deleted them; the +OK counts what is left."""
    box = protocol.box
    assert box is not None
    for fault in fired:
        number = fault.params["message"]
        if number <= len(protocol.uids):
            plan.hide(box, protocol.uids[number - 1])
    hidden = plan.hidden.get(box)
    if not hidden:
        return answer
    keep = [i for i, uid in enumerate(protocol.uids) if uid not in hidden]
    if len(keep) == len(protocol.uids):
        return answer
    protocol.uids = tuple(protocol.uids[i] for i in keep)
    protocol.sizes = array("q", (protocol.sizes[i] for i in keep))
    protocol.live_count = len(protocol.uids)
    protocol.live_octets = sum(protocol.sizes)
    return Answer(
        ok(
            f"{box} has {plural(protocol.live_count, 'message')} "
            f"({plural(protocol.live_octets, 'octet')})"
        )
    )


async def send_body(
    write: Callable[[bytes], Awaitable[None]],
    conn: ServerConnection,
    answer: Answer,
    pending: bytes,
    faults: Sequence[Fault],
    size: int,
) -> bool:
    """Send a RETR/TOP answer with body faults applied; False when the connection must now
    be dropped (`retr-break`). `write` sends octets on the session (and counts them);
    `size`: the message's octets, what percentages are of.

    Chunk by chunk, as the plain path does, never from the image directly: `flip-byte`
    inverts one octet of the copy on the wire, `retr-break` stops after its share and
    drops the connection (no terminator; a TOP body shorter than the share is sent whole,
    then dropped before the "." line), `stall-before-end` waits before the "." line.
    """
    body: Body | None = answer.body
    assert body is not None
    params = {f.action: f.params for f in faults}
    cut: int | None = None
    if "retr-break" in params:
        p = params["retr-break"]
        cut = p["after_octets"] if "after_octets" in p else int(size * p["after_percent"] / 100)
    flip: int | None = None
    if "flip-byte" in params:
        flip = min(max(0, size - 1), int(size * params["flip-byte"]["at_percent"] / 100))
    sent = 0
    tail = b""
    try:
        out = pending + conn.send(answer.first)
        while True:
            if answer.guard is None:
                chunk = next(body, None)
            else:
                async with answer.guard():
                    chunk = next(body, None)
            if chunk is None:
                break
            if not body.wire:
                chunk = conn.send(events.Data(chunk))
            if flip is not None and sent <= flip < sent + len(chunk):
                chunk, flip = _flip(chunk, flip - sent), None
            tail = chunk if len(chunk) > 2 else tail[-2:] + chunk
            if cut is not None and sent + len(chunk) >= cut:
                await write(out + chunk[: cut - sent])
                return False
            sent += len(chunk)
            out += chunk
            if len(out) >= 65536:
                await write(out)
                out = b""
        if cut is not None:  # a TOP body shorter than the cut: break before the "." line
            await write(out)
            return False
        if body.wire and tail:
            conn.body_sent_elsewhere(tail[-3:])
        if "stall-before-end" in params:
            await write(out)
            out = b""
            await trio.sleep(params["stall-before-end"]["seconds"])
        await write(out + conn.send(MultilineEnd()))
        return True
    finally:
        body.close()


def _flip(chunk: bytes, at: int) -> bytes:
    """`chunk` with the octet at `at` inverted, or the next one that is not CR, LF or "."
    (so the message's framing and dot-stuffing stay as they were); unchanged if none is."""
    for index in range(at, len(chunk)):
        if chunk[index] not in b"\r\n.":
            damaged = bytearray(chunk)
            damaged[index] ^= 0xFF
            return bytes(damaged)
    return chunk


def bad_certificate(fault: Fault, hostname: str) -> ssl.SSLContext:
    """The server context a `tls-fail cert=expired|wrong-name` presents, made with
    `cryptography` once per fault (in memory, never stored; kept on the fault): expired
    names the device but ended yesterday; wrong-name is valid but names only WRONG_NAME."""
    if isinstance(fault.kept, ssl.SSLContext):
        return fault.kept
    if fault.params["cert"] == "expired":
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        cert, private = make_self_signed(hostname, days=29, now=past)
    else:
        cert, private = make_self_signed(WRONG_NAME, loopback=False)
    fault.kept = context = server_context(cert, private)
    return context
