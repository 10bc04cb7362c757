"""The NVRAM contents as Python objects, and their bytes (sans-IO).

NVRAM is the device's configuration: active profile, admin and box credentials, free settings,
and the anchor of the message log (its head and the sequence-number floor). It is always
written whole into the inactive slot, so every update is atomic (firmware.flash.image).
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any

from construct import ConstructError, Container, ListContainer

from firmware.config.profile import MODELS, SCHEMA, Profile, factory, flatten, validate
from firmware.errors import DeviceError, ImageError
from firmware.flash.layout import NvramState
from firmware.security.credentials import Credentials

__all__ = ["BoxRecord", "Nvram", "decode", "encode", "profile_from_nvram"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoxRecord:
    """A mailbox as NVRAM keeps it; `box_id` is never reused, so old records stay dead."""

    box_id: int
    credentials: Credentials


@dataclass(frozen=True)
class Nvram:
    """One NVRAM generation."""

    profile: Profile
    admin: Credentials
    log_head: int = 0
    seq_floor: int = 1
    next_box_id: int = 1
    boxes: dict[str, BoxRecord] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)

    def evolve(self, **changes: object) -> Nvram:
        """A copy with some fields replaced."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _creds_obj(creds: Credentials) -> dict[str, object]:
    return {
        "salt": creds.salt,
        "iterations": creds.iterations,
        "stored_key": creds.stored_key,
        "server_key": creds.server_key,
        "has_legacy": creds.legacy_secret is not None,
        "legacy_secret": creds.legacy_secret,
    }


def _creds_from(c: Container) -> Credentials:
    return Credentials(
        salt=bytes(c.salt),
        iterations=int(c.iterations),
        stored_key=bytes(c.stored_key),
        server_key=bytes(c.server_key),
        legacy_secret=str(c.legacy_secret) if c.has_legacy else None,
    )


def encode(state: Nvram) -> bytes:
    """NVRAM bytes (without the slot framing)."""
    obj = {
        "profile_toml": state.profile.to_toml(),
        "admin": _creds_obj(state.admin),
        "log_head": state.log_head,
        "seq_floor": state.seq_floor,
        "next_box_id": state.next_box_id,
        "boxes": [
            {"name": name, "box_id": rec.box_id, "credentials": _creds_obj(rec.credentials)}
            for name, rec in state.boxes.items()
        ],
        "settings": [{"key": k, "value": v} for k, v in state.settings.items()],
    }
    try:
        return bytes(NvramState.build(obj))
    except (ConstructError, ValueError, TypeError, UnicodeError) as exc:
        raise DeviceError(
            f"NVRAM cannot hold this (a name, password or value too long?): {exc}"
        ) from None


def decode(data: bytes, where: str) -> Nvram:
    """Parse NVRAM bytes; a layout or profile that does not check out is an ImageError."""
    try:
        c = NvramState.parse(data)
        profile = profile_from_nvram(str(c.profile_toml), f"{where} profile")
        boxes: ListContainer = c.boxes
        settings: ListContainer = c.settings
        return Nvram(
            profile=profile,
            admin=_creds_from(c.admin),
            log_head=int(c.log_head),
            seq_floor=int(c.seq_floor),
            next_box_id=int(c.next_box_id),
            boxes={
                str(b.name): BoxRecord(int(b.box_id), _creds_from(b.credentials)) for b in boxes
            },
            settings={str(s.key): str(s.value) for s in settings},
        )
    except (ConstructError, ValueError, TypeError, UnicodeError) as exc:
        raise ImageError(f"{where}: NVRAM contents do not parse: {exc}") from None
    except DeviceError as exc:
        raise ImageError(f"{where}: {exc}") from None


def profile_from_nvram(text: str, where: str) -> Profile:
    """The stored profile, made to fit this firmware's schema.

    An image written by another firmware version may lack keys that were added since, carry
    keys that were removed, or hold a value the schema no longer allows. The device must still
    boot with its messages, so such keys fall back to the model's factory value, with a warning.
    """
    try:
        flat = flatten(tomllib.loads(text), where)
    except tomllib.TOMLDecodeError as exc:
        raise ImageError(f"{where}: not valid TOML: {exc}") from None
    model = flat.get("identity.model")
    if model not in MODELS:
        raise ImageError(f"{where}: unknown model {model!r}; known models: {', '.join(MODELS)}")
    base = factory(str(model))
    fitted: dict[str, Any] = {}
    for key, spec in SCHEMA.items():
        if key not in flat:
            log.warning("%s: %s missing; using the factory value %r", where, key, base[key])
            fitted[key] = base[key]
            continue
        try:
            fitted[key] = spec.check(flat[key], where)
        except DeviceError as exc:
            log.warning("%s; using the factory value %r", exc, base[key])
            fitted[key] = base[key]
    for key in sorted(set(flat) - set(SCHEMA)):
        log.warning("%s: ignoring %s, unknown to this firmware", where, key)
    try:
        return validate(fitted, where)
    except DeviceError as exc:
        log.warning("%s; using the factory profile of %s", exc, model)
        return base
