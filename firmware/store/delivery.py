"""Writing one message into the log within its box's quota (the store's half of `deliver`).

Bytes and seekable files are measured first (firmware.store.source), so compaction can make
exactly the room needed; a stream that cannot seek (a pipe) is encoded straight into the log in
one pass, starting with the room the compaction policy keeps free. Either way nothing is
indexed here: the caller indexes the returned header once it is durable.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import BinaryIO

from firmware.errors import DeviceError, QuotaError
from firmware.store.info import MiB
from firmware.store.log import CHUNK, Header, Log
from firmware.store.source import Source
from firmware.store.space import Space
from firmware.store.wire import WireEncoder


def over_quota(box: str, new: int, quota_left: int, quota_mib: int) -> QuotaError:
    """The one-line refusal of a message of `new` POP3 bytes with `quota_left` bytes left."""
    return QuotaError(
        f"box {box!r} is over quota: {quota_mib * MiB - quota_left} bytes stored + {new} bytes "
        f"new exceed {quota_mib} MiB (mailbox.quota_mib)"
    )


def write_measured(
    the_log: Log,
    space: Space,
    box: str,
    message: bytes | bytearray | memoryview | BinaryIO,
    quota_left: int,
    quota_mib: int,
    template: Header,
) -> Header:
    """Measure, check the quota, make room, append; QuotaError, StorageFullError, DeviceError."""
    source = Source(message)
    measured = source.measure()
    if measured.pop3_size > quota_left:
        raise over_quota(box, measured.pop3_size, quota_left, quota_mib)
    header = replace(
        template,
        payload_len=measured.wire_size,
        pop3_size=measured.pop3_size,
        header_len=measured.header_len,
    )
    space.make_room(header.total + space.reserve(), "message")
    try:
        return the_log.append(header, source.wire_chunks())
    except ValueError as exc:
        raise DeviceError(f"the message changed while it was stored: {exc}") from None


def write_stream(
    the_log: Log,
    space: Space,
    box: str,
    stream: BinaryIO,
    quota_left: int,
    quota_mib: int,
    template: Header,
) -> Header:
    """Encode a one-pass stream into the log; over quota or out of room, nothing stays."""
    enc = WireEncoder()

    def wire_chunks() -> Iterator[bytes]:
        while chunk := stream.read(CHUNK):
            out = enc.feed(bytes(chunk))
            if enc.pop3_size > quota_left:
                raise over_quota(box, enc.pop3_size, quota_left, quota_mib)
            if out:
                yield out
        out = enc.finish()
        if enc.pop3_size > quota_left:
            raise over_quota(box, enc.pop3_size, quota_left, quota_mib)
        if out:
            yield out

    def complete(length: int) -> Header:
        assert enc.header_len is not None and length == enc.wire_size
        return replace(
            template, payload_len=length, pop3_size=enc.pop3_size, header_len=enc.header_len
        )

    space.auto_compact()  # the size is unknown: start with the room the policy keeps free
    room = the_log.free - space.reserve()
    return the_log.append_unsized(wire_chunks(), room, complete)
