"""The POP3 protocol trace from the console and the API: switch it, show its records."""

from __future__ import annotations

from dataclasses import dataclass

from firmware.errors import DeviceError
from firmware.ops.context import OpsContext
from firmware.pop3.trace import Tracer, TraceRecord


@dataclass(frozen=True)
class TraceState:
    on: bool  # the console's switch
    subscribers: int  # --trace files and API streams reading it now
    dropped: int  # records subscribers that lagged did not get


@dataclass(frozen=True)
class TraceShow:
    session: int | None  # None: every session's records
    records: list[TraceRecord]  # oldest first (from the ring: the latest RING_SIZE)
    on: bool


def tracer(ctx: OpsContext, what: str = "trace") -> Tracer:
    """The running device's tracer; DeviceError when the board is open offline."""
    if ctx.device is None:
        raise DeviceError(f"{what}: only a running device has a protocol trace")
    return ctx.device.trace


def trace_switch(ctx: OpsContext, on: bool) -> TraceState:
    """Switch recording into the ring on or off (subscribers keep theirs either way)."""
    t = tracer(ctx, "trace on" if on else "trace off")
    t.on = on
    return TraceState(t.on, t.subscribers, t.dropped)


def parse_trace_session(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DeviceError(
            f"trace show: {text!r} is not a session id (see `session list`)"
        ) from None


def trace_show(ctx: OpsContext, session: int | None = None) -> TraceShow:
    """The ring's records, only `session`'s when given."""
    t = tracer(ctx, "trace show")
    return TraceShow(session, t.show(session), t.on)
