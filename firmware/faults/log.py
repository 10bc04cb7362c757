"""The fault log: one key=value line per fired fault, in the auth log's style.

    dpfw fault event=fault-fired rip=127.0.0.1 id=3 action=retr-break session=7 box=alice cmd=RETR

Values are written as the auth log writes them (firmware/security/authlog.py `quote`): bare
when safe, else quoted with \\xHH escapes, so a client's text cannot forge a field. Logged
at WARNING on the `dpfw.fault` logger. `parse` reads a line back (tests, tools).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from firmware.security.authlog import quote, unquote

if TYPE_CHECKING:
    from firmware.faults.plan import FaultEvent

PREFIX = "dpfw fault"
LOGGER = logging.getLogger("dpfw.fault")


def format_fired(event: FaultEvent) -> str:
    """The log line of one firing (absent fields are left out; `rip` is "-" for device
    faults that no client caused)."""
    parts = [
        PREFIX,
        "event=fault-fired",
        f"rip={quote(event.peer) if event.peer else '-'}",
        f"id={event.fault}",
        f"action={event.action}",
    ]
    if event.session is not None:
        parts.append(f"session={event.session}")
    if event.box is not None:
        parts.append(f"box={quote(event.box)}")
    if event.command is not None:
        parts.append(f"cmd={quote(event.command)}")
    return " ".join(parts)


def log_fired(event: FaultEvent) -> None:
    """Write one firing to the `dpfw.fault` logger."""
    if LOGGER.isEnabledFor(logging.WARNING):
        LOGGER.warning("%s", format_fired(event))


def parse(line: str) -> dict[str, str]:
    """The fields of a fault log line (any logging prefix before `dpfw fault`)."""
    at = line.find(PREFIX + " ")
    if at < 0:
        raise ValueError(f"not a dpfw fault log line: {line!r}")
    fields: dict[str, str] = {}
    for token in line[at + len(PREFIX) + 1 :].split():
        key, eq, value = token.partition("=")
        if not eq:
            raise ValueError(f"bad field {token!r} in fault log line")
        fields[key] = value if value == "-" else unquote(value)
    return fields
