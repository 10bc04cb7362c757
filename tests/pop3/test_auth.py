"""APOP pieces (the RFC 1939 known answer, timestamps, host name hygiene); the auth cache."""

from __future__ import annotations

import re

from firmware.pop3.auth import (
    AuthCache,
    apop_digest,
    apop_matches,
    make_apop_timestamp,
    safe_hostname,
)
from firmware.pop3.mailbox import BoardMailstore
from firmware.security.credentials import make_credentials
from firmware.store.board import Board
from tests.pop3.conftest import BOB_PASSWORD

RFC_TIMESTAMP = "<1896.697170952@dbc.mtview.ca.us>"
RFC_DIGEST = "c4c9334bac560ecc979e58001b3e22fb"  # RFC 1939 §7, secret "tanstaaf"


def test_rfc_1939_known_answer() -> None:
    assert apop_digest(RFC_TIMESTAMP, "tanstaaf") == RFC_DIGEST
    assert apop_matches(RFC_TIMESTAMP, "tanstaaf", RFC_DIGEST)
    assert apop_matches(RFC_TIMESTAMP, "tanstaaf", RFC_DIGEST.upper())


def test_wrong_secret_missing_secret_and_malformed_digests_fail() -> None:
    assert not apop_matches(RFC_TIMESTAMP, "other", RFC_DIGEST)
    assert not apop_matches(RFC_TIMESTAMP, None, apop_digest(RFC_TIMESTAMP, ""))
    for digest in ("", "xyz", RFC_DIGEST + "0", "é" * 32):
        assert not apop_matches(RFC_TIMESTAMP, "tanstaaf", digest)


def test_timestamps_are_unique_msg_ids() -> None:
    stamps = {make_apop_timestamp("dp3530.local") for _ in range(1000)}
    assert len(stamps) == 1000
    for stamp in stamps:
        assert re.fullmatch(r"<[0-9a-f.]+@dp3530\.local>", stamp)


def test_hostnames_cannot_break_the_greeting() -> None:
    assert safe_hostname("dp 35<30>.local") == "dp3530.local"
    assert safe_hostname("<>") == "localhost"
    assert len(safe_hostname("a" * 500)) == 64


# -- the cache of successful password checks -----------------------------------------------


def test_auth_cache_hits_only_the_verified_password_with_the_same_keys() -> None:
    cache = AuthCache()
    creds = make_credentials("right")
    assert not cache.hit("alice", "right", creds)
    cache.remember("alice", "right", creds)
    assert cache.hit("alice", "right", creds)
    assert not cache.hit("alice", "wrong", creds)
    assert not cache.hit("bob", "right", creds)
    assert not cache.hit("alice", "right", make_credentials("right"))  # new salt: changed
    assert len(cache) == 0  # ... and the stale entry is gone


def test_auth_cache_is_bounded_least_recently_used_first() -> None:
    cache = AuthCache(max_entries=3)
    creds = make_credentials("pw")
    for box in ("a", "b", "c"):
        cache.remember(box, "pw", creds)
    assert cache.hit("a", "pw", creds)  # "a" is now the most recent
    cache.remember("d", "pw", creds)
    assert len(cache) == 3
    assert not cache.hit("b", "pw", creds)
    assert all(cache.hit(box, "pw", creds) for box in ("a", "c", "d"))


async def test_board_mailstore_caches_successes_and_sees_password_changes(board: Board) -> None:
    store = BoardMailstore(board)
    assert await store.check_password("bob", BOB_PASSWORD)
    assert len(store.auth_cache) == 1
    assert await store.check_password("bob", BOB_PASSWORD)
    assert not await store.check_password("bob", "wrong")
    assert len(store.auth_cache) == 1  # failures are not cached
    board.set_box_password("bob", "new password")
    assert not await store.check_password("bob", BOB_PASSWORD)
    assert await store.check_password("bob", "new password")
    board.delete_box("bob")
    assert not await store.check_password("bob", "new password")
