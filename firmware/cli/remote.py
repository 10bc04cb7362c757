"""`dpfw` commands on an image a running device holds: through its control socket.

A running device holds its image's lock (firmware/flash/image.py, `flock`) and serves its
HTTP API without login on a Unix-domain socket beside the image, `IMG.ctl` (mode 0600,
firmware/http/server.py). A command given such an image asks `device_for(IMG)`: None when no
process holds the lock (the command opens the image itself), else a `Device` to send API
requests to. The commands then render the API's JSON as they render the offline operations'
dataclasses (`from_json` rebuilds those dataclasses), so the output is the same either way.

This module is the only place the command line talks to a device; the other modules only
choose between it and the image. `Device.request(method, path, json=...)` is the general
entry: parsed JSON back, or one `DeviceError` line (the device's own message).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import re
import time
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union
from urllib.parse import quote

from firmware.errors import (
    ConflictError,
    DeviceError,
    NotFoundError,
    NotRunningError,
)
from firmware.http import control_path
from firmware.text import os_reason

API = "/api/v1"
TIMEOUT_S = 120.0  # an fsck of a large image, a delivery of a large message
POLL_S = 0.1  # how often a scan job is asked about
BOOT_WAIT_S = 1.0  # how long a locked image's control socket may take to appear
T = TypeVar("T")


def image_locked(image: Path) -> bool:
    """True when another process holds the image's lock (a running device, or another
    `dpfw` command); False when nobody does or the file cannot be opened (the offline path
    then names the problem)."""
    try:
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # closing drops a lock we took
    return False


def device_for(image: Path) -> Device | None:
    """The running device that holds `image`, or None: nothing holds it, or something with
    no control socket beside the image does (another `dpfw` command, a device that could
    not make its socket); opening the image then fails with "in use by PID N". A device
    that is booting makes its socket once it serves: up to `BOOT_WAIT_S` is waited for it."""
    if not image_locked(image):
        return None
    path = control_path(image)
    deadline = time.monotonic() + BOOT_WAIT_S
    while not path.exists():
        if time.monotonic() > deadline or not image_locked(image):
            return None
        time.sleep(POLL_S / 2)
    return Device(image, path)


# The device's refusal classes back from their HTTP status (firmware/http/errors.py).
_KINDS: dict[int, type[DeviceError]] = {
    404: NotFoundError,
    409: ConflictError,
    503: NotRunningError,
}


def segment(text: str) -> str:
    """`text` as one URL path segment (a box name with `%` or `?` in it).

    DeviceError for a name no URL path segment can carry ('/', '.', '..': a box an image made
    before the box-name rule may hold): only the offline commands reach such a box."""
    if "/" in text or text in (".", ".."):
        raise DeviceError(
            f"{text!r} cannot be addressed through the running device's API (no '/', '.' or "
            "'..'); stop the device and run the command on the image offline"
        )
    return quote(text, safe="")


# The API's pointers to its own listings, in the words of the command line (the API answers
# API clients; a `dpfw` user is told the command that shows the same thing).
_POINTERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"\(see GET {API}/faults\)"), "(see `dpfw fault list {image}`)"),
    (re.compile(rf"\(see GET {API}/sessions\)"), "(see `dpfw session list {image}`)"),
    (re.compile(rf"\(GET {API}/tray\)"), "(see `dpfw ifax tray list {image}`)"),
)


def cli_words(message: str, image: Path) -> str:
    """A device refusal `message` with API pointers (`see GET /api/v1/faults`) replaced by
    the `dpfw` command on `image` that shows the same listing."""
    for pattern, words in _POINTERS:
        message = pattern.sub(words.replace("{image}", str(image)), message)
    return message


class Device:
    """A running device, reached through its control socket (httpx over a Unix socket)."""

    def __init__(self, image: Path, socket_path: Path) -> None:
        import httpx

        logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request

        self.image = image
        self.socket_path = socket_path
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)),
            base_url="http://device",
            timeout=TIMEOUT_S,
        )
        self._answered = False  # the device has answered a request of this command

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """Send `method` `/api/v1` + `path`; the answer's JSON (None for an empty body).

        DeviceError with the device's one line for a refusal (its `message`), or naming the
        socket and why when the device cannot be reached (it stopped, a stale socket)."""
        import httpx

        try:
            response = self._client.request(
                method,
                API + path,
                json=json,
                content=content,
                headers=dict(headers or {}),
                params=dict(params or {}),
            )
        except httpx.TransportError as exc:
            kind = NotRunningError if self._answered else DeviceError
            raise kind(self._unreachable(exc)) from None
        self._answered = True
        body: Any = None
        if response.content:
            try:
                body = response.json()
            except ValueError:
                body = None
        if response.status_code >= 400:
            message = body.get("message") if isinstance(body, dict) else None
            line = (
                cli_words(" ".join(str(message).split()), self.image)
                if message
                else f"{method} {path}: the device answered {response.status_code}"
            )
            raise _KINDS.get(response.status_code, DeviceError)(line)
        return body

    def _unreachable(self, exc: Exception) -> str:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        why = os_reason(cause) if isinstance(cause, OSError) else str(exc) or type(exc).__name__
        if self._answered:  # it answered this command before: it stopped since
            return (
                f"the device running {self.image} stopped before it answered (shut down, "
                f"rebooted or killed; {why})"
            )
        return (
            f"{self.image} is held by a running device, but its control socket "
            f"{self.socket_path} does not answer: {why}"
        )

    def wait_scan(self, job: int, box: str, timeout: float = TIMEOUT_S) -> Any:
        """Follow scan job `job` into `box` (GET /scans/JOB) until it is done; its `result`.
        DeviceError with the device's line if it failed, or after `timeout` seconds;
        NotRunningError if the device stopped first (the job may or may not be stored)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                record = self.request("GET", f"/scans/{job}")
            except NotRunningError as exc:
                raise NotRunningError(
                    f"{exc}; whether the scan was stored: dpfw box messages {self.image} {box}"
                ) from None
            if record.get("state") == "done":
                return record["result"]
            if record.get("state") == "failed":
                raise DeviceError(str(record.get("error", f"scan job {job} failed")))
            if time.monotonic() > deadline:
                raise DeviceError(f"scan job {job} still runs after {timeout:.0f} s")
            time.sleep(POLL_S)


@contextlib.contextmanager
def reach(image: Path) -> typing.Iterator[Device | None]:
    """`with reach(IMG) as device:` the running device holding IMG (closed afterwards), or
    None: then the caller opens the image itself."""
    device = device_for(image)
    try:
        yield device
    finally:
        if device is not None:
            device.close()


def from_json(cls: type[T], data: Any) -> T:
    """The operation dataclass `cls` rebuilt from its JSON (`dataclasses.asdict` of it, as
    the API answers): nested dataclasses, lists, `X | None`; a JSON list where the type
    says tuple becomes a tuple (profile list values). Keys the class lacks are ignored,
    missing ones take the field's default. DeviceError if the device sent another shape."""
    if not isinstance(data, dict):
        raise DeviceError(f"the device answered {type(data).__name__} where an object was due")
    hints = typing.get_type_hints(cls)
    given = {
        f.name: _value(hints[f.name], data[f.name])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name in data
    }
    try:
        return cls(**given)
    except TypeError as exc:
        raise DeviceError(f"the device's answer does not fit {cls.__name__}: {exc}") from None


def _value(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_json(hint, value)
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint) or (Any,)
        return [_value(item, v) for v in value]
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (Union, types.UnionType) and value is not None:
        for arg in typing.get_args(hint):
            if isinstance(arg, type) and dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_json(arg, value)
            if typing.get_origin(arg) in (tuple, list) and isinstance(value, list):
                return _value(arg, value)
    return value
