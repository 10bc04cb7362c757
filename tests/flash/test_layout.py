"""Every construct layout: parse(build(x)) == x, build(parse(b)) == b, and CRCs that bite."""

from __future__ import annotations

from typing import Any

import pytest
from construct import ChecksumError, ConstructError, Container

from firmware.flash.layout import (
    FORMAT_VERSION,
    RECORD_ALIGN,
    RECORD_HEADER_SIZE,
    SUPERBLOCK_MAGIC,
    BoxEntry,
    CredentialsLayout,
    DeleteBody,
    NvramSlot,
    NvramState,
    RecordHead,
    RecordHeader,
    SettingEntry,
    Superblock,
    SuperblockPrefix,
    align,
)


def plain(obj: Any) -> Any:
    """A parsed Container as plain dicts/lists without construct's private keys."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj


def round_trip(layout: Any, value: dict[str, Any]) -> bytes:
    """Build, parse, rebuild: the bytes and the values must agree both ways."""
    data = bytes(layout.build(value))
    parsed = layout.parse(data)
    assert bytes(layout.build(parsed)) == data
    return data


CREDS = {
    "salt": b"\x01" * 16,
    "iterations": 4096,
    "stored_key": b"\x02" * 32,
    "server_key": b"\x03" * 32,
    "has_legacy": True,
    "legacy_secret": "apop-secret",
}

SUPER = {
    "format_version": FORMAT_VERSION,
    "flags": 0,
    "image_size": 1 << 20,
    "block_size": 16384,
    "nvram_offset": 4096,
    "nvram_slot_size": 32768,
    "data_offset": 81920,
    "block_count": 59,
    "created": 1700000000.5,
    "image_id": bytes(range(16)),
}


def test_superblock_round_trip() -> None:
    data = round_trip(Superblock, {"body": {"value": SUPER}})
    parsed = Superblock.parse(data)
    assert plain(parsed.body.value) == {"magic": SUPERBLOCK_MAGIC, **SUPER}
    assert SuperblockPrefix.parse(data).format_version == FORMAT_VERSION


@pytest.mark.parametrize("layout", [Superblock])
def test_superblock_crc_catches_every_flipped_byte(layout: Any) -> None:
    data = bytearray(layout.build({"body": {"value": SUPER}}))
    for i in range(len(SUPERBLOCK_MAGIC), len(data)):
        broken = bytearray(data)
        broken[i] ^= 0x10
        with pytest.raises(ChecksumError):
            layout.parse(bytes(broken))


def test_superblock_foreign_magic() -> None:
    data = bytearray(Superblock.build({"body": {"value": SUPER}}))
    data[0] ^= 0xFF
    with pytest.raises(ConstructError):
        Superblock.parse(bytes(data))


def test_nvram_slot_round_trip_and_crc() -> None:
    value = {"body": {"value": {"version": 1, "sequence": 7, "data": b"hello nvram"}}}
    data = round_trip(NvramSlot, value)
    assert NvramSlot.parse(data + bytes(100)).body.value.data == b"hello nvram"  # slot padding
    broken = bytearray(data)
    broken[-6] ^= 1
    with pytest.raises(ChecksumError):
        NvramSlot.parse(bytes(broken))


def test_credentials_round_trip_with_and_without_legacy() -> None:
    round_trip(CredentialsLayout, CREDS)
    data = round_trip(CredentialsLayout, {**CREDS, "has_legacy": False, "legacy_secret": None})
    assert CredentialsLayout.parse(data).legacy_secret is None


def test_box_entry_and_setting_round_trip() -> None:
    box = round_trip(BoxEntry, {"name": "alice", "box_id": 3, "credentials": CREDS})
    assert BoxEntry.parse(box).name == "alice"
    pem = "-----BEGIN CERTIFICATE-----\n" + "A" * 70_000 + "\n-----END CERTIFICATE-----\n"
    setting = round_trip(SettingEntry, {"key": "tls.certificate", "value": pem})
    assert SettingEntry.parse(setting).value == pem


def test_nvram_state_round_trip() -> None:
    value = {
        "profile_toml": '[identity]\nmodel = "DP-3530"\n',
        "admin": CREDS,
        "log_head": 123456,
        "seq_floor": 99,
        "next_box_id": 4,
        "boxes": [{"name": n, "box_id": i, "credentials": CREDS} for i, n in enumerate("abc")],
        "settings": [{"key": "k", "value": "v"}],
    }
    data = round_trip(NvramState, value)
    parsed = NvramState.parse(data)
    assert [b.name for b in parsed.boxes] == ["a", "b", "c"]
    assert parsed.log_head == 123456 and parsed.seq_floor == 99


HEAD = {
    "version": 1,
    "kind": 1,
    "flags": 0,
    "position": 4096,
    "seq": 42,
    "payload_len": 1000,
    "payload_crc": 0xDEADBEEF,
    "box_id": 2,
    "arrived": 1700000000.25,
    "pop3_size": 990,
    "header_len": 120,
}


def test_record_header_round_trip_and_size() -> None:
    data = round_trip(RecordHeader, {"head": {"value": HEAD}})
    assert len(data) == RECORD_HEADER_SIZE == RecordHead.sizeof() + 4
    assert plain(RecordHeader.parse(data).head.value) == {"magic": b"DPRC", **HEAD}


def test_record_header_crc_catches_every_flipped_bit() -> None:
    data = RecordHeader.build({"head": {"value": HEAD}})
    for bit in range(len(data) * 8):
        broken = bytearray(data)
        broken[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ConstructError):
            RecordHeader.parse(bytes(broken))


def test_delete_body_round_trip() -> None:
    data = round_trip(DeleteBody, {"seqs": [1, 5, 2**40]})
    assert len(data) == 4 + 3 * 8
    assert list(DeleteBody.parse(data).seqs) == [1, 5, 2**40]
    assert list(DeleteBody.parse(round_trip(DeleteBody, {"seqs": []})).seqs) == []


def test_delete_body_truncated() -> None:
    data = DeleteBody.build({"seqs": [1, 2]})
    with pytest.raises(ConstructError):
        DeleteBody.parse(data[:-1])


def test_align() -> None:
    assert [align(n) for n in (0, 1, RECORD_ALIGN, RECORD_ALIGN + 1)] == [
        0,
        RECORD_ALIGN,
        RECORD_ALIGN,
        2 * RECORD_ALIGN,
    ]


def test_parsed_containers_are_containers() -> None:
    assert isinstance(RecordHeader.parse(RecordHeader.build({"head": {"value": HEAD}})), Container)
