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
