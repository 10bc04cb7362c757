"""The fleet manifest (TOML): fleet-wide defaults, per-device overrides, boxes (sans-IO).

One file describes a whole office floor of copiers and drives both `dpfw fleet up` (every
device in one process) and `dpfw fleet k8s` (one pod per device). Shape (docs/fleet.md):

    [fleet]
    name = "floor3"             # [a-z0-9-], 1-40: device names, serial numbers
    count = 3                   # 1..10000 devices
    template = "DP-4530"        # a model, or a profile TOML file (relative to the manifest)
    models = ["DP-3510", "DP-6030"]   # optional: device i is models[i % len(models)]
    address = "127.0.0.1"       # where every listener binds
    pop3_base_port = 11000      # device i listens on base + i
    pop3s_base_port = 0         # 0: no implicit-TLS listener
    http_base_port = 18000      # 0: no HTTP API
    console = "pty"             # "pty" (one pty per device) or "none"
    hostname = "{name}.lab"     # {name}, {index}, {fleet}
    flash_mib = 16              # size of each NEW image
    admin_password_file = "admin-password"   # optional; else --admin-password(-stdin)
    scan_feed_per_min = 0.0     # the lab feeder, per device
    faults = "faults.toml"      # optional fault scenario file, passed to each device
    settings = { "pop3.plaintext_auth" = "always" }   # profile values for this run

    [[fleet.boxes]]             # boxes each NEW image gets; {index} and {name} expand
    name = "scan{index}"
    password = "..."

    [[device]]                  # optional, per device
    index = 2
    model = "DP-6030"
    hostname = "..."
    settings = { ... }          # on top of the fleet's
    boxes = [ { name = "...", password = "..." } ]   # instead of the fleet's
    faults = "..."
    scan_feed_per_min = 6

Every mistake is one line naming the file, the table and the key: `parse` collects them all
and raises one `ManifestError` whose lines are the mistakes. File existence (`template` as a
path, `faults`, `admin_password_file`) is checked by `check_files`, the only I/O here.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.config.profile import MODEL_KEYS, MODELS, SCHEMA, is_listen_address, render, shown
from firmware.errors import DeviceError
from firmware.faults.spec import FaultSpecError, parse_scenario
from firmware.security.credentials import check_password_policy
from firmware.store.info import check_box_name

MAX_DEVICES = 10000
NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
CONSOLES = ("pty", "none")
_FLEET_KEYS = (
    "name",
    "count",
    "template",
    "models",
    "address",
    "pop3_base_port",
    "pop3s_base_port",
    "http_base_port",
    "console",
    "hostname",
    "flash_mib",
    "admin_password_file",
    "scan_feed_per_min",
    "faults",
    "settings",
    "boxes",
)
_DEVICE_KEYS = (
    "index",
    "model",
    "hostname",
    "settings",
    "boxes",
    "faults",
    "scan_feed_per_min",
)
_BOX_KEYS = ("name", "password", "legacy")


class ManifestError(DeviceError):
    """One or more mistakes in a fleet manifest, one line each (`lines`)."""

    def __init__(self, lines: Sequence[str], manifest: Manifest | None = None) -> None:
        self.lines = list(lines)
        self.manifest = manifest
        """What could be read despite the mistakes (None when a required value is missing):
        the later checks (files, ports) run on it, so every mistake is reported at once."""
        # firmware.cli.main prints "dpfw: " before the message: every line gets the same start.
        super().__init__("\ndpfw: ".join(self.lines))


@dataclass(frozen=True)
class BoxSpec:
    """A box a new image gets: `name` and `password` may hold {index}, {name}, {fleet}."""

    name: str
    password: str
    legacy: bool = False


@dataclass(frozen=True)
class DeviceSpec:
    """One `[[device]]` table: None where the fleet's value applies."""

    index: int
    model: str | None = None
    hostname: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    boxes: tuple[BoxSpec, ...] | None = None
    faults: str | None = None
    scan_feed_per_min: float | None = None


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest. Paths (template file, faults, password file) are as
    written; `base` is the directory they are relative to."""

    name: str
    count: int
    template: str
    models: tuple[str, ...] = ()
    address: str = "127.0.0.1"
    pop3_base_port: int = 11000
    pop3s_base_port: int = 0
    http_base_port: int = 0
    console: str = "none"
    hostname: str = "{name}.local"
    flash_mib: int = 16
    admin_password_file: str | None = None
    scan_feed_per_min: float = 0.0
    faults: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    boxes: tuple[BoxSpec, ...] = ()
    devices: Mapping[int, DeviceSpec] = field(default_factory=dict)
    base: Path = Path(".")
    where: str = "fleet.toml"  # the manifest's name in messages


class _Problems:
    """Collects one line per mistake, each naming the file, the table and the key."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.lines: list[str] = []

    def add(self, table: str, key: str | None, why: str) -> None:
        at = f"[{table}] {key}" if key else f"[{table}]"
        self.lines.append(f"{self.where}: {at}: {why}")


def parse(text: str, where: str, base: Path = Path(".")) -> Manifest:
    """The manifest in `text` (TOML); `where` names it in messages; `base` is the directory
    relative paths are resolved from. Raises ManifestError with one line per mistake."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError([f"{where}: not valid TOML: {exc}"]) from None
    problems = _Problems(where)
    for key in doc:
        if key not in ("fleet", "device"):
            problems.add(key, None, "unknown table; a manifest has [fleet] and [[device]]")
    fleet = doc.get("fleet")
    if not isinstance(fleet, dict):
        problems.add("fleet", None, "missing: a manifest needs a [fleet] table")
        raise ManifestError(problems.lines)
    for key in fleet:
        if key not in _FLEET_KEYS:
            problems.add("fleet", key, f"unknown key; known: {', '.join(_FLEET_KEYS)}")
    get = _Reader(problems, "fleet", fleet)
    name = get.text("name", None)
    if name is not None and not NAME_RE.fullmatch(name):
        problems.add(
            "fleet", "name", f"{shown(name)} is not 1-40 of a-z, 0-9 and '-' (no '-' at the ends)"
        )
    count = get.integer("count", None, 1, MAX_DEVICES)
    template = get.text("template", None)
    if template is not None and not _is_model(template) and not template.endswith(".toml"):
        problems.add(
            "fleet",
            "template",
            f"{shown(template)} is neither a model ({', '.join(MODELS)}) nor a .toml file",
        )
    models = tuple(get.models("models"))
    address = get.text("address", "127.0.0.1") or "127.0.0.1"
    if not is_listen_address(address):
        problems.add("fleet", "address", f"{shown(address)} is not an IP address or host name")
    pop3_base = get.integer("pop3_base_port", 11000, 1, 65535)
    pop3s_base = get.integer("pop3s_base_port", 0, 0, 65535)
    http_base = get.integer("http_base_port", 0, 0, 65535)
    console = get.text("console", "none")
    if console is not None and console not in CONSOLES:
        problems.add("fleet", "console", f"{shown(console)} is not one of {', '.join(CONSOLES)}")
    hostname = get.pattern("hostname", "{name}.local")
    flash_mib = get.integer("flash_mib", 16, 8, 65536)
    password_file = get.text("admin_password_file", None)
    feed = get.rate("scan_feed_per_min", 0.0)
    faults = get.text("faults", None)
    settings = get.settings("settings")
    boxes = get.boxes("boxes") or ()
    devices: dict[int, DeviceSpec] = {}
    tables = doc.get("device", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.add("device", None, "must be an array of tables ([[device]])")
        tables = []
    for number, table in enumerate(tables, start=1):
        label = f"device #{number}"
        for key in table:
            if key not in _DEVICE_KEYS:
                problems.add(label, key, f"unknown key; known: {', '.join(_DEVICE_KEYS)}")
        dget = _Reader(problems, label, table)
        index = dget.integer("index", None, 0, MAX_DEVICES - 1)
        if index is None:
            continue
        label = f"device index={index}"
        dget.table = label
        if count is not None and index >= count:
            problems.add(label, "index", f"{index} is not below [fleet] count ({count})")
        if index in devices:
            problems.add(label, "index", "a second [[device]] table for this index")
        model = dget.model("model")
        devices[index] = DeviceSpec(
            index=index,
            model=model,
            hostname=dget.pattern("hostname", None),
            settings=dget.settings("settings"),
            boxes=dget.boxes("boxes"),
            faults=dget.text("faults", None),
            scan_feed_per_min=dget.rate("scan_feed_per_min", None),
        )
    if (
        name is None
        or count is None
        or template is None
        or pop3_base is None
        or pop3s_base is None
        or http_base is None
        or flash_mib is None
        or console is None
        or hostname is None
        or feed is None
    ):
        raise ManifestError(problems.lines)
    manifest = Manifest(
        name=name,
        count=count,
        template=template,
        models=models,
        address=address,
        pop3_base_port=pop3_base,
        pop3s_base_port=pop3s_base,
        http_base_port=http_base,
        console=console,
        hostname=hostname,
        flash_mib=flash_mib,
        admin_password_file=password_file,
        scan_feed_per_min=feed,
        faults=faults,
        settings=settings,
        boxes=boxes,
        devices=devices,
        base=base,
        where=where,
    )
    if problems.lines:
        raise ManifestError(problems.lines, manifest)
    return manifest


def _is_model(text: str) -> bool:
    return text.upper() in MODELS


class _Reader:
    """Typed reads of one table's keys; a wrong value is one line in `problems`."""

    def __init__(self, problems: _Problems, table: str, data: Mapping[str, Any]) -> None:
        self.problems = problems
        self.table = table
        self.data = data

    def _bad(self, key: str, why: str) -> None:
        self.problems.add(self.table, key, why)

    def text(self, key: str, default: str | None) -> str | None:
        value = self.data.get(key)
        if value is None:
            if default is None and key in ("name", "count", "template") and self.table == "fleet":
                self._bad(key, "missing (required)")
            return default
        if not isinstance(value, str) or not value:
            self._bad(key, f"{shown(value)} is not a non-empty string")
            return default
        return value

    def integer(self, key: str, default: int | None, low: int, high: int) -> int | None:
        value = self.data.get(key)
        if value is None:
            if default is None:
                self._bad(key, "missing (required)")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self._bad(key, f"{shown(value)} is not an integer from {low} to {high}")
            return default
        return value

    def rate(self, key: str, default: float | None) -> float | None:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6:
            self._bad(key, f"{shown(value)} is not a number of jobs per minute (0 = off)")
            return default
        return float(value)

    def model(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not _is_model(value):
            self._bad(key, f"{shown(value)} is not a model ({', '.join(MODELS)})")
            return None
        return value.upper()

    def models(self, key: str) -> list[str]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not value:
            self._bad(key, "must be a non-empty list of models")
            return []
        found = []
        for item in value:
            if not isinstance(item, str) or not _is_model(item):
                self._bad(key, f"{shown(item)} is not a model ({', '.join(MODELS)})")
            else:
                found.append(item.upper())
        return found

    def pattern(self, key: str, default: str | None) -> str | None:
        value = self.text(key, default)
        if value is None:
            return None
        why = placeholder_problem(value)
        if why is not None:
            self._bad(
                key, f"{shown(value)}: bad placeholder {why}; use {{name}}, {{index}}, {{fleet}}"
            )
            return default
        return value

    def settings(self, key: str) -> dict[str, str]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self._bad(key, 'must be a table of profile keys (e.g. { "pop3.max_sessions" = 8 })')
            return {}
        out: dict[str, str] = {}
        for name, item in value.items():
            if name not in SCHEMA:
                self._bad(f"{key}.{name}", "not a profile key (`dpfw profile keys` lists them)")
            elif isinstance(item, dict):
                self._bad(f"{key}.{name}", "a value, not a table")
            elif name in MODEL_KEYS:
                self._bad(f"{key}.{name}", "a model's figure: choose the model instead")
            else:
                try:  # the value's type and range, as `run --set` would check it at boot
                    SCHEMA[name].parse_text(render(item), "\0")
                except DeviceError as exc:
                    self._bad(f"{key}.{name}", str(exc).removeprefix("\0: "))
                    continue
                out[name] = render(item)
                try:  # as `dpfw run --set` will read it at boot (Profile.with_values)
                    SCHEMA[name].parse_text(out[name], "setting")
                except DeviceError as exc:
                    self._bad(f"{key}.{name}", str(exc).removeprefix("setting: "))
        return out

    def boxes(self, key: str) -> tuple[BoxSpec, ...] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self._bad(key, "must be an array of tables with name and password")
            return None
        found: list[BoxSpec] = []
        for number, item in enumerate(value, start=1):
            at = f"{key}[{number}]"
            if not isinstance(item, dict):
                self._bad(at, "must be a table with name and password")
                continue
            unknown = [k for k in item if k not in _BOX_KEYS]
            if unknown:
                self._bad(at, f"unknown key {unknown[0]}; known: {', '.join(_BOX_KEYS)}")
            name, password, legacy = item.get("name"), item.get("password"), item.get("legacy")
            if not isinstance(name, str) or not name:
                self._bad(f"{at}.name", "missing or not a non-empty string")
                continue
            if not isinstance(password, str) or not password:
                self._bad(f"{at}.password", "missing or not a non-empty string")
                continue
            if legacy is not None and not isinstance(legacy, bool):
                self._bad(f"{at}.legacy", f"{shown(legacy)} is not true or false")
                continue
            name_why, password_why = placeholder_problem(name), placeholder_problem(password)
            if name_why is not None:
                self._bad(f"{at}.name", f"{shown(name)}: bad placeholder {name_why}")
            if password_why is not None:  # the password itself is never shown
                self._bad(f"{at}.password", f"bad placeholder {password_why}")
            if name_why is not None or password_why is not None:
                continue
            sample = expand(name, index=0, name="x", fleet="x")
            sample_password = expand(password, index=0, name="x", fleet="x")
            try:  # the rules `dpfw box add` applies, before any image is made
                check_box_name(sample)
            except DeviceError as exc:
                self._bad(f"{at}.name", str(exc))
            try:
                check_password_policy(sample_password, "the box password")
            except DeviceError as exc:
                self._bad(f"{at}.password", str(exc))
            found.append(BoxSpec(name, password, bool(legacy)))
        names = [box.name for box in found]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            self._bad(key, f"box {shown(dup)} is listed twice")
        return tuple(found)


_PLACEHOLDERS = ("name", "index", "fleet")
_WIDE = re.compile(r"[0-9]{4,}")


def placeholder_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be expanded by `expand`, or None. Only {name}, {index} and
    {fleet} are known, without attributes, items or nested fields, and a format spec may not
    ask for a width of 1000 or more (str.format would build it)."""
    try:
        for _, field_name, spec, _ in string.Formatter().parse(pattern):
            if field_name is None:
                continue
            if field_name not in _PLACEHOLDERS:
                return f"{{{field_name}}} is not one of {{name}}, {{index}}, {{fleet}}"
            if spec and ("{" in spec or _WIDE.search(spec)):
                return f"{{{field_name}:{spec}}}: the format is too wide or nested"
        expand(pattern, index=0, name="x", fleet="x")
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        return str(exc)
    return None


def expand(pattern: str, *, index: int, name: str, fleet: str) -> str:
    """A pattern with {index}, {name} and {fleet} filled in ({index:03d} works too)."""
    return pattern.format(index=index, name=name, fleet=fleet)


def check_files(manifest: Manifest) -> None:
    """ManifestError with `file_problems`' lines, if any."""
    lines = file_problems(manifest)
    if lines:
        raise ManifestError(lines)


def file_problems(manifest: Manifest) -> list[str]:
    """One line per file the manifest refers to that cannot be used: a template profile or
    the admin password file that is not a readable file, a fault scenario that is not one
    or holds mistakes (every mistake of it, as `dpfw run --faults` would find them)."""
    lines = []
    where = manifest.where
    candidates: list[tuple[str, str, str | None]] = [
        ("fleet", "template", None if _is_model(manifest.template) else manifest.template),
        ("fleet", "faults", manifest.faults),
        ("fleet", "admin_password_file", manifest.admin_password_file),
    ]
    for index, spec in sorted(manifest.devices.items()):
        candidates.append((f"device index={index}", "faults", spec.faults))
    for table, key, value in candidates:
        if value is None:
            continue
        path = resolve(manifest, value)
        if not path.is_file():
            lines.append(f"{where}: [{table}] {key}: {path} is not a file")
        elif key == "faults":
            lines += [f"{where}: [{table}] {key}: {line}" for line in _scenario_problems(path)]
    return lines


def _scenario_problems(path: Path) -> list[str]:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        return [f"{path}: cannot read it: {exc.strerror or exc}"]
    except UnicodeDecodeError:
        return [f"{path}: not UTF-8 text"]
    try:
        parse_scenario(text, str(path))
    except FaultSpecError as exc:
        return exc.lines
    return []


def resolve(manifest: Manifest, value: str) -> Path:
    """A path the manifest names, relative to the manifest's directory."""
    path = Path(value)
    return path if path.is_absolute() else manifest.base / path


def load(path: Path) -> Manifest:
    """Read, parse and check the manifest file at `path` and the files it names
    (ManifestError, one line each, every mistake at once; its `manifest` is what could be
    read, for `plan.checked_plan` to add the port and host name checks)."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ManifestError([f"{path}: cannot read the manifest: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ManifestError([f"{path}: not UTF-8 text, so not a fleet manifest"]) from None
    try:
        manifest = parse(text, str(path), path.parent)
    except ManifestError as exc:
        if exc.manifest is None:
            raise
        raise ManifestError(exc.lines + file_problems(exc.manifest), exc.manifest) from None
    check_files(manifest)
    return manifest


def write(
    *,
    name: str,
    count: int,
    template: str,
    models: Sequence[str] = (),
    address: str = "127.0.0.1",
    pop3_base_port: int = 11000,
    pop3s_base_port: int = 0,
    http_base_port: int = 0,
    console: str = "pty",
    boxes: Sequence[BoxSpec] = (),
) -> str:
    """A manifest's text from `fleet up`'s options (`--count --template --models ...`);
    parse() of the result gives those values back."""
    lines = [
        "# A dpfw fleet (docs/fleet.md). Written by `dpfw fleet up`; edit and re-run.",
        "[fleet]",
        f"name = {_q(name)}",
        f"count = {count}",
        f"template = {_q(template)}",
    ]
    if models:
        lines.append("models = [" + ", ".join(_q(m) for m in models) + "]")
    lines += [
        f"address = {_q(address)}",
        f"pop3_base_port = {pop3_base_port}",
        f"pop3s_base_port = {pop3s_base_port}",
        f"http_base_port = {http_base_port}",
        f"console = {_q(console)}",
        'hostname = "{name}.local"',
        "flash_mib = 16",
    ]
    for box in boxes:
        lines += ["", "[[fleet.boxes]]", f"name = {_q(box.name)}", f"password = {_q(box.password)}"]
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    """A TOML basic string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
