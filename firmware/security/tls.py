"""The device's TLS certificate: make one, describe it, check an imported one, serve with it.

Certificate, key and chain live as PEM text in the board's NVRAM settings (SETTING_* keys), so
the image stays the device's only state. The key is ECDSA P-256: small enough for NVRAM and
quick to make on a slow board. `server_context` is the one place the TLS policy is set:
TLS 1.2 minimum (1.3 preferred), forward-secret AEAD ciphers only, no compression, no
renegotiation.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.errors import DeviceError

# Board.settings() keys holding the PEM text.
SETTING_CERT = "tls.cert_pem"
SETTING_KEY = "tls.key_pem"
SETTING_CHAIN = "tls.chain_pem"

# Also named in self-signed certificates, so lab clients on the same host can verify them.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SELF_SIGNED_DAYS = 3650  # a lab device is not re-keyed; `dpfw tls selfsign` makes a new one
MIN_RSA_BITS = 2048

# TLS 1.2 suites: ECDHE key exchange and AEAD only (Mozilla "intermediate" without DHE).
# TLS 1.3 suites are all AEAD and forward-secret; OpenSSL's defaults are kept for them.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!DSS"


class TlsError(DeviceError):
    """A certificate, key or chain that cannot be used, with what is wrong and why."""


@dataclass(frozen=True)
class CertInfo:
    """What `dpfw tls show` and `status` say about a certificate."""

    subject: str
    issuer: str
    san: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    sha256_fingerprint: str  # colon-separated upper-case hex, as browsers show it
    key: str  # e.g. "EC secp256r1", "RSA 2048"
    self_signed: bool

    def lines(self) -> list[str]:
        """Human-readable `label: value` lines."""
        return [
            f"subject:     {self.subject}",
            f"issuer:      {self.issuer}" + (" (self-signed)" if self.self_signed else ""),
            f"names:       {', '.join(self.san) or '(none)'}",
            f"valid from:  {self.not_before:%Y-%m-%d %H:%M:%S} UTC",
            f"valid until: {self.not_after:%Y-%m-%d %H:%M:%S} UTC",
            f"key:         {self.key}",
            f"sha256:      {self.sha256_fingerprint}",
        ]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_self_signed(
    hostname: str,
    *,
    loopback: bool = True,
    days: int = SELF_SIGNED_DAYS,
    now: dt.datetime | None = None,
) -> tuple[str, str]:
    """(cert_pem, key_pem): a fresh self-signed server certificate naming `hostname`.

    With `loopback` (the default) the certificate also names LOOPBACK_NAMES, so a lab client
    that connects to localhost or 127.0.0.1 can verify it (`curl --cacert`). A self-signed
    certificate is a lab certificate; a device on a real network imports one that names only
    its host name (`dpfw tls import`), or makes one with `loopback=False`.
    """
    if not hostname or len(hostname) > 253:
        raise TlsError(f"host name {hostname!r} cannot be put in a certificate")
    start = (now or _now()) - dt.timedelta(minutes=5)  # tolerate a client clock slightly behind
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dpfw simulated device"),
        ]
    )
    names = [hostname, *(LOOPBACK_NAMES if loopback else ())]
    alt = [_general_name(n) for n in dict.fromkeys(names)]  # in order, without repeats
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def _load_cert(cert_pem: str, what: str = "certificate") -> x509.Certificate:
    certs = _load_certs(cert_pem, what)
    if len(certs) != 1:
        raise TlsError(
            f"{what}: expected one certificate, found {len(certs)} (put others in the chain)"
        )
    return certs[0]


def _load_certs(pem: str, what: str) -> list[x509.Certificate]:
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise TlsError(f"{what}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)")
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise TlsError(f"{what}: not a valid PEM certificate ({exc})") from None


def _key_text(public_key: object) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(public_key).__name__


def _info(cert: x509.Certificate) -> CertInfo:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        san = tuple(
            [f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)]
            + [f"IP:{a}" for a in ext.get_values_for_type(x509.IPAddress)]
        )
    except x509.ExtensionNotFound:
        san = ()
    fingerprint = cert.fingerprint(hashes.SHA256()).hex().upper()
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        san=san,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256_fingerprint=":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2)),
        key=_key_text(cert.public_key()),
        self_signed=cert.issuer == cert.subject,
    )


def describe(cert_pem: str) -> CertInfo:
    """Subject, names, validity and fingerprint of one PEM certificate."""
    return _info(_load_cert(cert_pem))


def _load_key(key_pem: str) -> object:
    if "-----BEGIN" not in key_pem or "PRIVATE KEY-----" not in key_pem:
        raise TlsError("key: no PEM private key found (expected -----BEGIN ... PRIVATE KEY-----)")
    try:
        return serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError:
        raise TlsError(
            "key: the private key is encrypted; import it without a passphrase"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TlsError(f"key: not a usable PEM private key ({exc})") from None


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def check_pair(
    cert_pem: str, key_pem: str, chain_pem: str | None = None, *, now: dt.datetime | None = None
) -> CertInfo:
    """Check that a certificate, its key and an optional chain can serve TLS; else TlsError.

    Checks: each PEM parses; the key is unencrypted and belongs to the certificate; RSA keys
    have at least 2048 bits; the certificate is valid now and, if it says, meant for servers;
    each chain certificate signed the one before it; and OpenSSL accepts the lot.
    """
    cert = _load_cert(cert_pem)
    key = _load_key(key_pem)
    public = getattr(key, "public_key", None)
    if public is None:
        raise TlsError(f"key: a {type(key).__name__} cannot sign a TLS handshake")
    key_der = public().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cert_key_der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if key_der != cert_key_der:
        raise TlsError("key: the private key does not belong to the certificate")
    info = _info(cert)
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise TlsError(f"key: RSA {key.key_size} bits is too weak (at least {MIN_RSA_BITS})")
    moment = now or _now()
    if moment < info.not_before:
        raise TlsError(f"certificate: not valid before {info.not_before:%Y-%m-%d %H:%M} UTC")
    if moment > info.not_after:
        raise TlsError(f"certificate: expired on {info.not_after:%Y-%m-%d %H:%M} UTC")
    with contextlib.suppress(x509.ExtensionNotFound):
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.SERVER_AUTH not in usage:
            raise TlsError("certificate: its extended key usage does not allow TLS servers")
    if chain_pem and chain_pem.strip():
        chain = _load_certs(chain_pem, "chain")
        child = cert
        for position, issuer in enumerate(chain, start=1):
            if not _issued_by(child, issuer):
                raise TlsError(
                    f"chain: certificate {position} ({issuer.subject.rfc4514_string()}) did not "
                    f"sign {child.subject.rfc4514_string()}; order the chain leaf-first"
                )
            child = issuer
    server_context(cert_pem, key_pem, chain_pem)
    return info


@contextlib.contextmanager
def _secret_paths(*texts: str) -> Iterator[list[str]]:
    """Paths OpenSSL can read `texts` from: memory-only files where Linux has them.

    `SSLContext.load_cert_chain` reads only files; a memfd keeps the private key off disk.
    """
    fds: list[int] = []
    tmpdir: tempfile.TemporaryDirectory[str] | None = None
    try:
        paths = []
        for number, text in enumerate(texts):
            if hasattr(os, "memfd_create"):
                fd = os.memfd_create(f"dpfw-tls-{number}", os.MFD_CLOEXEC)
                fds.append(fd)
                os.write(fd, text.encode())
                paths.append(f"/proc/self/fd/{fd}")
            else:  # pragma: no cover - non-Linux
                if tmpdir is None:
                    tmpdir = tempfile.TemporaryDirectory(prefix="dpfw-tls-")
                path = Path(tmpdir.name) / f"{number}.pem"
                path.touch(mode=0o600)
                path.write_text(text)
                paths.append(str(path))
        yield paths
    finally:
        for fd in fds:
            os.close(fd)
        if tmpdir is not None:  # pragma: no cover - non-Linux
            tmpdir.cleanup()


def server_context(cert_pem: str, key_pem: str, chain_pem: str | None = None) -> ssl.SSLContext:
    """A server SSLContext for STLS and POP3S with the device's TLS policy.

    No session resumption: TLS 1.2 gets no tickets (OP_NO_TICKET) and TLS 1.3 no
    NewSessionTicket messages (`num_tickets = 0`, RFC 8446 §4.6.1). OP_NO_TICKET alone makes
    OpenSSL send TLS 1.3 clients two stateful tickets after every handshake and keep each
    session in its cache; POP3 clients (fetchmail, mpop, a copier's poller) open one session
    per poll from a fresh process and never resume, so the tickets were only cost: about
    10 % of the server's handshake CPU and 158 bytes per session (docs/benchmarks.md).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options |= ssl.OP_SINGLE_ECDH_USE | ssl.OP_NO_TICKET
    # With OP_NO_TICKET a TLS 1.3 ticket is stateful: every handshake left a session in the
    # context's cache (about 1.3 KiB each, up to 20480, kept for hours), a steady RSS growth
    # under POP3S load (docs/reliability.md, "Fleet soak"). No tickets: nothing is cached.
    context.num_tickets = 0
    context.set_ciphers(TLS12_CIPHERS)
    full_chain = cert_pem.rstrip("\n") + "\n" + (chain_pem or "")
    with _secret_paths(full_chain, key_pem) as (cert_path, key_path):
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise TlsError(f"OpenSSL refused the certificate or key: {exc.reason or exc}") from None
    return context


def settings_for(
    cert_pem: str, key_pem: str, chain_pem: str | None = None
) -> dict[str, str | None]:
    """The Board.set_setting calls that store a (checked) certificate; None clears the chain."""
    return {
        SETTING_CERT: cert_pem,
        SETTING_KEY: key_pem,
        SETTING_CHAIN: chain_pem if chain_pem and chain_pem.strip() else None,
    }


def device_certificate_settings(hostname: str) -> dict[str, str | None]:
    """Settings for a fresh self-signed certificate: what `image create` and `image demo` store.

    It names `hostname` and LOOPBACK_NAMES (see `make_self_signed`).
    """
    cert_pem, key_pem = make_self_signed(hostname)
    return settings_for(cert_pem, key_pem)


def context_from_settings(settings: Mapping[str, str]) -> ssl.SSLContext | None:
    """The server context for the stored certificate, or None when the board has none."""
    cert_pem, key_pem = settings.get(SETTING_CERT), settings.get(SETTING_KEY)
    if not cert_pem or not key_pem:
        return None
    return server_context(cert_pem, key_pem, settings.get(SETTING_CHAIN))


def certificate_host_names(cert_pem: str | None) -> list[str] | None:
    """The DNS names a PEM certificate is for (subject alternative names, RFC 6125 §6.4.4:
    the common name only when there are none); None when there is no certificate or it
    does not parse (`tls show` says why)."""
    if not cert_pem:
        return None
    try:
        cert = _load_cert(cert_pem)
    except TlsError:
        return None
    info = _info(cert)
    names = [name[4:] for name in info.san if name.startswith("DNS:")]
    if not info.san:
        names = [
            str(attr.value) for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return names


def names_host(names: Sequence[str], hostname: str) -> bool:
    """True when one of `names` matches `hostname`: in any case, a `*.` wildcard standing for
    exactly the left-most label (RFC 6125 §6.4.3)."""
    host = hostname.lower().rstrip(".")
    for name in (n.lower().rstrip(".") for n in names):
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def hostname_warning(names: Sequence[str], hostname: str, *, console: bool) -> str:
    """The line for a certificate that does not name the device's host name: what it names
    and the command that makes one that does (the console's, or the CLI's)."""
    fix = "`tls selfsign`" if console else "`dpfw tls selfsign IMG`"
    named = ", ".join(names) if names else "no host name"
    return (
        f"WARNING: the TLS certificate names {named}, not {hostname}; "
        f"{fix} makes one for {hostname}"
    )
