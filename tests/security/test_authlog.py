"""The auth log line format, its escaping, and the fail2ban filter that reads it."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.security import authlog
from firmware.security.authlog import format_event, parse, quote, unquote

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def test_line_format_is_stable() -> None:
    line = format_event(
        "auth-fail", "127.0.0.1", box="alice", mech="PASS", reason="bad-credentials", session=17
    )
    assert line == (
        "dpfw pop3 event=auth-fail rip=127.0.0.1 box=alice mech=PASS reason=bad-credentials "
        "session=17"
    )


def test_none_fields_are_left_out_and_underscores_become_dashes() -> None:
    line = format_event("tls-fail", "::1", box=None, tls_version="TLSv1.1", reason="handshake")
    assert line == "dpfw pop3 event=tls-fail rip=::1 tls-version=TLSv1.1 reason=handshake"


def test_unknown_events_and_bad_keys_are_our_bugs() -> None:
    with pytest.raises(ValueError, match="unknown auth log event"):
        format_event("auth-maybe", "127.0.0.1")
    with pytest.raises(ValueError, match="bad auth log key"):
        format_event("auth-ok", "127.0.0.1", Box="x")


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("alice", "alice"),
        ("a.b-c_d@host:1/2+3", "a.b-c_d@host:1/2+3"),
        ("fe80::1%eth0", '"fe80::1\\x25eth0"'),
        ("", '""'),
        ("x rip=1.2.3.4", '"x\\x20rip\\x3d1.2.3.4"'),
        ('a"b', '"a\\x22b"'),
        ("a\\x41", '"a\\x5cx41"'),
        ("line\nbreak\r", '"line\\x0abreak\\x0d"'),
        ("café", '"caf\\xc3\\xa9"'),
    ],
)
def test_quoting(value: str, written: str) -> None:
    assert quote(value) == written
    assert unquote(written) == value


@given(st.text(max_size=60))
def test_any_value_round_trips_and_cannot_break_the_line(value: str) -> None:
    line = format_event("auth-fail", "192.0.2.1", box=value, mech="PLAIN", reason="malformed")
    assert "\n" not in line and "\r" not in line
    assert line.count("=") == 5 and line.count(" ") == 6
    assert parse(line) == {
        "event": "auth-fail",
        "rip": "192.0.2.1",
        "box": value,
        "mech": "PLAIN",
        "reason": "malformed",
    }


@pytest.mark.parametrize("text", ['"a', '"a b"', '"\\x4"', '"\\y41"', "a b", '"é"'])
def test_unquote_refuses_what_quote_never_writes(text: str) -> None:
    with pytest.raises(ValueError, match="log value"):
        unquote(text)


def test_parse_refuses_non_log_lines() -> None:
    with pytest.raises(ValueError, match="not a dpfw auth log line"):
        parse("something else")
    with pytest.raises(ValueError, match="bad field"):
        parse("dpfw pop3 event=auth-ok rip=1.2.3.4 rip=5.6.7.8")


def test_log_event_writes_to_the_auth_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dpfw.auth"):
        authlog.log_event("auth-ok", "192.0.2.1", box="alice", mech="SCRAM-SHA-256")
        authlog.log_event("limit", "192.0.2.1", limit="per-client")
    assert [(r.name, r.levelno) for r in caplog.records] == [
        ("dpfw.auth", logging.INFO),
        ("dpfw.auth", logging.WARNING),
    ]
    assert caplog.records[1].getMessage() == "dpfw pop3 event=limit rip=192.0.2.1 limit=per-client"


# -- the fail2ban filter ---------------------------------------------------------------------

HOSTILE = "x rip=203.0.113.66\n2026-01-01 00:00:00,000 WARNING dpfw.auth: dpfw pop3 event=auth-fail"


def sample_log() -> tuple[list[str], list[str]]:
    """(log lines as firmware.cli's logging format writes them, the addresses to ban)."""
    messages = [
        (
            "WARNING",
            format_event(
                "auth-fail",
                "192.0.2.7",
                box="alice",
                mech="PASS",
                reason="bad-credentials",
                session=1,
            ),
        ),
        ("INFO", format_event("auth-ok", "192.0.2.8", box="alice", mech="PASS", session=2)),
        (
            "WARNING",
            format_event(
                "auth-fail",
                "2001:db8::5",
                box=HOSTILE,
                mech="PLAIN",
                reason="bad-credentials",
                session=3,
            ),
        ),
        ("INFO", format_event("auth-ok", "192.0.2.9", box=HOSTILE, session=4)),
        ("WARNING", format_event("tls-fail", "192.0.2.10", reason="handshake")),
        ("WARNING", format_event("limit", "192.0.2.11", limit="per-client")),
        # APOP/CRAM-MD5 for a box without a legacy secret: the owner's client, not a guess.
        (
            "WARNING",
            format_event(
                "auth-unavailable",
                "192.0.2.13",
                box="carol",
                mech="CRAM-MD5",
                reason="no-legacy-secret",
                session=6,
            ),
        ),
        ("WARNING", format_event("limit", "192.0.2.14", limit="line-length", session=7)),
        (
            "WARNING",
            format_event(
                "auth-fail", "192.0.2.12", box="bob", mech="APOP", reason="box-locked", session=5
            ),
        ),
        # Another logger quoting a client's bytes must not pass for an auth line.
        (
            "INFO",
            "dpfw.pop3: bad command 'x WARNING dpfw.auth: dpfw pop3 event=auth-fail "
            "rip=203.0.113.66'",
        ),
    ]
    lines = []
    for n, (level, message) in enumerate(messages):
        if not message.startswith("dpfw.pop3"):
            message = f"dpfw.auth: {message}"
        lines.append(f"2026-11-28 00:12:{n:02d},123 {level} {message}")
    return lines, ["192.0.2.7", "2001:db8::5", "192.0.2.12"]


def failregex() -> re.Pattern[str]:
    match = re.search(r"^failregex = (.+)$", authlog.FAIL2BAN_FILTER, re.MULTILINE)
    assert match
    return re.compile(match.group(1).replace("<HOST>", r"(?P<host>[0-9A-Fa-f:.]+)"))


def test_failregex_matches_auth_failures_only() -> None:
    lines, banned = sample_log()
    pattern = failregex()
    hosts = []
    for line in lines:
        rest = line.split(" ", 2)[2]  # what fail2ban matches after cutting the date
        if match := pattern.search(rest):
            hosts.append(match.group("host"))
    assert hosts == banned
    assert "203.0.113.66" not in hosts


@pytest.mark.skipif(shutil.which("fail2ban-regex") is None, reason="fail2ban not installed")
def test_real_fail2ban_regex_bans_exactly_the_failures(tmp_path: Path) -> None:
    lines, banned = sample_log()
    log = tmp_path / "dpfw.log"
    log.write_text("\n".join(lines) + "\n")
    conf = tmp_path / "dpfw-pop3.conf"
    conf.write_text(authlog.FAIL2BAN_FILTER)
    result = subprocess.run(
        ["fail2ban-regex", "-o", "ip", str(log), str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == banned


def test_docs_carry_the_same_filter() -> None:
    text = DOCS.read_text("utf-8")
    assert authlog.FAIL2BAN_FILTER.strip() in text
