"""POP3 line syntax, in one place: command lines, reply lines, response codes, numbers.

Command grammar (RFC 1939 §3 and §§4-7, RFC 2449 §5, RFC 2595 §4, RFC 5034 §4): a keyword of
up to four letters, case-insensitive, then arguments separated by spaces. Message numbers and
the TOP line count are decimal digits of any length, parsed here and nowhere else; whether a
number names a message is the application's question. Commands without arguments refuse any.

Reply lines (RFC 1939 §3, RFC 2449 §4 and §8): `+OK` or `-ERR`, optionally a response code in
brackets, then text; at most 512 octets with the CRLF.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Final

from firmware.pop3.events import BadCommand, Command, Problem

MAX_COMMAND_LINE: Final = 255
"""Octets per command line including CRLF a server must accept (RFC 2449 §4)."""
MAX_REPLY_LINE: Final = 512
"""Octets per reply first line including CRLF (RFC 2449 §4)."""
MAX_SASL_LINE: Final = 5466
"""Octets per client line inside an AUTH exchange, CRLF included: base64 of 4096 octets plus
CRLF (RFC 5034 §4 lets the server bound it; `firmware.security.sasl` uses the same figure)."""

ENCODING: Final = "utf-8"
ERRORS: Final = "surrogateescape"


class Args(Enum):
    """The argument shapes of the commands."""

    NONE = "no arguments"
    NUMBER = "a message number"
    OPT_NUMBER = "an optional message number"
    NUMBER_COUNT = "a message number and a line count"
    NAME = "a mailbox name"
    REST = "a password (the rest of the line)"
    NAME_DIGEST = "a mailbox name and a digest"
    MECHANISM = "an optional mechanism and initial response"


# Enum members as module constants (an Enum class attribute look-up costs ~130 ns in 3.11).
_A_MECHANISM: Final = Args.MECHANISM
_A_NAME: Final = Args.NAME
_A_NAME_DIGEST: Final = Args.NAME_DIGEST
_A_NONE: Final = Args.NONE
_A_NUMBER: Final = Args.NUMBER
_A_NUMBER_COUNT: Final = Args.NUMBER_COUNT
_A_OPT_NUMBER: Final = Args.OPT_NUMBER
_A_REST: Final = Args.REST

GRAMMAR: Final[dict[str, Args]] = {
    "USER": _A_NAME,
    "PASS": _A_REST,
    "APOP": _A_NAME_DIGEST,
    "AUTH": _A_MECHANISM,
    "STLS": _A_NONE,
    "CAPA": _A_NONE,
    "QUIT": _A_NONE,
    "STAT": _A_NONE,
    "LIST": _A_OPT_NUMBER,
    "RETR": _A_NUMBER,
    "DELE": _A_NUMBER,
    "NOOP": _A_NONE,
    "RSET": _A_NONE,
    "TOP": _A_NUMBER_COUNT,
    "UIDL": _A_OPT_NUMBER,
}
"""Every command the library knows, with its argument shape."""

_KEYWORDS: Final[dict[bytes, str]] = {}
for _k in GRAMMAR:
    for _variant in {_k, _k.lower(), _k.capitalize()}:
        _KEYWORDS[_variant.encode("ascii")] = _k

_ALWAYS_MULTILINE: Final = frozenset({"CAPA", "RETR", "TOP"})
_MULTILINE_WITHOUT_ARGS: Final = frozenset({"LIST", "UIDL", "AUTH"})


def is_multiline(command: Command) -> bool:
    """True when a `+OK` to `command` starts a multi-line reply (RFC 1939 §5, RFC 2449 §5,
    and `AUTH` with no argument: the mechanism listing older clients ask for)."""
    keyword = command.keyword
    if keyword in _ALWAYS_MULTILINE:
        return True
    return keyword in _MULTILINE_WITHOUT_ARGS and not command.args and not command.numbers


def _decimal(word: str) -> int | None:
    """A decimal number of any length (ASCII digits only), or None."""
    if word.isascii() and word.isdigit():
        return int(word)
    return None


def parse_command(line: bytes) -> Command | BadCommand:
    """Parse one command line (its line end already removed) into a Command or a BadCommand.

    State is not checked here (the connection does that with the transition table).
    """
    head, _, raw_rest = line.partition(b" ")
    keyword = _KEYWORDS.get(head) or _KEYWORDS.get(head.upper())
    if keyword is None:
        return BadCommand(Problem.UNKNOWN, "", "unknown command")
    spec = GRAMMAR[keyword]
    rest = raw_rest.decode(ENCODING, ERRORS)
    if spec is _A_REST:
        if not rest:
            return _syntax(keyword, spec)
        return Command(keyword, (rest,))
    words = rest.split()
    if spec is _A_NONE:
        return Command(keyword) if not words else _syntax(keyword, spec)
    if spec is _A_NUMBER or spec is _A_OPT_NUMBER:
        if not words and spec is _A_OPT_NUMBER:
            return Command(keyword)
        number = _decimal(words[0]) if len(words) == 1 else None
        return _syntax(keyword, spec) if number is None else Command(keyword, (), (number,))
    if spec is _A_NUMBER_COUNT:
        if len(words) == 2:
            number, count = _decimal(words[0]), _decimal(words[1])
            if number is not None and count is not None:
                return Command(keyword, (), (number, count))
        return _syntax(keyword, spec)
    if spec is _A_NAME:
        return Command(keyword, (words[0],)) if len(words) == 1 else _syntax(keyword, spec)
    if spec is _A_NAME_DIGEST:
        return Command(keyword, tuple(words)) if len(words) == 2 else _syntax(keyword, spec)
    # _A_MECHANISM
    if len(words) <= 2:
        return Command(keyword, tuple(words))
    return _syntax(keyword, spec)


def _syntax(keyword: str, spec: Args) -> BadCommand:
    return BadCommand(Problem.SYNTAX, keyword, f"{keyword} takes {spec.value}")


def command_error(command: Command) -> str | None:
    """Why `command` cannot be sent as it is, or None if it can (the client's check)."""
    spec = GRAMMAR.get(command.keyword)
    if spec is None:
        return f"unknown command keyword {command.keyword!r}"
    args, numbers = command.args, command.numbers
    if numbers and min(numbers) < 0:
        return f"{command.keyword}: numbers are non-negative"
    if spec is _A_NONE:
        fits = not args and not numbers
    elif spec is _A_NUMBER:
        fits = not args and len(numbers) == 1
    elif spec is _A_OPT_NUMBER:
        fits = not args and len(numbers) <= 1
    elif spec is _A_NUMBER_COUNT:
        fits = not args and len(numbers) == 2
    elif spec is _A_NAME:
        fits = len(args) == 1 and not numbers and _is_word(args[0])
    elif spec is _A_REST:
        fits = len(args) == 1 and not numbers and _is_text(args[0])
    elif spec is _A_NAME_DIGEST:
        fits = len(args) == 2 and not numbers and all(_is_word(a) for a in args)
    else:
        fits = len(args) <= 2 and not numbers and all(_is_word(a) for a in args)
    if not fits:
        return f"{command.keyword} takes {spec.value}"
    return None


def _is_word(text: str) -> bool:
    return bool(text) and not any(c.isspace() for c in text)


def _is_text(text: str) -> bool:
    return bool(text) and "\r" not in text and "\n" not in text


def format_command(command: Command) -> bytes:
    """The wire form of a valid command, CRLF included."""
    parts = [command.keyword, *command.args, *(str(n) for n in command.numbers)]
    return " ".join(parts).encode(ENCODING, ERRORS) + b"\r\n"


# -- replies ---------------------------------------------------------------------------------

_CODE: Final = re.compile(r"[\x21-\x5a\x5c\x5e-\x7e]+(?:/[\x21-\x2e\x30-\x5a\x5c\x5e-\x7e]+)*")
"""RFC 2449 §8 resp-code: levels of schar (no brackets) separated by `/`."""


def code_error(code: str) -> str | None:
    """Why `code` is not a valid response code, or None."""
    return None if _CODE.fullmatch(code) else f"not an RFC 2449 response code: {code!r}"


def format_status(prefix: bytes, text: str, code: str | None) -> bytes:
    """`+OK`/`-ERR`/`+` line with optional `[code]` and text, CRLF included.

    Raises ValueError when the text holds CR or LF, the code is malformed, the text starts
    with `[` without a code (a client would read it as a code, RFC 2449 §8), or the line is
    longer than 512 octets.
    """
    if "\r" in text or "\n" in text:
        raise ValueError("reply text must not contain CR or LF")
    if code is None and text.startswith("[") and prefix != b"+":
        raise ValueError("reply text starting with '[' reads as a response code; pass code=")
    line = prefix
    if code is not None:
        problem = code_error(code)
        if problem:
            raise ValueError(problem)
        line += b" [" + code.encode("ascii") + b"]"
    if text:
        line += b" " + text.encode(ENCODING, ERRORS)
    line += b"\r\n"
    if len(line) > MAX_REPLY_LINE:
        raise ValueError(f"reply line of {len(line)} octets; at most {MAX_REPLY_LINE}")
    return line


def parse_status(rest: bytes) -> tuple[str | None, str]:
    """(code, text) from what follows `+OK`/`-ERR` on a reply line (line end removed)."""
    if rest.startswith(b" "):
        rest = rest[1:]
    if rest.startswith(b"["):
        end = rest.find(b"]")
        if end > 1:
            code = rest[1:end].decode("ascii", "replace")
            if _CODE.fullmatch(code):
                text = rest[end + 1 :]
                if text.startswith(b" "):
                    text = text[1:]
                return code, text.decode(ENCODING, ERRORS)
    return None, rest.decode(ENCODING, ERRORS)


_TIMESTAMP: Final = re.compile(r"<[^<>\s]*@[^<>\s]*>")


def apop_timestamp(greeting_text: str) -> str | None:
    """The APOP timestamp `<...@...>` in a greeting's text (RFC 1939 §7), or None."""
    match = _TIMESTAMP.search(greeting_text)
    return match.group(0) if match else None


def parse_capabilities(body: bytes) -> dict[str, tuple[str, ...]]:
    """A CAPA body (RFC 2449 §6) as {upper-case tag: its arguments}, e.g.
    {"SASL": ("SCRAM-SHA-256", "PLAIN"), "PIPELINING": (), "EXPIRE": ("0",)}."""
    capabilities: dict[str, tuple[str, ...]] = {}
    for line in body.decode(ENCODING, ERRORS).splitlines():
        words = line.split()
        if words:
            capabilities[words[0].upper()] = tuple(words[1:])
    return capabilities
