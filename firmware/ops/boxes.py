"""Mailboxes: list, show, add, change password, delete, lift a lock-out."""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware.errors import BoxError, BoxNotFoundError, ConflictError, DeviceError
from firmware.ops.context import OpsContext
from firmware.pop3.auth import keeps_legacy_secret
from firmware.security.credentials import check_password_policy
from firmware.store.board import BoxInfo, check_box_name

LATEST_SHOWN = 10  # `box show` lists this many of the newest messages


@dataclass(frozen=True)
class Box:
    """One mailbox in a listing. `locked_s`: seconds of lock-out left, None if not locked."""

    name: str
    messages: int
    bytes: int  # sum of POP3 sizes
    legacy_secret: bool  # keeps the plaintext-equivalent secret APOP and CRAM-MD5 need
    corrupt: int  # messages whose record fails its CRC
    locked_s: float | None = None


@dataclass(frozen=True)
class BoxList:
    boxes: list[Box]
    max_boxes: int


@dataclass(frozen=True)
class MessageLine:
    uid: str
    size: int
    arrived: float  # epoch seconds
    corrupt: bool


@dataclass(frozen=True)
class BoxDetail:
    """`box show NAME`: the box, its limits and its newest messages (oldest first)."""

    box: Box
    max_messages: int
    quota_bytes: int
    apop_on: bool  # pop3.apop in the running profile
    latest: list[MessageLine] = field(default_factory=list)


@dataclass(frozen=True)
class BoxChange:
    """What `box add`, `box passwd` and `box del` did."""

    what: str  # "added" | "password changed" | "deleted"
    name: str
    legacy_secret: bool  # the box keeps a legacy secret now
    had_legacy_secret: bool = False
    apop_on: bool = False  # pop3.apop in the running profile (APOP, CRAM-MD5 offered)


@dataclass(frozen=True)
class Unlock:
    name: str
    was_locked: bool


def _row(info: BoxInfo, locked: dict[str, float]) -> Box:
    return Box(
        info.name,
        info.messages,
        info.bytes,
        info.has_legacy_secret,
        info.corrupt,
        locked.get(info.name),
    )


def box_list(ctx: OpsContext) -> BoxList:
    locked = ctx.locked_boxes()
    rows = [_row(info, locked) for info in ctx.board.boxes()]
    return BoxList(rows, ctx.profile.int("mailbox.max_boxes"))


def find_box(ctx: OpsContext, name: str, what: str = "") -> BoxInfo:
    """The box's BoxInfo; BoxNotFoundError `[what: ]no box named 'NAME' (see `box list`)`."""
    for info in ctx.board.boxes():
        if info.name == name:
            return info
    prefix = f"{what}: " if what else ""
    raise BoxNotFoundError(f"{prefix}no box named {name!r} (see `box list`)")


def box_exists(ctx: OpsContext, name: str) -> bool:
    return any(info.name == name for info in ctx.board.boxes())


def box_show(ctx: OpsContext, name: str) -> BoxDetail:
    info = find_box(ctx, name)
    profile = ctx.profile
    messages = ctx.board.messages(info.name)
    latest = [MessageLine(m.uid, m.size, m.arrived, m.corrupt) for m in messages[-LATEST_SHOWN:]]
    return BoxDetail(
        _row(info, ctx.locked_boxes()),
        profile.int("mailbox.max_messages"),
        profile.int("mailbox.quota_mib") << 20,
        profile.bool("pop3.apop"),
        latest,
    )


def check_new_box(ctx: OpsContext, name: str, what: str = "box add") -> None:
    """Refuse a bad or taken name before anyone types a password for it."""
    check_box_name(name)
    if box_exists(ctx, name):
        raise BoxError(f"{what}: a box named {name!r} already exists")


def _check_password(password: str, again: str | None, what: str) -> None:
    if again is not None and password != again:
        raise DeviceError(f"{what}: the two passwords differ; nothing changed")
    check_password_policy(password, what)


def box_add(
    ctx: OpsContext,
    name: str,
    password: str,
    again: str | None = None,
    *,
    legacy: bool | None = None,
) -> BoxChange:
    """A new box; legacy True/False keeps an APOP/CRAM-MD5 secret or not, None: keep one
    while pop3.apop is on (so every advertised method works for the box; docs/security.md).
    BoxError for a bad or taken name or a full device; DeviceError for a refused password."""
    check_new_box(ctx, name)
    _check_password(password, again, "box add")
    apop_on = ctx.profile.bool("pop3.apop")
    keep = keeps_legacy_secret(legacy, apop_on=apop_on)
    ctx.board.add_box(name, password, legacy=keep)
    return BoxChange("added", name, keep, apop_on=apop_on)


def box_passwd(
    ctx: OpsContext,
    name: str,
    password: str,
    again: str | None = None,
    *,
    legacy: bool | None = None,
) -> BoxChange:
    """A new password; legacy True keeps an APOP/CRAM-MD5 secret, False drops it, None: keep
    one if the box had one or pop3.apop is on."""
    had = find_box(ctx, name, "box passwd").has_legacy_secret
    _check_password(password, again, "box passwd")
    apop_on = ctx.profile.bool("pop3.apop")
    keep = keeps_legacy_secret(legacy, apop_on=apop_on, had=had)
    ctx.board.set_box_password(name, password, legacy=keep)
    return BoxChange("password changed", name, keep, had, apop_on)


def box_del(ctx: OpsContext, name: str, *, purge: bool = False) -> BoxChange:
    """Delete a box (`purge`: with its messages). BoxError if it still holds messages."""
    ctx.board.delete_box(name, purge=purge)
    return BoxChange("deleted", name, False)


def box_unlock(ctx: OpsContext, name: str) -> Unlock:
    """Lift a box's lock-out after failed logins (locks also end by themselves)."""
    pop3 = ctx.pop3
    if pop3 is None:
        raise ConflictError("box unlock: the POP3 service is not running")
    if pop3.unlock(name):
        return Unlock(name, True)
    if not box_exists(ctx, name):
        raise BoxNotFoundError(f"box unlock: no box named {name!r} is locked (see `status`)")
    return Unlock(name, False)
