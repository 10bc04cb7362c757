"""The POP3 command handlers: one small handler per command, each with its CAPA lines.

`INSTALLED` is what a device session runs; its order is CAPA's order. A session built with
another set (`Pop3Protocol(..., commands=Commands([...]))`) knows only those commands and
advertises only their capabilities.
"""

from __future__ import annotations

from firmware.pop3.handlers.authorization import APOP, AUTH, PASS, STLS, USER
from firmware.pop3.handlers.session import CAPA, QUIT
from firmware.pop3.handlers.transaction import DELE, LIST, NOOP, RETR, RSET, STAT, TOP, UIDL
from firmware.pop3.protocol import Handler

INSTALLED: tuple[Handler, ...] = (
    TOP,
    UIDL,
    USER,
    PASS,
    APOP,
    STLS,
    AUTH,
    STAT,
    LIST,
    RETR,
    DELE,
    NOOP,
    RSET,
    QUIT,
    CAPA,
)
__all__ = ["INSTALLED"]
