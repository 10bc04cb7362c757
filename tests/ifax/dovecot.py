"""A private Dovecot on a loopback port holding one fax mailbox, for the Internet Fax tests.

Reuses the benchmark's building blocks (benchmarks.pop3_dovecot: the mail user and password
entries; benchmarks.pop3_procs: free ports, the greeting wait, the process group) and writes
its own small config: Dovecot's default process model, `{PLAIN}` passwords, `auth_mechanisms
= plain` (SASL PLAIN), optionally `ssl = yes` with a certificate naming localhost and
127.0.0.1 (STLS offered, verified by the client against that certificate as its CA file).
Nothing of the system's Dovecot is used or touched. Needs root and dovecot-pop3d.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from benchmarks.pop3_dovecot import MAIL_USER, password_entry
from benchmarks.pop3_procs import ServerProcess, free_port, wait_for_greeting
from firmware.security.tls import make_self_signed

USER = "fax"
PASSWORD = "fax-pass-1"

CONFIG = """\
base_dir = {run}
state_dir = {state}
instance_name = dpfw-ifax-{port}
protocols = pop3
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain scram-sha-256
auth_failure_delay = 0
log_path = {log}
info_log_path = {log}
mail_location = maildir:~/Maildir
first_valid_uid = 1
pop3_uidl_format = %g
pop3_lock_session = yes
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={home}/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s_port}
  }}
}}
"""


class Dovecot:
    """One running private Dovecot; `deliver` drops a message into the fax box's maildir."""

    def __init__(self, *, tls: bool = False) -> None:
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not Path(binary).exists() or os.geteuid() != 0:
            pytest.skip("needs root and dovecot-pop3d (installed by .ci/run)")
        mail = pwd.getpwnam(MAIL_USER)
        self.uid, self.gid = mail.pw_uid, mail.pw_gid
        self.port = free_port()
        self.pop3s_port = free_port() if tls else 0
        # Not under pytest's tmp_path: its parents are 0700 and Dovecot's users must traverse.
        self.base = base = Path(tempfile.mkdtemp(prefix="dpfw-ifax-dovecot-"))
        run, state, home = base / "run", base / "state", base / "home"
        for d in (base, run, state, home):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        self.maildir = home / USER / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        self._chown(home)
        passwd = base / "passwd"
        passwd.write_text(f"{USER}:{password_entry(PASSWORD, 'plain')}\n")
        passwd.chmod(0o644)
        ssl = "ssl = no"
        self.ca_file: Path | None = None
        if tls:
            cert, key = make_self_signed("localhost")
            (base / "cert.pem").write_text(cert)
            (base / "key.pem").write_text(key)
            (base / "key.pem").chmod(0o600)
            self.ca_file = base / "cert.pem"
            ssl = (
                f"ssl = yes\nssl_cert = <{base / 'cert.pem'}\nssl_key = <{base / 'key.pem'}\n"
                "ssl_min_protocol = TLSv1.2"
            )
        self.log = base / "dovecot.log"
        conf = base / "dovecot.conf"
        conf.write_text(
            CONFIG.format(
                run=run,
                state=state,
                port=self.port,
                pop3s_port=self.pop3s_port,
                ssl=ssl,
                log=self.log,
                passwd=passwd,
                uid=self.uid,
                gid=self.gid,
                home=home,
            )
        )
        stderr = (base / "dovecot.stderr").open("wb")
        proc = subprocess.Popen(
            [binary, "-F", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
        self.server = ServerProcess("dovecot-ifax", proc, self.log, stop_signal=signal.SIGTERM)
        try:
            wait_for_greeting("127.0.0.1", self.port, proc, timeout_s=20.0)
        except BaseException:
            self.server.stop()
            raise
        self._n = 0

    def _chown(self, top: Path) -> None:
        for root, dirs, files in os.walk(top):
            os.chown(root, self.uid, self.gid)
            for entry in dirs + files:
                os.chown(os.path.join(root, entry), self.uid, self.gid)

    def deliver(self, message: bytes) -> None:
        self._n += 1
        name = f"{int(time.time())}.M{self._n}P{os.getpid()}.dpfw-ifax,S={len(message)}"
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(message)
        os.chown(tmp, self.uid, self.gid)
        tmp.rename(self.maildir / "new" / name)

    def stored(self) -> list[str]:
        """The file names in the maildir's new/ and cur/ (what the box holds)."""
        return sorted(p.name for sub in ("new", "cur") for p in (self.maildir / sub).iterdir())

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def fax_message(attachment: bytes, content_type: str, filename: str, sender: str) -> bytes:
    """An RFC 3965 simple-mode message: a short text part and one attachment."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = f"{USER}@localhost"
    msg["Subject"] = f"fax {filename}"
    msg["Date"] = "Mon, 30 Nov 2026 01:00:00 +0000"
    msg.set_content("Internet Fax\n")
    maintype, subtype = content_type.split("/")
    msg.add_attachment(attachment, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()
