"""Open POP3 sessions: list them, end one."""

from __future__ import annotations

from dataclasses import dataclass

from firmware.errors import ConflictError, DeviceError, NotFoundError
from firmware.ops.context import OpsContext


@dataclass(frozen=True)
class Session:
    id: int
    peer: str  # "host:port"
    box: str | None  # None before login
    state: str  # "authorization", "transaction", ...
    started: float  # epoch seconds of the accept
    tls: bool


@dataclass(frozen=True)
class SessionList:
    running: bool  # False: no POP3 service (offline, or not started)
    limit: int  # pop3.max_sessions
    sessions: list[Session]


def session_list(ctx: OpsContext) -> SessionList:
    pop3 = ctx.pop3
    limit = ctx.profile.int("pop3.max_sessions")
    if pop3 is None:
        return SessionList(False, limit, [])
    rows = [Session(s.id, s.peer, s.box, s.state, s.started, s.tls) for s in pop3.sessions()]
    return SessionList(True, limit, rows)


def parse_session_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DeviceError(
            f"session kill: {text!r} is not a session id (see `session list`)"
        ) from None


def session_kill(ctx: OpsContext, ident: int) -> int:
    """End session `ident` now; nothing it deleted is committed. DeviceError if none."""
    pop3 = ctx.pop3
    if pop3 is None:
        raise ConflictError("session kill: the POP3 service is not running")
    if not pop3.kill(ident):
        raise NotFoundError(f"session kill: no open session {ident} (see `session list`)")
    return ident
