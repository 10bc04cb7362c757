"""Real POP3 clients against a real Pop3Service: poplib, curl, fetchmail, mpop.

The external binaries come from the OS (CI installs curl, fetchmail and mpop); a test is
skipped, saying which binary is missing, only when it is not installed.
"""

from __future__ import annotations

import os
import poplib
import shutil
from pathlib import Path

import pytest
import trio

from tests.pop3.conftest import ALICE_PASSWORD, BOB_PASSWORD, MESSAGES, Server


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (apt-get install {binary})")
    return path


def normalised(message: bytes) -> bytes:
    """A message as the device sends it: CRLF line ends, a final CRLF."""
    text = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return text if text.endswith(b"\r\n") else text + b"\r\n"


# -- poplib -------------------------------------------------------------------------------


def poplib_session(port: int) -> None:
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        assert client.getwelcome().startswith(b"+OK DP-3530")
        caps = client.capa()
        assert {"TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING"} <= set(caps)
        client.user("alice")
        client.pass_(ALICE_PASSWORD)
        count, octets = client.stat()
        _, listing, _ = client.list()
        sizes = {int(n): int(s) for n, s in (line.split() for line in listing)}
        assert count == len(sizes) == 3
        assert octets == sum(sizes.values())
        for number, size in sizes.items():
            _, lines, received = client.retr(number)
            assert received == size  # poplib counts CRLFs and drops stuffing dots
            assert b"\r\n".join(lines) + b"\r\n" == normalised(MESSAGES[number - 1])
        _, uids, _ = client.uidl()
        assert len(uids) == 3
        _, top, _ = client.top(2, 1)
        assert top == [b"From: scanner@dp3530.local", b"Subject: dots", b"", b"."]
        assert client.dele(1).startswith(b"+OK")
        with pytest.raises(poplib.error_proto):
            client.retr(1)
        client.quit()
    finally:
        client.close()


async def test_poplib_reads_every_message_with_exact_octets(pop3: Server) -> None:
    await trio.to_thread.run_sync(poplib_session, pop3.port)
    assert len(pop3.board.messages("alice")) == 2


def poplib_apop(port: int) -> None:
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        client.apop("alice", ALICE_PASSWORD)
        assert client.stat()[0] == 3
        with pytest.raises(poplib.error_proto, match="IN-USE"):
            other = poplib.POP3("127.0.0.1", port, timeout=10)
            try:
                other.user("alice")
                other.pass_(ALICE_PASSWORD)
            finally:
                other.close()
        client.quit()
    finally:
        client.close()


async def test_poplib_apop_and_in_use(pop3: Server) -> None:
    await trio.to_thread.run_sync(poplib_apop, pop3.port)


# -- curl ---------------------------------------------------------------------------------


async def curl(pop3: Server, user: str, password: str, *args: str) -> bytes:
    result = await trio.run_process(
        [need("curl"), "-sS", "--max-time", "20", "-u", f"{user}:{password}", *args],
        capture_stdout=True,
        capture_stderr=True,
    )
    return result.stdout


async def test_curl_lists_retrieves_uidl_and_top(pop3: Server) -> None:
    url = f"pop3://127.0.0.1:{pop3.port}"
    sizes = [m.size for m in pop3.board.messages("alice")]
    # curl prefers APOP when the greeting offers it: alice has an APOP secret.
    listing = await curl(pop3, "alice", ALICE_PASSWORD, f"{url}/")
    assert listing == b"".join(b"%d %d\r\n" % (n, s) for n, s in enumerate(sizes, 1))
    for number, message in enumerate(MESSAGES, 1):
        assert await curl(pop3, "alice", ALICE_PASSWORD, f"{url}/{number}") == normalised(message)
    uids = [m.uid.encode() for m in pop3.board.messages("alice")]
    uidl = await curl(pop3, "alice", ALICE_PASSWORD, "-X", "UIDL", f"{url}/")
    assert uidl == b"".join(b"%d %s\r\n" % (n, u) for n, u in enumerate(uids, 1))
    top = await curl(pop3, "alice", ALICE_PASSWORD, "-X", "TOP 1 0", f"{url}/")
    assert top == b"From: scanner@dp3530.local\r\nSubject: one\r\n\r\n"


async def test_curl_with_user_pass_when_apop_is_off(pop3: Server) -> None:
    pop3.profile.set("pop3.apop", "false")
    pop3.board.deliver("bob", MESSAGES[1])
    url = f"pop3://127.0.0.1:{pop3.port}"
    assert await curl(pop3, "bob", BOB_PASSWORD, f"{url}/1") == MESSAGES[1]
    assert pop3.service.stats.logins_ok == 1


# -- fetchmail ----------------------------------------------------------------------------


async def fetchmail(pop3: Server, tmp_path: Path, keep: bool) -> bytes:
    binary = need("fetchmail")
    out = tmp_path / "fetched"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 with proto POP3 port {pop3.port}\n"
        f'  user "alice" there with password "{ALICE_PASSWORD}" is "tester" here\n'
        f'  options {"keep" if keep else "no keep"} fetchall sslproto ""\n'
        f'  mda "cat >> {out}"\n'
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    result = await trio.run_process(
        [binary, "-f", str(rc), "--nosyslog", "-N", "-d0", "--pidfile", str(tmp_path / "pid")],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    return out.read_bytes()


async def test_fetchmail_downloads_the_box_with_keep_then_with_delete(
    pop3: Server, tmp_path: Path
) -> None:
    kept = await fetchmail(pop3, tmp_path, keep=True)
    for subject in (b"Subject: one", b"Subject: dots", b"Subject: bare LF"):
        assert kept.count(subject) == 1
    assert len(pop3.board.messages("alice")) == 3
    (tmp_path / "fetched").unlink()
    await trio.sleep(0.05)
    fetched = await fetchmail(pop3, tmp_path, keep=False)
    assert fetched.count(b"Subject:") == 3
    assert b"\n.x\n" in fetched.replace(b"\r\n", b"\n")  # unstuffed on the way
    assert pop3.board.messages("alice") == []


# -- mpop ---------------------------------------------------------------------------------


async def mpop(pop3: Server, tmp_path: Path, keep: bool) -> bytes:
    binary = need("mpop")
    mbox = tmp_path / "mpop.mbox"
    rc = tmp_path / "mpoprc"
    rc.write_text("")
    rc.chmod(0o600)
    result = await trio.run_process(
        [
            binary,
            "-C",
            str(rc),
            "--host=127.0.0.1",
            f"--port={pop3.port}",
            "--user=alice",
            f"--passwordeval=echo '{ALICE_PASSWORD}'",
            "--tls=off",
            "--auth=user",
            f"--delivery=mbox,{mbox}",
            f"--keep={'on' if keep else 'off'}",
            "--only-new=off",
            f"--uidls-file={tmp_path / 'uidls'}",
        ],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    return mbox.read_bytes()


async def test_mpop_downloads_the_box_with_keep_then_with_delete(
    pop3: Server, tmp_path: Path
) -> None:
    kept = await mpop(pop3, tmp_path, keep=True)
    assert kept.count(b"\nFrom ") + kept.startswith(b"From ") == 3
    assert len(pop3.board.messages("alice")) == 3
    (tmp_path / "mpop.mbox").unlink()
    fetched = await mpop(pop3, tmp_path, keep=False)
    assert fetched.count(b"Subject:") == 3
    assert pop3.board.messages("alice") == []
