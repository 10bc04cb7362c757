"""One JSON error shape for every refusal, and the HTTP status of each device error.

Every error body is `{"error": KIND, "message": ONE LINE, "field": NAME?}`: KIND a short
token (`bad_json`, `unknown_key`, `not_found`, ...), MESSAGE the device's own line (the same
text the console prints) or ours naming what was wrong and why. No traceback ever leaves the
device: anything that is not a `DeviceError` is our own bug, logged, and answered 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from firmware.errors import (
    BadNameError,
    BoxError,
    ConflictError,
    CorruptRecordError,
    DeviceError,
    ImageError,
    MemoryFullError,
    NotFoundError,
    NotRunningError,
    ProfileError,
    QuotaError,
    StorageFullError,
)


class ApiError(Exception):
    """A request refused by the HTTP layer itself (bad JSON, a wrong type, no such path)."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def error_response(
    status: int,
    kind: str,
    message: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": kind, "message": " ".join(message.split())}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def from_api_error(exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.kind, exc.message, field=exc.field, headers=exc.headers)


def device_status(exc: DeviceError, *, delivering: bool = False) -> tuple[int, str]:
    """(HTTP status, kind) for a refusal of the device, by its class (firmware/errors.py).

    507 Insufficient Storage (RFC 4918 §11.5) for MEMORY FULL and a full flash; 413 for a
    message over a box's quota or message count; 404 for an unknown box, message, session or
    tray document (`NotFoundError`); 409 for a state that forbids the change now (a box in
    use or that exists, a corrupt record); 503 while the device reboots or when its storage
    fails (an I/O error on the image: try again); 422 for a value the device refuses.
    """
    if isinstance(exc, MemoryFullError):
        return 507, "memory_full"
    if isinstance(exc, StorageFullError):
        return 507, "storage_full"
    if isinstance(exc, QuotaError):
        return (413, "quota") if delivering else (409, "limit")
    if isinstance(exc, CorruptRecordError):
        return 409, "corrupt"
    if isinstance(exc, NotRunningError):
        return 503, "not_running"
    if isinstance(exc, NotFoundError):
        return 404, "not_found"
    if isinstance(exc, ImageError):  # the image's storage failed (EIO ...): not the request's
        return 503, "storage_error"
    if isinstance(exc, ProfileError):
        return 422, "invalid_value"
    if isinstance(exc, BadNameError):
        return 400, "bad_name"
    if isinstance(exc, (BoxError, ConflictError)):
        return 409, "conflict"
    return 422, "refused"


def from_device_error(exc: DeviceError, *, delivering: bool = False) -> JSONResponse:
    status, kind = device_status(exc, delivering=delivering)
    headers = {"Retry-After": "5"} if status == 503 else None
    return error_response(status, kind, str(exc), headers=headers)
