"""Every on-flash layout of the board image, declared with construct (sans-IO).

Integers are big-endian. Each layout that carries a CRC keeps it *after* the bytes it covers
(`RawCopy` then `Checksum`), so magic, version and length are covered too. Parsers here are never
compiled: they read untrusted, possibly corrupt flash (docs/storage.md has the whole picture).
"""

from __future__ import annotations

import zlib

from construct import (
    Array,
    Bytes,
    Checksum,
    Const,
    Flag,
    Float64b,
    GreedyBytes,
    If,
    Int8ub,
    Int16ub,
    Int32ub,
    Int64ub,
    Optional,
    PascalString,
    Prefixed,
    PrefixedArray,
    RawCopy,
    Rebuild,
    Struct,
    len_,
    this,
)

FORMAT_VERSION = 1  # of the image as a whole (superblock); newer images are refused
RECORD_VERSION = 1  # of log records
NVRAM_VERSION = 1

SUPERBLOCK_MAGIC = b"DPFWIMG\x00"
NVRAM_MAGIC = b"DPNV"
RECORD_MAGIC = b"DPRC"

SUPERBLOCK_AREA = 4096  # bytes reserved for the superblock at offset 0

KIND_MESSAGE = 1
KIND_DELETE = 2
KIND_TRAY = 3  # an Internet Fax document printed into the output tray (docs/ifax.md)
KINDS = {KIND_MESSAGE: "message", KIND_DELETE: "delete", KIND_TRAY: "tray"}

# Just enough to tell a foreign file and a newer format apart before trusting anything else.
SuperblockPrefix = Struct("magic" / Bytes(8), "format_version" / Int16ub)

Superblock = Struct(
    "body"
    / RawCopy(
        Struct(
            "magic" / Const(SUPERBLOCK_MAGIC),
            "format_version" / Int16ub,
            "flags" / Int16ub,
            "image_size" / Int64ub,
            "block_size" / Int32ub,
            "nvram_offset" / Int64ub,
            "nvram_slot_size" / Int32ub,
            "data_offset" / Int64ub,
            "block_count" / Int32ub,
            "created" / Float64b,
            "image_id" / Bytes(16),
        )
    ),
    "crc" / Checksum(Int32ub, zlib.crc32, this.body.data),
)

NvramSlot = Struct(
    "body"
    / RawCopy(
        Struct(
            "magic" / Const(NVRAM_MAGIC),
            "version" / Int16ub,
            "sequence" / Int64ub,
            "length" / Rebuild(Int32ub, len_(this.data)),
            "data" / Bytes(this.length),
        )
    ),
    "crc" / Checksum(Int32ub, zlib.crc32, this.body.data),
)

CredentialsLayout = Struct(
    "salt" / Prefixed(Int8ub, GreedyBytes),
    "iterations" / Int32ub,
    "stored_key" / Prefixed(Int8ub, GreedyBytes),
    "server_key" / Prefixed(Int8ub, GreedyBytes),
    "has_legacy" / Flag,
    "legacy_secret" / If(this.has_legacy, PascalString(Int16ub, "utf8")),
)

BoxEntry = Struct(
    "name" / PascalString(Int8ub, "ascii"),
    "box_id" / Int32ub,
    "credentials" / CredentialsLayout,
)

SettingEntry = Struct(
    "key" / PascalString(Int16ub, "utf8"),
    "value" / PascalString(Int32ub, "utf8"),
)

# The data inside an NVRAM slot: the device's whole configuration and the log's anchor.
NvramState = Struct(
    "profile_toml" / PascalString(Int32ub, "utf8"),
    "admin" / CredentialsLayout,
    "log_head" / Int64ub,  # logical offset of the oldest record still in the log
    "seq_floor" / Int64ub,  # every sequence number below this one was handed out already
    "next_box_id" / Int32ub,
    "boxes" / PrefixedArray(Int32ub, BoxEntry),
    "settings" / PrefixedArray(Int32ub, SettingEntry),
    # Added after format 1 shipped, at the end: older firmware parses past it (construct
    # ignores trailing bytes) and drops it when it writes NVRAM, which only costs a full walk.
    # Log position of the index checkpoint (firmware/store/checkpoint.py); absent: none.
    "checkpoint" / Optional(Int64ub),
)

# A log record is this header, then `payload_len` payload bytes, then zero padding up to
# RECORD_ALIGN. The payload CRC sits in the header because the header is written after the
# payload: a streamed 50 MB message is never held whole, and a header only becomes valid once
# the payload behind it is complete.
RecordHead = Struct(
    "magic" / Const(RECORD_MAGIC),
    "version" / Int8ub,
    "kind" / Int8ub,
    "flags" / Int16ub,
    "position" / Int64ub,  # logical log offset of this record: stale laps never parse as live
    "seq" / Int64ub,  # log sequence number; a relocated copy keeps it
    "payload_len" / Int64ub,
    "payload_crc" / Int32ub,
    "box_id" / Int32ub,  # message only
    "arrived" / Float64b,  # message only: Unix time
    "pop3_size" / Int64ub,  # message only: octets as POP3 counts them
    "header_len" / Int64ub,  # message only: wire offset of the body (after the blank line)
)

RecordHeader = Struct(
    "head" / RawCopy(RecordHead),
    "crc" / Checksum(Int32ub, zlib.crc32, this.head.data),
)

# Payload of a DELETE record: the sequence numbers of the messages it removes, all at once.
DeleteBody = Struct(
    "count" / Rebuild(Int32ub, len_(this.seqs)),
    "seqs" / Array(this.count, Int64ub),
)

RECORD_HEADER_SIZE = RecordHeader.sizeof()
RECORD_ALIGN = 16
# Zero bytes written after every record: a clean end of log reads as zeros, never as the
# leftovers of an older, torn record.
GUARD_SIZE = (RECORD_HEADER_SIZE + RECORD_ALIGN - 1) // RECORD_ALIGN * RECORD_ALIGN


def align(n: int) -> int:
    """`n` rounded up to the record alignment."""
    return (n + RECORD_ALIGN - 1) // RECORD_ALIGN * RECORD_ALIGN
