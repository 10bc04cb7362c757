"""APOP pieces: the RFC 1939 known answer, timestamps, host name hygiene."""

from __future__ import annotations

import re

from firmware.pop3.auth import apop_digest, apop_matches, make_apop_timestamp, safe_hostname

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
