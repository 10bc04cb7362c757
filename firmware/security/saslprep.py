"""SASLprep (RFC 4013): the string preparation SASL asks for on user names and passwords.

Built on the stdlib `stringprep` tables (Unicode 3.2, as the RFC requires), so "é" typed as
one code point or as "e" plus a combining accent compares equal, and control characters,
private-use code points and broken bidirectional text are refused instead of stored.
"""

from __future__ import annotations

import stringprep
import unicodedata

from firmware.errors import DeviceError


class SaslPrepError(DeviceError):
    """A string that SASLprep refuses (prohibited or unassigned code point, bad bidi)."""


_PROHIBITED = (
    stringprep.in_table_c12,  # non-ASCII space characters
    stringprep.in_table_c21_c22,  # ASCII and non-ASCII control characters
    stringprep.in_table_c3,  # private use
    stringprep.in_table_c4,  # non-character code points
    stringprep.in_table_c5,  # surrogate codes
    stringprep.in_table_c6,  # inappropriate for plain text
    stringprep.in_table_c7,  # inappropriate for canonical representation
    stringprep.in_table_c8,  # change display properties or deprecated
    stringprep.in_table_c9,  # tagging characters
)


def saslprep(text: str, *, allow_unassigned: bool = True) -> str:
    """Prepare `text` per RFC 4013, or raise SaslPrepError saying which character and why.

    `allow_unassigned=True` is the RFC's "query" profile (what a login attempt uses);
    pass False for "stored strings" (what is written at set-password time).
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for ch in prepared:
        if any(check(ch) for check in _PROHIBITED):
            raise SaslPrepError(f"character U+{ord(ch):04X} is not allowed (RFC 4013 §2.3)")
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise SaslPrepError(f"character U+{ord(ch):04X} is unassigned in Unicode 3.2")
    if any(stringprep.in_table_d1(ch) for ch in prepared):
        if any(stringprep.in_table_d2(ch) for ch in prepared):
            raise SaslPrepError("right-to-left text mixed with left-to-right text (RFC 3454 §6)")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise SaslPrepError("right-to-left text must start and end with a right-to-left letter")
    return prepared
