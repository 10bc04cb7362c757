"""The device TLS certificate kept in NVRAM: show, import, make a self-signed one.

firmware.security.tls (cryptography: a slow, large import) is imported inside the functions,
so a front-end that imports this module for other commands does not pay for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from firmware.config.profile import HOSTNAME_RULE, is_listen_address, shown
from firmware.errors import DeviceError
from firmware.ops.context import OpsContext
from firmware.text import plural

MAX_TLS_PEM = 64 * 1024  # a certificate with a few intermediates, in NVRAM
IGNORED_PEM = frozenset({"EC PARAMETERS"})  # `openssl ecparam -genkey` prints it before the key
NO_CERT = "no TLS certificate stored; `tls selfsign` or `tls import` makes one"


@dataclass(frozen=True)
class Cert:
    """One certificate. Times are ISO 8601 UTC strings (`2026-11-30T00:00:00+00:00`)."""

    subject: str
    issuer: str
    names: list[str]  # subject alternative names, "DNS:host" / "IP:addr"
    not_before: str
    not_after: str
    key: str  # "EC secp256r1", "RSA 2048"
    sha256: str  # colon-separated upper-case hex
    self_signed: bool


@dataclass(frozen=True)
class TlsView:
    """`tls show`: the stored certificate, whether it is usable, whether TLS is served.

    `serving` is None offline (nothing runs); `saved_since_boot` is True when the stored
    certificate is not the one the running device loaded at boot (it applies after reboot).
    """

    cert: Cert
    chain: int  # chain certificates stored after it
    usable: bool
    problem: str | None  # why it is not usable
    serving: bool | None
    saved_since_boot: bool


@dataclass(frozen=True)
class TlsSaved:
    """What `tls import` or `tls selfsign` stored (applies at the next boot)."""

    how: str  # "imported" | "self-signed"
    cert: Cert
    chain: int = 0
    names: list[str] = field(default_factory=list)  # the host names asked for (selfsign)


def _cert(pem: str) -> Cert:
    from firmware.security import tls

    info = tls.describe(pem)
    return Cert(
        info.subject,
        info.issuer,
        list(info.san),
        info.not_before.isoformat(),
        info.not_after.isoformat(),
        info.key,
        info.sha256_fingerprint,
        info.self_signed,
    )


def _saved_since_boot(ctx: OpsContext, cert_pem: str | None) -> bool:
    return ctx.device is not None and cert_pem != ctx.device.tls_cert_at_boot


def tls_show(ctx: OpsContext) -> TlsView:
    """The stored certificate. DeviceError (`NO_CERT`) when there is none."""
    from firmware.security import tls

    settings = ctx.board.settings()
    cert_pem = settings.get(tls.SETTING_CERT)
    if not cert_pem:
        raise DeviceError(NO_CERT)
    chain_pem = settings.get(tls.SETTING_CHAIN) or ""
    problem: str | None = None
    try:
        tls.check_pair(cert_pem, settings.get(tls.SETTING_KEY, ""), chain_pem)
    except tls.TlsError as exc:
        problem = str(exc)
    pop3 = ctx.pop3
    return TlsView(
        cert=_cert(cert_pem),
        chain=chain_pem.count("-----BEGIN CERTIFICATE-----"),
        usable=problem is None,
        problem=problem,
        serving=(pop3 is not None and pop3.tls_available) if ctx.live else None,
        saved_since_boot=_saved_since_boot(ctx, cert_pem),
    )


@dataclass(frozen=True)
class TlsPem:
    """The stored certificate and chain as PEM text (never the key), for a client's CA file."""

    pem: str
    saved_since_boot: bool


def tls_pem(ctx: OpsContext) -> TlsPem:
    """The stored certificate and chain as PEM. DeviceError (`NO_CERT`) when there is none."""
    from firmware.security import tls

    settings = ctx.board.settings()
    cert_pem = settings.get(tls.SETTING_CERT)
    if not cert_pem:
        raise DeviceError(NO_CERT)
    text = cert_pem.rstrip("\n") + "\n"
    if chain_pem := settings.get(tls.SETTING_CHAIN):
        text += chain_pem.rstrip("\n") + "\n"
    return TlsPem(text, _saved_since_boot(ctx, cert_pem))


def pem_blocks(text: str) -> list[tuple[str, str]]:
    """(label, block) for each PEM block (RFC 7468) in text, in order; other lines ignored."""
    pattern = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\n.*?\n-----END \1-----", re.S)
    lines = "\n".join(line.strip() for line in text.splitlines())
    return [(m.group(1), m.group(0) + "\n") for m in pattern.finditer(lines)]


def split_pem(text: str) -> tuple[str, str, str | None]:
    """Pasted PEM -> (certificate, key, chain or None): the first certificate, exactly one
    private key, the other certificates as the chain. TlsError (a DeviceError) otherwise."""
    from firmware.security import tls

    if len(text) > MAX_TLS_PEM:
        raise tls.TlsError(f"tls import: more than {MAX_TLS_PEM} bytes of PEM")
    blocks = pem_blocks(text)
    certs = [block for label, block in blocks if label == "CERTIFICATE"]
    keys = [block for label, block in blocks if label.endswith("PRIVATE KEY")]
    known = {"CERTIFICATE", *IGNORED_PEM}
    others = sorted(
        {label for label, _ in blocks if label not in known and not label.endswith("PRIVATE KEY")}
    )
    if not certs:
        raise tls.TlsError("tls import: no -----BEGIN CERTIFICATE----- block found")
    if len(keys) != 1:
        raise tls.TlsError(
            f"tls import: expected one -----BEGIN ... PRIVATE KEY----- block, found {len(keys)}"
        )
    if others:
        raise tls.TlsError(
            f"tls import: unexpected {plural(len(others), 'PEM block')}: {', '.join(others)}"
        )
    return certs[0], keys[0], "".join(certs[1:]) or None


def tls_import(ctx: OpsContext, cert_pem: str, key_pem: str, chain_pem: str | None) -> TlsSaved:
    """Check key, validity, usage and chain, then store all three in one NVRAM write.
    TlsError `tls import: why`; a refused import changes nothing."""
    from firmware.security import tls

    try:
        tls.check_pair(cert_pem, key_pem, chain_pem)
    except tls.TlsError as exc:
        raise tls.TlsError(f"tls import: {exc}") from None
    _store(ctx, tls.settings_for(cert_pem, key_pem, chain_pem))
    chain = (chain_pem or "").count("-----BEGIN CERTIFICATE-----")
    return TlsSaved("imported", _cert(cert_pem), chain)


def tls_selfsign(
    ctx: OpsContext, hostname: str | None = None, *, loopback: bool = True
) -> TlsSaved:
    """A new ECDSA P-256 key and self-signed certificate for `hostname` (default: the saved
    identity.hostname), with localhost and the loopback addresses unless `loopback` is False."""
    from firmware.security import tls

    name = hostname or ctx.saved_profile.str("identity.hostname")
    if not is_listen_address(name):
        raise tls.TlsError(
            f"tls selfsign: {shown(name)} is not an IP address or {HOSTNAME_RULE}; nothing changed"
        )
    cert_pem, key_pem = tls.make_self_signed(name, loopback=loopback)
    _store(ctx, tls.settings_for(cert_pem, key_pem))
    return TlsSaved("self-signed", _cert(cert_pem), 0, [name])


def _store(ctx: OpsContext, settings: Mapping[str, str | None]) -> None:
    """Certificate, key and chain in one atomic NVRAM write; running listeners keep theirs."""
    ctx.board.set_settings(settings)
