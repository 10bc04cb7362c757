"""TRANSACTION commands: STAT, LIST, RETR, DELE, NOOP, RSET (RFC 1939 §5), TOP, UIDL (§7).

The library has parsed the arguments (`Command.numbers`); the session checks that a number
names a live message (`message_index`). RETR and TOP open the message through the maildrop
and answer with a body the adapter pulls (or, for RETR over plain TCP, copies straight from
the image file).
"""

from __future__ import annotations

import sys

from firmware.pop3.events import Command, MultilineStart
from firmware.pop3.protocol import OK, Answer, Handler, Pop3Protocol, State, ok
from firmware.text import plural

_TRANSACTION = frozenset({State.TRANSACTION})
_UIDL_HEAD = MultilineStart("unique-id listing follows")


def _stat(s: Pop3Protocol, command: Command) -> Answer:
    return Answer(ok(f"{s.live_count} {s.live_octets}"))


def _list(s: Pop3Protocol, command: Command) -> Answer:
    if command.numbers:
        index = s.message_index(command.numbers[0])
        if isinstance(index, Answer):
            return index
        return Answer(ok(f"{index + 1} {s.sizes[index]}"))
    count, size = plural(s.live_count, "message"), plural(s.live_octets, "octet")
    return Answer(MultilineStart(f"{count} ({size})"), s.listing_body(s.sizes))


def _uidl(s: Pop3Protocol, command: Command) -> Answer:
    if command.numbers:
        index = s.message_index(command.numbers[0])
        if isinstance(index, Answer):
            return index
        return Answer(ok(f"{index + 1} {s.uids[index]}"))
    return Answer(_UIDL_HEAD, s.listing_body(s.uids))


async def _retr(s: Pop3Protocol, command: Command) -> Answer:
    index = s.message_index(command.numbers[0])
    return index if isinstance(index, Answer) else await s.stream(index, None)


async def _top(s: Pop3Protocol, command: Command) -> Answer:
    number, count = command.numbers
    index = s.message_index(number)
    if isinstance(index, Answer):
        return index
    # RFC 1939 §7 sets no bound; a count beyond the body sends the whole body. Clamped
    # only so that the store sees a machine-sized integer.
    return await s.stream(index, min(count, sys.maxsize))


def _dele(s: Pop3Protocol, command: Command) -> Answer:
    index = s.message_index(command.numbers[0])
    if isinstance(index, Answer):
        return index
    if s.deleted is None:
        s.deleted = set()
    s.deleted.add(index)
    s.live_count -= 1
    s.live_octets -= s.sizes[index]
    return Answer(ok(f"message {index + 1} deleted"))


def _noop(s: Pop3Protocol, command: Command) -> Answer:
    return OK


def _rset(s: Pop3Protocol, command: Command) -> Answer:
    s.deleted = s.retrieved = None
    s.live_count = len(s.uids)
    s.live_octets = sum(s.sizes)
    return Answer(
        ok(f"maildrop has {plural(s.live_count, 'message')} ({plural(s.live_octets, 'octet')})")
    )


def _top_capabilities(s: Pop3Protocol) -> list[bytes]:
    return [b"TOP\r\n"]


def _uidl_capabilities(s: Pop3Protocol) -> list[bytes]:
    return [b"UIDL\r\n"]


_ONE = "takes one message number (1, 2, ...)"
_AT_MOST_ONE = "takes at most one message number (1, 2, ...)"

TOP = Handler(
    "TOP",
    _TRANSACTION,
    _top,
    "TOP takes a message number and a line count (0, 1, ...)",
    _top_capabilities,
)
UIDL = Handler("UIDL", _TRANSACTION, _uidl, f"UIDL {_AT_MOST_ONE}", _uidl_capabilities)
STAT = Handler("STAT", _TRANSACTION, _stat, "STAT takes no arguments")
LIST = Handler("LIST", _TRANSACTION, _list, f"LIST {_AT_MOST_ONE}")
RETR = Handler("RETR", _TRANSACTION, _retr, f"RETR {_ONE}")
DELE = Handler("DELE", _TRANSACTION, _dele, f"DELE {_ONE}")
NOOP = Handler("NOOP", _TRANSACTION, _noop, "NOOP takes no arguments")
RSET = Handler("RSET", _TRANSACTION, _rset, "RSET takes no arguments")
