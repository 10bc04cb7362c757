"""What each device of a fleet is (sans-IO): name, host name, serial number, model, ports,
boxes, settings, faults; and the port collisions a plan would run into.

Device i of fleet F is named `F-iii` (three digits at least), its image is
`devices/F-iii/board.img` under the fleet directory, and it listens on each base port + i.
The serial number is MODELLED, not a Panasonic format: `SIM-XXXX-iiiii`, where XXXX is four
base-32 characters of SHA-256 over the fleet name, so it is the same on every run and on every
machine (a Kubernetes pod computes the same serial as `fleet up`), and distinct within a fleet.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from firmware.config.profile import MODELS, Profile, for_model, is_hostname, shown
from firmware.errors import DeviceError
from firmware.fleet.manifest import BoxSpec, Manifest, ManifestError, expand
from firmware.text import host_port


@dataclass(frozen=True)
class DevicePlan:
    """One device of a fleet, everything decided (ports may be None: no such listener)."""

    index: int
    name: str
    hostname: str
    serial: str
    model: str
    image: PurePosixPath  # relative to the fleet directory
    pop3: tuple[str, int]
    pop3s: tuple[str, int] | None
    http: tuple[str, int] | None
    console: str  # "pty" or "none"
    settings: Mapping[str, str]  # run-only profile values (`dpfw run --set`)
    boxes: tuple[BoxSpec, ...]  # expanded: names and passwords as the image gets them
    faults: str | None  # a fault scenario file, as the manifest names it
    scan_feed_per_min: float


def device_name(fleet: str, index: int) -> str:
    """`floor3-007`: the fleet's name and the index, three digits at least."""
    return f"{fleet}-{index:03d}"


def serial_number(fleet: str, index: int) -> str:
    """A modelled serial number, deterministic from the fleet name and the index:
    `SIM-` + 4 base-32 characters of SHA-256(fleet) + `-` + the index in 5 digits."""
    code = base64.b32encode(hashlib.sha256(fleet.encode()).digest()).decode()[:4]
    return f"SIM-{code}-{index:05d}"


def plan(manifest: Manifest) -> list[DevicePlan]:
    """Every device of the manifest, index 0 first. DeviceError if a port would exceed 65535."""
    plans = []
    for index in range(manifest.count):
        spec = manifest.devices.get(index)
        name = device_name(manifest.name, index)

        def fill(pattern: str, index: int = index, name: str = name) -> str:
            return expand(pattern, index=index, name=name, fleet=manifest.name)

        model = (spec.model if spec else None) or (
            manifest.models[index % len(manifest.models)] if manifest.models else None
        )
        hostname = fill((spec.hostname if spec else None) or manifest.hostname)
        settings = dict(manifest.settings)
        if spec is not None:
            settings.update(spec.settings)
        boxes = spec.boxes if spec is not None and spec.boxes is not None else manifest.boxes
        plans.append(
            DevicePlan(
                index=index,
                name=name,
                hostname=hostname,
                serial=serial_number(manifest.name, index),
                model=model or _template_model(manifest),
                image=PurePosixPath("devices", name, "board.img"),
                pop3=(manifest.address, _port(manifest, "pop3_base_port", index)),
                pop3s=_optional(manifest, "pop3s_base_port", index),
                http=_optional(manifest, "http_base_port", index),
                console=manifest.console,
                settings=settings,
                boxes=tuple(BoxSpec(fill(b.name), fill(b.password), b.legacy) for b in boxes),
                faults=(spec.faults if spec and spec.faults else None) or manifest.faults,
                scan_feed_per_min=(
                    spec.scan_feed_per_min
                    if spec is not None and spec.scan_feed_per_min is not None
                    else manifest.scan_feed_per_min
                ),
            )
        )
    return plans


def _template_model(manifest: Manifest) -> str:
    """The template's model when the template is a model name; "" for a profile file (its
    model is known once the file is read: images.template_profile)."""
    upper = manifest.template.upper()
    return upper if upper in MODELS else ""


def _port(manifest: Manifest, key: str, index: int) -> int:
    base: int = getattr(manifest, key)
    port = base + index
    if port > 65535:
        raise DeviceError(
            f"{manifest.where}: [fleet] {key}: {base} + {manifest.count - 1} devices "
            f"passes port 65535; lower the base or the count"
        )
    return port


def _optional(manifest: Manifest, key: str, index: int) -> tuple[str, int] | None:
    if getattr(manifest, key) == 0:
        return None
    return (manifest.address, _port(manifest, key, index))


def collisions(plans: Sequence[DevicePlan]) -> list[str]:
    """One line per port that two listeners of the plan would share (POP3, POP3S, HTTP of
    any devices, e.g. `pop3_base_port` 11000 and `http_base_port` 11002 with 3 devices)."""
    seen: dict[tuple[str, int], str] = {}
    lines = []
    for device in plans:
        for service, address in (
            ("POP3", device.pop3),
            ("POP3S", device.pop3s),
            ("HTTP", device.http),
        ):
            if address is None:
                continue
            what = f"{device.name} {service}"
            if address in seen:
                lines.append(
                    f"port collision: {what} and {seen[address]} both on {host_port(*address)}"
                )
            else:
                seen[address] = what
    return lines


def profile_for(device: DevicePlan, template: Profile) -> Profile:
    """The profile a NEW image of `device` gets: the template (for another model: that
    model's factory values, keeping the template's site settings) with its host name.
    ProfileError (one line naming the device) for a host name the schema refuses."""
    profile = template
    if device.model and device.model != template.model:
        profile = for_model(template, device.model, keep_site=True)
    try:
        return profile.with_values([("identity.hostname", device.hostname)], device.name)
    except DeviceError as exc:
        raise DeviceError(f"{device.name}: host name {shown(device.hostname)}: {exc}") from None


def checked_plan(manifest: Manifest, lines: Sequence[str] = ()) -> list[DevicePlan]:
    """`manifest`'s plan after the checks a plan makes possible: the ports each device gets
    and their collisions, each device's host name. `lines`: the mistakes found before (the
    manifest's own, its files'); ManifestError with all of them and these at once, one line
    each, so nothing is created from a manifest with any mistake (docs/fleet.md)."""
    found = list(lines)
    try:
        plans = plan(manifest)
    except DeviceError as exc:
        raise ManifestError([*found, str(exc)]) from None
    found += [f"{manifest.where}: {line}" for line in collisions(plans)]
    for device in plans:
        if not is_hostname(device.hostname):
            found.append(
                f"{manifest.where}: {device.name}: host name {shown(device.hostname)} is not "
                "an RFC 1123 host name"
            )
    if found:
        raise ManifestError(found)
    return plans
