"""Request bodies: JSON objects checked key by key, and raw RFC 5322 messages.

Every check names the field and the reason in one line (an `ApiError`); nothing is stored
before the whole body has passed. Bodies are read with a byte limit and refused with 413 as
soon as they pass it, so a 1 GiB upload costs the device at most the limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from firmware.errors import DeviceError
from firmware.http.errors import ApiError
from firmware.ops.messages import HEAD_CHECK_BYTES, check_message_head

JSON_LIMIT = 64 * 1024  # bytes of a JSON request body


@dataclass(frozen=True)
class Field:
    """One key of a JSON object: its JSON type(s) and whether it must be there."""

    types: tuple[type, ...]
    required: bool = False
    doc: str = ""


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
_TYPE_NAMES[list] = "a list"
_TYPE_NAMES[dict] = "an object"


def type_name(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def is_type(value: Any, types: tuple[type, ...]) -> bool:
    """JSON typing: a boolean is not an integer; an integer is a number."""
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int):
        return int in types or float in types
    return any(isinstance(value, t) for t in types if t not in (bool, int))


async def read_limited(chunks: AsyncIterator[bytes], limit: int, what: str) -> bytes:
    """The whole body, or ApiError 413 once more than `limit` bytes arrived."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > limit:
            raise ApiError(413, "too_large", f"{what} exceeds {limit} bytes")
    return bytes(buf)


def check_content_type(headers: Mapping[str, str], expected: str) -> None:
    """ApiError 415 unless the Content-Type's media type is `expected` (parameters allowed)."""
    given = headers.get("content-type", "")
    media = given.split(";", 1)[0].strip().lower()
    if media != expected:
        shown = repr(given) if given else "none"
        raise ApiError(
            415, "unsupported_media_type", f"Content-Type must be {expected}, not {shown}"
        )


def parse_object(raw: bytes, fields: Mapping[str, Field]) -> dict[str, Any]:
    """A JSON object whose keys are all in `fields`, each of its declared type.

    ApiError 400: not UTF-8 JSON, not an object, an unknown key (the known ones are named), a
    required key missing, a value of the wrong type (the expected type is named).
    """
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_json", f"the body is not JSON: {_why(exc)}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_json", f"the body must be a JSON object, not {json_type(value)}")
    for key in value:
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise ApiError(
                400, "unknown_key", f"unknown key {key!r}; known keys: {known}", field=key
            )
    for key, spec in fields.items():
        if key not in value:
            if spec.required:
                raise ApiError(400, "missing_key", f"{key!r} is required", field=key)
            continue
        if not is_type(value[key], spec.types):
            raise ApiError(
                400,
                "wrong_type",
                f"{key!r} must be {type_name(spec.types)}, not {json_type(value[key])}",
                field=key,
            )
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _why(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 at byte {exc.start}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


# The API is stricter than the device's own check (firmware.ops.messages.check_message_head,
# RFC 5322 §3.6.8: any printable character but ":" in a field name): it takes only the names
# mail actually uses, the token characters of RFC 9110 §5.6.2 (letters, digits,
# !#$%&'*+-.^_`|~), so that a JSON object posted by mistake (`{"subject": ...`) is refused.
_TOKEN_FIELD = re.compile(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]+[ \t]*:")


def check_message(data: bytes | bytearray) -> None:
    """ApiError 400 unless `data` starts like an RFC 5322 message: the device's check
    (`check_message_head`: header fields up to an empty line, no NUL), then field names of
    token characters. The line names the first line that is not a header field."""
    head = bytes(data[:HEAD_CHECK_BYTES])
    try:
        check_message_head(head)
    except DeviceError as exc:
        raise ApiError(400, "not_a_message", f"the body is {exc}") from None
    for number, line in enumerate(re.split(rb"\r\n|\r|\n", head), 1):
        if not line:
            return
        if line[:1] in (b" ", b"\t") and number > 1:
            continue
        if not _TOKEN_FIELD.match(line):
            raise ApiError(
                400,
                "not_a_message",
                f"the body is not an RFC 5322 message: line {number} is not a header field "
                "(Name: value, the name of letters, digits and !#$%&'*+-.^_`|~)",
            )
