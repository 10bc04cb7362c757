"""Device certificates and the TLS policy, checked with real handshakes (in-memory BIOs)."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl

import pytest
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.security import tls
from firmware.security.tls import TlsError

HOST = "dp3530.local"


@pytest.fixture(scope="module")
def device_pair() -> tuple[str, str]:
    return tls.make_self_signed(HOST)


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = HOST
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a full TLS handshake between two SSLObjects over memory BIOs (no sockets needed)."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, obj, out, peer_in in (
            ("client", client, c_out, s_in),
            ("server", server, s_out, c_in),
        ):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            if data := out.read():
                peer_in.write(data)
        if all(done.values()):
            return server, client
    raise AssertionError("handshake did not finish")


def trusting(cert_pem: str) -> ssl.SSLContext:
    client = ssl.create_default_context(cadata=cert_pem)
    return client


# -- making and describing ---------------------------------------------------------------


def test_self_signed_certificate_names_the_host(device_pair: tuple[str, str]) -> None:
    cert_pem, key_pem = device_pair
    info = tls.describe(cert_pem)
    assert f"CN={HOST}" in info.subject
    assert info.san == (f"DNS:{HOST}", "DNS:localhost", "IP:127.0.0.1", "IP:::1")
    assert info.self_signed and info.key == "EC secp256r1"
    assert info.not_after - info.not_before == dt.timedelta(days=tls.SELF_SIGNED_DAYS)
    assert info.not_before <= dt.datetime.now(dt.UTC) < info.not_after
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    expected = cert.fingerprint(hashes.SHA256()).hex().upper()
    assert info.sha256_fingerprint.replace(":", "") == expected
    assert len(info.sha256_fingerprint) == 32 * 3 - 1
    assert "PRIVATE KEY" in key_pem and "ENCRYPTED" not in key_pem
    assert any(line.startswith("sha256:") for line in info.lines())


def test_self_signed_for_an_address_uses_an_ip_name() -> None:
    cert_pem, _ = tls.make_self_signed("192.0.2.7", loopback=False)
    assert tls.describe(cert_pem).san == ("IP:192.0.2.7",)
    cert_pem, _ = tls.make_self_signed("127.0.0.1")  # named once, not twice
    assert tls.describe(cert_pem).san == ("DNS:localhost", "IP:127.0.0.1", "IP:::1")


@pytest.mark.parametrize("name", [HOST, "localhost", "127.0.0.1", "::1"])
def test_self_signed_certificate_verifies_for_the_host_and_loopback(
    device_pair: tuple[str, str], name: str
) -> None:
    """What a lab client checks: curl/poplib with the certificate as CA, hostname checked."""
    server_ctx = tls.server_context(*device_pair)
    _, client = handshake(server_ctx, trusting(device_pair[0]), hostname=name)
    assert client.version() in ("TLSv1.2", "TLSv1.3")


def test_without_loopback_names_a_loopback_client_cannot_verify() -> None:
    pair = tls.make_self_signed(HOST, loopback=False)
    assert tls.describe(pair[0]).san == (f"DNS:{HOST}",)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(tls.server_context(*pair), trusting(pair[0]), hostname="127.0.0.1")


def test_self_signed_certificates_differ_each_time(device_pair: tuple[str, str]) -> None:
    again = tls.make_self_signed(HOST)
    assert again[1] != device_pair[1]
    assert (
        tls.describe(again[0]).sha256_fingerprint != tls.describe(device_pair[0]).sha256_fingerprint
    )


@pytest.mark.parametrize("hostname", ["", "a" * 254])
def test_self_signed_refuses_impossible_host_names(hostname: str) -> None:
    with pytest.raises(TlsError, match="host name"):
        tls.make_self_signed(hostname)


def test_describe_refuses_garbage() -> None:
    with pytest.raises(TlsError, match="no PEM certificate"):
        tls.describe("hello")
    with pytest.raises(TlsError, match="not a valid PEM certificate"):
        tls.describe("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


# -- the TLS policy, over real handshakes --------------------------------------------------


def test_client_verifies_the_device_certificate_over_tls13(device_pair: tuple[str, str]) -> None:
    server, client = handshake(tls.server_context(*device_pair), trusting(device_pair[0]))
    assert client.version() == "TLSv1.3"
    assert server.compression() is None


def test_tls12_client_gets_forward_secret_aead(device_pair: tuple[str, str]) -> None:
    client_ctx = trusting(device_pair[0])
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    _server, client = handshake(tls.server_context(*device_pair), client_ctx)
    assert client.version() == "TLSv1.2"
    cipher = client.cipher()
    assert cipher is not None
    assert cipher[0].startswith("ECDHE-") and ("GCM" in cipher[0] or "CHACHA20" in cipher[0])


def test_server_context_policy(device_pair: tuple[str, str]) -> None:
    context = tls.server_context(*device_pair)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    names = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert names and all(n.startswith("ECDHE-") for n in names)
    assert not [n for n in names if "CBC" in n or n.endswith("-SHA") or "RC4" in n]


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"]
)
def test_no_session_ticket_is_sent(device_pair: tuple[str, str], version: ssl.TLSVersion) -> None:
    """POP3 clients never resume: a ticket is a wasted write and CPU on every handshake."""
    client_ctx = trusting(device_pair[0])
    client_ctx.maximum_version = version
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = tls.server_context(*device_pair).wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=HOST)
    for _ in range(10):
        for obj in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    # A TLS 1.3 server sends its tickets after the handshake, before its first data.
    server.write(b"+OK ready\r\n")
    c_in.write(s_out.read())
    assert client.read(100) == b"+OK ready\r\n"
    assert client.version() == version.name.replace("v1_", "v1.")
    session = client.session
    assert session is None or not session.has_ticket


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls11_client_is_refused(device_pair: tuple[str, str]) -> None:
    client_ctx = trusting(device_pair[0])
    client_ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    client_ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):  # (the same client does get TLS 1.1 from a lax server)
        handshake(tls.server_context(*device_pair), client_ctx)


def test_tls12_client_with_only_cbc_ciphers_is_refused(device_pair: tuple[str, str]) -> None:
    client_ctx = trusting(device_pair[0])
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client_ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384")
    with pytest.raises(ssl.SSLError):
        handshake(tls.server_context(*device_pair), client_ctx)


# -- checking an imported certificate ------------------------------------------------------


@pytest.fixture(scope="module")
def ca_chain() -> tuple[trustme.CA, str, str, str]:
    """A root CA, a leaf issued by an intermediate: (root, leaf_pem, key_pem, chain_pem)."""
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert(HOST)
    pems = [blob.bytes().decode() for blob in leaf.cert_chain_pems]
    return root, pems[0], leaf.private_key_pem.bytes().decode(), "".join(pems[1:])


def test_check_pair_accepts_the_device_pair(device_pair: tuple[str, str]) -> None:
    assert tls.check_pair(*device_pair).san == tls.describe(device_pair[0]).san


def test_check_pair_accepts_a_ca_issued_chain_and_serves_it(
    ca_chain: tuple[trustme.CA, str, str, str],
) -> None:
    root, leaf, key, chain = ca_chain
    info = tls.check_pair(leaf, key, chain)
    assert not info.self_signed
    client_ctx = ssl.create_default_context()
    root.configure_trust(client_ctx)  # trusts only the root: the server must send the chain
    _, client = handshake(tls.server_context(leaf, key, chain), client_ctx)
    assert client.version() == "TLSv1.3"


def test_check_pair_refuses_a_key_of_another_certificate(
    device_pair: tuple[str, str], ca_chain: tuple[trustme.CA, str, str, str]
) -> None:
    with pytest.raises(TlsError, match="does not belong"):
        tls.check_pair(device_pair[0], ca_chain[2])


def test_check_pair_refuses_a_chain_in_the_wrong_order(
    ca_chain: tuple[trustme.CA, str, str, str], device_pair: tuple[str, str]
) -> None:
    root, leaf, key, chain = ca_chain
    with pytest.raises(TlsError, match="did not sign"):
        tls.check_pair(leaf, key, device_pair[0])
    with pytest.raises(TlsError, match="did not sign"):
        tls.check_pair(leaf, key, root.cert_pem.bytes().decode() + chain)


def test_check_pair_refuses_two_certificates_in_the_cert_file(
    ca_chain: tuple[trustme.CA, str, str, str],
) -> None:
    _, leaf, key, chain = ca_chain
    with pytest.raises(TlsError, match="expected one certificate, found 2"):
        tls.check_pair(leaf + chain, key)


def test_check_pair_refuses_unusable_keys(device_pair: tuple[str, str]) -> None:
    cert_pem, key_pem = device_pair
    with pytest.raises(TlsError, match="no PEM private key"):
        tls.check_pair(cert_pem, cert_pem)
    with pytest.raises(TlsError, match="not a usable PEM private key"):
        tls.check_pair(cert_pem, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()
    with pytest.raises(TlsError, match="encrypted"):
        tls.check_pair(cert_pem, encrypted)


def test_check_pair_checks_validity_dates(device_pair: tuple[str, str]) -> None:
    info = tls.describe(device_pair[0])
    with pytest.raises(TlsError, match="expired on"):
        tls.check_pair(*device_pair, now=info.not_after + dt.timedelta(seconds=1))
    with pytest.raises(TlsError, match="not valid before"):
        tls.check_pair(*device_pair, now=info.not_before - dt.timedelta(seconds=1))


def _custom_cert(key: object, eku: list[x509.ObjectIdentifier] | None) -> str:
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_check_pair_refuses_client_only_certificates() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _custom_cert(key, [ExtendedKeyUsageOID.CLIENT_AUTH])
    with pytest.raises(TlsError, match="extended key usage"):
        tls.check_pair(cert, _key_pem(key))
    assert tls.check_pair(_custom_cert(key, None), _key_pem(key)).san == ()


def test_check_pair_refuses_weak_rsa() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(TlsError, match="RSA 1024 bits is too weak"):
        tls.check_pair(_custom_cert(key, None), _key_pem(key))


# -- settings --------------------------------------------------------------------------------


def test_settings_round_trip_to_a_context(device_pair: tuple[str, str]) -> None:
    stored = tls.settings_for(*device_pair, "  \n")
    assert stored == {
        tls.SETTING_CERT: device_pair[0],
        tls.SETTING_KEY: device_pair[1],
        tls.SETTING_CHAIN: None,
    }
    settings = {k: v for k, v in stored.items() if v is not None}
    context = tls.context_from_settings(settings)
    assert context is not None
    handshake(context, trusting(device_pair[0]))
    assert tls.context_from_settings({}) is None
    assert tls.context_from_settings({tls.SETTING_CERT: device_pair[0]}) is None


def test_device_certificate_settings_are_a_checked_pair() -> None:
    stored = tls.device_certificate_settings(HOST)
    cert, key = stored[tls.SETTING_CERT], stored[tls.SETTING_KEY]
    assert cert is not None and key is not None and stored[tls.SETTING_CHAIN] is None
    # What `image create` and `image demo` store: the host name and the loopback names.
    assert tls.check_pair(cert, key).san == (
        f"DNS:{HOST}",
        "DNS:localhost",
        "IP:127.0.0.1",
        "IP:::1",
    )


async def test_trio_sslstream_serves_with_the_device_context(device_pair: tuple[str, str]) -> None:
    """The adapter's path: trio.SSLStream over a real loopback socket, a stdlib client."""
    server_ctx = tls.server_context(*device_pair)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    def client() -> tuple[str | None, bytes]:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            trusting(device_pair[0]).wrap_socket(raw, server_hostname=HOST) as conn,
        ):
            conn.sendall(b"CAPA\r\n")
            reply = b""
            while not reply.endswith(b"\n") and (data := conn.recv(100)):
                reply += data
            return conn.version(), reply

    async with trio.open_nursery() as nursery:

        async def serve_one() -> None:
            stream = await listeners[0].accept()
            ssl_stream = trio.SSLStream(stream, server_ctx, server_side=True)
            with trio.fail_after(10):
                await ssl_stream.do_handshake()
                request = b""
                while not request.endswith(b"\n"):
                    request += await ssl_stream.receive_some(100)
                assert request == b"CAPA\r\n"
                await ssl_stream.send_all(b"+OK\r\n")
            await ssl_stream.aclose()

        nursery.start_soon(serve_one)
        version, reply = await trio.to_thread.run_sync(client)
    await listeners[0].aclose()
    assert version == "TLSv1.3" and reply == b"+OK\r\n"
