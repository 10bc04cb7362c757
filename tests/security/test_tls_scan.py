"""Outside auditors on the device's three TLS listeners: sslyze (pip) and testssl.sh (Debian).

One `dpfw run` with a CA-issued certificate and an intermediate in its chain (`dpfw tls
import`) serves POP3S, STLS on the POP3 port and the HTTPS API. Each scanner must find: no
SSL 2/3, TLS 1.0 or 1.1; only AEAD suites with forward secrecy (ECDHE, or TLS 1.3); no export,
NULL, anonymous, RC4, 3DES or CBC suite; the leaf and the chain exactly as imported, and a
path that validates to the CA. `test_the_audit_fails_on_a_weak_server` points the same checks
at a deliberately weak TLS server (TLS 1.0 and CBC suites on) and sees them fail, so the audit
cannot pass by not looking. docs/security.md ("Audited from outside") records the figures.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.http.conftest import wait_http
from tests.support import DeviceProcess, dpfw

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
needs_testssl = pytest.mark.skipif(
    TESTSSL is None, reason="testssl.sh not installed (Debian package testssl.sh; .ci/run has it)"
)
OLD_PROTOCOLS = ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1")
AEAD = ("_GCM_", "CHACHA20_POLY1305", "_CCM")


@dataclass
class Target:
    name: str  # pop3s, stls, https
    host_port: str
    starttls: str | None  # "pop3" for STLS


@dataclass
class Lab:
    targets: list[Target]
    chain: list[str]  # the PEMs we imported, leaf first
    ca_file: Path  # the root that should validate the chain


def sha256_hex(pem: str) -> str:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return cert.fingerprint(hashes.SHA256()).hex()


# ----- the two auditors, each reduced to a list of problems (empty = pass) -----


def sslyze_scan(target: Target, out: Path) -> dict[str, Any]:
    """One sslyze run (its command line, JSON out); the scan result of the one server."""
    args = [sys.executable, "-m", "sslyze", f"--json_out={out}", "--quiet"]
    if target.starttls:
        args.append(f"--starttls={target.starttls}")
    proc = subprocess.run(
        [*args, target.host_port], capture_output=True, text=True, timeout=180, check=False
    )
    assert out.exists(), proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(out.read_text())["server_scan_results"][0]
    assert result["connectivity_status"] == "COMPLETED", result["connectivity_error_trace"]
    scan: dict[str, Any] = result["scan_result"]
    return scan


def sslyze_problems(scan: dict[str, Any]) -> list[str]:
    problems = []
    for proto in (*OLD_PROTOCOLS, "tls_1_2", "tls_1_3"):
        accepted = scan[f"{proto}_cipher_suites"]["result"]["accepted_cipher_suites"]
        names = [suite["cipher_suite"]["name"] for suite in accepted]
        if proto in OLD_PROTOCOLS and names:
            problems.append(f"{proto} accepted: {names}")
        for name in names:
            if not any(mark in name for mark in AEAD):
                problems.append(f"{proto}: not AEAD: {name}")
            if proto != "tls_1_3" and not name.startswith("TLS_ECDHE_"):
                problems.append(f"{proto}: no ECDHE forward secrecy: {name}")
            if any(bad in name for bad in ("EXPORT", "NULL", "anon", "RC4", "3DES", "CBC")):
                problems.append(f"{proto}: weak suite {name}")
    if scan["tls_compression"]["result"]["supports_compression"]:
        problems.append("TLS compression on")
    if scan["heartbleed"]["result"]["is_vulnerable_to_heartbleed"]:
        problems.append("heartbleed")
    renegotiation = scan["session_renegotiation"]["result"]
    if renegotiation["is_vulnerable_to_client_renegotiation_dos"]:
        problems.append("client-initiated renegotiation accepted")
    return problems


def sslyze_chain(scan: dict[str, Any]) -> list[str]:
    """The SHA-256 of each certificate the server sent, in its order."""
    deployment = scan["certificate_info"]["result"]["certificate_deployments"][0]
    return [sha256_hex(c["as_pem"]) for c in deployment["received_certificate_chain"]]


def verifies_with(target: Target, ca_file: Path) -> str:
    """Connect as a verifying client trusting only `ca_file` (OpenSSL's path building, host
    name 127.0.0.1 checked); the protocol version agreed. sslyze's own validator refuses
    trustme's leaves (critical subjectAltName beside a subject), so OpenSSL judges the path."""
    host, port = target.host_port.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        if target.starttls == "pop3":
            reader = raw.makefile("rb")
            assert reader.readline().startswith(b"+OK")
            raw.sendall(b"STLS\r\n")
            assert reader.readline().startswith(b"+OK")
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return str(tls.version())


def run_testssl(target: Target, out: Path, *options: str) -> list[dict[str, str]]:
    """One testssl.sh run (protocols, ciphers per protocol, server defaults): its findings."""
    assert TESTSSL is not None
    args = [TESTSSL, "--quiet", "--warnings", "batch", "--color", "0", "--jsonfile", str(out)]
    if target.starttls:
        args += ["--starttls", target.starttls]
    proc = subprocess.run(
        [*args, *(options or ("-p", "-E", "-S")), target.host_port],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    findings: list[dict[str, str]] = json.loads(out.read_text())
    return findings


def problems_testssl(findings: list[dict[str, str]]) -> list[str]:
    problems = []
    by_id = {f["id"]: f for f in findings}
    for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        finding = by_id[proto]["finding"]
        if not finding.startswith("not offered"):
            problems.append(f"{proto}: {finding}")
    if not by_id["TLS1_2"]["finding"].startswith("offered"):
        problems.append(f"TLS1_2: {by_id['TLS1_2']['finding']}")
    for f in findings:
        if f["id"].startswith("cipher-"):  # "TLS 1.2   xc02c   OPENSSL-NAME ... IANA_NAME"
            iana = f["finding"].split()[-1]
            if not any(mark in iana for mark in AEAD):
                problems.append(f"{f['id']}: not AEAD: {iana}")
            if f["id"].startswith("cipher-tls1_2") and not iana.startswith("TLS_ECDHE_"):
                problems.append(f"{f['id']}: no ECDHE forward secrecy: {iana}")
        weak_list = f["id"].startswith("cipherlist_") and f["id"] != "cipherlist_STRONG"
        if weak_list and not f["finding"].startswith("not offered"):
            problems.append(f"{f['id']}: {f['finding']}")
    if not any(f["id"].startswith("cipher-") for f in findings):
        problems.append("testssl listed no cipher at all")
    return problems


# ----- the device -----


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("tlsscan")
    image = tmp / "demo.img"
    dpfw("image", "demo", str(image))
    ca = trustme.CA()
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert("dp3530.local", "localhost", "127.0.0.1")
    pems = [blob.bytes().decode() for blob in leaf.cert_chain_pems]
    (tmp / "cert.pem").write_text(pems[0])
    (tmp / "chain.pem").write_text("".join(pems[1:]))
    (tmp / "key.pem").write_text(leaf.private_key_pem.bytes().decode())
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    dpfw("tls", "import", str(image), "--cert", str(tmp / "cert.pem"), "--key",
         str(tmp / "key.pem"), "--chain", str(tmp / "chain.pem"))  # fmt: skip
    device = DeviceProcess(image, "--pop3s", "127.0.0.1:0", "--http", "127.0.0.1:0", "--https")
    try:
        pop3_port = device.wait_booted()
        https = wait_http(device).removeprefix("https://")
        pop3s = next(
            m.group(1) for line in device.lines if (m := re.search(r"POP3S on (\S+) ", line))
        )
        yield Lab(
            [
                Target("pop3s", pop3s, None),
                Target("stls", f"127.0.0.1:{pop3_port}", "pop3"),
                Target("https", https, None),
            ],
            pems,
            tmp / "ca.pem",
        )
        assert "Traceback" not in device.output()
    finally:
        device.kill()


TARGETS = ["pop3s", "stls", "https"]


def _target(lab: Lab, name: str) -> Target:
    return next(t for t in lab.targets if t.name == name)


@pytest.mark.parametrize("name", TARGETS)
def test_sslyze_finds_tls12_plus_aead_only_and_the_configured_chain(
    lab: Lab, name: str, tmp_path: Path
) -> None:
    target = _target(lab, name)
    scan = sslyze_scan(target, tmp_path / "sslyze.json")
    assert sslyze_problems(scan) == []
    assert scan["tls_1_3_cipher_suites"]["result"]["accepted_cipher_suites"]  # 1.3 offered
    assert sslyze_chain(scan) == [sha256_hex(pem) for pem in lab.chain]  # leaf, intermediate
    assert verifies_with(target, lab.ca_file) == "TLSv1.3"


@needs_testssl
@pytest.mark.parametrize("name", TARGETS)
def test_testssl_finds_tls12_plus_aead_only_and_the_configured_certificate(
    lab: Lab, name: str, tmp_path: Path
) -> None:
    findings = run_testssl(_target(lab, name), tmp_path / "testssl.json")
    assert problems_testssl(findings) == []
    by_id = {f["id"]: f["finding"] for f in findings}
    assert by_id["cert_fingerprintSHA256"].lower() == sha256_hex(lab.chain[0])
    assert by_id["certs_countServer"] == str(len(lab.chain))
    assert by_id["certs_list_ordering_problem"] == "no"


# ----- the audit itself can fail -----


@pytest.fixture
def weak_server() -> Iterator[Target]:
    """A TLS server as the device must never be: TLS 1.0 and up, every suite OpenSSL has."""
    cert = trustme.CA().issue_cert("localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    cert.configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def handshake(conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except OSError:
            pass  # scanners hang up in every way

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handshake, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield Target("weak", f"127.0.0.1:{listener.getsockname()[1]}", None)
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        time.sleep(0.1)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")
def test_the_audit_fails_on_a_weak_server(weak_server: Target, tmp_path: Path) -> None:
    problems = sslyze_problems(sslyze_scan(weak_server, tmp_path / "sslyze.json"))
    assert any(p.startswith("tls_1_0 accepted") for p in problems), problems
    assert any("CBC" in p for p in problems), problems
    if TESTSSL is not None:
        findings = run_testssl(weak_server, tmp_path / "testssl.json", "-p", "-E")
        problems = problems_testssl(findings)
        assert any(p.startswith("TLS1:") for p in problems), problems
        assert any("not AEAD" in p and "CBC" in p for p in problems), problems
