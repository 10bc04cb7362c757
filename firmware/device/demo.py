"""The emulator's embedded default image: a DP-3530 for labs with two demo boxes.

Passwords here are lab passwords, printed by `dpfw image demo`; never use such an image on a
network you do not control.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path

from firmware.config.profile import factory
from firmware.device.boards import create_board
from firmware.security.credentials import verify_password
from firmware.store.board import Board

MODEL = "DP-3530"
ADMIN_PASSWORD = "admin-lab"
BOXES = {"alice": "alice-lab", "bob": "bob-lab"}


def _text(to: str, subject: str, body: str, when: datetime, host: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Scanner <scanner@{host}>"
    msg["To"] = f"{to}@{host}"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = make_msgid("demo", host)
    msg.set_content(body)
    return msg.as_bytes()


def _with_attachment(to: str, when: datetime, host: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Scanner <scanner@{host}>"
    msg["To"] = f"{to}@{host}"
    msg["Subject"] = "Scan with attachment (demo)"
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = make_msgid("demo", host)
    msg.set_content("One page scanned at 200x200 dpi, attached as plain text for the demo.\n")
    page = "\n".join(f"Line {n:02d} of the demo page." for n in range(1, 21)) + "\n"
    msg.add_attachment(
        page.encode("ascii"), maintype="text", subtype="plain", filename="page-001.txt"
    )
    return msg.as_bytes()


def demo_messages(box: str, host: str) -> list[bytes]:
    """A few plain messages: one with a line starting with ".", one multi-part."""
    base = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    return [
        _text(
            box, "Welcome to the DP-3530 demo", f"Hello {box},\n\nThis box is a demo.\n", base, host
        ),
        _text(
            box,
            "Dots at line starts",
            "The next line starts with a dot:\n.hidden? no, stuffed on the wire\n..two dots\n"
            "A line with just a dot follows:\n.\nEnd.\n",
            base.replace(minute=31),
            host,
        ),
        _with_attachment(box, base.replace(minute=32), host),
    ]


NOTICE_PREFIX = "LAB IMAGE: "
_NOTICE = re.compile(
    r"LAB IMAGE: POP3 boxes \(user/password\) (?P<boxes>.*); console admin password (?P<admin>.+)"
)


def lab_notice() -> str:
    """The `lab.notice` setting of a demo image: the passwords it was made with.

    The device does not print it as stored: `boot_notice` prints only the passwords that are
    still true at that boot.
    """
    boxes = ", ".join(f"{name}/{password}" for name, password in BOXES.items())
    return f"LAB IMAGE: POP3 boxes (user/password) {boxes}; console admin password {ADMIN_PASSWORD}"


def boot_notice(notice: str, board: Board) -> list[str]:
    """The banner lines for a `lab.notice`: only passwords that still verify on `board`.

    A password changed since the image was made (console `passwd`, `box passwd`, `dpfw box
    passwd`) or a deleted box is left out, so a boot never prints a password that is no
    longer true. Checked at every boot against the stored SCRAM keys (PBKDF2, a few ms each).
    A notice in another format has no passwords this code knows of and is returned as is.
    """
    match = _NOTICE.fullmatch(notice.strip())
    if match is None:
        return notice.splitlines()
    shown: list[str] = []
    stale: list[str] = []
    for pair in match["boxes"].split(", "):
        name, _, password = pair.partition("/")
        credentials = board.box_credentials(name)
        if credentials is None:
            continue  # the box is gone: nothing to log in to
        if verify_password(credentials, password):
            shown.append(f"{name}/{password}")
        else:
            stale.append(f"box {name}")
    parts = []
    if shown:
        parts.append(f"POP3 boxes (user/password) {', '.join(shown)}")
    if board.check_admin_password(match["admin"]):
        parts.append(f"console admin password {match['admin']}")
    else:
        stale.append("console admin")
    if stale:
        parts.append(f"changed since the image was made (not shown): {', '.join(stale)}")
    return [NOTICE_PREFIX + "; ".join(parts)]


def create_demo(path: Path, *, size: int | None = None) -> Board:
    """Create the demo image at `path` and return it open."""
    # A lab image: plaintext logins allowed, and the legacy methods (APOP, CRAM-MD5) on with
    # every demo box keeping a legacy secret, so whatever method a client picks from the
    # greeting and CAPA works (curl picks CRAM-MD5, or APOP, when offered).
    profile = factory(MODEL).with_value("pop3.plaintext_auth", "always", "demo profile")
    profile = profile.with_value("pop3.apop", "true", "demo profile")
    board = create_board(path, profile, ADMIN_PASSWORD, size=size)
    host = profile.str("identity.hostname")
    try:
        board.set_setting("lab.notice", lab_notice())
        for name, password in BOXES.items():
            board.add_box(name, password, legacy=True)
            for message in demo_messages(name, host):
                board.deliver(name, message)
    except BaseException:
        board.close()
        raise
    return board
