"""The admin account, the log ring, reboot and shutdown."""

from __future__ import annotations

from firmware.config.profile import SCHEMA
from firmware.errors import DeviceError
from firmware.ops.context import OpsContext
from firmware.security.credentials import check_password_policy


def prompt_name(ctx: OpsContext) -> str:
    """The model for a prompt, or the series while the device reboots."""
    try:
        return ctx.profile.model
    except DeviceError:
        return "DP"


def idle_timeout_s(ctx: OpsContext) -> float:
    """console.admin_idle_timeout_s; its schema minimum while the device reboots."""
    try:
        return float(ctx.profile.int("console.admin_idle_timeout_s"))
    except DeviceError:
        return float(SCHEMA["console.admin_idle_timeout_s"].minimum or 10)


def check_admin_password(ctx: OpsContext, password: str) -> bool:
    return bool(ctx.board.check_admin_password(password))


def set_admin_password(ctx: OpsContext, current: str, new: str, again: str) -> None:
    """Change the admin password (one NVRAM write); DeviceError names what was wrong."""
    if not check_admin_password(ctx, current):
        raise DeviceError("passwd: the current password is wrong; nothing changed")
    if new != again:
        raise DeviceError("passwd: the two new passwords differ; nothing changed")
    check_password_policy(new, "passwd")
    ctx.board.set_admin_password(new)


def log_tail(ctx: OpsContext, count: int = 20) -> list[str]:
    """The last `count` lines the device logged (oldest first)."""
    # A slice formats only the lines it takes: the ring formats lazily (LogLines).
    return list(ctx.log_lines[-count:]) if count > 0 else []


def reboot(ctx: OpsContext) -> None:
    ctx.require_device("reboot").request_reboot()


def shutdown(ctx: OpsContext) -> None:
    ctx.require_device("shutdown").request_shutdown()
