"""`status`: what an administrator checks first (model, memory, flash, POP3, TLS, scans)."""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware import __version__
from firmware.ops.context import OpsContext
from firmware.text import host_port

SERIAL_SETTING = "identity.serial"
"""The board setting that holds a serial number (fleet devices get one: docs/fleet.md)."""


@dataclass(frozen=True)
class Space:
    """Bytes: RAM budget or flash message area."""

    total: int
    used: int
    free: int
    reclaimable: int = 0  # flash only: held by deleted messages until compaction


@dataclass(frozen=True)
class Pop3Status:
    running: bool
    sessions: int
    max_sessions: int
    in_tls: int = 0
    tls_available: bool = False
    pop3s: list[str] = field(default_factory=list)  # "host:port" of POP3S listeners
    tls_handshakes: int = 0
    tls_failures: int = 0
    logins_ok: int = 0
    logins_failed: int = 0
    evictions: int = 0
    locked: dict[str, float] = field(default_factory=dict)  # box -> seconds of lock-out left


@dataclass(frozen=True)
class Status:
    """The device at a glance; `running` False for an offline image."""

    running: bool
    model: str
    next_model: str  # the model after reboot (== model unless a change is pending)
    firmware_version: str
    dpfw_version: str
    uptime_s: float
    ram: Space
    flash: Space
    pop3: Pop3Status
    scans_done: int
    scans_failed: int
    feeder: str | None  # the lab feeder's counts, in words, when it runs
    pending: int  # saved changes waiting for a reboot
    serial: str | None = None  # the image's serial number, if it was given one (a fleet's)


def status(ctx: OpsContext) -> Status:
    """The status of the device or image. Raises DeviceError while a device reboots."""
    profile = ctx.profile
    usage = ctx.board.usage()
    device = ctx.device
    pop3 = ctx.pop3
    sessions = pop3.sessions() if pop3 is not None else []
    if pop3 is not None:
        stats = pop3.stats
        pop3_status = Pop3Status(
            running=True,
            sessions=len(sessions),
            max_sessions=profile.int("pop3.max_sessions"),
            in_tls=sum(1 for info in sessions if info.tls),
            tls_available=pop3.tls_available,
            pop3s=[
                host_port(host, port) for host, port in (device.pop3s_addresses if device else [])
            ],
            tls_handshakes=stats.tls_sessions,
            tls_failures=stats.tls_failures,
            logins_ok=stats.logins_ok,
            logins_failed=stats.logins_failed,
            evictions=stats.evictions,
            locked=dict(pop3.locked_boxes()),
        )
    else:
        pop3_status = Pop3Status(False, 0, profile.int("pop3.max_sessions"))
    ram_total = profile.int("memory.image_ram_mib") << 20
    ram = (
        Space(device.budget.total, device.budget.used, device.budget.free)
        if device is not None
        else Space(ram_total, 0, ram_total)
    )
    feeder = device.feeder if device is not None else None
    return Status(
        running=device is not None,
        model=profile.model,
        next_model=ctx.saved_profile.model,
        firmware_version=profile.str("identity.firmware_version"),
        dpfw_version=__version__,
        uptime_s=ctx.uptime_s,
        ram=ram,
        flash=Space(usage.total, usage.used, usage.free, usage.reclaimable),
        pop3=pop3_status,
        scans_done=device.scans_done if device is not None else 0,
        scans_failed=device.scans_failed if device is not None else 0,
        feeder=feeder.stats.describe() if feeder is not None else None,
        pending=len(ctx.pending()),
        serial=ctx.board.settings().get(SERIAL_SETTING),
    )
