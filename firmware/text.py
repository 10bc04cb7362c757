"""Small helpers for text printed to people: counts with the right noun form, addresses, and
why a file or port could not be used (the OS's words, never Python's reprs)."""

from __future__ import annotations

import os

_ES_ENDINGS = ("s", "x", "z", "ch", "sh")


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """`count` and `noun`, the noun in the plural unless count is exactly 1 or -1.

    plural(1, "page") -> "1 page"; plural(0, "page") -> "0 pages"; plural(2, "box") ->
    "2 boxes" (-es after s, x, z, ch, sh); pass `plural_form` for any other irregular noun.
    Only for English nouns the firmware prints; `count` is shown as str(count).
    """
    if abs(count) == 1:
        return f"{count} {noun}"
    if plural_form is None:
        plural_form = noun + ("es" if noun.endswith(_ES_ENDINGS) else "s")
    return f"{count} {plural_form}"


def host_port(host: str, port: int | str) -> str:
    """An address as people and logs read it: "127.0.0.1:1110", "dp.lan:110", and an IPv6
    address in brackets, "[::1]:1110" (RFC 3986 §3.2.2; `--pop3` takes it back that way).
    A host already in brackets is left as it is."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def os_reason(exc: BaseException) -> str:
    """Why an OS call failed, in the OS's words: "Is a directory", "No such file or directory".

    Never Python's text ("[Errno 21] Is a directory: '/tmp/x'"): an error with a positive
    errno (OSError, pyserial's SerialException, which repeats the errno inside its own text)
    gives os.strerror(errno); else its strerror (socket.gaierror: "Name or service not
    known"); a UnicodeError gives "not UTF-8 text"; anything else its text on one line.
    """
    if isinstance(exc, UnicodeError):
        return "not UTF-8 text"
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number > 0:
        return os.strerror(number)
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def file_problem(path: object, exc: BaseException, action: str = "read") -> str:
    """One line for a file that could not be used: "PATH: cannot read: Is a directory", or
    "PATH: not UTF-8 text" for a UnicodeError (`action` is "read", "write", "open", ...)."""
    if isinstance(exc, UnicodeError):
        return f"{path}: not UTF-8 text"
    return f"{path}: cannot {action}: {os_reason(exc)}"
