"""The mail both servers hold during `tools/bench pop3`: the same users, passwords and messages.

Messages are built deterministically in their POP3 form (CRLF line ends, no stuffing), so the
load generator can compare every RETR body byte for byte. Every body holds lines that start with
a dot, so dot-stuffing is exercised on every retrieval.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

SMALL_SIZE = 50 * 1024  # the message of a full session (USER..RETR..QUIT)
LARGE_SIZE = 10 * 1024 * 1024  # the message of the RETR throughput test
_LINE = 76  # base64 line length, as a scanned attachment would have it
FETCH_PREFIX = "fd"


@dataclass(frozen=True)
class Account:
    """One mailbox: the same name and password on dpfw and on Dovecot."""

    name: str
    password: str
    message: bytes  # the one message in the box, CRLF form


@dataclass(frozen=True)
class Corpus:
    """All accounts of one benchmark run."""

    small: bytes
    large: bytes
    session_accounts: tuple[Account, ...]  # each holds `small`; used by session and idle tests
    large_accounts: tuple[Account, ...]  # each holds `large`; used by the RETR throughput test
    # Each holds `fetch_depth` copies of `small`; the fetch-and-delete test empties them.
    fetch_accounts: tuple[Account, ...] = ()
    fetch_depth: int = 0

    @property
    def accounts(self) -> tuple[Account, ...]:
        return self.session_accounts + self.large_accounts + self.fetch_accounts

    def copies(self, account: Account) -> int:
        """How many copies of its message a box holds at the start of a run."""
        return self.fetch_depth if account.name.startswith(FETCH_PREFIX) else 1


def build_message(size: int, tag: str) -> bytes:
    """Return a message of exactly `size` octets (CRLF form) whose body has dot-led lines."""
    head = (
        f"From: scanner@dp-bench.invalid\r\nTo: {tag}@dp-bench.invalid\r\n"
        f"Subject: bench {tag} {size}\r\nMessage-ID: <{tag}.{size}@dp-bench.invalid>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode("ascii")
    if size < len(head) + 2:
        raise ValueError(f"message size {size} is smaller than its {len(head)}-octet header")
    budget = size - len(head)
    seed = hashlib.sha256(f"{tag}:{size}".encode()).digest()
    pool = base64.b64encode(hashlib.shake_256(seed).digest(budget // 4 * 3 + 3))
    lines: list[bytes] = []
    used = 0
    pos = 0
    while budget - used >= _LINE + 2:
        line = pool[pos : pos + _LINE]
        pos += _LINE
        n = len(lines)
        if n % 41 == 7:
            line = b"." + line[1:]  # stuffed as ".."
        elif n % 97 == 13:
            line = b".." + line[2:]  # stuffed as "..."
        elif n % 211 == 17:
            line = b"." + b" " * (_LINE - 1)
        lines.append(line + b"\r\n")
        used += _LINE + 2
    rest = budget - used
    if rest == 1 and lines:  # a lone octet cannot be a line: borrow one from the last line
        last = lines.pop()
        lines.append(last[: len(last) - 3] + b"\r\n")
        rest += 1
    if rest >= 2:
        lines.append(b"." * (rest - 2) + b"\r\n" if rest <= 3 else pool[: rest - 2] + b"\r\n")
    message = head + b"".join(lines)
    if len(message) != size:
        raise AssertionError(f"built {len(message)} octets instead of {size}")
    return message


def build_corpus(sessions: int, large: int, fetch: int = 0, depth: int = 0) -> Corpus:
    """Build `sessions` boxes with the 50 KB message, `large` boxes with the 10 MB one and
    `fetch` boxes with `depth` copies of the 50 KB message (fetch-and-delete)."""
    small = build_message(SMALL_SIZE, "small")
    big = build_message(LARGE_SIZE, "large")
    session_accounts = tuple(
        Account(f"u{i:04d}", f"pw-{i:04d}-bench", small) for i in range(1, sessions + 1)
    )
    large_accounts = tuple(Account(f"big{i}", f"pw-big{i}-bench", big) for i in range(1, large + 1))
    fetch_accounts = tuple(
        Account(f"{FETCH_PREFIX}{i:04d}", f"pw-fd{i:04d}-bench", small) for i in range(1, fetch + 1)
    )
    return Corpus(small, big, session_accounts, large_accounts, fetch_accounts, depth)
