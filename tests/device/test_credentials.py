"""Credentials: SCRAM-SHA-256 keys from PBKDF2, checked against RFC 7677's test vector."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from firmware.device.credentials import (
    MIN_ITERATIONS,
    Credentials,
    client_key,
    make_credentials,
    salted_password,
    server_key,
    stored_key,
    verify_password,
)


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
    assert not verify_password(creds, "passwort")


def test_too_few_iterations_refused() -> None:
    with pytest.raises(ValueError, match="4096"):
        make_credentials("x", iterations=MIN_ITERATIONS - 1)


def test_frozen() -> None:
    creds = make_credentials("x")
    assert isinstance(creds, Credentials)
    with pytest.raises(AttributeError):
        creds.iterations = 1  # type: ignore[misc]
