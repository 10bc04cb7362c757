"""The NVRAM contents as plain records, and their bytes (sans-IO).

NVRAM is the device's configuration: the active profile (its TOML text), admin and box
credentials, free settings, and the anchor of the message log (its head and the sequence-number
floor). It is always written whole into the inactive slot, so every update is atomic
(firmware.flash.image).

This module knows bytes and fields, not what they mean: the profile stays TOML text (the
schema that reads it is firmware.config.profile.from_stored) and credentials stay a record of
salt, keys and the optional legacy secret (firmware.security.credentials makes and checks them;
firmware.store maps one to the other).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

from construct import ConstructError, Container, ListContainer

from firmware.errors import DeviceError, ImageError
from firmware.flash.layout import NvramState

__all__ = ["BoxRecord", "CredentialRecord", "Nvram", "decode", "encode", "encode_reference"]


@dataclass(frozen=True)
class CredentialRecord:
    """A box's or the admin's credentials as NVRAM stores them (RFC 5802 §3 keys).

    salt: bytes; iterations: PBKDF2 rounds; stored_key, server_key: 32 bytes each;
    legacy_secret: the plaintext-equivalent secret for APOP/CRAM-MD5, or None.
    """

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes
    legacy_secret: str | None = None


@dataclass(frozen=True)
class BoxRecord:
    """A mailbox as NVRAM keeps it; `box_id` is never reused, so old records stay dead."""

    box_id: int
    credentials: CredentialRecord


@dataclass(frozen=True)
class Nvram:
    """One NVRAM generation."""

    profile_toml: str
    admin: CredentialRecord
    log_head: int = 0
    seq_floor: int = 1
    next_box_id: int = 1
    boxes: dict[str, BoxRecord] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    checkpoint: int | None = None  # log position of the index checkpoint record, if any

    def evolve(self, **changes: object) -> Nvram:
        """A copy with some fields replaced."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _creds_obj(creds: CredentialRecord) -> dict[str, object]:
    return {
        "salt": creds.salt,
        "iterations": creds.iterations,
        "stored_key": creds.stored_key,
        "server_key": creds.server_key,
        "has_legacy": creds.legacy_secret is not None,
        "legacy_secret": creds.legacy_secret,
    }


def _creds_from(c: Container) -> CredentialRecord:
    return CredentialRecord(
        salt=bytes(c.salt),
        iterations=int(c.iterations),
        stored_key=bytes(c.stored_key),
        server_key=bytes(c.server_key),
        legacy_secret=str(c.legacy_secret) if c.has_legacy else None,
    )


class _TooBig(ValueError):
    """A field that the NVRAM layout cannot hold (its text names the field)."""


_U8, _U16, _U32, _U64 = (struct.Struct(f">{c}") for c in "BHIQ")
_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1


def _int(value: int, packer: struct.Struct, what: str) -> bytes:
    try:
        return packer.pack(value)
    except struct.error:
        raise _TooBig(f"{what} {value} is out of range ({packer.size * 8}-bit unsigned)") from None


def _prefixed(data: bytes, packer: struct.Struct, what: str) -> bytes:
    """`data` behind its length, as construct's Prefixed/PascalString lay it out."""
    limit = (1 << (packer.size * 8)) - 1
    if len(data) > limit:
        raise _TooBig(f"{what} is {len(data)} bytes, at most {limit} fit")
    return packer.pack(len(data)) + data


def _text(text: str, encoding: str, packer: struct.Struct, what: str) -> bytes:
    try:
        data = text.encode(encoding)
    except UnicodeError:
        raise _TooBig(f"{what} {text!r} is not {encoding}") from None
    return _prefixed(data, packer, what)


def _creds_bytes(creds: CredentialRecord, what: str) -> bytes:
    parts = [
        _prefixed(bytes(creds.salt), _U8, f"{what} salt"),
        _int(creds.iterations, _U32, f"{what} iterations"),
        _prefixed(bytes(creds.stored_key), _U8, f"{what} stored key"),
        _prefixed(bytes(creds.server_key), _U8, f"{what} server key"),
    ]
    if creds.legacy_secret is None:
        parts.append(b"\x00")
    else:
        parts.append(b"\x01")
        parts.append(_text(creds.legacy_secret, "utf8", _U16, f"{what} legacy secret"))
    return b"".join(parts)


def encode(state: Nvram) -> bytes:
    """NVRAM bytes (without the slot framing); DeviceError if a field does not fit.

    The bytes are `NvramState` of firmware/flash/layout.py (the reference: `encode_reference`
    builds them with construct, tests/flash/test_nvram.py checks both agree byte for byte),
    packed here with `struct`: compaction writes NVRAM once per segment, and construct's build
    (~0.2 ms for a few boxes, in Python) held the GIL long enough to show in NOOP latency.
    """
    try:
        parts = [
            _text(state.profile_toml, "utf8", _U32, "profile text"),
            _creds_bytes(state.admin, "admin"),
            _int(state.log_head, _U64, "log head"),
            _int(state.seq_floor, _U64, "sequence floor"),
            _int(state.next_box_id, _U32, "next box id"),
            _int(len(state.boxes), _U32, "box count"),
        ]
        for name, rec in state.boxes.items():
            parts.append(_text(name, "ascii", _U8, "box name"))
            parts.append(_int(rec.box_id, _U32, f"box {name!r} id"))
            parts.append(_creds_bytes(rec.credentials, f"box {name!r}"))
        parts.append(_int(len(state.settings), _U32, "setting count"))
        for key, value in state.settings.items():
            parts.append(_text(key, "utf8", _U16, "setting name"))
            parts.append(_text(value, "utf8", _U32, f"setting {key!r}"))
        if state.checkpoint is not None:
            parts.append(_int(state.checkpoint, _U64, "checkpoint position"))
    except _TooBig as exc:
        raise DeviceError(f"NVRAM cannot hold this: {exc}") from None
    return b"".join(parts)


def encode_reference(state: Nvram) -> bytes:
    """The same bytes as `encode`, built by construct from `NvramState` (for tests)."""
    obj = {
        "profile_toml": state.profile_toml,
        "admin": _creds_obj(state.admin),
        "log_head": state.log_head,
        "seq_floor": state.seq_floor,
        "next_box_id": state.next_box_id,
        "boxes": [
            {"name": name, "box_id": rec.box_id, "credentials": _creds_obj(rec.credentials)}
            for name, rec in state.boxes.items()
        ],
        "settings": [{"key": k, "value": v} for k, v in state.settings.items()],
        "checkpoint": state.checkpoint,
    }
    try:
        return bytes(NvramState.build(obj))
    except (ConstructError, ValueError, TypeError, UnicodeError) as exc:
        raise DeviceError(f"NVRAM cannot hold this: {exc}") from None


def decode(data: bytes, where: str) -> Nvram:
    """Parse NVRAM bytes; a layout that does not check out is an ImageError naming `where`.

    The profile text is returned as stored: whether it fits a schema is for the layer that
    reads profiles (firmware.config.profile.from_stored).
    """
    try:
        c = NvramState.parse(data)
        boxes: ListContainer = c.boxes
        settings: ListContainer = c.settings
        return Nvram(
            profile_toml=str(c.profile_toml),
            admin=_creds_from(c.admin),
            log_head=int(c.log_head),
            seq_floor=int(c.seq_floor),
            next_box_id=int(c.next_box_id),
            boxes={
                str(b.name): BoxRecord(int(b.box_id), _creds_from(b.credentials)) for b in boxes
            },
            settings={str(s.key): str(s.value) for s in settings},
            checkpoint=None if c.get("checkpoint") is None else int(c.checkpoint),
        )
    except (ConstructError, ValueError, TypeError, UnicodeError) as exc:
        raise ImageError(f"{where}: NVRAM contents do not parse: {exc}") from None
