"""Profiles: list, show, get, diff, export, and the one update path.

Every change of the saved profile (`profile set`, `apply`, `reset`, `import`, on the console
or the command line) is planned by one of the `plan_*` functions, which all end in `_plan`,
and saved by `commit`: one path, one error vocabulary (`WHERE: KEY = VALUE is not allowed;
expected ...`, `WHERE: unknown key "KEY"; did you mean ...`, from firmware.config.profile),
and on a running device the same rules for what applies now and what after a reboot
(docs/profiles.md). A `dpfw run --set` override is read by the same parser
(Profile.with_values) and is never written by a change of another key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from firmware.config.profile import (
    MODELS,
    SCHEMA,
    Profile,
    Value,
    canonical_model,
    factory,
    for_model,
    parse_toml,
    unknown_key,
    validate,
)
from firmware.errors import DeviceError
from firmware.ops.context import OpsContext
from firmware.pop3.auth import boxes_without_legacy_secret
from firmware.security.tls import SETTING_CERT, certificate_host_names, names_host

EXPORT_BEGIN = "# BEGIN DPFW PROFILE"  # TOML comments: an export block is itself valid TOML
EXPORT_END = "# END DPFW PROFILE"

When = Literal["now", "reboot", "running", "boot"]
"""When a saved change takes effect: `now` (a live key on a running device), `reboot` (the
running value stays until then), `running` (saved back to the value in force), `boot`
(offline: at the next boot)."""


@dataclass(frozen=True)
class KeyChange:
    key: str
    before: Value  # saved before
    after: Value  # saved after
    running: Value  # in force now (offline: the saved value before)
    when: When


@dataclass(frozen=True)
class ProfilePlan:
    """A change of the saved profile, computed and not yet made."""

    what: str  # "profile set", "profile apply DP-4520", ...
    changes: list[KeyChange]
    values: dict[str, Value] = field(repr=False)  # the whole profile to save


@dataclass(frozen=True)
class ProfileUpdate:
    """A change made: the keys it saved, and when each applies."""

    what: str
    changes: list[KeyChange]
    # Set when the change switches pop3.apop on: the boxes that keep no APOP/CRAM-MD5
    # secret and so cannot use the methods now offered (a warning for the administrator).
    boxes_without_legacy_secret: list[str] = field(default_factory=list)
    # Set when the change saved an identity.hostname the stored TLS certificate does not
    # name: the names it does hold (a warning: `tls selfsign` makes one for the new name).
    certificate_names: list[str] | None = None
    hostname: str = ""


@dataclass(frozen=True)
class ProfileKey:
    key: str
    running: Value
    saved: Value  # what runs after the next boot
    doc: str
    allowed: str
    live: bool
    site: bool


@dataclass(frozen=True)
class ProfileView:
    """Every key of a profile. `source`: "running" (with saved values), or "factory"."""

    model: str
    source: str
    keys: list[ProfileKey]

    @property
    def pending(self) -> list[ProfileKey]:
        return [k for k in self.keys if k.saved != k.running]


@dataclass(frozen=True)
class ModelRow:
    model: str
    ppm: int
    ram_mib: int
    flash_mib: int
    pop3_sessions: int
    boxes: int
    running: bool
    saved: bool  # the saved profile's model (runs after reboot)


@dataclass(frozen=True)
class ModelList:
    models: list[ModelRow]


@dataclass(frozen=True)
class KeyDiff:
    key: str
    ours: Value
    theirs: Value


@dataclass(frozen=True)
class ProfileDiff:
    """The saved profile against its model's factory values; then the pending changes."""

    model: str
    from_factory: list[KeyDiff]
    pending: list[KeyDiff]  # ours = running, theirs = saved


# ----- reading -----


def models(ctx: OpsContext | None) -> list[ModelRow]:
    """The factory profiles, marking the running and saved models (none without ctx)."""
    running = ctx.profile.model if ctx is not None else None
    saved = ctx.saved_profile.model if ctx is not None else None
    rows = []
    for model in MODELS:
        prof = factory(model)
        rows.append(
            ModelRow(
                model,
                prof.int("engine.ppm"),
                prof.int("memory.image_ram_mib"),
                prof.int("storage.flash_mib"),
                prof.int("pop3.max_sessions"),
                prof.int("mailbox.max_boxes"),
                model == running,
                model == saved,
            )
        )
    return rows


def field_of(key: str, where: str) -> None:
    """ProfileError (config's unknown-key line) unless the schema has `key`."""
    if key not in SCHEMA:
        raise unknown_key(key, where)


def _key(key: str, running: Value, saved: Value) -> ProfileKey:
    spec = SCHEMA[key]
    return ProfileKey(key, running, saved, spec.doc, spec.allowed(), spec.live, spec.site)


def profile_view(ctx: OpsContext | None, model: str | None = None) -> ProfileView:
    """The running profile with saved values; or MODEL's factory profile."""
    if model is not None or ctx is None:
        prof = factory(model or "")
        return ProfileView(prof.model, "factory", [_key(k, prof[k], prof[k]) for k in SCHEMA])
    running, saved = ctx.profile, ctx.saved_profile
    keys = [_key(k, running[k], saved[k]) for k in SCHEMA]
    return ProfileView(running.model, "running", keys)


def profile_get(ctx: OpsContext, key: str, where: str = "profile get") -> ProfileKey:
    field_of(key, where)
    return _key(key, ctx.profile[key], ctx.saved_profile[key])


def profile_diff(ctx: OpsContext) -> ProfileDiff:
    saved = ctx.saved_profile
    rows = [KeyDiff(k, ours, theirs) for k, ours, theirs in saved.diff(factory(saved.model))]
    pending = [KeyDiff(k, now, later) for k, now, later in ctx.pending()]
    return ProfileDiff(saved.model, rows, pending)


def profile_export(ctx: OpsContext) -> str:
    """The saved profile (what runs after a reboot) as TOML between marker lines."""
    prof = ctx.saved_profile
    return "\n".join([f"{EXPORT_BEGIN} {prof.model}", prof.to_toml().rstrip("\n"), EXPORT_END])


# ----- the one update path -----


def _when(ctx: OpsContext, key: str, running: Value, after: Value) -> When:
    if not ctx.live:
        return "boot"
    if SCHEMA[key].live:
        return "now"
    return "running" if running == after else "reboot"


def _plan(ctx: OpsContext, what: str, new: Profile) -> ProfilePlan:
    saved, running = ctx.saved_profile, ctx.profile
    changes = [
        KeyChange(key, saved[key], new[key], running[key], _when(ctx, key, running[key], new[key]))
        for key in SCHEMA
        if new[key] != saved[key]
    ]
    return ProfilePlan(what, changes, dict(new.data))


def plan_set(
    ctx: OpsContext, pairs: Iterable[tuple[str, str]], what: str = "profile set"
) -> ProfilePlan:
    """KEY and typed VALUE pairs, checked together (one NVRAM write for all of them)."""
    pairs = list(pairs)
    if not pairs:
        raise DeviceError(f"{what}: expected KEY VALUE")
    return _plan(ctx, what, ctx.saved_profile.with_values(pairs, what))


def plan_apply(ctx: OpsContext, model: str, *, keep_site: bool = True) -> ProfilePlan:
    """MODEL's factory values; the site keys keep the saved values unless not `keep_site`."""
    model = canonical_model(model)
    new = for_model(ctx.saved_profile, model, keep_site=keep_site)
    return _plan(ctx, f"profile apply {model}" + ("" if keep_site else " factory"), new)


def plan_reset(ctx: OpsContext) -> ProfilePlan:
    """Every key back to the saved model's factory value, site keys too."""
    model = ctx.saved_profile.model
    return _plan(ctx, f"profile reset to {model} factory values", factory(model))


def plan_import(ctx: OpsContext, text: str, what: str = "profile import") -> ProfilePlan:
    """A whole profile as TOML (an export block, markers included), validated whole."""
    return _plan(ctx, what, parse_toml(text, what))


def commit(ctx: OpsContext, plan: ProfilePlan) -> ProfileUpdate:
    """Save a planned change: the one place a profile reaches NVRAM from an operation."""
    new = validate(plan.values, plan.what)
    fresh = _plan(ctx, plan.what, new)  # against what is saved now, not when planned
    if fresh.changes:
        ctx.save_profile(new)
    lacking: list[str] = []
    if any(c.key == "pop3.apop" and c.after is True for c in fresh.changes):
        lacking = boxes_without_legacy_secret(ctx.board.boxes())
    hostname = new.str("identity.hostname")
    cert_names: list[str] | None = None
    if any(c.key == "identity.hostname" for c in fresh.changes):
        names = certificate_host_names(ctx.board.settings().get(SETTING_CERT))
        if names is not None and not names_host(names, hostname):
            cert_names = names
    return ProfileUpdate(plan.what, fresh.changes, lacking, cert_names, hostname)


def parse_pairs(args: Sequence[str], usage: str) -> list[tuple[str, str]]:
    """`KEY VALUE`, `KEY=VALUE`, `KEY= VALUE`, `KEY =VALUE` and `KEY = VALUE`, mixed freely.
    The first "=" separates (a value may hold more). DeviceError naming the usage when a key
    has no value."""
    pairs: list[tuple[str, str]] = []
    rest = list(args)
    while rest:
        token = rest.pop(0)
        key, eq, value = token.partition("=")
        if not key:
            raise DeviceError(f"{token!r} has no key; usage: {usage}")
        if not eq and rest and rest[0].startswith("="):
            value, eq = rest.pop(0)[1:], "="
        if not value:
            if not rest:
                raise DeviceError(f"{key!r} has no value; usage: {usage}")
            value = rest.pop(0)
        pairs.append((key, value))
    return pairs
