"""SASL mechanisms against the RFC known-answer vectors, a test client, and hostile input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.security import sasl
from firmware.security.sasl import (
    AUTHZID_REFUSED,
    BAD_CREDENTIALS,
    CHANNEL_BINDING,
    EXTENSION,
    MALFORMED,
    NO_LEGACY_SECRET,
    OVERSIZED,
    UNEXPECTED_INITIAL_RESPONSE,
    Challenge,
    CramMd5,
    Failure,
    MechanismFinished,
    Plain,
    SaslEncodingError,
    ScramSha256,
    Success,
)


@dataclass(frozen=True)
class Creds:
    """Shaped like firmware.security.credentials.Credentials; keys derived here independently."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes
    legacy_secret: str | None = None


def derive(
    password: str,
    salt: bytes = b"0123456789abcdef",
    iterations: int = 4096,
    legacy: str | None = None,
) -> Creds:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return Creds(salt, iterations, hashlib.sha256(client_key).digest(), server_key, legacy)


def lookup(table: dict[str, Creds]) -> sasl.CredentialsLookup:
    return table.get


# -- base64 rules (RFC 5034 §4) --------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"=AAA",
        b"AAA=BBBB",
        b"A*B=",
        b"QQ",
        b"QQ=",
        b"QQ===",
        b"Q Q=",
        b"QUJD\n",
        b"QUJD=",
        b"=",
        b"QUJD====",
    ],
)
def test_decode_rejects_non_strict_base64(line: bytes) -> None:
    with pytest.raises(SaslEncodingError):
        sasl.decode_response(line)


def test_decode_accepts_strict_base64_and_empty_line() -> None:
    assert sasl.decode_response(b"QUJD") == b"ABC"
    assert sasl.decode_response(b"QQ==") == b"A"
    assert sasl.decode_response(b"") == b""


def test_initial_response_equals_sign_means_empty() -> None:
    assert sasl.decode_initial_response(b"=") == b""
    assert sasl.decode_initial_response(b"QUJD") == b"ABC"
    with pytest.raises(SaslEncodingError):
        sasl.decode_initial_response(b"")
    with pytest.raises(SaslEncodingError):
        sasl.decode_initial_response(b"==")


def test_overlong_response_line_is_refused() -> None:
    sasl.decode_response(b"QUJD" * (sasl.MAX_RESPONSE_LINE // 4))
    with pytest.raises(SaslEncodingError, match="longer"):
        sasl.decode_response(b"QUJD" * (sasl.MAX_RESPONSE_LINE // 4 + 1))


def test_encode_and_cancel() -> None:
    assert sasl.encode(b"") == b""
    assert sasl.encode(b"ABC") == b"QUJD"
    assert sasl.is_cancel(b"*")
    assert not sasl.is_cancel(b"* ")
    assert not sasl.is_cancel(b"Kg==")


@given(st.binary(max_size=300))
def test_encode_decode_round_trip(data: bytes) -> None:
    assert sasl.decode_response(sasl.encode(data)) == data


# -- PLAIN (RFC 4616) ------------------------------------------------------------------------

TIM = {"tim": derive("tanstaaftanstaaf")}


def test_plain_rfc4616_example_with_initial_response() -> None:
    assert Plain(lookup(TIM)).start(b"\0tim\0tanstaaftanstaaf") == Success("tim")


def test_plain_without_initial_response_sends_empty_challenge() -> None:
    mech = Plain(lookup(TIM))
    assert mech.start(None) == Challenge(b"")
    assert mech.step(b"tim\0tim\0tanstaaftanstaaf") == Success("tim")


def test_plain_rfc4616_example_other_authzid_is_refused() -> None:
    table = {"Kurt": derive("xipj3plmq")}
    assert Plain(lookup(table)).start(b"Ursel\0Kurt\0xipj3plmq") == Failure(AUTHZID_REFUSED, "Kurt")


def test_plain_wrong_password_and_unknown_user_fail_alike() -> None:
    assert Plain(lookup(TIM)).start(b"\0tim\0wrong") == Failure(BAD_CREDENTIALS, "tim")
    assert Plain(lookup(TIM)).start(b"\0tom\0tanstaaftanstaaf") == Failure(BAD_CREDENTIALS, "tom")


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"tim",
        b"\0tim",
        b"\0tim\0pw\0",
        b"\0\0pw",
        b"\0tim\0",
        b"\0t\xffm\0pw",
        b"\0tim\x07\0pw",
        b"\0\x00\0pw",
    ],
)
def test_plain_malformed_messages(message: bytes) -> None:
    step = Plain(lookup(TIM)).start(message)
    assert isinstance(step, Failure) and step.reason == MALFORMED


def test_plain_accepts_255_octet_fields_and_refuses_longer() -> None:
    name, password = "u" * 255, "p" * 255
    table = {name: derive(password)}
    message = f"{name}\0{name}\0{password}".encode()
    assert Plain(lookup(table)).start(message) == Success(name)
    step = Plain(lookup(table)).start(message + b"p")
    assert isinstance(step, Failure) and step.reason == OVERSIZED
    step = Plain(lookup(table)).start(b"\0tim\0" + b"p" * 5000)
    assert isinstance(step, Failure) and step.reason == OVERSIZED


def test_plain_password_is_saslprepped() -> None:
    # Stored as NFC "é" (one code point); typed as "e" + combining acute: same password.
    table = {"anna": derive("caf\u00e9")}
    assert Plain(lookup(table)).start("\0anna\0cafe\u0301".encode()) == Success("anna")
    # U+00A0 (no-break space) maps to a space.
    table = {"anna": derive("a b")}
    assert Plain(lookup(table)).start("\0anna\0a\u00a0b".encode()) == Success("anna")


def test_plain_step_after_end_is_our_bug() -> None:
    mech = Plain(lookup(TIM))
    mech.start(b"\0tim\0tanstaaftanstaaf")
    with pytest.raises(MechanismFinished):
        mech.step(b"\0tim\0tanstaaftanstaaf")
    with pytest.raises(MechanismFinished):
        mech.start(None)


# -- SCRAM-SHA-256 (RFC 5802, RFC 7677) ------------------------------------------------------

RFC7677_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC7677_USER = {"user": derive("pencil", RFC7677_SALT, 4096)}
RFC7677_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC7677_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC7677_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC7677_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC7677_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def rfc_scram(table: dict[str, Creds] = RFC7677_USER) -> ScramSha256:
    return ScramSha256(lookup(table), nonce=lambda: RFC7677_SERVER_NONCE)


def test_scram_rfc7677_example() -> None:
    mech = rfc_scram()
    assert mech.start(RFC7677_CLIENT_FIRST) == Challenge(RFC7677_SERVER_FIRST)
    assert mech.step(RFC7677_CLIENT_FINAL) == Challenge(RFC7677_SERVER_FINAL)
    assert mech.step(b"") == Success("user")


def test_scram_without_initial_response() -> None:
    mech = rfc_scram()
    assert mech.start(None) == Challenge(b"")
    assert mech.step(RFC7677_CLIENT_FIRST) == Challenge(RFC7677_SERVER_FIRST)
    assert mech.step(RFC7677_CLIENT_FINAL) == Challenge(RFC7677_SERVER_FINAL)
    assert mech.step(b"") == Success("user")


def test_scram_wrong_password_gets_invalid_proof_then_failure() -> None:
    mech = rfc_scram({"user": derive("not-pencil", RFC7677_SALT, 4096)})
    mech.start(RFC7677_CLIENT_FIRST)
    assert mech.step(RFC7677_CLIENT_FINAL) == Challenge(b"e=invalid-proof")
    assert mech.step(b"") == Failure(BAD_CREDENTIALS, "user")


def test_scram_unknown_user_looks_like_a_wrong_password() -> None:
    first = rfc_scram({}).start(RFC7677_CLIENT_FIRST)
    again = rfc_scram({}).start(RFC7677_CLIENT_FIRST)
    assert isinstance(first, Challenge)
    assert first == again  # a stable fake salt, as a real box would have
    assert re.fullmatch(rb"r=\S+,s=[A-Za-z0-9+/]{22}==,i=4096", first.data)
    mech = rfc_scram({})
    mech.start(RFC7677_CLIENT_FIRST)
    assert mech.step(RFC7677_CLIENT_FINAL) == Challenge(b"e=invalid-proof")
    assert mech.step(b"") == Failure(BAD_CREDENTIALS, "user")


def test_scram_fake_iterations_follow_the_setting() -> None:
    step = ScramSha256(lookup({}), fake_iterations=10000).start(RFC7677_CLIENT_FIRST)
    assert isinstance(step, Challenge) and step.data.endswith(b",i=10000")


def test_scram_tampered_nonce_is_refused() -> None:
    mech = rfc_scram()
    mech.start(RFC7677_CLIENT_FIRST)
    tampered = RFC7677_CLIENT_FINAL.replace(b"k0,p=", b"k1,p=")
    assert mech.step(tampered) == Challenge(b"e=other-error")
    assert mech.step(b"") == Failure(MALFORMED, "user")


def test_scram_channel_binding_mismatch() -> None:
    mech = rfc_scram()
    mech.start(RFC7677_CLIENT_FIRST)
    assert mech.step(RFC7677_CLIENT_FINAL.replace(b"c=biws", b"c=eSws")) == Challenge(
        b"e=channel-bindings-dont-match"
    )


def test_scram_client_asking_for_channel_binding_fails() -> None:
    step = rfc_scram().start(b"p=tls-unique,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert step == Failure(CHANNEL_BINDING)


def test_scram_y_flag_is_accepted_since_no_plus_variant_is_offered() -> None:
    client = ScramClient("user", "pencil", gs2="y,,")
    assert client.run(rfc_scram()) == Success("user")


def test_scram_authzid_must_be_the_user() -> None:
    assert ScramClient("user", "pencil", gs2="n,a=user,").run(rfc_scram()) == Success("user")
    step = rfc_scram().start(b"n,a=admin,n=user,r=abc")
    assert step == Failure(AUTHZID_REFUSED, "user")


def test_scram_username_escaping() -> None:
    table = {"a,b=c": derive("pw")}
    assert ScramClient("a,b=c", "pw").run(ScramSha256(lookup(table))) == Success("a,b=c")


@pytest.mark.parametrize(
    "client_first",
    [
        b"",
        b"n,,n=user",
        b"x,,n=user,r=abc",
        b"n,b=user,n=user,r=abc",
        b"n,,n=us=2Xer,r=abc",  # only =2C and =3D are escapes
        b"n,,n=user=,r=abc",
        b"n,,n=,r=abc",
        b"n,,n=user,r=",
        b"n,,r=abc,n=user",
        b"n,,n=user,r=abc,1=x",
        b"n,,n=user,r=a\x7fc",
        b"n,,n=\xff,r=abc",
        b"n,,n=us\x00er,r=abc",
        b"n,a=,n=user,r=abc",
    ],
)
def test_scram_malformed_client_first(client_first: bytes) -> None:
    step = rfc_scram().start(client_first)
    assert isinstance(step, Failure) and step.reason == MALFORMED


@pytest.mark.parametrize(
    "client_first", [b"n,,m=ext,n=user,r=abc", RFC7677_CLIENT_FIRST + b",x=1,m=ext"]
)
def test_scram_any_m_attribute_in_client_first_fails(client_first: bytes) -> None:
    # RFC 5802 §5.1: "m" is reserved; its presence MUST cause authentication failure.
    step = rfc_scram().start(client_first)
    assert isinstance(step, Failure) and step.reason == EXTENSION


@pytest.mark.parametrize("extension", ["m=foo", "x=1,m=foo", "m="])
def test_scram_an_m_attribute_in_client_final_fails_even_with_a_valid_proof(
    extension: str,
) -> None:
    # Public bug report: `c=biws,r=<nonce>,m=foo,p=<valid proof>` logged in. The proof is
    # right (the client signs the m attribute into AuthMessage), yet RFC 5802 §5.1 says any
    # `m` MUST fail; §7 names the error value for it.
    client = ScramClient("user", "pencil", final_extension=extension)
    assert client.run(ScramSha256(lookup({"user": derive("pencil")}))) == Failure(EXTENSION, "user")
    assert client.server_final == b"e=extensions-not-supported"
    control = ScramClient("user", "pencil", final_extension="x=1")  # other extensions: fine
    assert control.run(ScramSha256(lookup({"user": derive("pencil")}))) == Success("user")


def test_scram_client_first_extensions_are_ignored() -> None:
    step = rfc_scram().start(RFC7677_CLIENT_FIRST + b",x=future")
    assert isinstance(step, Challenge) and step.data.startswith(b"r=rOprNGfwEbeRWgbNEkqO%")


@pytest.mark.parametrize(
    "client_final",
    [
        b"",
        b"c=biws",
        b"r=x,c=biws,p=AAAA",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=not*base64",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,77=x,p=AAAA",
        b"c=bi\xffws,r=x,p=AAAA",
    ],
)
def test_scram_malformed_client_final_gets_an_error_value(client_final: bytes) -> None:
    mech = rfc_scram()
    mech.start(RFC7677_CLIENT_FIRST)
    step = mech.step(client_final)
    assert isinstance(step, Challenge) and step.data.startswith(b"e=")
    assert mech.step(b"") == Failure(MALFORMED, "user")


def test_scram_oversized_messages() -> None:
    step = rfc_scram().start(RFC7677_CLIENT_FIRST + b",x=" + b"a" * sasl.MAX_RESPONSE_OCTETS)
    assert step == Failure(OVERSIZED)
    mech = rfc_scram()
    mech.start(RFC7677_CLIENT_FIRST)
    assert mech.step(b"c=" + b"A" * 5000) == Challenge(b"e=other-error")
    assert mech.step(b"") == Failure(OVERSIZED, "user")


def test_scram_large_but_honest_client_final_is_accepted() -> None:
    # RFC 5034 §4: continuation lines may be long; a 2 KB client-final (extensions) works.
    client = ScramClient("user", "pencil", final_extension="x=" + "y" * 2000)
    assert client.run(rfc_scram()) == Success("user")


def test_scram_non_empty_answer_to_server_final_fails() -> None:
    mech = rfc_scram()
    mech.start(RFC7677_CLIENT_FIRST)
    mech.step(RFC7677_CLIENT_FINAL)
    assert mech.step(b"v=extra") == Failure(MALFORMED, "user")
    with pytest.raises(MechanismFinished):
        mech.step(b"")


class ScramClient:
    """A small independent SCRAM-SHA-256 client (RFC 5802 §3), for round trips."""

    def __init__(self, user: str, password: str, *, gs2: str = "n,,", final_extension: str = ""):
        self.user, self.password, self.gs2 = user, password, gs2
        self.final_extension = final_extension
        self.nonce = "fyko+d2lbbFgONRv9qkxdawL"
        self.server_final = b""

    def run(self, mech: ScramSha256) -> sasl.Step:
        name = self.user.replace("=", "=3D").replace(",", "=2C")
        bare = f"n={name},r={self.nonce}"
        step = mech.start(f"{self.gs2}{bare}".encode())
        assert isinstance(step, Challenge), step
        server_first = step.data.decode()
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        cbind = base64.b64encode(self.gs2.encode()).decode()
        without_proof = f"c={cbind},r={attrs['r']}"
        if self.final_extension:
            without_proof += "," + self.final_extension
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = base64.b64encode(
            bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        ).decode()
        step = mech.step(f"{without_proof},p={proof}".encode())
        assert isinstance(step, Challenge), step
        self.server_final = step.data
        if step.data.startswith(b"v="):
            server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
            expected = hmac.new(server_key, auth_message, hashlib.sha256).digest()
            assert base64.b64decode(step.data[2:]) == expected  # the server proves itself too
        return mech.step(b"")


passwords = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@settings(max_examples=15, deadline=None)
@given(user=st.from_regex(r"[!-~]{1,40}", fullmatch=True), password=passwords)
def test_scram_round_trip_any_ascii_user_and_password(user: str, password: str) -> None:
    table = {user: derive(password)}
    assert ScramClient(user, password).run(ScramSha256(lookup(table))) == Success(user)
    assert ScramClient(user, password + "x").run(ScramSha256(lookup(table))) == Failure(
        BAD_CREDENTIALS, user
    )


# -- CRAM-MD5 (RFC 2195) ---------------------------------------------------------------------

RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
TIM_LEGACY = {"tim": derive("tanstaaftanstaaf", legacy="tanstaaftanstaaf")}


def rfc_cram(table: dict[str, Creds] = TIM_LEGACY) -> CramMd5:
    return CramMd5(lookup(table), "postoffice.reston.mci.net", challenge=lambda: RFC2195_CHALLENGE)


def test_cram_md5_rfc2195_example() -> None:
    mech = rfc_cram()
    step = mech.start(None)
    assert step == Challenge(RFC2195_CHALLENGE)
    assert base64.b64encode(RFC2195_CHALLENGE) == (
        b"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
    )
    assert mech.step(b"tim b913a602c7eda7a495b4e6e7334d3890") == Success("tim")


def test_cram_md5_upper_case_hex_is_accepted() -> None:
    mech = rfc_cram()
    mech.start(None)
    assert mech.step(b"tim B913A602C7EDA7A495B4E6E7334D3890") == Success("tim")


def test_cram_md5_failures() -> None:
    for response, expected in [
        (b"tim b913a602c7eda7a495b4e6e7334d3891", Failure(BAD_CREDENTIALS, "tim")),
        (b"tom b913a602c7eda7a495b4e6e7334d3890", Failure(NO_LEGACY_SECRET, "tom")),
        (b"timb913a602c7eda7a495b4e6e7334d3890", Failure(MALFORMED)),
        (b"tim b913a602c7eda7a495b4e6e7334d389", Failure(MALFORMED)),
        (b" b913a602c7eda7a495b4e6e7334d3890", Failure(MALFORMED)),
        (b"t\xffm b913a602c7eda7a495b4e6e7334d3890", Failure(MALFORMED)),
        (b"t" * 300 + b" b913a602c7eda7a495b4e6e7334d3890", Failure(OVERSIZED)),
    ]:
        mech = rfc_cram()
        mech.start(None)
        assert mech.step(response) == expected, response


def test_cram_md5_only_for_boxes_with_a_legacy_secret() -> None:
    mech = rfc_cram({"tim": derive("tanstaaftanstaaf")})
    mech.start(None)
    assert mech.step(b"tim b913a602c7eda7a495b4e6e7334d3890") == Failure(NO_LEGACY_SECRET, "tim")


def test_cram_md5_refuses_an_initial_response() -> None:
    assert rfc_cram().start(b"tim") == Failure(UNEXPECTED_INITIAL_RESPONSE)


def test_cram_md5_challenges_are_unique_msg_ids() -> None:
    seen = set()
    for _ in range(200):
        step = CramMd5(lookup(TIM_LEGACY), "dp3530.local").start(None)
        assert isinstance(step, Challenge)
        assert re.fullmatch(rb"<\d+\.\d+@dp3530\.local>", step.data)
        seen.add(step.data)
    assert len(seen) == 200


def test_cram_md5_round_trip_with_default_challenge() -> None:
    mech = CramMd5(lookup(TIM_LEGACY), "dp3530.local")
    step = mech.start(None)
    assert isinstance(step, Challenge)
    digest = hmac.new(b"tanstaaftanstaaf", step.data, hashlib.md5).hexdigest()
    assert mech.step(f"tim {digest}".encode()) == Success("tim")


# -- offering and making mechanisms ----------------------------------------------------------


def test_offered_mechanisms_follow_policy() -> None:
    offered = sasl.offered_mechanisms
    assert offered(tls_active=False, plaintext_auth="tls_only", legacy=False) == ("SCRAM-SHA-256",)
    assert offered(tls_active=True, plaintext_auth="tls_only", legacy=False) == (
        "SCRAM-SHA-256",
        "PLAIN",
    )
    assert offered(tls_active=False, plaintext_auth="always", legacy=True) == (
        "SCRAM-SHA-256",
        "PLAIN",
        "CRAM-MD5",
    )


def test_new_mechanism_only_makes_offered_ones_case_insensitively() -> None:
    offered = ("SCRAM-SHA-256", "PLAIN")
    make = sasl.new_mechanism
    plain = make("plain", offered=offered, credentials_for=lookup(TIM), hostname="h")
    assert isinstance(plain, Plain)
    scram = make("Scram-Sha-256", offered=offered, credentials_for=lookup(TIM), hostname="h")
    assert isinstance(scram, ScramSha256)
    assert make("CRAM-MD5", offered=offered, credentials_for=lookup(TIM), hostname="h") is None
    assert make("LOGIN", offered=offered, credentials_for=lookup(TIM), hostname="h") is None
    cram = make("cram-md5", offered=("CRAM-MD5",), credentials_for=lookup(TIM), hostname="h")
    assert isinstance(cram, CramMd5)


# -- hostile input never raises --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["PLAIN", "SCRAM-SHA-256", "CRAM-MD5"]),
    st.lists(st.binary(max_size=300), max_size=4),
)
def test_any_bytes_give_steps_never_exceptions(name: str, messages: list[bytes]) -> None:
    mech = sasl.new_mechanism(
        name, offered=sasl.ALL_MECHANISMS, credentials_for=lookup(TIM_LEGACY), hostname="h"
    )
    assert mech is not None
    step = mech.start(messages[0] if messages else None)
    for message in messages[1:]:
        if not isinstance(step, Challenge):
            break
        step = mech.step(message)
    assert isinstance(step, Challenge | Success | Failure)


def test_scram_keys_match_independent_derivation() -> None:
    creds = derive("pencil", RFC7677_SALT, 4096)
    assert sasl.scram_keys("pencil", RFC7677_SALT, 4096) == (creds.stored_key, creds.server_key)
    assert sasl.password_matches(creds, "pencil")
    assert not sasl.password_matches(creds, "Pencil")
    assert not sasl.password_matches(creds, "pen\x00cil")  # SASLprep refuses: no match, no raise


def test_device_credentials_fit_the_mechanisms() -> None:
    """Once firmware.security.credentials exists, its records must work with every mechanism."""
    credentials = pytest.importorskip("firmware.security.credentials")
    creds = credentials.make_credentials("pencil", legacy=True)
    assert creds.iterations >= sasl.MIN_ITERATIONS
    assert sasl.password_matches(creds, "pencil")
    client = ScramClient("user", "pencil")
    assert client.run(ScramSha256({"user": creds}.get)) == Success("user")
    assert Plain({"user": creds}.get).start(b"\0user\0pencil") == Success("user")


def test_plain_accepts_records_made_without_saslprep() -> None:
    table = {"anna": derive("cafe\u0301")}  # stored as typed (decomposed), not prepared
    assert Plain(lookup(table)).start("\0anna\0cafe\u0301".encode()) == Success("anna")
    assert Plain(lookup(table)).start(b"\0anna\0cafe") == Failure(BAD_CREDENTIALS, "anna")


def test_cram_md5_challenge_keeps_a_msg_id_shape_for_odd_host_names() -> None:
    for hostname, host in [("kopierer-büro 2", "kopierer-bro2"), ("<>", "localhost")]:
        step = CramMd5(lookup(TIM_LEGACY), hostname).start(None)
        assert isinstance(step, Challenge)
        assert re.fullmatch(rb"<\d+\.\d+@" + re.escape(host.encode()) + rb">", step.data)
