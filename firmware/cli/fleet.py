"""`dpfw fleet up|status|down|device|k8s`: many devices from one manifest (docs/fleet.md)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.cli.common import add_secret_options, read_secret
from firmware.cli.run import parse_address
from firmware.errors import DeviceError

if TYPE_CHECKING:
    from firmware.device.device import Service
    from firmware.fleet.manifest import Manifest
    from firmware.fleet.runner import Member


def parse_models(text: str) -> list[str]:
    """'DP-3510,DP-6030' -> ['DP-3510', 'DP-6030'] (validated with the manifest)."""
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of models")
    return models


def parse_port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def parse_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of devices (1 or more)")
    return int(text)


def register(sub: Any) -> None:
    p = sub.add_parser("fleet", help="many devices from one manifest (one process, or k8s)")
    fleet = p.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")

    up = fleet.add_parser(
        "up", help="create (once) and run every device of DIR's fleet in this process"
    )
    up.add_argument("directory", type=Path, metavar="DIR")
    up.add_argument(
        "--manifest", type=Path, metavar="FILE", help="the fleet manifest (default DIR/fleet.toml)"
    )
    up.add_argument(
        "--count", type=parse_count, metavar="N", help="write DIR/fleet.toml: N devices"
    )
    up.add_argument("--template", metavar="MODEL", help="... from this model (or profile file)")
    up.add_argument("--models", type=parse_models, metavar="M1,M2", help="... cycling these models")
    up.add_argument("--name", metavar="NAME", help="... fleet name (default: from DIR)")
    up.add_argument("--address", default="127.0.0.1", help="... listen address (127.0.0.1)")
    up.add_argument(
        "--pop3-base-port", type=parse_port, default=11000, metavar="P", help="... POP3 on P + i"
    )
    up.add_argument(
        "--pop3s-base-port", type=parse_port, default=0, metavar="P", help="... POP3S (0: none)"
    )
    up.add_argument(
        "--http-base-port", type=parse_port, default=0, metavar="Q", help="... API (0: none)"
    )
    up.add_argument(
        "--console", choices=("pty", "none"), default="pty", help="... a console pty each"
    )
    add_secret_options(up, "admin-password")
    up.set_defaults(func=cmd_up)

    status = fleet.add_parser("status", help="each device of DIR's fleet: state, ports, console")
    status.add_argument("directory", type=Path, metavar="DIR")
    status.add_argument("--json", action="store_true", help="as JSON")
    status.set_defaults(func=cmd_status)

    down = fleet.add_parser("down", help="stop DIR's running fleet (SIGTERM, clean drain)")
    down.add_argument("directory", type=Path, metavar="DIR")
    down.add_argument("--timeout", type=float, default=60.0, metavar="S", help="wait (60 s)")
    down.set_defaults(func=cmd_down)

    device = fleet.add_parser(
        "device", help="create (once) and run device INDEX of MANIFEST alone (one per pod)"
    )
    device.add_argument("manifest", type=Path, metavar="MANIFEST")
    device.add_argument("index", type=int, metavar="INDEX", help="the device's index (0..)")
    device.add_argument(
        "--image", type=Path, required=True, metavar="IMG", help="the image (made if missing)"
    )
    device.add_argument(
        "--pop3", type=parse_address, metavar="HOST:PORT", help="POP3 here, not the plan's"
    )
    device.add_argument(
        "--pop3s", type=parse_address, metavar="HOST:PORT", help="POP3S here, not the plan's"
    )
    device.add_argument("--http", type=parse_address, metavar="HOST:PORT", help="the HTTP API")
    device.add_argument(
        "--http-insecure", action="store_true", help="plain HTTP on a non-loopback address"
    )
    device.add_argument(
        "--admin-password-file", type=Path, metavar="FILE", help="for a new image (a Secret)"
    )
    device.set_defaults(func=cmd_device)

    k8s = fleet.add_parser("k8s", help="Kubernetes manifests (YAML) for MANIFEST's fleet")
    k8s.add_argument("manifest", type=Path, metavar="MANIFEST")
    k8s.add_argument(
        "--image", default="localhost/dpfw:latest", metavar="NAME", help="the container image"
    )
    k8s.add_argument("--storage", default="", metavar="SIZE", help="volume size (flash + 25%%)")
    k8s.add_argument("--namespace", default="", metavar="NS", help="metadata.namespace")
    k8s.set_defaults(func=cmd_k8s)


# ----- up -----


def _default_name(directory: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-")[:40]
    return name.strip("-") or "fleet"


def _manifest_for_up(args: argparse.Namespace) -> tuple[Path, Manifest]:
    from firmware.fleet import manifest as mf
    from firmware.fleet.state import MANIFEST

    directory: Path = args.directory
    generating = args.count is not None or args.template is not None
    if args.manifest is not None:
        if generating:
            raise DeviceError("give either --manifest FILE or --count/--template, not both")
        return args.manifest, _load_for_up(args.manifest)
    path = directory / MANIFEST
    if generating:
        if args.count is None or args.template is None:
            raise DeviceError("--count N and --template MODEL go together")
        text = mf.write(
            name=args.name or _default_name(directory),
            count=args.count,
            template=_template_arg(args.template),
            models=args.models or (),
            address=args.address,
            pop3_base_port=args.pop3_base_port,
            pop3s_base_port=args.pop3s_base_port,
            http_base_port=args.http_base_port,
            console=args.console,
        )
        mf.parse(text, "the command line")  # refuse bad options before writing anything
        if path.exists():
            if path.read_text("utf-8") != text:
                raise DeviceError(
                    f"{path} exists and says otherwise than these options; edit it and run "
                    f"`dpfw fleet up {directory}` without --count/--template (or remove it)"
                )
        else:
            directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
    elif not path.exists():
        raise DeviceError(
            f"{path} does not exist: give --count N --template MODEL to write one, "
            "or --manifest FILE"
        )
    return path, _load_for_up(path)


def _load_for_up(path: Path) -> Manifest:
    """The manifest after every check that needs no image (its keys and values, its files,
    ports and host names: firmware.fleet.plan.checked_plan); ManifestError with every
    mistake at once, before anything is created."""
    from firmware.fleet import manifest as mf
    from firmware.fleet.plan import checked_plan

    try:
        manifest = mf.load(path)
    except mf.ManifestError as exc:
        if exc.manifest is None:
            raise
        checked_plan(exc.manifest, exc.lines)
        raise  # not reached: checked_plan raises with these lines
    checked_plan(manifest)
    return manifest


def _template_arg(text: str) -> str:
    """A model as given; a profile file as an absolute path (the manifest lives in DIR)."""
    from firmware.config.profile import MODELS

    return text if text.upper() in MODELS else str(Path(text).resolve())


def _admin_password(args: argparse.Namespace, manifest: Manifest) -> str:
    from firmware.fleet.manifest import resolve

    given = args.admin_password is not None or args.admin_password_stdin
    if not given and manifest.admin_password_file is not None:
        return _read_password_file(resolve(manifest, manifest.admin_password_file))
    return read_secret(args, "admin-password")


def _read_password_file(path: Path) -> str:
    from firmware.text import file_problem

    try:
        # The first line as it is (a password may start or end with a space).
        password = path.read_text("utf-8").split("\n", 1)[0].rstrip("\r")
    except OSError as exc:
        raise DeviceError(file_problem(path, exc)) from None
    except UnicodeDecodeError:
        raise DeviceError(f"{path}: not UTF-8 text") from None
    if not password:
        raise DeviceError(f"{path}: the admin password file is empty")
    return password


def cmd_up(args: argparse.Namespace) -> int:
    import trio

    from firmware.fleet import state
    from firmware.fleet.images import ensure_images, image_path
    from firmware.fleet.plan import collisions, plan
    from firmware.fleet.runner import run_fleet

    manifest_path, manifest = _manifest_for_up(args)
    directory: Path = args.directory
    plans = plan(manifest)
    _name_devices_in_logs()
    clashes = collisions(plans)
    if clashes:
        raise DeviceError("\ndpfw: ".join(clashes))
    state.claim(directory)
    try:
        created, reused = ensure_images(
            partial(image_path, directory), manifest, plans, lambda: _admin_password(args, manifest)
        )
        print(
            f"dpfw: fleet {manifest.name}: {len(plans)} devices "
            f"({len(created)} images created, {len(reused)} reused)",
            file=sys.stderr,
            flush=True,
        )
        base = {"manifest": str(manifest_path.resolve()), "name": manifest.name}
        state.write_state(
            directory,
            {**base, "ready": False, "devices": [state.device_record(p) for p in plans]},
        )

        def on_ready(members: Sequence[Member]) -> None:
            records = [state.device_record(m.plan, m.console) for m in members]
            state.write_state(directory, {**base, "ready": True, "devices": records})
            print(
                f"dpfw: fleet ready: {len(members)} devices (dpfw fleet status {directory})",
                file=sys.stderr,
                flush=True,
            )

        # From here until the fleet's own receiver is in place, a signal is noted, not
        # raised as KeyboardInterrupt wherever the loop happens to be (a library that
        # swallows it, a half-done step): run_fleet stops the fleet for it.
        noted: list[int] = []
        previous = {
            signum: signal.signal(signum, lambda signum, _frame: noted.append(signum))
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            services = partial(_services, manifest=manifest)
            return trio.run(
                partial(
                    run_fleet, directory, plans, services, on_ready, signalled=lambda: bool(noted)
                )
            )
        except BaseExceptionGroup as group:
            from firmware.cli.run import _EXPECTED, _first_leaf

            expected, rest = group.split(_EXPECTED)
            if expected is not None and rest is None:
                raise _first_leaf(expected) from None
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            records = [state.device_record(p) for p in plans]
            state.write_state(directory, {**base, "ready": False, "devices": records})
    finally:
        state.release(directory)


class _DeviceName(logging.Filter):
    """Puts the logging device's name (its image's directory, e.g. `floor3-007`) before each
    line the fleet process writes to stderr: 100 devices log into one stream."""

    def filter(self, record: logging.LogRecord) -> bool:
        from firmware.device.device import running_device

        device = running_device()
        record.device = f"[{device.options.image.parent.name}] " if device is not None else ""
        return True


def _name_devices_in_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DeviceName())
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(device)s%(name)s: %(message)s")
        )


def _services(member: Member, *, manifest: Manifest) -> list[Service]:
    """Each device's console (a pty, its path kept for `fleet status`), HTTP API, control
    socket (so `dpfw` commands given a device's image reach it, as for `dpfw run`) and the
    fault scenario the manifest names (read and checked now: one line if it cannot be used;
    each device gets its own fault plan, seeded by the file)."""
    from firmware.cli.run import control_service, faults_service
    from firmware.console.port import run_console
    from firmware.fleet.manifest import resolve
    from firmware.http.server import HttpOptions, check_options, run_http

    plan = member.plan
    services: list[Service] = [control_service()]
    if plan.faults is not None:
        services.append(faults_service(resolve(manifest, plan.faults)))
    if plan.console == "pty":

        def opened(path: str, member: Member = member) -> None:
            member.console = path

        services.append(partial(run_console, spec="pty", on_pty=opened))
    if plan.http is not None:
        host, port = plan.http
        http = HttpOptions(host, port)
        check_options(http)
        services.append(partial(run_http, options=http))
    return services


# ----- status, down -----


def cmd_status(args: argparse.Namespace) -> int:
    from firmware.fleet.state import as_json, fleet_status

    status = fleet_status(args.directory)
    if args.json:
        print(json.dumps(as_json(status), indent=2, ensure_ascii=False))
        return 0
    head = f"fleet in {status.directory}: " + (
        f"running (pid {status.pid}){'' if status.ready else ', starting'}"
        if status.running
        else "stopped"
    )
    print(head)
    for d in status.devices:
        extra = []
        if d.http:
            extra.append(f"http {d.http}")
        if d.console:
            extra.append(f"console {d.console}")
        if d.boxes is not None:
            extra.append(f"{d.boxes} boxes, {d.messages} messages")
        print(
            f"{d.name}  {d.serial}  {d.model or '-'}  {d.hostname}  pop3 {d.pop3}  {d.state}"
            + ("  " + ", ".join(extra) if extra else "")
        )
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from firmware.fleet.state import stop

    pid = stop(args.directory, args.timeout)
    if pid is None:
        print(f"no fleet running in {args.directory}")
    else:
        print(f"fleet (pid {pid}) stopped")
    return 0


# ----- one device (a pod) -----


def cmd_device(args: argparse.Namespace) -> int:
    import trio

    from firmware.device.device import Device, RunOptions
    from firmware.fleet.images import ensure_images
    from firmware.fleet.manifest import load
    from firmware.fleet.plan import plan

    manifest = load(args.manifest)
    if not 0 <= args.index < manifest.count:
        raise DeviceError(
            f"{args.manifest}: no device {args.index}: the fleet has {manifest.count} (0 to "
            f"{manifest.count - 1})"
        )
    device = plan(manifest)[args.index]

    def password() -> str:
        if args.admin_password_file is not None:
            from firmware.fleet.k8s import PLACEHOLDER

            secret = _read_password_file(args.admin_password_file)
            if secret == PLACEHOLDER:
                raise DeviceError(
                    f"{args.admin_password_file}: still the placeholder {PLACEHOLDER}; put the "
                    "admin password in the Secret (docs/fleet.md)"
                )
            return secret
        if manifest.admin_password_file is not None:
            from firmware.fleet.manifest import resolve

            return _read_password_file(resolve(manifest, manifest.admin_password_file))
        raise DeviceError(f"{args.image} does not exist and no --admin-password-file was given")

    ensure_images(lambda _d: args.image, manifest, [device], password)
    services: list[Service] = []
    if args.http is not None:
        from firmware.http.server import HttpOptions, check_options, run_http

        host, port = args.http
        http = HttpOptions(host, port, insecure=args.http_insecure)
        check_options(http)
        services.append(partial(run_http, options=http))
    options = RunOptions(
        image=args.image,
        overrides=dict(device.settings),
        pop3=args.pop3 or device.pop3,
        pop3s=args.pop3s or device.pop3s,
        scan_feed_per_min=device.scan_feed_per_min,
    )
    try:
        return trio.run(Device(options, services).run)
    except BaseExceptionGroup as group:
        from firmware.cli.run import _EXPECTED, _first_leaf

        expected, rest = group.split(_EXPECTED)
        if expected is not None and rest is None:
            raise _first_leaf(expected) from None
        raise


# ----- Kubernetes -----


def cmd_k8s(args: argparse.Namespace) -> int:
    from firmware.fleet.k8s import render_yaml
    from firmware.fleet.manifest import load

    manifest = load(args.manifest)
    text = args.manifest.read_text("utf-8")
    sys.stdout.write(
        render_yaml(
            manifest, text, image=args.image, storage=args.storage, namespace=args.namespace
        )
    )
    return 0
