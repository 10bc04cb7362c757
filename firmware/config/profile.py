"""Device profiles: the schema, loading and validating device_profiles/*.toml.

A profile is a flat mapping of dotted keys (``pop3.max_sessions``) to values. The schema
below is the single source of truth for which keys exist, their types, their allowed
ranges, whether a change applies to a running device at once or after a reboot, and whether
a key is a *site* setting (network names, security policy) that `profile apply MODEL` keeps.
Every error names the file, the key, the value and what is allowed; values are shown as a
person types them (`tiff, pdf`, `true`), never as Python reprs.
"""

from __future__ import annotations

import builtins
import difflib
import ipaddress
import json
import logging
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import tomli_w

from firmware.errors import DeviceError, ImageError, ProfileError

log = logging.getLogger(__name__)

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

HOSTNAME_RULE = (
    "a host name (RFC 1123): dot-separated labels of 1 to 63 letters, digits or hyphens,"
    " none starting or ending with a hyphen, 253 characters at most"
)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def is_hostname(name: str) -> bool:
    """True for an RFC 1123 §2.1 host name (RFC 952 labels, a digit may lead). Not one in
    dotted-number form (`999.1.1.1`): §2.1 says the top label is never all digits, so a bad
    IPv4 address is not taken for a name."""
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def is_listen_address(name: str) -> bool:
    """True for an IP address literal or a host name (what pop3.address may hold)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return is_hostname(name)
    return True


def canonical_model(name: str) -> str:
    """'dp-3530' -> 'DP-3530': model names in any case; ProfileError for an unknown one."""
    for known in MODELS:
        if known.lower() == name.strip().lower():
            return known
    raise ProfileError(f"unknown model {shown(name)}; known models: {', '.join(MODELS)}")


def render(value: Any) -> str:
    """A value for people, as `profile set` takes it back: `tiff, pdf`, `true`, `2.5`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(render(item) for item in value)
    return str(value)


def shown(value: Any) -> str:
    """A value inside an error line: strings quoted (so "" and "my host" are visible); any
    other value as `render` gives it, quoted too if that holds a line break or control
    character (a list of strings from TOML may), so the error stays one line."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    text = render(value)
    return text if text.isprintable() else json.dumps(text, ensure_ascii=False)


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
    site: bool = False  # True: a site setting; `profile apply MODEL` keeps it
    syntax: Callable[[str], bool] | None = None  # a further rule for a string
    syntax_doc: str = ""  # that rule in words
    secret: bool = False  # True: shown as MASK by show, get, diff, plans and export

    def allowed(self) -> str:
        """Say in words what this key accepts."""
        if self.syntax_doc:
            return self.syntax_doc
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
        bad = f"{where}: {self.key} = {shown(value)} is not allowed; expected {self.allowed()}"
        if self.kind is tuple:
            if not isinstance(value, list | tuple) or not value:
                raise ProfileError(bad)
            if any(not isinstance(i, str) for i in value):
                raise ProfileError(bad)
            items = tuple(_choose(i, self.choices or ()) for i in value)
            strangers = [i for i, c in zip(value, items, strict=True) if c is None]
            if strangers:
                raise ProfileError(f"{bad} ({', '.join(strangers)} is not offered)")
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
            if not math.isfinite(value):  # TOML has nan and inf; so has float("nan")
                raise ProfileError(f"{bad} (a finite number)")
        elif not isinstance(value, str):
            raise ProfileError(bad)
        if self.choices is not None:
            value = _choose(value, self.choices)
            if value is None:
                raise ProfileError(bad)
        if self.minimum is not None and value < self.minimum:
            raise ProfileError(bad)
        if self.maximum is not None and value > self.maximum:
            raise ProfileError(bad)
        if isinstance(value, str) and (not value.isprintable() or len(value) > 200):
            raise ProfileError(f"{bad} (printable text up to 200 characters)")
        if isinstance(value, str) and self.syntax is not None and not self.syntax(value):
            raise ProfileError(bad)
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
                f"{where}: {self.key} = {shown(text)} is not allowed; expected {self.allowed()}"
            ) from None
        return self.check(raw, where)


def _choose(value: Any, choices: tuple[Any, ...]) -> Any:
    """The choice `value` names (text in any case: `PDF`, `dp-3530`), or None."""
    for choice in choices:
        if value == choice and type(value) is type(choice):
            return choice
        if isinstance(value, str) and isinstance(choice, str) and value.lower() == choice.lower():
            return choice
    return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


MASK = "********"
"""How a secret key's value (ifax.password) is shown; an import that carries it keeps the
value saved before (docs/ifax.md)."""

IFAX_TLS = ("none", "stls", "pop3s")
IFAX_AUTH = ("user", "apop", "sasl")


def is_sender_list(text: str) -> bool:
    """True for "" or comma-separated addresses (a@b.c) or domains (b.c, @b.c)."""
    for item in (part.strip() for part in text.split(",")):
        if not item and text.strip():
            return False
        local, _, domain = item.rpartition("@")
        if item and (not is_hostname(domain) or (local and any(c in local for c in " <>"))):
            return False
    return True


def masked(key: str, value: Value) -> Value:
    """`value` as people may see it: MASK for a non-empty secret key."""
    spec = SCHEMA.get(key)
    return MASK if spec is not None and spec.secret and value != "" else value


def _fields() -> dict[str, Field]:
    f = Field
    table = [
        f(
            "identity.model",
            str,
            "model name; changed only with its figures, by `profile apply MODEL`",
            choices=MODELS,
        ),
        f("identity.series", str, "product series; follows the model", choices=("DP",)),
        f("identity.firmware_version", str, "firmware version string"),
        f(
            "identity.hostname",
            str,
            "host name in greetings, Message-IDs and scanner@ address",
            site=True,
            syntax=is_hostname,
            syntax_doc=HOSTNAME_RULE,
        ),
        f("engine.ppm", int, "engine speed, pages per minute", 1, 200),
        f("memory.image_ram_mib", int, "image RAM shared by scans and POP3 sessions", 4, 4096),
        f(
            "storage.flash_mib",
            int,
            "size of a NEW board image (`image create` without --size);"
            " an existing image keeps its size (`status` shows it)",
            8,
            65536,
        ),
        f("storage.compact_threshold_pct", int, "compact when free space falls below", 1, 90),
        f("scan.resolutions", tuple, "scan resolutions offered", choices=RESOLUTIONS),
        f("scan.color_modes", tuple, "colour modes offered", choices=COLOR_MODES),
        f("scan.formats", tuple, "document formats offered", choices=FORMATS),
        f("scan.max_pages_per_job", int, "largest job accepted", 1, 999, live=True),
        f(
            "pop3.address",
            str,
            "listen address of the POP3 service",
            site=True,
            syntax=is_listen_address,
            syntax_doc="an IP address or " + HOSTNAME_RULE,
        ),
        f("pop3.port", int, "POP3 port", 1, 65535, site=True),
        f("pop3.pop3s_port", int, "implicit-TLS POP3 port", 1, 65535, site=True),
        f("pop3.max_sessions", int, "POP3 sessions open at once", 1, 4096, live=True),
        f("pop3.max_sessions_per_client", int, "sessions per client address", 1, 4096, live=True),
        f(
            "pop3.idle_timeout_s",
            int,
            "autologout after this idle time",
            1,
            86400,
            live=True,
            site=True,
        ),
        f(
            "pop3.preauth_timeout_s",
            int,
            "close silent unauthenticated links",
            1,
            86400,
            live=True,
            site=True,
        ),
        f(
            "pop3.max_auth_failures",
            int,
            "failed logins before disconnect",
            1,
            100,
            live=True,
            site=True,
        ),
        f(
            "pop3.auth_failure_delay_s",
            float,
            "delay after a failed login",
            0,
            60,
            live=True,
            site=True,
        ),
        f(
            "pop3.apop",
            bool,
            "offer the legacy methods APOP and CRAM-MD5 (false on every factory profile)",
            live=True,
            site=True,
        ),
        f(
            "pop3.plaintext_auth",
            str,
            "USER/PASS without TLS",
            choices=("always", "tls_only"),
            live=True,
            site=True,
        ),
        f(
            "pop3.login_delay_s",
            int,
            "LOGIN-DELAY; 0 = not advertised",
            0,
            86400,
            live=True,
            site=True,
        ),
        f("pop3.expire_days", int, "EXPIRE; -1 = not advertised", -1, 3650, live=True, site=True),
        f("mailbox.max_boxes", int, "mailboxes on the device", 1, 10000, live=True),
        f("mailbox.quota_mib", int, "bytes per box, in MiB", 1, 65536, live=True),
        f("mailbox.max_messages", int, "messages per box", 1, 1_000_000, live=True),
        f("console.baud", int, "serial console speed", choices=BAUD_RATES),
        f(
            "console.admin_idle_timeout_s",
            int,
            "console idle logout",
            10,
            86400,
            live=True,
            site=True,
        ),
        f("ifax.enabled", bool, "Internet Fax reception by POP3 polling", live=True, site=True),
        f(
            "ifax.server",
            str,
            "POP3 server the Internet Fax poller logs in to",
            live=True,
            site=True,
            syntax=is_listen_address,
            syntax_doc="an IP address or " + HOSTNAME_RULE,
        ),
        f(
            "ifax.port",
            int,
            "POP3 server port (110; 995 for pop3s)",
            1,
            65535,
            live=True,
            site=True,
        ),
        f(
            "ifax.tls",
            str,
            "none, stls (STARTTLS, RFC 2595) or pop3s (implicit TLS); certificate verified",
            choices=IFAX_TLS,
            live=True,
            site=True,
        ),
        f(
            "ifax.ca_file",
            str,
            "PEM file of CA certificates to verify the server by (empty: the system's)",
            live=True,
            site=True,
        ),
        f("ifax.user", str, "POP3 user name of the fax mailbox", live=True, site=True),
        f(
            "ifax.password",
            str,
            "POP3 password of the fax mailbox (kept in NVRAM, shown as ********)",
            live=True,
            site=True,
            secret=True,
        ),
        f(
            "ifax.auth",
            str,
            "login method: user (USER/PASS), apop, sasl (SCRAM-SHA-256 or PLAIN, as offered)",
            choices=IFAX_AUTH,
            live=True,
            site=True,
        ),
        f(
            "ifax.poll_interval_s",
            int,
            "poll every N seconds; 0 = only on demand",
            0,
            86400,
            live=True,
            site=True,
        ),
        f(
            "ifax.leave_on_server",
            bool,
            "leave faxes on the server (UIDL remembered) instead of deleting them once stored",
            live=True,
            site=True,
        ),
        f("ifax.max_message_kib", int, "larger faxes are refused unread", 1, 65536, live=True),
        f(
            "ifax.accept_from",
            str,
            "senders accepted: comma-separated addresses or domains; empty = anyone",
            live=True,
            site=True,
            syntax=is_sender_list,
            syntax_doc="comma-separated addresses (a@b.example) or domains (b.example)",
        ),
    ]
    return {field.key: field for field in table}


SCHEMA: dict[str, Field] = _fields()
SITE_KEYS: tuple[str, ...] = tuple(key for key, field in SCHEMA.items() if field.site)
MODEL_KEYS: tuple[str, ...] = ("identity.model", "identity.series")
"""Keys that name the model: changed only with its figures (`profile apply`, `import`)."""


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
        return self.with_values([(key, text)], where)

    def with_values(self, pairs: Iterable[tuple[str, str]], where: str) -> Profile:
        """A copy with each (KEY, text as typed) pair set, validated whole.

        The one reader of typed KEY VALUE pairs: console `profile set`, `dpfw profile set`
        and `dpfw run --set` all come here. Raises ProfileError: `unknown_key`'s line, or the
        key, the value and what is allowed, or that a MODEL_KEYS key changes only with
        `profile apply`; nothing is half-applied.
        """
        new = dict(self.data)
        for key, text in pairs:
            field = SCHEMA.get(key)
            if field is None:
                raise unknown_key(key, where)
            if key in MODEL_KEYS:
                raise ProfileError(
                    f"{where}: {key} cannot be set alone: a model is its figures too (engine,"
                    " RAM, limits); use `profile apply MODEL` (keeps site settings)"
                )
            new[key] = field.parse_text(text, where)
        return validate(new, where)

    def to_toml(self, *, mask_secrets: bool = False) -> str:
        """The profile as TOML, grouped into its sections; secrets as MASK if `mask_secrets`."""
        sections: dict[str, dict[str, Any]] = {}
        for key, value in self.data.items():
            if mask_secrets:
                value = masked(key, value)
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = (
                list(value) if isinstance(value, tuple) else value
            )
        return tomli_w.dumps(sections)

    def unmasked(self, previous: Profile) -> Profile:
        """A copy where each secret still reading MASK (an import of an export) keeps
        `previous`'s value."""
        new = dict(self.data)
        for key, spec in SCHEMA.items():
            if spec.secret and new.get(key) == MASK:
                new[key] = previous[key]
        return Profile(new)

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
    prof, problems = _checked(flat, where)
    if prof is None:
        raise ProfileError(problems[0])
    return prof


def _checked(flat: Mapping[str, Any], where: str) -> tuple[Profile | None, list[str]]:
    """(the Profile, []) or (None, every problem's line: unknown keys, then missing keys,
    then bad values, in schema order)."""
    problems = [str(unknown_key(key, where)) for key in flat if key not in SCHEMA]
    problems += [
        f"{where}: missing key {shown(key)} ({spec.doc})"
        for key, spec in SCHEMA.items()
        if key not in flat
    ]
    values: dict[str, Value] = {}
    for key, spec in SCHEMA.items():
        if key in flat:
            try:
                values[key] = spec.check(flat[key], where)
            except ProfileError as exc:
                problems.append(str(exc))
    return (None, problems) if problems else (Profile(values), [])


def check_toml(text: str, where: str) -> tuple[Profile | None, list[str]]:
    """Profile TOML checked whole, for `dpfw profile validate`: (the Profile, []) or (None,
    one line per problem: every unknown, missing or bad key, or the one TOML syntax error)."""
    try:
        return _checked(flatten(_load_toml(text, where), where), where)
    except ProfileError as exc:
        return None, [str(exc)]


def unknown_key(key: str, where: str) -> ProfileError:
    """The one line for a key the schema does not have, wherever it was typed or read:
    `WHERE: unknown key "pop3.prot"; did you mean "pop3.port"?` (difflib, case ignored), or
    `... (`profile show` lists every key)` when no key is close."""
    by_lower = {name.lower(): name for name in SCHEMA}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    hint = " (`profile show` lists every key)"
    if close:
        hint = f'; did you mean "{by_lower[close[0]]}"?'
    return ProfileError(f"{where}: unknown key {shown(key)}{hint}")


def flatten(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Turn TOML sections into dotted keys; anything but section tables is an error."""
    flat: dict[str, Any] = {}
    for section, table in doc.items():
        if section == "provenance":
            continue  # free-form notes on where values come from; not device settings
        if not isinstance(table, dict):
            raise ProfileError(f"{where}: {section} must be a [section] table")
        for name, value in table.items():
            if isinstance(value, dict):
                raise ProfileError(f"{where}: {section}.{name} must be a value, not a table")
            flat[f"{section}.{name}"] = value
    return flat


def _load_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{where}: not valid TOML: {exc}") from None


def parse_toml(text: str, where: str) -> Profile:
    """Parse and validate profile TOML text; ProfileError names the first problem."""
    return validate(flatten(_load_toml(text, where), where), where)


def factory_text(model: str) -> str:
    """The factory profile file of a model (any case: `dp-3530`), as shipped."""
    model = canonical_model(model)
    return resources.files("device_profiles").joinpath(f"{model}.toml").read_text("utf-8")


def factory(model: str) -> Profile:
    """The validated factory profile of a model (any case); ProfileError for an unknown one."""
    model = canonical_model(model)
    return parse_toml(factory_text(model), f"device_profiles/{model}.toml")


def running_after(running: Profile, saved: Profile) -> Profile:
    """The running profile once `saved` is in NVRAM: its live keys now, the rest at reboot."""
    live = {key: saved[key] for key, field in SCHEMA.items() if field.live}
    return validate({**running.data, **live}, "running profile")


def for_model(current: Profile, model: str, *, keep_site: bool = True) -> Profile:
    """MODEL's factory profile; with `keep_site`, the SITE_KEYS keep `current`'s values.

    `profile apply MODEL` keeps the site's network names, ports and security policy (a
    lab's `pop3.plaintext_auth = always` survives a model change); `--factory` and
    `profile reset` take every factory value.
    """
    values = dict(factory(model).data)
    if keep_site:
        values.update({key: current[key] for key in SITE_KEYS})
    return validate(values, f"profile for {canonical_model(model)}")


def from_stored(text: str, where: str) -> Profile:
    """The profile a board image keeps (its NVRAM's TOML text), made to fit this schema.

    An image written by another firmware version may lack keys that were added since, carry
    keys that were removed, or hold a value the schema no longer allows. The device must still
    boot with its messages, so such keys fall back to the model's factory value, with a warning
    (logged once per call). Raises ImageError naming `where` when the text is not TOML or names
    no known model: then nothing sensible can be fitted.
    """
    try:
        flat = flatten(tomllib.loads(text), where)
    except tomllib.TOMLDecodeError as exc:
        raise ImageError(f"{where}: not valid TOML: {exc}") from None
    except ProfileError as exc:
        raise ImageError(str(exc)) from None  # names `where` already
    model = flat.get("identity.model")
    if model not in MODELS:
        raise ImageError(f"{where}: unknown model {model!r}; known models: {', '.join(MODELS)}")
    base = factory(str(model))
    fitted: dict[str, Any] = {}
    for key, spec in SCHEMA.items():
        if key not in flat:
            log.warning("%s: %s missing; using the factory value %r", where, key, base[key])
            fitted[key] = base[key]
            continue
        try:
            fitted[key] = spec.check(flat[key], where)
        except DeviceError as exc:
            log.warning("%s; using the factory value %r", exc, base[key])
            fitted[key] = base[key]
    for key in sorted(set(flat) - set(SCHEMA)):
        log.warning("%s: ignoring %s, unknown to this firmware", where, key)
    try:
        return validate(fitted, where)
    except DeviceError as exc:
        log.warning("%s; using the factory profile of %s", exc, model)
        return base
