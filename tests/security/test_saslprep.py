"""SASLprep against the RFC 4013 §3 examples and the rules they stand for."""

from __future__ import annotations

import pytest

from firmware.security.saslprep import SaslPrepError, saslprep


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("I\u00adX", "IX"),  # soft hyphen mapped to nothing
        ("user", "user"),
        ("USER", "USER"),  # case preserved
        ("\u00aa", "a"),  # NFKC
        ("\u2168", "IX"),  # NFKC: matches the first example
        ("a\u00a0b", "a b"),  # non-ASCII space mapped to SPACE
        ("cafe\u0301", "caf\u00e9"),  # composed
        ("\u0627\u0628", "\u0627\u0628"),  # right-to-left only: fine
    ],
)
def test_rfc4013_examples(given: str, expected: str) -> None:
    assert saslprep(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "\u0007",  # control character
        "a\x00b",
        "\u0627\u0031",  # bidi: RandALCat must start and end the string
        "\u0627a\u0627",  # bidi: mixed with LCat
        "\ue000",  # private use
        "\ufffe",  # non-character
        "a\u200eb",  # LEFT-TO-RIGHT MARK: changes display properties
    ],
)
def test_rfc4013_prohibited(given: str) -> None:
    with pytest.raises(SaslPrepError, match=r"character|right-to-left"):
        saslprep(given)


def test_unassigned_code_points_only_allowed_in_queries() -> None:
    emoji = "pass\U0001f600"  # unassigned in Unicode 3.2, which stringprep uses
    assert saslprep(emoji) == emoji
    with pytest.raises(SaslPrepError, match="unassigned"):
        saslprep(emoji, allow_unassigned=False)
