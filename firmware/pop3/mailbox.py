"""The one way the POP3 core reaches stored mail: a small interface and its Board binding.

The protocol core only sees `Mailstore`, so it stays free of files and flash; the Board-backed
implementation below is the only place that knows how credentials and messages are kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from firmware.pop3.auth import AuthCache
from firmware.security.credentials import Credentials, make_credentials, verify_password

if TYPE_CHECKING:
    from firmware.store.board import Board


class MessageRef(Protocol):
    """What the core needs to know about one message before reading it."""

    @property
    def uid(self) -> str: ...

    @property
    def size(self) -> int: ...


class Mailstore(Protocol):
    """Mailbox operations used by a POP3 session; DeviceError subclasses signal failures."""

    def check_password(self, box: str, password: str) -> bool:
        """True only if `box` exists and `password` is its password."""
        ...

    def credentials(self, box: str) -> Credentials | None:
        """What NVRAM keeps for `box` (SCRAM keys, maybe a legacy secret), or None: for SASL."""
        ...

    def apop_secret(self, box: str) -> str | None:
        """The shared secret APOP digests are made with, or None (no box, or no secret)."""
        ...

    def messages(self, box: str) -> Sequence[MessageRef]:
        """The box's messages in arrival order, as the session will number them."""
        ...

    def read_wire(self, box: str, uid: str, chunk_size: int) -> Iterator[bytes]:
        """The message byte-stuffed with CRLF line ends, without the final '.' line."""
        ...

    def read_top(self, box: str, uid: str, lines: int, chunk_size: int) -> Iterator[bytes]:
        """Headers, the blank line and the first `lines` body lines, in the same wire form."""
        ...

    def delete(self, box: str, uids: Sequence[str]) -> None:
        """Remove all of `uids` in one atomic, durable step, or none of them."""
        ...


@cache
def _decoy_credentials() -> Credentials:
    return make_credentials("decoy password that no one can send")


class BoardMailstore:
    """`Mailstore` over the device's Board (firmware.store.board)."""

    __slots__ = ("_board", "auth_cache")

    def __init__(self, board: Board) -> None:
        self._board = board
        self.auth_cache = AuthCache()

    def check_password(self, box: str, password: str) -> bool:
        creds = self._board.box_credentials(box)
        if creds is None:
            # Spend the same work as for a real box, so timing does not tell names apart.
            verify_password(_decoy_credentials(), password)
            return False
        if self.auth_cache.hit(box, password, creds):
            return True
        if not verify_password(creds, password):
            return False
        self.auth_cache.remember(box, password, creds)
        return True

    def credentials(self, box: str) -> Credentials | None:
        return self._board.box_credentials(box)

    def apop_secret(self, box: str) -> str | None:
        creds = self._board.box_credentials(box)
        return None if creds is None else creds.legacy_secret

    def messages(self, box: str) -> Sequence[MessageRef]:
        return self._board.messages(box)

    def read_wire(self, box: str, uid: str, chunk_size: int) -> Iterator[bytes]:
        return self._board.read_wire(box, uid, chunk_size=chunk_size)

    def read_top(self, box: str, uid: str, lines: int, chunk_size: int) -> Iterator[bytes]:
        return self._board.read_top(box, uid, lines, chunk_size=chunk_size)

    @property
    def image_path(self) -> Path:
        """The board image file, which holds every message in its wire form."""
        return self._board.path

    def wire_extents(self, box: str, uid: str, start: int) -> list[tuple[int, int]]:
        """Where the wire bytes from `start` to the end lie in the image file, right now.

        Only for a message whose RETR has already read (and checked) its first chunk through
        `read_wire`: the record header is not read from flash again, as in read_wire's chunks.
        """
        return self._board.wire_extents(box, uid, start, check=False)

    def delete(self, box: str, uids: Sequence[str]) -> None:
        self._board.delete(box, list(uids))
