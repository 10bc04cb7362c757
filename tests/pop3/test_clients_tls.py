"""Real TLS clients against both listeners, verifying the device certificate (trustme CA):
curl `--ssl-reqd` (pop3:// with STLS, pop3s://) and fetchmail with `sslcertck`.

Skipped only when a binary is missing (CI installs curl and fetchmail). fetchmail polls
"localhost" (it checks the certificate's names against the poll name, not IP SANs).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import trio
import trustme

from tests.pop3.conftest import ALICE_PASSWORD, BOB_PASSWORD, MESSAGES, Server
from tests.pop3.test_clients import need, normalised


async def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [need("curl"), "-sS", "--max-time", "20", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_curl_requires_tls_over_stls_and_pop3s_and_verifies_the_certificate(
    tls_pop3: Server, ca_file: Path
) -> None:
    tls_pop3.profile.set("pop3.plaintext_auth", "tls_only")
    tls_pop3.board.deliver("bob", MESSAGES[1])
    for url in (f"pop3://127.0.0.1:{tls_pop3.port}", f"pop3s://127.0.0.1:{tls_pop3.pop3s_port}"):
        # bob has no legacy secret: with pop3.apop on, curl would pick CRAM-MD5 and fail
        tls_pop3.profile.set("pop3.apop", "false")
        got = await curl("--ssl-reqd", "--cacert", str(ca_file), "-u", f"bob:{BOB_PASSWORD}", url)
        assert got.returncode == 0, got.stderr
        assert got.stdout == b"1 %d\r\n" % tls_pop3.board.messages("bob")[0].size
        got = await curl(
            "--ssl-reqd", "--cacert", str(ca_file), "-u", f"bob:{BOB_PASSWORD}", f"{url}/1"
        )
        assert got.stdout == normalised(MESSAGES[1])
        tls_pop3.profile.set("pop3.apop", "true")
        got = await curl(
            "--ssl-reqd", "--cacert", str(ca_file), "-u", f"alice:{ALICE_PASSWORD}", f"{url}/1"
        )
        assert got.stdout == normalised(MESSAGES[0]), got.stderr
        untrusted = await curl("--ssl-reqd", "-u", f"bob:{BOB_PASSWORD}", url)
        assert untrusted.returncode == 60, untrusted.stderr  # peer certificate not trusted


async def fetchmail(
    server: Server, tmp_path: Path, ca_file: Path, *, implicit: bool, expect_ok: bool = True
) -> bytes:
    binary = need("fetchmail")
    out = tmp_path / "fetched"
    rc = tmp_path / "fetchmailrc"
    port = server.pop3s_port if implicit else server.port
    tls = "ssl" if implicit else "sslproto tls1.2+"  # without `ssl`: STLS, and it must work
    rc.write_text(
        f"poll localhost with proto POP3 port {port}\n"
        f'  user "alice" there with password "{ALICE_PASSWORD}" is "tester" here\n'
        f"  options keep fetchall {tls} sslcertck sslcertfile {ca_file}\n"
        f'  mda "cat >> {out}"\n'
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    result = await trio.run_process(
        [binary, "-f", str(rc), "--nosyslog", "-N", "-d0", "-v", "--pidfile", str(tmp_path / "p")],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    log = result.stderr.decode() + result.stdout.decode()
    if not expect_ok:
        assert result.returncode != 0 and "certificate verif" in log, log
        return b""
    assert result.returncode == 0, log
    return out.read_bytes()


async def test_fetchmail_with_sslcertck_over_stls_and_pop3s(
    tls_pop3: Server, tmp_path: Path, ca_file: Path
) -> None:
    tls_pop3.profile.set("pop3.plaintext_auth", "tls_only")
    for implicit in (False, True):
        fetched = await fetchmail(tls_pop3, tmp_path, ca_file, implicit=implicit)
        assert fetched.count(b"Subject:") == 3
        (tmp_path / "fetched").unlink()
        await trio.sleep(0.05)
    assert len(tls_pop3.board.messages("alice")) == 3  # keep
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    for implicit in (False, True):  # sslcertck really checks: another CA is refused
        await fetchmail(tls_pop3, tmp_path, other_ca, implicit=implicit, expect_ok=False)
