"""A private Dovecot on a loopback port holding one fax mailbox, for the Internet Fax tests.

The benchmark's Dovecot (benchmarks.pop3_dovecot.start_dovecot writes its config and users
and starts it): the classic flavour (one pop3 process per session), `{PLAIN}` passwords,
SASL PLAIN and SCRAM-SHA-256, optionally `ssl = yes` with a certificate naming localhost
(STLS offered, and POP3S on its own port; the client verifies against that certificate as
its CA file).
Nothing of the system's Dovecot is used or touched. Needs root and dovecot-pop3d.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from benchmarks.pop3_corpus import Account, Corpus
from benchmarks.pop3_dovecot import MAIL_USER, start_dovecot
from benchmarks.pop3_procs import free_port
from firmware.security.tls import make_self_signed

USER = "fax"
PASSWORD = "fax-pass-1"


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
        home = base / "home"
        home.mkdir()
        home.chmod(0o755)
        self.maildir = home / USER / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        self._chown(home)
        self.ca_file: Path | None = None
        keys: tuple[Path, Path] | None = None
        if tls:
            cert, key = make_self_signed("localhost")
            (base / "cert.pem").write_text(cert)
            (base / "key.pem").write_text(key)
            (base / "key.pem").chmod(0o600)
            self.ca_file = base / "cert.pem"
            keys = (base / "cert.pem", base / "key.pem")
        self.log = base / "ifax" / "dovecot.log"
        account = Account(USER, PASSWORD, b"")
        self.server, _ = start_dovecot(
            base,
            Corpus(b"", b"", (account,), ()),
            home,
            self.port,
            8,
            "dovecot-classic",
            name="ifax",
            scheme="plain",
            tls=keys,
            mechanisms="plain scram-sha-256",
            pop3s_port=self.pop3s_port,
        )
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
