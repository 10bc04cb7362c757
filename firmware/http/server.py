"""The HTTP API as a device service: hypercorn's trio worker inside the device's trio loop.

`dpfw run IMG --http HOST:PORT [--https] [--http-insecure]`. The service starts once the
device has booted and lives across reboots (requests during a reboot get 503). With
`--https` it serves TLS 1.2+ with the device certificate of the boot it started in; plain
HTTP on an address that is not loopback is refused unless `--http-insecure` is given, since
Basic credentials would cross the network in clear.

Every `dpfw run` also serves the same API, without login, on a Unix-domain control socket
next to its image (`IMG.ctl`, mode 0600; `run_control`): the file's owner and mode are the
access check, as for docker.sock. `dpfw` commands given an image a running device holds talk
to it there (firmware/cli/remote.py).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import ssl
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from firmware.errors import DeviceError
from firmware.http import control_path
from firmware.http.app import API, Api
from firmware.security.tls import TlsError, context_from_settings
from firmware.text import os_reason

if TYPE_CHECKING:
    from firmware.device.device import Device

log = logging.getLogger("dpfw.http")
_SERVER_LOG = logging.getLogger("dpfw.http.server")  # hypercorn's own lines: problems only
_SERVER_LOG.setLevel(logging.WARNING)


@dataclass(frozen=True)
class HttpOptions:
    host: str
    port: int
    https: bool = False
    insecure: bool = False  # allow plain HTTP on a non-loopback address


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_options(options: HttpOptions) -> None:
    """DeviceError for plain HTTP on a non-loopback address without --http-insecure."""
    if not options.https and not options.insecure and not is_loopback(options.host):
        raise DeviceError(
            f"--http {options.host}:{options.port}: plain HTTP would send the admin password "
            "in clear over the network; add --https (device certificate) or, in a closed "
            "lab, --http-insecure"
        )


class _Config(Config):
    """Hypercorn's config with the device's own TLS context (hypercorn reads files)."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__()
        self._device_context = context

    @property
    def ssl_enabled(self) -> bool:
        return self._device_context is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._device_context


def _tls_context(device: Device) -> ssl.SSLContext:
    try:
        context = context_from_settings(device.board.settings())
    except TlsError as exc:
        raise DeviceError(f"--https: the stored certificate cannot be used: {exc}") from None
    if context is None:
        raise DeviceError("--https: the image holds no certificate (dpfw tls selfsign IMG)")
    context.set_alpn_protocols(["http/1.1"])
    return context


async def run_http(device: Device, options: HttpOptions, api: Api | None = None) -> None:
    """Serve the API until the device stops (a Device service; see firmware.cli.run)."""
    check_options(options)
    await device.wait_booted()
    context = _tls_context(device) if options.https else None
    config = _Config(context)
    config.bind = [
        f"[{options.host}]:{options.port}"
        if ":" in options.host
        else f"{options.host}:{options.port}"
    ]
    config.accesslog = None
    config.errorlog = _SERVER_LOG
    config.h2_max_concurrent_streams = 16
    config.keep_alive_timeout = 30
    config.graceful_timeout = 2
    config.include_server_header = False
    api = api or Api(device)
    async with trio.open_nursery() as nursery:
        api.nursery = nursery
        try:
            binds = await nursery.start(_serve, api, config)
        except (OSError, BaseExceptionGroup) as exc:
            # hypercorn binds inside its own nurseries: the OSError may come in a group.
            error = _only_os_error(exc)
            if error is None:
                raise
            raise DeviceError(
                f"cannot listen for HTTP on {options.host}:{options.port}: "
                f"{error.strerror or error}"
            ) from None
        for url in binds:
            line = f"HTTP API on {url}{API} (user admin, the console password)"
            device.log_lines.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} INFO dpfw.http: {line}")
            print(f"dpfw: {line}", file=sys.stderr, flush=True)


CONTROL_MODE = 0o600


def bind_control(path: Path) -> socket.socket:
    """A Unix stream socket bound at `path` with mode 0600, not yet listening.

    Only the process holding the image's lock calls this, so a socket file already at `path`
    is stale (left by a device killed with SIGKILL or a power cut): it is replaced. Any
    other kind of file there is left alone (DeviceError). The mode is set before `listen`,
    so nobody can connect while the file is still open to others (connect() to a socket that
    does not listen fails). DeviceError naming the path and why on any OS error.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DeviceError(f"control socket {path}: {os_reason(exc)}") from None
    else:
        if not stat.S_ISSOCK(mode):
            raise DeviceError(
                f"control socket {path}: a file that is not a socket has that name; "
                "remove or rename it"
            )
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log.info("control socket %s: replaced a stale one", path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, CONTROL_MODE)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                path.unlink()
        raise DeviceError(f"cannot create the control socket {path}: {os_reason(exc)}") from None
    return sock


async def run_control(device: Device, api: Api | None = None) -> None:
    """Serve the API without login on the image's control socket until the device stops
    (a Device service, started by firmware.cli.run for every `dpfw run`).

    The socket is made once the device has booted (it holds the image's lock then) and
    lives across reboots; at shutdown the file is removed if it is still ours. A socket
    that cannot be made (a read-only directory) is a WARNING line and the device runs on
    without it: `dpfw` commands then find the image in use, as before.
    """
    await device.wait_booted()
    path = control_path(device.options.image)
    try:
        sock = bind_control(path)
    except DeviceError as exc:
        log.warning("%s; `dpfw` commands cannot reach this device", exc)
        return
    ours = os.stat(path).st_ino
    config = _Config(None)
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn listens on it and closes it
    config.accesslog = None
    config.errorlog = _SERVER_LOG
    config.keep_alive_timeout = 30
    config.graceful_timeout = 2
    config.include_server_header = False
    api = api or Api(device, trusted=True)
    try:
        async with trio.open_nursery() as nursery:
            api.nursery = nursery
            await nursery.start(_serve, api, config)
            line = f"control socket {path} (dpfw commands on this image go through it)"
            device.log_lines.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} INFO dpfw.http: {line}")
            print(f"dpfw: {line}", file=sys.stderr, flush=True)
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == ours:
                path.unlink()


def _only_os_error(exc: BaseException) -> OSError | None:
    """The OSError `exc` is, or the one a group holds and nothing else; else None."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _only_os_error(exc.exceptions[0])
    return None


async def _serve(
    api: Api, config: Config, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    await serve(api.app, config, task_status=task_status)  # type: ignore[arg-type]
