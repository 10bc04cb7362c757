"""STLS and implicit TLS over real sockets, verified against a trustme CA.

Covers RFC 2595 (STLS in AUTHORIZATION, CAPA before/after, plaintext policy), the STARTTLS
injection (plaintext pipelined behind STLS is never executed), POP3S, TLS policy (1.2+),
handshake failures and deadlines, and poplib's `stls()`/`POP3_SSL` with verification on.
"""

from __future__ import annotations

import contextlib
import logging
import poplib
import ssl
import warnings

import pytest
import trio
import trio.testing

from firmware.errors import DeviceError
from firmware.pop3.admission import SESSION_RAM
from firmware.pop3.server import TLS_HANDSHAKE_S, TLS_SESSION_RAM
from firmware.security.authlog import parse
from tests.pop3.conftest import ALICE_PASSWORD, BOB_PASSWORD, MESSAGES, RawClient, Server


def auth_events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, str]]:
    return [
        fields
        for record in caplog.records
        if record.name == "dpfw.auth" and (fields := parse(record.getMessage()))["event"] == event
    ]


async def capa(client: RawClient) -> list[bytes]:
    _, body = await client.multi("CAPA")
    return body.split(b"\r\n")[:-2]


async def stls(client: RawClient, context: ssl.SSLContext) -> None:
    assert await client.cmd("STLS") == b"+OK begin TLS negotiation\r\n"
    await client.starttls(context)


async def pop3s(server: Server, context: ssl.SSLContext) -> RawClient:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", server.pop3s_port))
    await client.starttls(context)
    return client


# -- STLS ----------------------------------------------------------------------------------


async def test_stls_upgrades_and_capa_changes_with_the_plaintext_policy(
    tls_pop3: Server, client_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dpfw.auth")
    tls_pop3.profile.set("pop3.plaintext_auth", "tls_only")
    client = await tls_pop3.connect()
    assert (await client.line()).startswith(b"+OK DP-3530")
    before = await capa(client)
    assert b"STLS" in before
    assert b"USER" not in before
    assert b"SASL SCRAM-SHA-256 CRAM-MD5" in before  # no PLAIN without TLS
    assert await client.cmd("USER alice") == (
        b"-ERR [AUTH] USER/PASS are refused without TLS on this device\r\n"
    )
    assert (await client.cmd("AUTH PLAIN")).startswith(b"-ERR [AUTH]")
    await stls(client, client_context)
    after = await capa(client)
    assert b"STLS" not in after
    assert b"USER" in after
    assert b"SASL SCRAM-SHA-256 PLAIN CRAM-MD5" in after
    assert (await client.login_again()).startswith(b"+OK alice has 3 messages")
    head, body = await client.multi("RETR 1")
    assert head.startswith(b"+OK") and body.endswith(b"first body\r\n.\r\n")
    assert await client.cmd("QUIT") == b"+OK signing off (3 messages left)\r\n"
    assert await client.closed()
    [ok] = auth_events(caplog, "auth-ok")
    assert (ok["rip"], ok["box"], ok["mech"], ok["tls"]) == ("127.0.0.1", "alice", "PASS", "yes")


async def test_stls_is_refused_twice_after_login_and_without_a_certificate(
    tls_pop3: Server, pop3: Server, client_context: ssl.SSLContext
) -> None:
    client = await tls_pop3.connect()
    await client.line()
    assert await client.cmd("STLS extra") == b"-ERR STLS takes no arguments\r\n"
    await stls(client, client_context)
    assert await client.cmd("STLS") == b"-ERR TLS is already active\r\n"
    await client.login_again()
    assert await client.cmd("STLS") == b"-ERR STLS is not valid in the transaction state\r\n"

    plain = await pop3.connect()  # a service without a TLS context
    await plain.line()
    assert b"STLS" not in await capa(plain)
    assert (await plain.cmd("STLS")).startswith(b"-ERR STLS is not offered")
    assert (await plain.login_again("bob", BOB_PASSWORD)).startswith(b"+OK")


async def test_plaintext_pipelined_behind_stls_is_never_executed(
    tls_pop3: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """The STARTTLS injection (CVE-2011-0411 class): `STLS\\r\\nCAPA\\r\\n` in one segment."""
    client = await tls_pop3.connect()
    await client.line()
    await client.stream.send_all(b"STLS\r\nCAPA\r\n")
    # Closed without a word: no +OK to a TLS start that will not happen (the protocol library
    # refuses it with plaintext buffered), no handshake, and no answer to CAPA at all.
    assert await client.closed()
    [event] = auth_events(caplog, "tls-fail")
    assert event["reason"] == "plaintext-after-stls"
    assert tls_pop3.service.stats.tls_failures == 1


async def test_plaintext_sent_after_stls_never_reaches_the_protocol(
    tls_pop3: Server, client_context: ssl.SSLContext
) -> None:
    """Bytes that arrive after STLS but before the handshake are read as TLS and fail it."""
    client = await tls_pop3.connect()
    await client.line()
    assert await client.cmd("STLS") == b"+OK begin TLS negotiation\r\n"
    await client.stream.send_all(b"CAPA\r\nUSER alice\r\n")
    received = b""
    with trio.fail_after(5):
        try:
            while data := await client.stream.receive_some(4096):
                received += data
        except trio.BrokenResourceError:
            pass
    assert b"+OK" not in received and b"capability" not in received


async def test_stls_handshake_has_a_deadline(
    tls_pop3: Server, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    tls_pop3.profile.set("pop3.preauth_timeout_s", "3600")
    client = await tls_pop3.connect()
    await client.line()
    assert await client.cmd("STLS") == b"+OK begin TLS negotiation\r\n"
    start = trio.current_time()
    assert await client.closed()  # the client never starts the handshake
    assert trio.current_time() - start == pytest.approx(TLS_HANDSHAKE_S, abs=0.5)
    assert auth_events(caplog, "tls-fail")[0]["reason"] == "handshake-timeout"


# -- implicit TLS (POP3S) ------------------------------------------------------------------


async def test_pop3s_serves_a_whole_session_inside_tls(
    tls_pop3: Server, client_context: ssl.SSLContext
) -> None:
    tls_pop3.profile.set("pop3.plaintext_auth", "tls_only")
    client = await pop3s(tls_pop3, client_context)
    assert isinstance(client.stream, trio.SSLStream)
    assert client.stream.version() in ("TLSv1.2", "TLSv1.3")
    assert (await client.line()).startswith(b"+OK DP-3530")
    caps = await capa(client)
    assert b"STLS" not in caps and b"USER" in caps
    assert b"SASL SCRAM-SHA-256 PLAIN CRAM-MD5" in caps
    assert await client.cmd("STLS") == b"-ERR TLS is already active\r\n"
    assert (await client.login_again()).startswith(b"+OK alice has 3 messages")
    [info] = tls_pop3.service.sessions()
    assert info.tls and info.box == "alice"
    assert tls_pop3.service.stats.tls_sessions == 1
    assert await client.cmd("DELE 1") == b"+OK message 1 deleted\r\n"
    assert await client.cmd("QUIT") == b"+OK signing off (2 messages left)\r\n"
    assert await client.closed()
    assert len(tls_pop3.board.messages("alice")) == 2


async def test_reply_octets_are_counted_once_over_tls(
    tls_pop3: Server, client_context: ssl.SSLContext
) -> None:
    # /metrics' dpfw_pop3_sent_bytes: a RETR body pulled through the store in chunks (every
    # TLS RETR) was counted twice (102,675 for a 50 KiB message).
    tls_pop3.board.deliver("bob", b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 3000)
    client = await pop3s(tls_pop3, client_context)
    received = len(await client.line())
    received += len(await client.cmd("USER bob")) + len(await client.cmd(f"PASS {BOB_PASSWORD}"))
    head, body = await client.multi("RETR 1")
    received += len(head) + len(body) + len(await client.cmd("QUIT"))
    assert len(body) > 65536  # more than one chunk
    assert await client.closed()
    assert tls_pop3.service.stats.bytes_sent == received


async def test_pop3s_drops_plaintext_old_tls_and_silent_clients(
    tls_pop3: Server, caplog: pytest.LogCaptureFixture
) -> None:
    plain = RawClient(await trio.open_tcp_stream("127.0.0.1", tls_pop3.pop3s_port))
    await plain.stream.send_all(b"CAPA\r\n")
    assert await plain.closed()

    old = ssl.create_default_context()
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", tls_pop3.pop3s_port))
    with pytest.raises(trio.BrokenResourceError):
        await client.starttls(old)
    with trio.fail_after(5):
        while len(auth_events(caplog, "tls-fail")) < 2:
            await trio.sleep(0.01)
    assert {e["via"] for e in auth_events(caplog, "tls-fail")} == {"pop3s"}
    assert tls_pop3.service.active_sessions in (0, 1)  # the old-TLS one may still be closing


async def test_a_tls_client_that_closes_without_close_notify_is_a_normal_disconnect(
    tls_pop3: Server, client_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    client = await pop3s(tls_pop3, client_context)
    assert (await client.login()).startswith(b"+OK alice")
    assert isinstance(client.stream, trio.SSLStream)
    await client.stream.transport_stream.aclose()  # no close_notify, no QUIT
    with trio.fail_after(5):
        while tls_pop3.service.active_sessions:
            await trio.sleep(0.01)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(tls_pop3.board.messages("alice")) == 3  # nothing committed


async def test_serving_pop3s_without_a_certificate_is_refused(pop3: Server) -> None:
    with pytest.raises(DeviceError, match="no TLS certificate"):
        await pop3.service.serve("127.0.0.1", 0, implicit_tls=True)


# -- poplib with certificate verification on -----------------------------------------------


def poplib_stls(port: int, context: ssl.SSLContext) -> None:
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        client.stls(context)
        assert isinstance(client.sock, ssl.SSLSocket)
        assert "STLS" not in client.capa()
        client.user("alice")
        client.pass_(ALICE_PASSWORD)
        listing = client.list(2)
        assert isinstance(listing, bytes)
        size = int(listing.split()[2])
        _, lines, octets = client.retr(2)
        assert octets == size and lines[3:5] == [b".", b".."]  # unstuffed by poplib
        client.quit()
    finally:
        client.close()


def poplib_ssl(port: int, context: ssl.SSLContext) -> None:
    client = poplib.POP3_SSL("127.0.0.1", port, context=context, timeout=10)
    try:
        client.user("bob")
        client.pass_(BOB_PASSWORD)
        assert client.stat() == (0, 0)
        client.quit()
    finally:
        client.close()


def poplib_untrusted(port: int) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL("127.0.0.1", port, context=ssl.create_default_context(), timeout=10)


def poplib_wrong_name(port: int, context: ssl.SSLContext) -> None:
    raw = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        raw.host = "printer.example"  # stls() checks the name it connected to
        with pytest.raises(ssl.SSLCertVerificationError):
            raw.stls(context)
    finally:
        with contextlib.suppress(OSError):  # the failed wrap already detached the socket
            raw.close()


async def test_poplib_stls_and_pop3_ssl_verify_the_device_certificate(
    tls_pop3: Server, client_context: ssl.SSLContext
) -> None:
    tls_pop3.profile.set("pop3.plaintext_auth", "tls_only")
    await trio.to_thread.run_sync(poplib_stls, tls_pop3.port, client_context)
    await trio.to_thread.run_sync(poplib_ssl, tls_pop3.pop3s_port, client_context)
    await trio.to_thread.run_sync(poplib_untrusted, tls_pop3.pop3s_port)
    await trio.to_thread.run_sync(poplib_wrong_name, tls_pop3.port, client_context)
    assert MESSAGES  # the box is untouched by these sessions
    assert len(tls_pop3.board.messages("alice")) == 3


async def test_drain_stops_both_listeners_and_ends_tls_sessions(
    tls_pop3: Server, client_context: ssl.SSLContext
) -> None:
    client = await pop3s(tls_pop3, client_context)
    await client.login()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tls_pop3.service.drain, 30.0)
        await trio.sleep(0.1)
        for port in (tls_pop3.port, tls_pop3.pop3s_port):
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", port)
        assert await client.cmd("DELE 1") == b"+OK message 1 deleted\r\n"
        assert (await client.cmd("QUIT")).startswith(b"+OK signing off")
    assert len(tls_pop3.board.messages("alice")) == 2


async def test_tls_sessions_reserve_ram_and_are_refused_without_it(
    tls_pop3: Server, client_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    budget = tls_pop3.budget
    client = await pop3s(tls_pop3, client_context)
    assert (await client.line()).startswith(b"+OK")
    assert budget.used == SESSION_RAM + TLS_SESSION_RAM
    await client.cmd("QUIT")
    assert await client.closed()
    with trio.fail_after(5):
        while budget.used:
            await trio.sleep(0.01)

    hog = budget.reserve(budget.free - SESSION_RAM - TLS_SESSION_RAM // 2, "test hog")
    try:
        client = await tls_pop3.connect()  # a plain session still fits ...
        assert (await client.line()).startswith(b"+OK")
        assert await client.cmd("STLS") == b"+OK begin TLS negotiation\r\n"
        assert await client.closed()  # ... but not its TLS state
        [event] = auth_events(caplog, "limit")
        assert (event["limit"], event["via"]) == ("memory", "stls")
    finally:
        hog.release()


async def test_the_first_reply_after_stls_is_not_held_by_a_delayed_ack(
    tls_pop3: Server,
) -> None:
    """A client with Nagle on (poplib, fetchmail, mpop) sends its first command after STLS at
    once: the server acknowledges the handshake's last record instead of delaying its ACK
    for ~40 ms (the old code: about 42 ms every time). Also for POP3S, where the greeting
    follows the handshake."""
    from benchmarks.pop3_stls_probe import probe_once

    for port, implicit in ((tls_pop3.port, False), (tls_pop3.pop3s_port, True)):
        firsts = []
        for _ in range(5):
            first, _second, version = await trio.to_thread.run_sync(
                probe_once, "127.0.0.1", port, False, implicit
            )
            firsts.append(first)
        firsts.sort()
        assert firsts[2] < 20.0, (implicit, version, firsts)
