"""RFC 5034 AUTH end to end over real sockets: PLAIN, SCRAM-SHA-256, CRAM-MD5.

poplib (3.11) has no AUTH, so the exchanges are driven raw. The SCRAM client here is written
from RFC 5802 with hashlib/hmac only, independent of the server's code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import ssl

import pytest

from firmware.pop3.protocol import SASL_LINE_LIMIT
from firmware.security.authlog import parse
from tests.pop3.conftest import ALICE_PASSWORD, BOB_PASSWORD, RawClient, Server


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def challenge(reply: bytes) -> bytes:
    """The decoded data of a `+ base64` continuation line."""
    assert reply.startswith(b"+ ") and reply.endswith(b"\r\n"), reply
    return base64.b64decode(reply[2:-2], validate=True)


def plain(box: str, password: str, authzid: str = "") -> str:
    return b64(f"{authzid}\0{box}\0{password}")


class ScramClient:
    """The client side of SCRAM-SHA-256 without channel binding (RFC 5802 §3, RFC 7677)."""

    def __init__(self, user: str, password: str, nonce: str = "rOprNGfwEbeRWgbNEkqO") -> None:
        self.password = password
        self.first_bare = f"n={user},r={nonce}"
        self.nonce = nonce
        self.expected_v = b""

    def first(self) -> str:
        return b64("n,," + self.first_bare)

    def final(self, server_first: bytes) -> str:
        attrs = dict(item.split("=", 1) for item in server_first.decode().split(","))
        assert attrs["r"].startswith(self.nonce) and len(attrs["r"]) > len(self.nonce)
        salted = hashlib.pbkdf2_hmac(
            "sha256", self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        without_proof = f"c={b64('n,,')},r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.expected_v = b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, "sha256"))
        return f"{without_proof},p={b64(proof)}"


async def greeted(server: Server) -> RawClient:
    client = await server.connect()
    assert (await client.line()).startswith(b"+OK")
    return client


def auth_log(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    return [parse(r.getMessage()) for r in caplog.records if r.name == "dpfw.auth"]


FAILED = b"-ERR [AUTH] invalid mailbox name or password\r\n"


async def test_auth_without_argument_lists_the_mechanisms(pop3: Server) -> None:
    client = await greeted(pop3)
    head, body = await client.multi("AUTH")
    assert head == b"+OK SASL mechanisms follow\r\n"
    assert body == b"SCRAM-SHA-256\r\nPLAIN\r\nCRAM-MD5\r\n.\r\n"
    pop3.profile.set("pop3.apop", "false")
    pop3.profile.set("pop3.plaintext_auth", "tls_only")
    assert (await client.multi("AUTH"))[1] == b"SCRAM-SHA-256\r\n.\r\n"


async def test_plain_with_initial_response_then_capa_still_lists_sasl(
    pop3: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dpfw.auth")
    client = await greeted(pop3)
    reply = await client.cmd(f"AUTH PLAIN {plain('alice', ALICE_PASSWORD)}")
    assert reply.startswith(b"+OK alice has 3 messages")
    _, caps = await client.multi("CAPA")
    assert b"\r\nSASL SCRAM-SHA-256 PLAIN CRAM-MD5\r\n" in caps
    assert (await client.cmd("AUTH PLAIN")).startswith(b"-ERR AUTH is not valid")
    assert (await client.cmd("STAT")).startswith(b"+OK 3 ")
    [ok] = auth_log(caplog)
    assert (ok["event"], ok["box"], ok["mech"]) == ("auth-ok", "alice", "PLAIN")


async def test_plain_by_continuation_and_with_the_box_as_authzid(pop3: Server) -> None:
    client = await greeted(pop3)
    assert await client.cmd("auth plain") == b"+ \r\n"
    assert (await client.cmd(plain("bob", BOB_PASSWORD, authzid="bob"))).startswith(b"+OK bob")


async def test_plain_failures_wrong_password_other_authzid_empty_then_success(
    pop3: Server, caplog: pytest.LogCaptureFixture
) -> None:
    pop3.profile.set("pop3.max_auth_failures", "10")
    client = await greeted(pop3)
    assert await client.cmd(f"AUTH PLAIN {plain('alice', 'wrong')}") == FAILED
    assert await client.cmd(f"AUTH PLAIN {plain('bob', BOB_PASSWORD, 'alice')}") == FAILED
    assert await client.cmd(f"AUTH PLAIN {plain('nosuch', 'x')}") == FAILED
    assert await client.cmd("AUTH PLAIN =") == FAILED  # an empty message is malformed
    assert await client.cmd(f"AUTH PLAIN {plain('alice', ALICE_PASSWORD)}") != FAILED
    reasons = [(e["event"], e.get("reason")) for e in auth_log(caplog) if e["event"] != "auth-ok"]
    assert reasons == [
        ("auth-fail", "bad-credentials"),
        ("auth-fail", "authzid-refused"),
        ("auth-fail", "bad-credentials"),
        ("auth-fail", "malformed"),
    ]


async def test_scram_sha_256_with_initial_response_proves_both_sides(pop3: Server) -> None:
    client = await greeted(pop3)
    scram = ScramClient("alice", ALICE_PASSWORD)
    server_first = challenge(await client.cmd(f"AUTH SCRAM-SHA-256 {scram.first()}"))
    assert b",i=4096" in server_first
    server_final = challenge(await client.cmd(b64(scram.final(server_first))))
    assert server_final == scram.expected_v  # the server knows alice's keys too
    assert (await client.cmd("")).startswith(b"+OK alice has 3 messages")


async def test_scram_without_initial_response_and_its_failures(pop3: Server) -> None:
    pop3.profile.set("pop3.max_auth_failures", "10")
    client = await greeted(pop3)
    assert await client.cmd("AUTH SCRAM-SHA-256") == b"+ \r\n"
    scram = ScramClient("bob", BOB_PASSWORD)
    server_first = challenge(await client.cmd(scram.first()))
    assert challenge(await client.cmd(b64(scram.final(server_first)))) == scram.expected_v
    assert (await client.cmd("")).startswith(b"+OK bob has 0 messages")
    await client.cmd("QUIT")

    for user, password in (("bob", "wrong"), ("nosuch", "whatever")):
        client = await greeted(pop3)
        scram = ScramClient(user, password)
        server_first = challenge(await client.cmd(f"AUTH SCRAM-SHA-256 {scram.first()}"))
        assert b",i=4096" in server_first  # an unknown box looks like a real one
        assert challenge(await client.cmd(b64(scram.final(server_first)))) == b"e=invalid-proof"
        assert await client.cmd("") == FAILED


async def test_cram_md5_for_a_box_with_a_legacy_secret_only(pop3: Server) -> None:
    client = await greeted(pop3)
    data = challenge(await client.cmd("AUTH CRAM-MD5"))
    assert data.startswith(b"<") and data.endswith(b">")
    digest = hmac.new(ALICE_PASSWORD.encode(), data, "md5").hexdigest()
    assert (await client.cmd(b64(f"alice {digest}"))).startswith(b"+OK alice has 3")

    other = await greeted(pop3)
    data = challenge(await other.cmd("AUTH CRAM-MD5"))
    digest = hmac.new(BOB_PASSWORD.encode(), data, "md5").hexdigest()
    # bob keeps no legacy secret: told so, and not counted as a failed login
    assert await other.cmd(b64(f"bob {digest}")) == (
        b"-ERR [AUTH] no APOP/CRAM-MD5 secret is kept for bob; log in another way (see CAPA)\r\n"
    )
    assert pop3.service.stats.logins_failed == 0
    pop3.profile.set("pop3.apop", "false")
    assert (await other.cmd("AUTH CRAM-MD5")).startswith(b"-ERR mechanism not offered")


async def test_cancel_and_unknown_mechanisms_leave_the_session_usable(pop3: Server) -> None:
    client = await greeted(pop3)
    assert await client.cmd("AUTH PLAIN") == b"+ \r\n"
    assert await client.cmd("*") == b"-ERR AUTH cancelled\r\n"
    assert await client.cmd("AUTH SCRAM-SHA-256") == b"+ \r\n"
    assert await client.cmd("*") == b"-ERR AUTH cancelled\r\n"
    assert (await client.cmd("AUTH GSSAPI")).startswith(b"-ERR mechanism not offered")
    assert (await client.cmd("AUTH PLAIN a b")).startswith(b"-ERR AUTH takes")
    assert pop3.service.stats.logins_failed == 0
    assert (await client.login_again()).startswith(b"+OK alice")


@pytest.mark.parametrize("bad", ["=AAA", "AAA=BBB", "A*B", "YWxpY2U", "YQ="])
async def test_malformed_base64_is_rejected_not_skipped(pop3: Server, bad: str) -> None:
    client = await greeted(pop3)
    assert await client.cmd(f"AUTH PLAIN {bad}") == FAILED
    assert await client.cmd("AUTH PLAIN") == b"+ \r\n"
    assert await client.cmd(bad) == FAILED
    assert (await client.login_again()).startswith(b"+OK")


async def test_long_responses_inside_an_exchange_and_oversized_ones(pop3: Server) -> None:
    long_password = "p" * 255  # RFC 4616: up to 255 octets per field must work
    pop3.board.set_box_password("bob", long_password)
    client = await greeted(pop3)
    response = plain("bob", long_password)
    assert 255 < len(response) + 2 <= SASL_LINE_LIMIT
    assert (await client.cmd(response)).startswith(b"-ERR line too long")  # not in AUTH
    assert await client.cmd("AUTH PLAIN") == b"+ \r\n"
    assert (await client.cmd(response)).startswith(b"+OK bob")
    await client.cmd("QUIT")

    client = await greeted(pop3)
    assert await client.cmd("AUTH PLAIN") == b"+ \r\n"
    assert await client.cmd("A" * (SASL_LINE_LIMIT + 100)) == FAILED
    assert await client.cmd("NOOP") == b"-ERR NOOP is not valid in the authorization state\r\n"
    assert await client.cmd("AUTH PLAIN") == b"+ \r\n"
    assert await client.cmd(plain("x", "y" * 300)) == FAILED  # decodes, but a field > 255


async def test_plain_inside_stls_under_the_tls_only_policy(
    tls_pop3: Server, client_context: ssl.SSLContext
) -> None:
    tls_pop3.profile.set("pop3.plaintext_auth", "tls_only")
    client = await greeted(tls_pop3)
    assert (await client.cmd(f"AUTH PLAIN {plain('bob', BOB_PASSWORD)}")).startswith(
        b"-ERR [AUTH] PLAIN is refused without TLS"
    )
    assert await client.cmd("STLS") == b"+OK begin TLS negotiation\r\n"
    await client.starttls(client_context)
    assert (await client.cmd(f"AUTH PLAIN {plain('bob', BOB_PASSWORD)}")).startswith(b"+OK bob")
