"""TLS faults met by poplib: a refused handshake (STLS and POP3S), an expired and a
wrong-name certificate presented instead of the device's."""

from __future__ import annotations

import datetime as dt
import poplib
import ssl
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509

from firmware.ops.clients import client_list
from firmware.pop3.faultwire import WRONG_NAME
from tests.faults.conftest import Lab


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _peer_cert(lab: Lab) -> x509.Certificate:
    pop = poplib.POP3_SSL("127.0.0.1", lab.pop3s_port, timeout=15, context=_insecure())
    sock = pop.sock
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    pop.quit()
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_tls_fail_refuses_the_stls_handshake(lab: Lab) -> None:
    fault = lab.fault(action="tls-fail", times=1)

    def refused() -> None:
        pop = poplib.POP3("127.0.0.1", lab.port, timeout=15)
        with pytest.raises((ssl.SSLError, OSError)):
            pop.stls(_insecure())

    await trio.to_thread.run_sync(refused)
    assert lab.fired(fault.id) == 1
    assert lab.device.pop3 is not None and lab.device.pop3.stats.tls_failures == 1

    def works() -> None:  # spent: the next handshake succeeds
        pop = poplib.POP3("127.0.0.1", lab.port, timeout=15)
        pop.stls(_insecure())
        pop.user("alice")
        pop.pass_("alice-lab")
        assert pop.stat()[0] == 3
        pop.quit()

    await trio.to_thread.run_sync(works)


async def test_tls_fail_on_pop3s(lab: Lab) -> None:
    lab.fault(action="tls-fail", nth_session=1)

    def refused() -> None:
        with pytest.raises((ssl.SSLError, OSError)):
            poplib.POP3_SSL("127.0.0.1", lab.pop3s_port, timeout=15, context=_insecure())

    await trio.to_thread.run_sync(refused)
    await trio.to_thread.run_sync(lab.serves_others)


async def test_expired_certificate(lab: Lab) -> None:
    real = await trio.to_thread.run_sync(_peer_cert, lab)
    lab.fault(action="tls-fail", cert="expired", times=1)
    cert = await trio.to_thread.run_sync(_peer_cert, lab)
    assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
    assert cert.fingerprint(cert.signature_hash_algorithm) != real.fingerprint(  # type: ignore[arg-type]
        real.signature_hash_algorithm  # type: ignore[arg-type]
    )
    assert await trio.to_thread.run_sync(_peer_cert, lab) == real  # spent


async def test_wrong_name_certificate_fails_verification(lab: Lab) -> None:
    lab.fault(action="tls-fail", cert="wrong-name")
    cert = await trio.to_thread.run_sync(_peer_cert, lab)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [WRONG_NAME]
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC)

    def verifying() -> None:
        context = ssl.create_default_context()
        context.load_verify_locations(cadata=_pem(cert))  # trust it: only the name is wrong
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            poplib.POP3_SSL("localhost", lab.pop3s_port, timeout=15, context=context)

    await trio.to_thread.run_sync(verifying)


def _pem(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM).decode()


async def test_a_refused_bad_certificate_grades_the_certificate_item(
    lab: Lab, tmp_path: Path
) -> None:
    # tls-fail cert=expired|wrong-name are certificate faults: a client that refuses them
    # passes the card's certificate item (curl for expired, poplib/ssl for wrong-name).
    device_pem = await trio.to_thread.run_sync(
        ssl.get_server_certificate, ("127.0.0.1", lab.pop3s_port)
    )
    trusted = tmp_path / "device.pem"
    trusted.write_text(device_pem)
    lab.fault(action="tls-fail", cert="expired", times=1)
    curl = await trio.run_process(
        ["curl", "-s", "--cacert", str(trusted), f"pop3s://localhost:{lab.pop3s_port}/"],
        check=False,
        capture_stdout=True,
    )
    assert curl.returncode == 60  # the peer's certificate was refused
    lab.fault(action="tls-fail", cert="wrong-name", times=1)

    def refuses_wrong_name() -> None:
        context = ssl.create_default_context(cafile=str(trusted))
        with pytest.raises(ssl.SSLCertVerificationError):
            poplib.POP3_SSL("localhost", lab.pop3s_port, timeout=15, context=context)

    await trio.to_thread.run_sync(refuses_wrong_name)
    await trio.testing.wait_all_tasks_blocked()
    card = {c.address: c for c in client_list(lab.ctx).clients}["127.0.0.1"]
    items = {item.name: item for item in card.items}
    assert items["certificate"].verdict == "pass", items["certificate"]
    for name in ("fault:tls-fail [cert=expired]", "fault:tls-fail [cert=wrong-name]"):
        assert items[name].verdict == "pass", (name, items[name])
