"""TRANSACTION commands: STAT, LIST, RETR, DELE, NOOP, RSET (RFC 1939 §5), TOP, UIDL (§7).

Message numbers are checked by the session (`one_message`); RETR and TOP open the message
through the maildrop and reply with a body the adapter pulls (or, for RETR over plain TCP,
copies straight from the image file).
"""

from __future__ import annotations

import sys

from firmware.pop3.protocol import (
    OK,
    Handler,
    Pop3Protocol,
    Reply,
    State,
    arguments,
    parse_number,
    reply_line,
)
from firmware.text import plural

_TRANSACTION = frozenset({State.TRANSACTION})


def _stat(s: Pop3Protocol, rest: str) -> Reply:
    bad = s.no_args("STAT", rest)
    return bad or Reply(b"+OK %d %d\r\n" % (s.live_count, s.live_octets))


def _list(s: Pop3Protocol, rest: str) -> Reply:
    index = s.one_message("LIST", rest, optional=True)
    if isinstance(index, Reply):
        return index
    if index is not None:
        return Reply(b"+OK %d %d\r\n" % (index + 1, s.sizes[index]))
    count, size = plural(s.live_count, "message"), plural(s.live_octets, "octet")
    head = f"+OK {count} ({size})\r\n".encode("ascii")
    return Reply(head, s.listing_body(s.sizes))


def _uidl(s: Pop3Protocol, rest: str) -> Reply:
    index = s.one_message("UIDL", rest, optional=True)
    if isinstance(index, Reply):
        return index
    if index is not None:
        return Reply(reply_line(f"+OK {index + 1} {s.uids[index]}"))
    return Reply(
        b"+OK unique-id listing follows\r\n",
        s.listing_body(s.uids),
    )


async def _retr(s: Pop3Protocol, rest: str) -> Reply:
    index = s.one_message("RETR", rest)
    assert index is not None
    return index if isinstance(index, Reply) else await s.stream(index, None)


async def _top(s: Pop3Protocol, rest: str) -> Reply:
    parts = arguments(rest)
    if len(parts) != 2:
        return s.bad("-ERR TOP takes a message number and a line count")
    index = s.message_index(parts[0])
    if isinstance(index, Reply):
        return index
    count = parse_number(parts[1])
    if count is None:
        return s.bad("-ERR a TOP line count is a decimal number (0, 1, ...)")
    # RFC 1939 §7 sets no bound; a count beyond the body sends the whole body. Clamped
    # only so that the store sees a machine-sized integer.
    return await s.stream(index, min(count, sys.maxsize))


def _dele(s: Pop3Protocol, rest: str) -> Reply:
    index = s.one_message("DELE", rest)
    assert index is not None
    if isinstance(index, Reply):
        return index
    if s.deleted is None:
        s.deleted = set()
    s.deleted.add(index)
    s.live_count -= 1
    s.live_octets -= s.sizes[index]
    return Reply(b"+OK message %d deleted\r\n" % (index + 1))


def _noop(s: Pop3Protocol, rest: str) -> Reply:
    return s.no_args("NOOP", rest) or OK


def _rset(s: Pop3Protocol, rest: str) -> Reply:
    bad = s.no_args("RSET", rest)
    if bad:
        return bad
    s.deleted = s.retrieved = None
    s.live_count = len(s.uids)
    s.live_octets = sum(s.sizes)
    return Reply(
        f"+OK maildrop has {plural(s.live_count, 'message')} "
        f"({plural(s.live_octets, 'octet')})\r\n".encode("ascii")
    )


def _top_capabilities(s: Pop3Protocol) -> list[bytes]:
    return [b"TOP\r\n"]


def _uidl_capabilities(s: Pop3Protocol) -> list[bytes]:
    return [b"UIDL\r\n"]


TOP = Handler("TOP", _TRANSACTION, _top, _top_capabilities)
UIDL = Handler("UIDL", _TRANSACTION, _uidl, _uidl_capabilities)
STAT = Handler("STAT", _TRANSACTION, _stat)
LIST = Handler("LIST", _TRANSACTION, _list)
RETR = Handler("RETR", _TRANSACTION, _retr)
DELE = Handler("DELE", _TRANSACTION, _dele)
NOOP = Handler("NOOP", _TRANSACTION, _noop)
RSET = Handler("RSET", _TRANSACTION, _rset)
