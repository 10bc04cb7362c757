"""An in-memory maildrop: the `Mailstore` interface with no Board and no file behind it.

For protocol and handler tests (and a quick lab server): boxes, passwords and messages live in
dicts; messages are kept in the same wire form the Board keeps (CRLF, dot-stuffed), so RETR and
TOP replies are byte for byte what the device sends. Nothing here waits or touches a disk.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from firmware.errors import BoxError, DeviceError
from firmware.pop3.mailbox import Opened
from firmware.security.credentials import Credentials, make_credentials, verify_password
from firmware.store.wire import encode, take_lines

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MemoryMessage:
    """One stored message: its uid, its POP3 size (octets as RFC 1939 counts them), wire form."""

    uid: str
    size: int
    wire: bytes
    header_len: int


@dataclass(slots=True)
class _Box:
    credentials: Credentials
    messages: list[MemoryMessage] = field(default_factory=list)


class MemoryMailstore:
    """`Mailstore` over dicts. `fail` makes the next operations raise (a store failing)."""

    def __init__(self) -> None:
        self._boxes: dict[str, _Box] = {}
        self._uids = itertools.count(1)
        self.fail: DeviceError | None = None
        self.deletions: list[tuple[str, tuple[str, ...]]] = []  # every commit, in order

    # -- set-up ------------------------------------------------------------------------

    def add_box(self, name: str, password: str, *, legacy: bool = False) -> None:
        self._boxes[name] = _Box(make_credentials(password, legacy=legacy))

    def deliver(self, box: str, message: bytes) -> MemoryMessage:
        wire, enc = encode(message)
        stored = MemoryMessage(f"m.{next(self._uids)}", enc.pop3_size, wire, enc.header_len or 0)
        self._box(box).messages.append(stored)
        return stored

    def stored(self, box: str) -> list[MemoryMessage]:
        return list(self._box(box).messages)

    def _box(self, name: str) -> _Box:
        box = self._boxes.get(name)
        if box is None:
            raise BoxError(f"no box named {name!r}")
        return box

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def _message(self, box: str, uid: str) -> MemoryMessage:
        for message in self._box(box).messages:
            if message.uid == uid:
                return message
        raise BoxError(f"box {box!r} holds no message with uid {uid!r}")

    # -- Mailstore ---------------------------------------------------------------------

    async def check_password(self, box: str, password: str) -> bool:
        found = self._boxes.get(box)
        return found is not None and verify_password(found.credentials, password)

    def credentials(self, box: str) -> Credentials | None:
        found = self._boxes.get(box)
        return None if found is None else found.credentials

    def apop_secret(self, box: str) -> str | None:
        creds = self.credentials(box)
        return None if creds is None else creds.legacy_secret

    async def sasl_step(self, step: Callable[[], T]) -> T:
        return step()

    async def messages(self, box: str) -> Sequence[MemoryMessage]:
        self._check()
        return list(self._box(box).messages)

    async def read_wire(self, box: str, uid: str, chunk_size: int) -> Opened:
        self._check()
        wire = self._message(box, uid).wire
        return _opened(_chunks(wire, chunk_size))

    async def read_top(self, box: str, uid: str, lines: int, chunk_size: int) -> Opened:
        self._check()
        message = self._message(box, uid)
        head = message.wire[: message.header_len]
        body = take_lines(_chunks(message.wire[message.header_len :], chunk_size), lines)
        return _opened(itertools.chain(_chunks(head, chunk_size), body))

    def reading(self) -> AbstractAsyncContextManager[None]:
        return _nothing_to_hold()

    async def delete(self, box: str, uids: Sequence[str]) -> None:
        self._check()
        found = self._box(box)
        doomed = set(uids)
        for uid in doomed:
            self._message(box, uid)  # all or nothing: every uid must exist first
        found.messages = [m for m in found.messages if m.uid not in doomed]
        self.deletions.append((box, tuple(uids)))


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), max(1, size)):
        yield data[at : at + size]


def _opened(chunks: Iterator[bytes]) -> Opened:
    return Opened(next(chunks, b""), chunks)


@asynccontextmanager
async def _nothing_to_hold() -> AsyncIterator[None]:
    yield
