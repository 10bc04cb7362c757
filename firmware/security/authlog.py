"""The auth log: one stable key=value line per login success or failure, TLS failure, limit hit.

    dpfw pop3 event=auth-fail rip=192.0.2.7 box=alice mech=PASS reason=bad-credentials session=17

The line is a contract with log watchers (fail2ban, see FAIL2BAN_FILTER and docs/security.md):
`event` and `rip` always come first and in that order; fields are added, never renamed.
A value made only of [A-Za-z0-9._:@/+-] is written bare; anything else is written in double
quotes with every other byte as \\xHH (UTF-8). So a value never holds a space, '=', a quote or
a newline, and a hostile user name cannot forge a field or a line.
"""

from __future__ import annotations

import logging
import re

PREFIX = "dpfw pop3"
LOGGER = logging.getLogger("dpfw.auth")

# The events, with what each means; `reason` and `limit` say more.
EVENTS = {
    "auth-ok": "a login succeeded (USER/PASS, APOP or AUTH)",
    "auth-fail": "a login failed: bad credentials, malformed exchange, locked box, ...",
    "auth-unavailable": "APOP/CRAM-MD5 for a name without a legacy secret: refused, not counted",
    "tls-fail": "a TLS handshake failed or STLS was refused",
    "limit": "a connection was refused or closed by a limit (sessions, per-client, failures)",
    "preauth-timeout": "a client that never logged in was closed after pop3.preauth_timeout_s",
    "evicted": "a client that had not logged in was closed to make room for a new one",
}

_SAFE = re.compile(r"[A-Za-z0-9._:@/+-]+")
_KEY = re.compile(r"[a-z][a-z0-9-]*")
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@/+-")

Value = str | int | float | None


def quote(value: str) -> str:
    """A value as the log writes it: bare if safe, else quoted with \\xHH escapes."""
    if _SAFE.fullmatch(value):
        return value
    escaped = "".join(
        chr(byte) if byte in _SAFE_BYTES else f"\\x{byte:02x}" for byte in value.encode()
    )
    return f'"{escaped}"'


def unquote(text: str) -> str:
    """The inverse of `quote` (for tools and tests); ValueError if `text` is not one."""
    if _SAFE.fullmatch(text):
        return text
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ValueError(f"not a log value: {text!r}")
    body = text[1:-1]
    out = bytearray()
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            if body[index + 1 : index + 2] != "x" or not re.fullmatch(
                r"[0-9a-f]{2}", body[index + 2 : index + 4]
            ):
                raise ValueError(f"bad escape in log value: {text!r}")
            out.append(int(body[index + 2 : index + 4], 16))
            index += 4
        elif ord(char) < 128 and ord(char) in _SAFE_BYTES:
            out.append(ord(char))
            index += 1
        else:
            raise ValueError(f"unescaped character in log value: {text!r}")
    return out.decode("utf-8", errors="replace")


def format_event(event: str, rip: str, **fields: Value) -> str:
    """One log line: `dpfw pop3 event=E rip=IP key=value ...` (None values are left out).

    Keyword names become keys with '_' written as '-' (e.g. `tls_version` -> `tls-version`).
    """
    if event not in EVENTS:
        raise ValueError(f"unknown auth log event {event!r}")
    parts = [PREFIX, f"event={event}", f"rip={quote(rip)}"]
    for name, value in fields.items():
        if value is None:
            continue
        key = name.replace("_", "-")
        if not _KEY.fullmatch(key) or key in ("event", "rip"):
            raise ValueError(f"bad auth log key {name!r}")
        parts.append(f"{key}={quote(str(value))}")
    return " ".join(parts)


def log_event(event: str, rip: str, **fields: Value) -> None:
    """Write one event to the `dpfw.auth` logger (failures and limits as WARNING)."""
    level = logging.INFO if event == "auth-ok" else logging.WARNING
    if LOGGER.isEnabledFor(level):  # a busy device logs in often: skip the work if unheard
        LOGGER.log(level, "%s", format_event(event, rip, **fields))


_LINE = re.compile(r"(?:^|\s)dpfw pop3 (event=\S+(?: \S+)*)\s*$")


def parse(line: str) -> dict[str, str]:
    """The fields of a log line (with any logging prefix before `dpfw pop3`); ValueError if none."""
    match = _LINE.search(line)
    if not match:
        raise ValueError(f"not a dpfw auth log line: {line!r}")
    fields: dict[str, str] = {}
    for token in match.group(1).split(" "):
        key, eq, value = token.partition("=")
        if not eq or not _KEY.fullmatch(key) or key in fields:
            raise ValueError(f"bad field {token!r} in auth log line")
        fields[key] = unquote(value)
    return fields


# Save as /etc/fail2ban/filter.d/dpfw-pop3.conf. The line must begin (after the date fail2ban
# strips) with the level and logger of firmware.cli's log format, so text another logger
# copies from a client cannot pass for an auth-fail line.
FAIL2BAN_FILTER = r"""[Definition]
failregex = ^\s*[A-Z]+ dpfw\.auth: dpfw pop3 event=auth-fail rip=<HOST>(?: |$)
ignoreregex =
"""
