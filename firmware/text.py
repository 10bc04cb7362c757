"""Small helpers for text printed to people: counts with the right noun form."""

from __future__ import annotations

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
