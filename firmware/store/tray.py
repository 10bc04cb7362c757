"""The output tray on flash: Internet Fax documents 'printed' by the device (docs/ifax.md).

A tray document is one log record of kind `tray` (3) under the reserved box id 0 (no NVRAM box
has it: box ids start at 1). Its payload is a small JSON description (sender, subject, date,
pages, resolution, status, the POP3 UIDL it came from) followed by the document itself: the
received TIFF-FX file for a printed fax, the error report text for a refused one. The record
goes through the same log as messages, so it is CRC-checked, durable (fsync) before `print_doc`
returns, replayed at boot, checked by fsck, counted in usage and moved by compaction; `clear`
is one atomic delete record. The UIDL inside the record is what lets the poller recognise a
fax fetched again after a power cut between the store and DELE (no second print).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from typing import Any

from firmware.errors import CorruptRecordError, DeviceError
from firmware.store.index import Extent, Index
from firmware.store.log import KIND_TRAY, Header, Log
from firmware.store.space import Space

TRAY_BOX_ID = 0  # reserved: NVRAM boxes are numbered from 1 (firmware.flash.nvram)
META_MAX = 16 * 1024  # bytes of JSON description a tray record may carry


@dataclass(frozen=True)
class TrayEntry:
    """One tray document as the index knows it (no flash read): `number` counts from 1."""

    number: int
    seq: int
    size: int  # payload bytes (description + document)
    arrived: float  # Unix time the record was written
    corrupt: bool


def encode(meta: dict[str, Any], document: bytes) -> tuple[bytes, int]:
    """Payload bytes and the description's length (kept as the record's `header_len`)."""
    head = json.dumps(meta, ensure_ascii=True, sort_keys=True).encode("ascii")
    if len(head) > META_MAX:
        raise DeviceError(f"tray description is {len(head)} bytes, at most {META_MAX}")
    return head + document, len(head)


def decode(payload: bytes, meta_len: int) -> tuple[dict[str, Any], bytes]:
    """The description and the document; CorruptRecordError if the description does not parse."""
    try:
        meta = json.loads(payload[:meta_len].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptRecordError(f"tray record description does not parse: {exc}") from None
    if not isinstance(meta, dict):
        raise CorruptRecordError("tray record description is not an object")
    return meta, payload[meta_len:]


def entries(index: Index) -> list[TrayEntry]:
    """The tray's documents, oldest first."""
    state = index.boxes.get(TRAY_BOX_ID)
    if state is None:
        return []
    out = []
    for number, seq in enumerate(state.seqs, 1):
        msg = index.msgs[seq]
        h = msg.header
        out.append(TrayEntry(number, seq, h.payload_len, h.arrived, not msg.ok))
    return out


def write(the_log: Log, space: Space, index: Index, payload: bytes, meta_len: int) -> Header:
    """Append one tray record (durable on return) and index it.

    StorageFullError (nothing written) when even compaction cannot make room while keeping
    the reserve for deletions.
    """
    header = Header(
        0,
        KIND_TRAY,
        index.next_seq,
        len(payload),
        0,
        box_id=TRAY_BOX_ID,
        arrived=time.time(),
        pop3_size=len(payload),
        header_len=meta_len,
    )
    space.make_room(header.total + space.reserve(), "tray document")
    written = the_log.append(header, [payload])
    index.next_seq += 1
    index.extents.append(Extent(written.position, written.total, written.seq))
    index.add(written, True)
    return written


def read(the_log: Log, index: Index, seq: int) -> tuple[dict[str, Any], bytes]:
    """One tray record's description and document, its CRC checked (CorruptRecordError)."""
    msg = index.msgs.get(seq)
    if msg is None or msg.header.box_id != TRAY_BOX_ID:
        raise DeviceError(f"the tray holds no document {seq}")
    if not msg.ok:
        raise CorruptRecordError("tray record payload fails CRC")
    header = the_log.header_at(msg.header.position)
    if header.seq != seq or header.kind != KIND_TRAY:
        raise CorruptRecordError("tray record moved or overwritten")
    payload = b"".join(the_log.iter_payload(header, 0, header.payload_len))
    if zlib.crc32(payload) != header.payload_crc:
        msg.ok = False
        raise CorruptRecordError("tray record payload fails CRC")
    return decode(payload, header.header_len)


__all__ = ["META_MAX", "TRAY_BOX_ID", "TrayEntry", "decode", "encode", "entries", "read", "write"]
