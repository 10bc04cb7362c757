"""Credentials: SCRAM-SHA-256 keys from PBKDF2, checked against RFC 7677's test vector."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from firmware.errors import DeviceError
from firmware.security.credentials import (
    MIN_ITERATIONS,
    SALT_BYTES,
    Credentials,
    client_key,
    make_credentials,
    prepare_password,
    salted_password,
    server_key,
    stored_key,
    verify_password,
)
from firmware.security.sasl import ScramSha256, Success
from tests.security.test_sasl import ScramClient


def test_rfc7677_example_keys() -> None:
    # RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    salted = salted_password("pencil", salt, 4096)
    client_first_bare = b"n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    client_final_bare = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = client_first_bare + b"," + server_first + b"," + client_final_bare
    signature = hmac.digest(stored_key(client_key(salted)), auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key(salted), signature, strict=True))
    assert base64.b64encode(proof) == b"dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    server_signature = hmac.digest(server_key(salted), auth_message, "sha256")
    assert base64.b64encode(server_signature) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_make_and_verify() -> None:
    creds = make_credentials("s3cret")
    assert creds.iterations >= 4096
    assert creds.legacy_secret is None
    assert verify_password(creds, "s3cret")
    assert not verify_password(creds, "s3cret ")
    assert not verify_password(creds, "")


def test_keys_match_the_definition() -> None:
    creds = make_credentials("pw")
    salted = hashlib.pbkdf2_hmac("sha256", b"pw", creds.salt, creds.iterations)
    assert creds.stored_key == hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    assert creds.server_key == hmac.digest(salted, b"Server Key", "sha256")


def test_fresh_salt_each_time() -> None:
    a, b = make_credentials("same"), make_credentials("same")
    assert a.salt != b.salt and a.stored_key != b.stored_key


def test_legacy_secret_only_when_asked() -> None:
    assert make_credentials("x", legacy=True).legacy_secret == "x"
    assert make_credentials("x").legacy_secret is None


def test_non_ascii_password() -> None:
    creds = make_credentials("pässwörd")
    assert verify_password(creds, "pässwörd")
    assert verify_password(creds, "pa\u0308sswo\u0308rd")  # decomposed: the same after NFKC
    assert not verify_password(creds, "passwort")


def test_keys_are_made_from_the_saslprepped_password() -> None:
    # RFC 4013 §3: "I<U+00AD>X" -> "IX" (soft hyphen mapped to nothing).
    creds = make_credentials("I\u00adX")
    salted = hashlib.pbkdf2_hmac("sha256", b"IX", creds.salt, creds.iterations)
    assert creds.stored_key == stored_key(client_key(salted))
    assert verify_password(creds, "IX") and verify_password(creds, "I\u00adX")
    # RFC 4013 §3: U+2168 ROMAN NUMERAL NINE -> "IX"; U+00AA -> "a".
    assert verify_password(creds, "\u2168")
    assert verify_password(make_credentials("\u00aa-pw"), "a-pw")
    assert not verify_password(creds, "I-X")


def test_legacy_secret_is_the_password_as_typed() -> None:
    # APOP and CRAM-MD5 clients digest the password unprepared.
    assert make_credentials("I\u00adX", legacy=True).legacy_secret == "I\u00adX"


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("bell\x07pw", "U\\+0007 is not allowed"),  # RFC 4013 §3 example: a control character
        ("pw\ue000x", "U\\+E000 is not allowed"),  # private use
        ("pw\u0221x", "U\\+0221 is unassigned"),  # unassigned in Unicode 3.2: stored strings refuse
        ("\u0627pw", "right-to-left"),  # bidi rule
        ("\u00ad\u00ad", "empty after SASLprep"),
    ],
)
def test_a_password_saslprep_refuses_is_a_clear_error(password: str, why: str) -> None:
    with pytest.raises(DeviceError, match=f"the password cannot be used: .*{why}"):
        make_credentials(password)


def test_old_records_made_without_saslprep_still_verify() -> None:
    # A record whose keys came from the raw string (before passwords were prepared).
    salt = b"s" * SALT_BYTES
    for raw in ("I\u00adX", "pw\x07bell"):
        salted = salted_password(raw, salt, MIN_ITERATIONS)
        old = Credentials(salt, MIN_ITERATIONS, stored_key(client_key(salted)), server_key(salted))
        assert verify_password(old, raw)
        assert not verify_password(old, "wrong")


def test_prepare_password_is_what_scram_clients_send() -> None:
    assert prepare_password("I\u00adX") == "IX"
    assert prepare_password("p\u00e4ss") == prepare_password("pa\u0308ss") == "p\u00e4ss"
    assert prepare_password("plain ascii") == "plain ascii"


@pytest.mark.parametrize(("typed", "client_sends"), [("I\u00adX", "IX"), ("pässwörd", "pässwörd")])
def test_scram_with_a_prepared_password(typed: str, client_sends: str) -> None:
    # The SCRAM client SASLprep's the password before Hi() (RFC 5802 §2.2).
    creds = make_credentials(typed)
    assert ScramClient("alice", client_sends).run(ScramSha256({"alice": creds}.get)) == Success(
        "alice"
    )


def test_too_few_iterations_refused() -> None:
    with pytest.raises(ValueError, match="4096"):
        make_credentials("x", iterations=MIN_ITERATIONS - 1)


def test_frozen() -> None:
    creds = make_credentials("x")
    assert isinstance(creds, Credentials)
    with pytest.raises(AttributeError):
        creds.iterations = 1  # type: ignore[misc]
