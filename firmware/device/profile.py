"""Device profiles: the schema, loading and validating device_profiles/*.toml.

A profile is a flat mapping of dotted keys (``pop3.max_sessions``) to values. The schema
below is the single source of truth for which keys exist, their types, their allowed
ranges, and whether a change applies to a running device at once or after a reboot.
Every error names the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import builtins
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import tomli_w

from firmware.errors import ProfileError

Value = int | float | str | bool | tuple[str, ...]

MODELS: tuple[str, ...] = (
    "DP-3510",
    "DP-3520",
    "DP-3530",
    "DP-4510",
    "DP-4520",
    "DP-4530",
    "DP-6010",
    "DP-6020",
    "DP-6030",
)

RESOLUTIONS = ("200x100", "200x200", "300", "400", "600")
COLOR_MODES = ("mono", "gray", "color")
FORMATS = ("tiff", "pdf", "jpeg")
BAUD_RATES = (9600, 19200, 38400, 57600, 115200)


@dataclass(frozen=True)
class Field:
    """One profile key: its type, what values are allowed, and how a change applies."""

    key: str
    kind: type
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    live: bool = False  # True: a running device applies a change at once

    def allowed(self) -> str:
        """Say in words what this key accepts."""
        if self.kind is tuple:
            return f"a list drawn from {', '.join(map(str, self.choices or ()))}"
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind is bool:
            return "true or false"
        name = {int: "an integer", float: "a number", str: "a string"}[self.kind]
        if self.minimum is not None and self.maximum is not None:
            return f"{name} from {_num(self.minimum)} to {_num(self.maximum)}"
        return name

    def check(self, value: Any, where: str) -> Value:
        """Return `value` in canonical form, or raise a ProfileError naming what and why."""
        bad = f"{where}: {self.key} = {value!r} is not allowed; expected {self.allowed()}"
        if self.kind is tuple:
            if not isinstance(value, list | tuple) or not value:
                raise ProfileError(bad)
            items = tuple(value)
            if any(not isinstance(i, str) or i not in (self.choices or ()) for i in items):
                raise ProfileError(bad)
            if len(set(items)) != len(items):
                raise ProfileError(f"{bad} (without repeats)")
            return items
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ProfileError(bad)
            return value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ProfileError(bad)
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ProfileError(bad)
            value = float(value)
        elif not isinstance(value, str):
            raise ProfileError(bad)
        if self.choices is not None and value not in self.choices:
            raise ProfileError(bad)
        if self.minimum is not None and value < self.minimum:
            raise ProfileError(bad)
        if self.maximum is not None and value > self.maximum:
            raise ProfileError(bad)
        if isinstance(value, str) and (not value.isprintable() or len(value) > 200):
            raise ProfileError(f"{bad} (printable text up to 200 characters)")
        return value  # type: ignore[no-any-return]

    def parse_text(self, text: str, where: str) -> Value:
        """Parse a value typed by a person (console or `profile set`) and check it."""
        raw: Any = text
        try:
            if self.kind is bool:
                raw = {"true": True, "false": False, "on": True, "off": False}[text.lower()]
            elif self.kind is int:
                raw = int(text)
            elif self.kind is float:
                raw = float(text)
            elif self.kind is tuple:
                raw = [part.strip() for part in text.split(",") if part.strip()]
        except (KeyError, ValueError):
            raise ProfileError(
                f"{where}: {self.key} = {text!r} is not allowed; expected {self.allowed()}"
            ) from None
        return self.check(raw, where)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _fields() -> dict[str, Field]:
    f = Field
    table = [
        f("identity.model", str, "model name", choices=MODELS),
        f("identity.series", str, "product series", choices=("DP",)),
        f("identity.firmware_version", str, "firmware version string"),
        f("identity.hostname", str, "host name in greetings, Message-IDs and scanner@ address"),
        f("engine.ppm", int, "engine speed, pages per minute", 1, 200),
        f("memory.image_ram_mib", int, "image RAM shared by scans and POP3 sessions", 4, 4096),
        f("storage.flash_mib", int, "default board image size", 8, 65536),
        f("storage.compact_threshold_pct", int, "compact when free space falls below", 1, 90),
        f("scan.resolutions", tuple, "scan resolutions offered", choices=RESOLUTIONS),
        f("scan.color_modes", tuple, "colour modes offered", choices=COLOR_MODES),
        f("scan.formats", tuple, "document formats offered", choices=FORMATS),
        f("scan.max_pages_per_job", int, "largest job accepted", 1, 999, live=True),
        f("pop3.address", str, "listen address of the POP3 service"),
        f("pop3.port", int, "POP3 port", 1, 65535),
        f("pop3.pop3s_port", int, "implicit-TLS POP3 port", 1, 65535),
        f("pop3.max_sessions", int, "POP3 sessions open at once", 1, 4096, live=True),
        f("pop3.max_sessions_per_client", int, "sessions per client address", 1, 4096, live=True),
        f("pop3.idle_timeout_s", int, "autologout after this idle time", 1, 86400, live=True),
        f("pop3.preauth_timeout_s", int, "close silent unauthenticated links", 1, 86400, live=True),
        f("pop3.max_auth_failures", int, "failed logins before disconnect", 1, 100, live=True),
        f("pop3.auth_failure_delay_s", float, "delay after a failed login", 0, 60, live=True),
        f("pop3.apop", bool, "offer APOP and CRAM-MD5 (legacy secrets)", live=True),
        f(
            "pop3.plaintext_auth",
            str,
            "USER/PASS without TLS",
            choices=("always", "tls_only"),
            live=True,
        ),
        f("pop3.login_delay_s", int, "LOGIN-DELAY; 0 = not advertised", 0, 86400, live=True),
        f("pop3.expire_days", int, "EXPIRE; -1 = not advertised", -1, 3650, live=True),
        f("mailbox.max_boxes", int, "mailboxes on the device", 1, 10000, live=True),
        f("mailbox.quota_mib", int, "bytes per box, in MiB", 1, 65536, live=True),
        f("mailbox.max_messages", int, "messages per box", 1, 1_000_000, live=True),
        f("console.baud", int, "serial console speed", choices=BAUD_RATES),
        f("console.admin_idle_timeout_s", int, "console idle logout", 10, 86400, live=True),
    ]
    return {field.key: field for field in table}


SCHEMA: dict[str, Field] = _fields()


@dataclass(frozen=True)
class Profile(Mapping[str, Value]):
    """A validated profile. Behaves as a read-only mapping of dotted key to value."""

    data: Mapping[str, Value]

    def __getitem__(self, key: str) -> Value:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def model(self) -> str:
        return str(self.data["identity.model"])

    def with_value(self, key: str, text: str, where: str = "profile") -> Profile:
        """A copy with one key set from text, validated whole."""
        field = SCHEMA.get(key)
        if field is None:
            raise ProfileError(f"{where}: unknown key {key!r}; known keys: {', '.join(SCHEMA)}")
        new = dict(self.data)
        new[key] = field.parse_text(text, where)
        return validate(new, where)

    def to_toml(self) -> str:
        """The profile as TOML, grouped into its sections."""
        sections: dict[str, dict[str, Any]] = {}
        for key, value in self.data.items():
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = (
                list(value) if isinstance(value, tuple) else value
            )
        return tomli_w.dumps(sections)

    def diff(self, other: Profile) -> list[tuple[str, Value, Value]]:
        """(key, ours, theirs) for every key whose value differs."""
        return [(k, v, other[k]) for k, v in self.data.items() if other[k] != v]

    # Typed getters last: their names shadow the builtins for the rest of the class body.
    def int(self, key: builtins.str) -> builtins.int:
        value = self.data[key]
        assert isinstance(value, builtins.int) and not isinstance(value, builtins.bool), key
        return value

    def float(self, key: builtins.str) -> builtins.float:
        value = self.data[key]
        assert isinstance(value, builtins.int | builtins.float) and not isinstance(
            value, builtins.bool
        ), key
        return builtins.float(value)

    def str(self, key: builtins.str) -> builtins.str:
        value = self.data[key]
        assert isinstance(value, builtins.str), key
        return value

    def bool(self, key: builtins.str) -> builtins.bool:
        value = self.data[key]
        assert isinstance(value, builtins.bool), key
        return value

    def list(self, key: builtins.str) -> tuple[builtins.str, ...]:
        value = self.data[key]
        assert isinstance(value, tuple), key
        return value


def validate(flat: Mapping[str, Any], where: str) -> Profile:
    """Check every key; return a Profile or raise ProfileError.

    No cross-key rules: a per-client bound above the global one simply never binds, so an
    administrator can lower pop3.max_sessions alone.
    """
    unknown = [k for k in flat if k not in SCHEMA]
    if unknown:
        raise ProfileError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(SCHEMA)}")
    missing = [k for k in SCHEMA if k not in flat]
    if missing:
        raise ProfileError(f"{where}: missing key {missing[0]!r} ({SCHEMA[missing[0]].doc})")
    values = {key: SCHEMA[key].check(flat[key], where) for key in SCHEMA}
    return Profile(values)


def flatten(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Turn TOML sections into dotted keys; anything but section tables is an error."""
    flat: dict[str, Any] = {}
    for section, table in doc.items():
        if section == "provenance":
            continue  # free-form notes on where values come from; not device settings
        if not isinstance(table, dict):
            raise ProfileError(f"{where}: {section!r} must be a [section] table")
        for name, value in table.items():
            if isinstance(value, dict):
                raise ProfileError(f"{where}: {section}.{name} must be a value, not a table")
            flat[f"{section}.{name}"] = value
    return flat


def parse_toml(text: str, where: str) -> Profile:
    """Parse and validate profile TOML text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{where}: not valid TOML: {exc}") from None
    return validate(flatten(doc, where), where)


def factory_text(model: str) -> str:
    """The factory profile file of a model, as shipped."""
    if model not in MODELS:
        raise ProfileError(f"unknown model {model!r}; known models: {', '.join(MODELS)}")
    return resources.files("device_profiles").joinpath(f"{model}.toml").read_text("utf-8")


def factory(model: str) -> Profile:
    """The validated factory profile of a model."""
    return parse_toml(factory_text(model), f"device_profiles/{model}.toml")
