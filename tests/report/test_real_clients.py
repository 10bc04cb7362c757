"""Report cards of real clients: curl, fetchmail, mpop and poplib against a real Pop3Service,
through the device's own faults ([IN-USE], [LOGIN-DELAY], MEMORY FULL) and configurations
(STLS offered, leave-on-server or delete). Each test checks the items docs/faults.md reports
("Report cards of real clients"). The binaries come from the OS; a test is skipped, naming
the binary, only when it is not installed.
"""

from __future__ import annotations

import os
import poplib
import subprocess
import time
from pathlib import Path

import trio
import trio.testing

from firmware.pop3.report import ClientCard
from tests.pop3.conftest import ALICE_PASSWORD, MESSAGES, RawClient, Server
from tests.pop3.test_clients import need

Done = subprocess.CompletedProcess[bytes]


def card_of(pop3: Server, address: str = "127.0.0.1") -> ClientCard:
    card = pop3.service.clients.card(address)
    assert card is not None, f"no card for {address}"
    return card


def grades(pop3: Server) -> dict[str, str]:
    return {item.name: item.verdict for item in card_of(pop3).items}


def reason(pop3: Server, name: str) -> str:
    return next(item.reason for item in card_of(pop3).items if item.name == name)


async def fetchmail(pop3: Server, tmp_path: Path, options: str, port: int = 0) -> Done:
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 with proto POP3 port {port or pop3.port}\n"
        f'  user "alice" there with password "{ALICE_PASSWORD}" is "tester" here\n'
        f"  options {options}\n"
        f'  mda "cat >> {tmp_path / "fetched"}"\n'
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    argv = [need("fetchmail"), "-f", str(rc), "--nosyslog", "-N", "-d0"]
    done = await trio.run_process(
        [*argv, "--pidfile", str(tmp_path / "pid")],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done


async def mpop(pop3: Server, tmp_path: Path, *options: str) -> Done:
    rc = tmp_path / "mpoprc"
    rc.write_text("")
    rc.chmod(0o600)
    done = await trio.run_process(
        [
            need("mpop"),
            "-C",
            str(rc),
            "--host=127.0.0.1",
            f"--port={pop3.port}",
            "--user=alice",
            f"--passwordeval=echo '{ALICE_PASSWORD}'",
            f"--delivery=mbox,{tmp_path / 'mbox'}",
            f"--uidls-file={tmp_path / 'uidls'}",
            *options,
        ],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done


async def curl(pop3: Server, *args: str) -> Done:
    done = await trio.run_process(
        [need("curl"), "-sS", "--max-time", "20", "-u", f"alice:{ALICE_PASSWORD}", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done


def url(pop3: Server, path: str = "/") -> str:
    return f"pop3://127.0.0.1:{pop3.port}{path}"


PLAIN = ("--tls=off", "--auth=user")  # mpop: USER/PASS without TLS (the device has no cert)


# ----- leave-on-server, UIDL, QUIT, pipelining --------------------------------------------


async def test_fetchmail_keep_uses_uidl_but_keep_fetchall_does_not(
    pop3: Server, tmp_path: Path
) -> None:
    assert (await fetchmail(pop3, tmp_path, 'keep sslproto ""')).returncode == 0
    pop3.board.deliver("alice", MESSAGES[0])
    assert (await fetchmail(pop3, tmp_path, 'keep sslproto ""')).returncode == 0
    g = grades(pop3)
    assert g["uidl"] == "pass" and g["capa"] == "pass" and g["quit"] == "pass"
    assert g["pipelining"] == "warn"  # PIPELINING offered; one command at a time
    history = card_of(pop3).history
    assert history[1].startswith("session 2 box alice: CAPA AUTH CRAM-MD5 <sasl> STAT ?! UIDL")
    assert history[1].count("RETR") == 1  # only the new message
    assert (await fetchmail(pop3, tmp_path, 'keep fetchall sslproto ""')).returncode == 0
    assert grades(pop3)["uidl"] == "warn"  # the third session kept mail without UIDL


async def test_mpop_keeps_with_uidl_and_pipelines(pop3: Server, tmp_path: Path) -> None:
    for _ in range(20):
        pop3.board.deliver("alice", MESSAGES[0] * 40)
    assert (await mpop(pop3, tmp_path, *PLAIN, "--keep=on")).returncode == 0
    g = grades(pop3)
    assert g["uidl"] == g["pipelining"] == g["quit"] == g["capa"] == "pass"
    assert card_of(pop3).counters["pipelined"] >= 10


async def test_curl_fetches_by_number_without_uidl(pop3: Server) -> None:
    assert (await curl(pop3, url(pop3, "/"))).returncode == 0
    assert (await curl(pop3, url(pop3, "/1"))).returncode == 0
    g = grades(pop3)
    assert g["uidl"] == "fail"  # left the message, asked no UIDL: it cannot tell it is old
    assert g["capa"] == g["quit"] == "pass"
    assert g["pipelining"] == "warn"
    assert card_of(pop3).counters["sessions"] == 2  # one connection per URL


def poplib_dele_then_close(port: int) -> None:
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    client.user("alice")
    client.pass_(ALICE_PASSWORD)
    client.dele(1)
    client.close()  # no QUIT


async def test_poplib_close_without_quit_leaves_deletions_uncommitted(pop3: Server) -> None:
    await trio.to_thread.run_sync(poplib_dele_then_close, pop3.port)
    await trio.testing.wait_all_tasks_blocked()
    assert grades(pop3)["quit"] == "fail"
    assert len(pop3.board.messages("alice")) == 3  # indeed nothing was deleted


# ----- the device's own faults ------------------------------------------------------------


async def hold_alice(pop3: Server) -> RawClient:
    """Log in to alice from 127.0.0.2 (another client) and stay: alice is then [IN-USE]."""
    client = await pop3.connect(source="127.0.0.2")
    assert (await client.login()).startswith(b"+OK")
    return client


async def test_in_use_fetchmail_retries_at_once_mpop_and_curl_give_up_without_quit(
    pop3: Server, tmp_path: Path
) -> None:
    holder = await hold_alice(pop3)
    try:
        assert (await fetchmail(pop3, tmp_path, 'keep sslproto ""')).returncode != 0
        # fetchmail met [IN-USE] on AUTH CRAM-MD5 and tried USER/PASS in the same second.
        assert grades(pop3)["retry"] == "fail"
        assert card_of(pop3).history[-1].endswith("AUTH CRAM-MD5 <sasl>! USER PASS! QUIT [QUIT]")
        pop3.service.clients = type(pop3.service.clients)()  # a fresh book for the next client
        done = await mpop(pop3, tmp_path, *PLAIN, "--keep=on")
        assert done.returncode != 0
        assert b"authentication failed (method USER)" in done.stderr  # the password was right
        assert grades(pop3)["retry"] == "pass"  # it gave up
        assert grades(pop3)["quit"] == "warn"  # ... without QUIT
        pop3.service.clients = type(pop3.service.clients)()
        done = await curl(pop3, url(pop3, "/"))
        assert done.returncode == 67 and b"Login denied" in done.stderr
        assert grades(pop3)["retry"] == "pass" and grades(pop3)["quit"] == "warn"
    finally:
        assert (await holder.cmd("QUIT")).startswith(b"+OK")


async def test_login_delay_neither_fetchmail_nor_mpop_honours_it(
    pop3: Server, tmp_path: Path
) -> None:
    pop3.profile.set("pop3.login_delay_s", "60")
    assert (await mpop(pop3, tmp_path, *PLAIN, "--keep=on")).returncode == 0
    assert (await mpop(pop3, tmp_path, *PLAIN, "--keep=on")).returncode != 0  # 60 s have not passed
    assert grades(pop3)["login-delay"] == "fail"
    assert reason(pop3, "login-delay") == "logged in too soon, though CAPA advertised it"
    assert grades(pop3)["quit"] == "warn"  # mpop left without QUIT after the -ERR
    pop3.service.clients = type(pop3.service.clients)()
    # The box's last login (mpop's) is within 60 s: fetchmail is refused too.
    assert (await fetchmail(pop3, tmp_path, 'keep sslproto ""')).returncode != 0
    assert grades(pop3)["login-delay"] == "fail"
    assert reason(pop3, "login-delay") == "logged in too soon 2 times"  # CRAM-MD5, then USER


async def test_memory_full_on_retr(pop3: Server, tmp_path: Path) -> None:
    # Leave room for a session (8 KiB) but not for a RETR buffer (64 KiB): MEMORY FULL.
    hog = pop3.budget.reserve(pop3.budget.free - 9000, "test: the rest of the RAM")
    try:
        assert (await fetchmail(pop3, tmp_path, 'keep sslproto ""')).returncode != 0
        g = grades(pop3)
        assert g["quit"] == "pass" and g["retry"] == "pass"  # each message once, then QUIT
        assert card_of(pop3).history[-1].count("RETR!") == 3
        pop3.service.clients = type(pop3.service.clients)()
        assert (await mpop(pop3, tmp_path, *PLAIN, "--keep=on")).returncode != 0
        assert grades(pop3)["quit"] == "warn"  # gave up at once, without QUIT
        pop3.service.clients = type(pop3.service.clients)()
        done = await curl(pop3, url(pop3, "/1"))
        assert done.returncode == 8 and b"Weird server reply" in done.stderr  # no code shown
        assert grades(pop3)["quit"] == "pass"
    finally:
        hog.release()


# ----- TLS ----------------------------------------------------------------------------------


async def test_stls_offered_mpop_by_default_logs_in_without_tls(
    tls_pop3: Server, tmp_path: Path, ca_file: Path
) -> None:
    assert (await mpop(tls_pop3, tmp_path, "--keep=on")).returncode == 0
    assert grades(tls_pop3)["tls"] == "warn"
    assert "logged in without TLS 1 time though STLS was offered" in reason(tls_pop3, "tls")
    assert " AUTH SCRAM-SHA-256 <sasl> x3 " in card_of(tls_pop3).history[0]
    tls_pop3.service.clients = type(tls_pop3.service.clients)()
    trust = f"--tls-trust-file={ca_file}"
    assert (await mpop(tls_pop3, tmp_path, "--keep=on", "--tls=on", trust)).returncode == 0
    assert grades(tls_pop3)["tls"] == "pass"


async def test_stls_offered_fetchmail_and_curl_upgrade_and_verify(
    tls_pop3: Server, tmp_path: Path, ca_file: Path
) -> None:
    # fetchmail upgrades on its own, and refuses a certificate it cannot verify.
    assert (await fetchmail(tls_pop3, tmp_path, "keep")).returncode != 0
    card = card_of(tls_pop3)
    assert card.counters["tls_failures"] == 1 and card.counters["logins"] == 0
    assert card.history[-1] == "session 1: CAPA STLS <tls failed> [TLS handshake failed]"
    tls_pop3.service.clients = type(tls_pop3.service.clients)()
    assert (await curl(tls_pop3, "--ssl", "--cacert", str(ca_file), url(tls_pop3))).returncode == 0
    assert grades(tls_pop3)["tls"] == "pass"  # --ssl: STLS when offered
    # fetchmail given the CA, polling 127.0.0.1 (an IP address SAN of the certificate):
    done = await fetchmail(tls_pop3, tmp_path, f"keep sslcertfile {ca_file}")
    assert done.returncode != 0
    assert b"Server CommonName mismatch: localhost != 127.0.0.1" in done.stderr


async def test_a_certificate_the_client_cannot_verify(tls_pop3: Server, tmp_path: Path) -> None:
    """The device's certificate is signed by a test CA these clients are not given: it should
    fail their verification. The fault note stands in for the faults plan's record."""
    book = tls_pop3.service.clients
    book.fault_met("127.0.0.1", None, "untrusted-cert", time.time())
    done = await curl(tls_pop3, "--ssl-reqd", url(tls_pop3))
    assert done.returncode == 60  # "SSL certificate problem: unable to get local issuer ..."
    assert grades(tls_pop3)["certificate"] == "pass"
    book.fault_met("127.0.0.1", None, "untrusted-cert", time.time())
    assert (await curl(tls_pop3, "--ssl-reqd", "-k", url(tls_pop3))).returncode == 0
    assert grades(tls_pop3)["certificate"] == "fail"
    assert "went on after the certificate" in reason(tls_pop3, "certificate")
    tls_pop3.service.clients = book = type(book)()
    book.fault_met("127.0.0.1", None, "untrusted-cert", time.time())
    assert (
        await mpop(tls_pop3, tmp_path, "--keep=on", "--tls=on", "--tls-certcheck=off")
    ).returncode == 0
    assert grades(tls_pop3)["certificate"] == "fail"
