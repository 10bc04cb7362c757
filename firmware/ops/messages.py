"""A box's messages: list them with their headers, read one raw, delete one.

Headers and attachment names are parsed with the standard library's email package from the
stored bytes (RFC 5322 §3.6 header fields, RFC 2183 Content-Disposition filenames, RFC 2047
encoded words decoded); a message whose record fails its CRC is listed with `corrupt` set
and no headers, never a traceback.
"""

from __future__ import annotations

import dataclasses
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, BinaryIO, cast

from firmware.errors import (
    BoxError,
    ConflictError,
    CorruptRecordError,
    DeviceError,
    MessageNotFoundError,
)
from firmware.ops.boxes import find_box
from firmware.ops.context import OpsContext
from firmware.store.board import MessageInfo
from firmware.store.wire import unstuff

HEADER_BYTES = 256 * 1024  # a listing parses at most this much of each message


@dataclass(frozen=True)
class Message:
    """One stored message. `arrived` and `date` are epoch seconds (`date` from the Date
    header, None if absent or unreadable); `size` is POP3 octets."""

    uid: str
    size: int
    arrived: float
    corrupt: bool = False
    date: float | None = None
    subject: str | None = None
    sender: str | None = None  # the From header, decoded
    attachments: list[str] = field(default_factory=list)  # file names, in order


@dataclass(frozen=True)
class MessageList:
    box: str
    messages: list[Message]


def _headers(raw: bytes) -> tuple[float | None, str | None, str | None, list[str]]:
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    date: float | None = None
    try:
        stamp = parsed["Date"]
        if stamp is not None:
            date = email.utils.parsedate_to_datetime(str(stamp)).timestamp()
    except (TypeError, ValueError, IndexError):
        date = None
    subject = str(parsed["Subject"]) if parsed["Subject"] is not None else None
    sender = str(parsed["From"]) if parsed["From"] is not None else None
    names = [
        name for part in parsed.iter_attachments() if (name := part.get_filename()) is not None
    ]
    return date, subject, sender, names


def list_messages(ctx: OpsContext, box: str) -> MessageList:
    """Every message of `box`, oldest first. BoxNotFoundError for an unknown box."""
    find_box(ctx, box)
    return MessageList(box, [summary(ctx, box, info) for info in ctx.board.messages(box)])


def summary(ctx: OpsContext, box: str, info: MessageInfo) -> Message:
    """One stored message as listings and delivery answers show it (the same values both
    ways): its headers read from the first HEADER_BYTES of the record; `corrupt` and no
    headers when the record fails its CRC."""
    if info.corrupt:
        return Message(info.uid, info.size, info.arrived, corrupt=True)
    try:
        head = _read(ctx, box, info.uid, limit=HEADER_BYTES)
    except CorruptRecordError:
        return Message(info.uid, info.size, info.arrived, corrupt=True)
    try:
        date, subject, sender, names = _headers(head)
    except Exception:
        date, subject, sender, names = None, None, None, []
    return Message(info.uid, info.size, info.arrived, False, date, subject, sender, names)


MESSAGE_FIELDS: dict[str, str] = {
    "uid": "string",
    "size": "integer",
    "arrived": "number",
    "corrupt": "boolean",
    "date": "number|null",
    "subject": "string|null",
    "from": "string|null",
    "attachments": "array",
}
"""The one JSON shape of a message summary (API listing rows and delivery answers, `dpfw box
messages --json`): key -> JSON type. Times are epoch seconds; `from` is the decoded From
header (RFC 5322 section 3.6.2), `date` the Date header (section 3.6.1)."""


def message_json(message: Message) -> dict[str, Any]:
    """`message` in the one JSON shape (MESSAGE_FIELDS): the dataclass's `sender` is `from`."""
    row = dataclasses.asdict(message)
    row["from"] = row.pop("sender")
    return {key: row[key] for key in MESSAGE_FIELDS}


def listing_json(listing: MessageList) -> dict[str, Any]:
    """A box listing as JSON: {"box", "messages": [message_json + "number" (1, 2, ...)]}."""
    rows = []
    for number, message in enumerate(listing.messages, 1):
        row = message_json(message)
        row["number"] = number
        rows.append(row)
    return {"box": listing.box, "messages": rows}


def _read(ctx: OpsContext, box: str, uid: str, limit: int | None = None) -> bytes:
    """The message as stored on the wire (CRLF, dot-stuffed), unstuffed back to RFC 5322."""
    chunks = []
    got = 0
    for chunk in ctx.board.read_wire(box, uid):
        chunks.append(chunk)
        got += len(chunk)
        if limit is not None and got >= limit:
            break
    return unstuff(b"".join(chunks))


def find_message(ctx: OpsContext, box: str, uid: str) -> MessageInfo:
    """The stored message `uid` of `box`; BoxNotFoundError for no such box,
    MessageNotFoundError (`box 'B' holds no message with uid 'U'`) for no such message."""
    find_box(ctx, box)
    try:
        return ctx.board.message(box, uid)
    except BoxError as exc:  # the box exists: the uid is what is missing
        raise MessageNotFoundError(str(exc)) from None


def raw_message(ctx: OpsContext, box: str, uid: str) -> bytes:
    """One message's bytes as delivered over POP3 RETR (CRLF line ends, no stuffing).
    BoxNotFoundError, MessageNotFoundError for an unknown box or uid; CorruptRecordError for a bad
    CRC."""
    find_message(ctx, box, uid)  # an unknown uid fails before anything is read
    return _read(ctx, box, uid)


def deliver(ctx: OpsContext, box: str, source: bytes | BinaryIO) -> Message:
    """Store one RFC 5322 message (bytes or a binary file, read to its end) in `box`; durable
    before this returns. The one entry for messages from outside (the CLI's `deliver`, any
    front-end after it): `check_message_head` first, so what a POP3 client would refuse is
    never stored. Returns the stored message's `summary` (its headers, as a listing shows).
    DeviceError (not an RFC 5322 message), BoxError, QuotaError, StorageFullError: one line,
    nothing stored."""
    find_box(ctx, box)
    head, source = _peek(source, HEAD_CHECK_BYTES)
    check_message_head(head)
    info = ctx.board.deliver(box, source)
    return summary(ctx, box, info)


HEAD_CHECK_BYTES = 64 * 1024  # check_message_head reads at most this much of a message
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")  # RFC 5322 §3.6.8 (§4.5.3 obs WSP)
_LINE_END = re.compile(rb"\r\n|\r|\n")  # as the store reads line ends (docs/storage.md)


def check_message_head(head: bytes) -> None:
    """DeviceError unless `head`, the first bytes of a message (all of it, or at least
    HEAD_CHECK_BYTES), starts as an RFC 5322 message: a header section of fields
    (`Name: value`, §2.2 and §3.6.8, folded lines starting with a space or tab, §2.2.3) up to
    an empty line or the end, and no NUL byte in it (§2.2: printable US-ASCII names; NUL is
    allowed nowhere). What fetchmail calls "incorrect header line" is refused here."""
    if not head:
        raise DeviceError("empty, not an RFC 5322 message")
    lines = _LINE_END.split(head)
    complete = len(head) < HEAD_CHECK_BYTES
    if not complete:
        lines = lines[:-1]  # the last line may go on past what was read
    for number, line in enumerate(lines, 1):
        if not line:
            if number == 1:
                raise DeviceError(
                    "not an RFC 5322 message: it starts with an empty line (no header fields)"
                )
            return  # the end of the header section
        if b"\0" in line:
            raise DeviceError(f"not an RFC 5322 message: a NUL byte in header line {number}")
        if line[:1] in (b" ", b"\t") and number > 1:
            continue  # a folded header line
        if not _FIELD.match(line):
            raise DeviceError(
                f"not an RFC 5322 message: line {number} is not a header field (Name: value)"
            )


class _Replay:
    """A pipe whose first bytes were read to check them: gives them again, then the rest."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._rest.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._rest.read(size)


def _peek(source: bytes | BinaryIO, size: int) -> tuple[bytes, bytes | BinaryIO]:
    """The first `size` bytes of `source` (fewer at its end), and `source` to read it whole."""
    if isinstance(source, bytes):
        return source[:size], source
    try:
        start = source.tell() if source.seekable() else None
    except (OSError, ValueError):
        start = None
    chunks: list[bytes] = []
    got = 0
    while got < size and (chunk := source.read(size - got)):
        chunks.append(chunk)
        got += len(chunk)
    head = b"".join(chunks)
    if start is not None:
        source.seek(start)
        return head, source
    return head, cast(BinaryIO, _Replay(head, source))


def delete_message(ctx: OpsContext, box: str, uid: str) -> Message:
    """Delete one message (one durable record). BoxNotFoundError, MessageNotFoundError for an
    unknown box or uid; ConflictError while a POP3 session holds the box (its own deletions
    would then race this one)."""
    info = find_message(ctx, box, uid)
    pop3 = ctx.pop3
    if pop3 is not None and any(s.box == box for s in pop3.sessions()):
        raise ConflictError(
            f"message delete: box {box!r} is open in a POP3 session; nothing changed"
        )
    ctx.board.delete(box, [uid])
    return Message(info.uid, info.size, info.arrived, info.corrupt)
