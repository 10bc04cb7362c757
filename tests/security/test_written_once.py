"""Concepts written once: SCRAM key derivation and the cleaning of a host name for a msg-id.

The SASL mechanisms, new credential records and password checks all derive keys through
firmware.security.credentials.derive_keys; the APOP greeting and the CRAM-MD5 challenge clean the
host name through firmware.security.sasl.safe_hostname. A second copy that drifts (another
character set, another length) would make one path refuse what the other accepts.
"""

from __future__ import annotations

import re

import pytest

from firmware.pop3 import auth
from firmware.security import credentials, sasl
from firmware.security.sasl import CramMd5, safe_hostname


def test_the_pop3_greeting_cleans_host_names_with_the_sasl_function() -> None:
    assert auth.safe_hostname is sasl.safe_hostname


@pytest.mark.parametrize(
    ("hostname", "cleaned"),
    [("dp 35<30>.local", "dp3530.local"), ("<>", "localhost"), ("a" * 500, "a" * 64)],
)
def test_apop_and_cram_md5_put_the_same_host_in_their_msg_ids(hostname: str, cleaned: str) -> None:
    assert safe_hostname(hostname) == cleaned
    assert auth.make_apop_timestamp(hostname).endswith(f"@{cleaned}>")
    step = CramMd5(lambda _name: None, hostname).start(None)
    assert isinstance(step, sasl.Challenge)
    assert re.fullmatch(rb"<\d+\.\d+@" + re.escape(cleaned.encode()) + rb">", step.data)


def test_one_scram_key_derivation() -> None:
    salt = bytes(range(16))
    record = credentials.make_credentials("pencil")
    keys = credentials.derive_keys("pencil", record.salt, record.iterations)
    assert keys == (record.stored_key, record.server_key)
    assert sasl.scram_keys("pencil", salt, 4096) == credentials.derive_keys("pencil", salt, 4096)
    assert sasl.password_matches(record, "pencil") and not sasl.password_matches(record, "pen")
