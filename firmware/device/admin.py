"""Administrative operations on a running device, as plain methods that return text.

The serial console (and anything else an administrator drives) calls these; each either
returns the text to show or raises DeviceError with one clear line. Keeping them here, away
from the console's line handling, lets the shell stay a pure byte machine and lets these
operations be tested on their own against a real board image.
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from firmware import __version__
from firmware.config.profile import (
    HOSTNAME_RULE,
    MODELS,
    SCHEMA,
    Field,
    Profile,
    Value,
    canonical_model,
    factory,
    for_model,
    is_listen_address,
    parse_toml,
    render,
    shown,
    validate,
)
from firmware.errors import BoxError, DeviceError, ProfileError
from firmware.pop3.auth import boxes_without_legacy_secret, keeps_legacy_secret, legacy_warning
from firmware.security import credentials, tls
from firmware.security.credentials import MAX_PASSWORD, MIN_PASSWORD
from firmware.store.board import check_box_name
from firmware.text import plural

if TYPE_CHECKING:
    from firmware.config.budget import RamBudget
    from firmware.pop3.server import Pop3Service
    from firmware.scanner.feeder import ScanFeeder
    from firmware.scanner.job import ScanRequest, ScanResult
    from firmware.store.board import Board, BoxInfo
from firmware.store.worker import StoreWorker

EXPORT_BEGIN = "# BEGIN DPFW PROFILE"  # TOML comments: an export block is itself valid TOML
EXPORT_END = "# END DPFW PROFILE"
TLS_END = "# END DPFW TLS"  # ends a pasted `tls import`
MAX_TLS_PEM = 64 * 1024  # as `dpfw tls import`: a certificate with a few intermediates
IGNORED_PEM = frozenset({"EC PARAMETERS"})  # `openssl ecparam -genkey` prints it before the key
MAX_LOCKED_SHOWN = 8  # `status` names this many locked boxes, then counts the rest
__all__ = ["MAX_PASSWORD", "MIN_PASSWORD", "DeviceAdmin", "ProfilePlan", "format_value"]


class AdminTarget(Protocol):
    """What the admin operations need from a running device (firmware.device.device.Device)."""

    @property
    def board(self) -> Board: ...
    @property
    def profile(self) -> Profile: ...
    @property
    def next_profile(self) -> Profile: ...
    @property
    def budget(self) -> RamBudget: ...
    @property
    def pop3(self) -> Pop3Service | None: ...
    @property
    def started_at(self) -> float: ...
    @property
    def scans_done(self) -> int: ...
    @property
    def scans_failed(self) -> int: ...
    @property
    def boots(self) -> int: ...
    @property
    def feeder(self) -> ScanFeeder | None: ...
    @property
    def pop3s_addresses(self) -> list[tuple[str, int]]: ...
    @property
    def log_lines(self) -> collections.deque[str]: ...

    def pending(self) -> list[tuple[str, Value, Value]]: ...
    def apply_profile(self, new: Profile) -> Any: ...
    def request_reboot(self) -> None: ...
    def request_shutdown(self) -> None: ...
    async def scan(self, request: ScanRequest) -> ScanResult: ...
    @property
    def store_worker(self) -> StoreWorker: ...


format_value = render  # a value the way `profile set` accepts it back: `tiff, pdf`, `true`


@dataclass(frozen=True)
class ProfilePlan:
    """A whole-profile change (`profile apply`, `profile reset`) shown before it is made."""

    what: str  # "profile apply DP-4520"
    new: Profile
    changes: list[tuple[str, Value, Value]]  # (key, saved now, after)

    def describe(self, running: Profile) -> str:
        """The keys that change, old -> new, and when each takes effect."""
        if not self.changes:
            return f"{self.what}: no value changed"
        lines = [f"{self.what} changes {len(self.changes)} value(s):"]
        for key, old, new in self.changes:
            when = "now" if SCHEMA[key].live else "after reboot"
            if not SCHEMA[key].live and running[key] == new:
                when = "the running value"
            lines.append(f"  {key}: {render(old)} -> {render(new)} ({when})")
        return "\n".join(lines)


def format_size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def format_uptime(seconds: float) -> str:
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    return f"{days}d {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def printable(text: str) -> str:
    """One line of text safe to send to a terminal (no escape sequences from stored data)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def format_left(seconds: float) -> str:
    """Time left as M:SS (a box lock-out is at most minutes)."""
    whole = max(0, int(seconds + 0.999))
    return f"{whole // 60}:{whole % 60:02d}"


def pem_blocks(text: str) -> list[tuple[str, str]]:
    """(label, block) for each PEM block in pasted text, in order; other lines are ignored."""
    pattern = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\n.*?\n-----END \1-----", re.S)
    lines = "\n".join(line.strip() for line in text.splitlines())
    return [(m.group(1), m.group(0) + "\n") for m in pattern.finditer(lines)]


def cert_lines(info: tls.CertInfo) -> list[str]:
    """`CertInfo.lines()` with the fingerprint over two lines, for an 80-column terminal."""
    lines = []
    for line in info.lines():
        label, _, value = line.partition(":")
        if label == "sha256" and len(value) > 60:
            digest = value.strip()
            half = digest.index(":", len(digest) // 2 - 1) + 1
            lines += [f"sha256:      {digest[:half]}", f"             {digest[half:]}"]
        else:
            lines.append(line)
    return lines


class DeviceAdmin:
    """The operations an administrator may run, over one device."""

    def __init__(self, device: AdminTarget) -> None:
        self.device = device
        self._tls_saved_in_boot: int | None = None  # a certificate saved, not yet in service

    # ----- session basics -----

    def prompt_name(self) -> str:
        """The model for the prompt, or the series while the device reboots."""
        try:
            return self.device.profile.model
        except DeviceError:
            return "DP"

    def idle_timeout_s(self) -> float:
        try:
            return float(self.device.profile.int("console.admin_idle_timeout_s"))
        except DeviceError:
            return float(SCHEMA["console.admin_idle_timeout_s"].minimum or 10)

    def check_password(self, password: str) -> bool:
        return bool(self.device.board.check_admin_password(password))

    def set_password(self, current: str, new: str, again: str) -> str:
        if not self.check_password(current):
            raise DeviceError("passwd: the current password is wrong; nothing changed")
        if new != again:
            raise DeviceError("passwd: the two new passwords differ; nothing changed")
        check_new_password(new, "passwd")
        self.device.board.set_admin_password(new)
        return "admin password changed (saved in NVRAM)"

    # ----- status -----

    def status(self) -> str:
        device = self.device
        profile = device.profile
        board = device.board
        budget = device.budget
        usage = board.usage()
        pop3 = device.pop3
        sessions = pop3.sessions() if pop3 is not None else []
        in_tls = sum(1 for info in sessions if info.tls)
        pending = device.pending()
        later = device.next_profile.model
        lines = [
            f"model      {profile.model}"
            + (f" ({later} after reboot)" if later != profile.model else ""),
            f"firmware   {profile.str('identity.firmware_version')} (dpfw {__version__})",
            f"uptime     {format_uptime(time.monotonic() - device.started_at)}",
            f"RAM        {format_size(budget.used)} used, {format_size(budget.free)} free"
            f" of {format_size(budget.total)}",
            f"flash      {format_size(usage.used)} used, {format_size(usage.free)} free,"
            f" {format_size(usage.reclaimable)} reclaimable of {format_size(usage.total)}",
            f"POP3       {len(sessions)} of {profile.int('pop3.max_sessions')} sessions open"
            + (f", {in_tls} in TLS" if in_tls else "")
            + ("" if pop3 is not None else " (service not running)"),
        ]
        if pop3 is not None:
            lines += self._security_status(pop3)
        lines.append(
            f"scans      {device.scans_done} done"
            + (f", {device.scans_failed} failed" if device.scans_failed else "")
        )
        feeder = device.feeder
        if feeder is not None:
            lines.append(f"feeder     {feeder.stats.describe()}")
        if pending:
            lines.append(
                f"profile    {len(pending)} saved change(s) pending reboot (`profile diff`)"
            )
        return "\n".join(lines)

    def _security_status(self, pop3: Pop3Service) -> list[str]:
        """TLS, logins and box lock-outs: what an administrator checks when mail stops."""
        stats = pop3.stats
        if pop3.tls_available:
            offered = ["STLS offered"]
            offered += [f"POP3S on {host}:{port}" for host, port in self.device.pop3s_addresses]
            tls_line = (
                f"TLS        {', '.join(offered)}; {plural(stats.tls_sessions, 'handshake')}"
                f", {stats.tls_failures} failed"
            )
        else:
            tls_line = "TLS        not available: no usable certificate (`tls show`)"
        lines = [
            tls_line,
            f"logins     {stats.logins_ok} ok, {stats.logins_failed} failed;"
            f" {stats.evictions} evicted before login",
        ]
        locked = pop3.locked_boxes()
        if locked:
            shown = [
                f"{printable(box)} {format_left(left)}"
                for box, left in list(locked.items())[:MAX_LOCKED_SHOWN]
            ]
            more = len(locked) - len(shown)
            lines.append(
                f"locked     {plural(len(locked), 'box')} after failed logins (`box unlock NAME`):"
            )
            lines.append("           " + ", ".join(shown) + (f" and {more} more" if more else ""))
        return lines

    # ----- profiles -----

    def profile_list(self) -> str:
        running = self.device.profile.model
        later = self.device.next_profile.model
        lines = []
        for model in MODELS:
            prof = factory(model)
            mark = "*" if model == running else ">" if model == later else " "
            lines.append(
                f"{mark} {model}  {prof.int('engine.ppm'):>3} ppm"
                f"  RAM {prof.int('memory.image_ram_mib'):>4} MiB"
                f"  flash {prof.int('storage.flash_mib'):>5} MiB"
                f"  POP3 {prof.int('pop3.max_sessions'):>3}"
                f"  boxes {prof.int('mailbox.max_boxes'):>5}"
            )
        note = "* running" + ("; > saved, runs after reboot" if later != running else "")
        lines.append(f"({note}; modelled values, not Panasonic specifications)")
        return "\n".join(lines)

    def profile_show(self, what: str | None = None) -> str:
        """Every key of the running profile (pending saved values marked), a KEY, or a MODEL."""
        if what is not None and what in SCHEMA:
            return self.profile_get(what)
        if what is not None:
            prof = factory(what)
            width = max(map(len, SCHEMA))
            return "\n".join(f"{key:{width}} = {render(prof[key])}" for key in SCHEMA)
        running = self.device.profile
        pending = {key: later for key, _, later in self.device.pending()}
        width = max(map(len, SCHEMA))
        lines = []
        for key in SCHEMA:
            line = f"{key:{width}} = {render(running[key])}"
            if key in pending:
                line += f"  (pending: {render(pending[key])} after reboot)"
            lines.append(line)
        if pending:
            lines.append(f"({len(pending)} saved value(s) pending reboot)")
        return "\n".join(lines)

    def profile_get(self, key: str) -> str:
        field = _field(key)
        running = self.device.profile[key]
        later = self.device.next_profile[key]
        when = "live" if field.live else "applies after reboot"
        site = "; site setting (kept by `profile apply`)" if field.site else ""
        lines = [f"{key} = {render(running)}"]
        if later != running:
            lines.append(f"  pending: {render(later)} saved, applies after reboot")
        lines.append(f"  {field.doc}; {field.allowed()}; {when}{site}")
        return "\n".join(lines)

    def profile_set(self, pairs: Sequence[tuple[str, str]]) -> str:
        """Set one or more keys together (validated whole, so cross-key rules can be met)."""
        if not pairs:
            raise DeviceError("profile set: expected KEY VALUE")
        values = dict(self.device.next_profile)
        for key, text in pairs:
            values[key] = _field(key).parse_text(text, "profile set")
        new = validate(values, "profile set")
        return self._put(new, "profile set")

    def profile_diff(self) -> str:
        """The saved profile against its model's factory values, then what waits for a reboot."""
        saved = self.device.next_profile
        rows = saved.diff(factory(saved.model))
        if not rows:
            lines = [f"no differences from the {saved.model} factory profile"]
        else:
            lines = [f"differences from the {saved.model} factory profile (saved | factory):"]
            lines += [f"  {k} = {render(ours)} | {render(theirs)}" for k, ours, theirs in rows]
        pending = self.device.pending()
        if pending:
            lines.append("pending: saved, applies after reboot (running -> saved):")
            lines += [f"  {k}: {render(now)} -> {render(later)}" for k, now, later in pending]
        return "\n".join(lines)

    def plan_apply(self, model: str, *, keep_site: bool = True) -> ProfilePlan:
        """What `profile apply MODEL` would change; site keys stay unless `keep_site` is False."""
        model = canonical_model(model)
        saved = self.device.next_profile
        new = for_model(saved, model, keep_site=keep_site)
        what = f"profile apply {model}" + ("" if keep_site else " factory")
        return ProfilePlan(what, new, saved.diff(new))

    def plan_reset(self) -> ProfilePlan:
        """What `profile reset` would change: every key back to the saved model's factory value."""
        saved = self.device.next_profile
        new = factory(saved.model)
        return ProfilePlan(f"profile reset to {saved.model} factory values", new, saved.diff(new))

    def commit(self, plan: ProfilePlan) -> str:
        """Make a planned change (after the administrator confirmed it)."""
        return self._put(plan.new, plan.what)

    def profile_apply(self, model: str, *, keep_site: bool = True) -> str:
        """Plan and commit at once (callers that confirm themselves use plan_apply/commit)."""
        return self.commit(self.plan_apply(model, keep_site=keep_site))

    def profile_reset(self) -> str:
        return self.commit(self.plan_reset())

    def profile_export(self) -> str:
        """The saved profile (what runs after a reboot) between marker lines."""
        prof = self.device.next_profile
        return "\n".join([f"{EXPORT_BEGIN} {prof.model}", prof.to_toml().rstrip("\n"), EXPORT_END])

    def profile_import(self, text: str) -> str:
        """Validate the whole pasted profile first; only a valid one touches NVRAM."""
        try:
            new = parse_toml(text, "profile import")
        except ProfileError as exc:
            message, sep, _ = str(exc).partition("; known keys:")
            if not sep:
                raise
            raise ProfileError(f"{message} (`profile show` lists every key)") from None
        return self._put(new, "profile import")

    def _put(self, new: Profile, what: str) -> str:
        """Save `new`; say what changed, what applies now and what waits for a reboot."""
        running = self.device.profile
        saved = self.device.next_profile
        changed = [key for key in SCHEMA if new[key] != saved[key]]
        if not changed:
            return f"{what}: no value changed"
        self.device.apply_profile(new)
        warning = self._apop_switched_on(saved, new)

        def when(key: str) -> str:
            if SCHEMA[key].live:
                return "applied now"
            if new[key] == running[key]:
                return "back to the running value"
            return f"applies after reboot; running: {render(running[key])}"

        if len(changed) == 1:
            key = changed[0]
            return f"{key} = {render(new[key])} (saved; {when(key)})" + warning
        lines = [f"{what}: {plural(len(changed), 'value')} changed and saved"]
        for key in changed:
            lines.append(f"  {key}: {render(saved[key])} -> {render(new[key])} ({when(key)})")
        return "\n".join(lines) + warning

    # ----- boxes -----

    def box_list(self) -> str:
        boxes = self.device.board.boxes()
        if not boxes:
            return "no boxes"
        locked = self._locked()
        lines = [f"{'box':20} {'messages':>8} {'size':>10}  notes"]
        for info in boxes:
            notes = []
            if info.has_legacy_secret:
                notes.append("legacy secret (APOP, CRAM-MD5)")
            if info.name in locked:
                notes.append(f"locked {format_left(locked[info.name])}")
            if info.corrupt:
                notes.append(f"{info.corrupt} corrupt")
            lines.append(
                f"{printable(info.name):20} {info.messages:>8} {format_size(info.bytes):>10}"
                f"  {', '.join(notes)}".rstrip()
            )
        return "\n".join(lines)

    def box_show(self, name: str) -> str:
        info = self._box(name)
        profile = self.device.profile
        quota = profile.int("mailbox.quota_mib") << 20
        if not info.has_legacy_secret:
            legacy = "no legacy secret: no APOP, CRAM-MD5 (`box passwd NAME legacy`)"
        elif profile.bool("pop3.apop"):
            legacy = "legacy secret kept: APOP and CRAM-MD5 work"
        else:
            legacy = "legacy secret kept; APOP, CRAM-MD5 off (pop3.apop = false)"
        lines = [
            f"box        {printable(info.name)}",
            f"messages   {info.messages} of {profile.int('mailbox.max_messages')}"
            + (f" ({info.corrupt} corrupt)" if info.corrupt else ""),
            f"size       {format_size(info.bytes)} of {format_size(quota)}",
            "auth       SCRAM-SHA-256 keys (USER/PASS, PLAIN, SCRAM-SHA-256)",
            f"           {legacy}",
        ]
        left = self._locked().get(info.name)
        if left is not None:
            lines.append(f"locked     {format_left(left)} left after failed logins (`box unlock`)")
        messages = self.device.board.messages(info.name)
        if messages:
            lines.append(f"latest     {min(len(messages), 10)} of {len(messages)}:")
        for msg in messages[-10:]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(msg.arrived))
            flag = "  CORRUPT" if msg.corrupt else ""
            lines.append(f"  {printable(msg.uid):24} {msg.size:>10} bytes  {when}{flag}")
        return "\n".join(lines)

    def _apop_switched_on(self, old: Profile, new: Profile) -> str:
        """ "\n" + a warning naming the boxes that cannot use APOP/CRAM-MD5, if `new` turns
        pop3.apop on while some box keeps no legacy secret; else ""."""
        if not new.bool("pop3.apop") or old.bool("pop3.apop"):
            return ""
        names = boxes_without_legacy_secret(self.device.board.boxes())
        warning = legacy_warning(names, console=True)
        return "" if warning is None else "\n" + warning

    def box_add(self, name: str, password: str, again: str, legacy: bool | None = None) -> str:
        """A new box; legacy=True/False keeps an APOP/CRAM-MD5 secret or not, None: keep one
        while pop3.apop is on (so every advertised method works for the box)."""
        if password != again:
            raise DeviceError("box add: the two passwords differ; nothing changed")
        check_new_password(password, "box add")
        apop_on = self.device.profile.bool("pop3.apop")
        keep = keeps_legacy_secret(legacy, apop_on=apop_on)
        self.device.board.add_box(name, password, legacy=keep)
        if keep:
            return f"box {name} added (APOP/CRAM-MD5 secret kept)"
        if apop_on:
            return f"box {name} added; it keeps no APOP/CRAM-MD5 secret and cannot use them"
        return f"box {name} added"

    def box_unlock(self, name: str) -> str:
        """Lift a box's lock-out after failed logins (locks also end by themselves)."""
        pop3 = self.device.pop3
        if pop3 is None:
            raise DeviceError("box unlock: the POP3 service is not running")
        if pop3.unlock(name):
            return f"box {printable(name)} unlocked; its failed-login count is cleared"
        if not self.box_exists(name):
            raise DeviceError(f"box unlock: no box named {name!r} is locked (see `status`)")
        return f"box {printable(name)} is not locked"

    def box_del(self, name: str, purge: bool = False) -> str:
        self.device.board.delete_box(name, purge=purge)
        return f"box {name} deleted"

    def box_passwd(self, name: str, password: str, again: str, legacy: bool | None = None) -> str:
        """New password; legacy=True keeps an APOP/CRAM-MD5 secret, False drops it, None: keep
        one if the box had one or pop3.apop is on."""
        if password != again:
            raise DeviceError("box passwd: the two passwords differ; nothing changed")
        check_new_password(password, "box passwd")
        had = self._box(name).has_legacy_secret
        keep = keeps_legacy_secret(legacy, apop_on=self.device.profile.bool("pop3.apop"), had=had)
        self.device.board.set_box_password(name, password, legacy=keep)
        if keep and not had:
            return f"password of box {name} changed; APOP/CRAM-MD5 secret kept from now on"
        if had and not keep:
            return f"password of box {name} changed; APOP/CRAM-MD5 secret dropped"
        return f"password of box {name} changed"

    def check_new_box(self, name: str) -> None:
        """Refuse a bad or taken name before anyone types a password for it."""
        check_box_name(name)
        if self.box_exists(name):
            raise BoxError(f"box add: a box named {name!r} already exists")

    def box_exists(self, name: str) -> bool:
        return any(info.name == name for info in self.device.board.boxes())

    def _locked(self) -> dict[str, float]:
        pop3 = self.device.pop3
        return pop3.locked_boxes() if pop3 is not None else {}

    def _box(self, name: str) -> BoxInfo:
        for info in self.device.board.boxes():
            if info.name == name:
                return info
        raise DeviceError(f"no box named {name!r} (see `box list`)")

    # ----- POP3 sessions -----

    def session_list(self) -> str:
        pop3 = self.device.pop3
        if pop3 is None:
            return "POP3 service not running"
        sessions = pop3.sessions()
        limit = self.device.profile.int("pop3.max_sessions")
        if not sessions:
            return f"no POP3 sessions open (limit {limit})"
        lines = [f"{len(sessions)} of {limit} POP3 sessions open:"]
        lines.append(f"  {'id':>5}  {'peer':24} {'box':16} {'state':14} since")
        for info in sessions:
            since = time.strftime("%H:%M:%S", time.localtime(info.started))
            lines.append(
                f"  {info.id:>5}  {printable(info.peer):24} {printable(info.box or '-'):16}"
                f" {info.state:14} {since}"
            )
        return "\n".join(lines)

    def session_kill(self, ident: str) -> str:
        pop3 = self.device.pop3
        if pop3 is None:
            raise DeviceError("session kill: the POP3 service is not running")
        try:
            number = int(ident)
        except ValueError:
            raise DeviceError(
                f"session kill: {ident!r} is not a session id (see `session list`)"
            ) from None
        if not pop3.kill(number):
            raise DeviceError(f"session kill: no open session {number} (see `session list`)")
        return f"session {number} closed (nothing committed)"

    # ----- TLS certificate -----

    def tls_show(self) -> str:
        """The stored certificate, as `dpfw tls show`, and whether the service offers TLS."""
        settings = self.device.board.settings()
        cert_pem = settings.get(tls.SETTING_CERT)
        if not cert_pem:
            return "no TLS certificate stored; `tls selfsign` or `tls import` makes one"
        lines = cert_lines(tls.describe(cert_pem))
        chain_pem = settings.get(tls.SETTING_CHAIN) or ""
        lines.append(
            f"chain:       {plural(chain_pem.count('-----BEGIN CERTIFICATE-----'), 'certificate')}"
        )
        try:
            tls.check_pair(cert_pem, settings.get(tls.SETTING_KEY, ""), chain_pem)
        except tls.TlsError as exc:
            lines.append(f"usable:      no: {printable(str(exc))}")
        else:
            lines.append("usable:      yes")
        pop3 = self.device.pop3
        serving = pop3 is not None and pop3.tls_available
        lines.append(
            "in service:  "
            + ("STLS/POP3S with the certificate loaded at boot" if serving else "no TLS now")
        )
        if self._tls_saved_in_boot == self.device.boots:
            lines.append(
                "             (the one above was saved since boot: in service after reboot)"
            )
        return "\n".join(lines)

    def tls_show_pem(self) -> str:
        """The stored certificate and chain as PEM text (never the key), for a CA file.

        Lines outside the PEM blocks (the note that it is not yet in service) are ignored by
        PEM readers such as OpenSSL and curl.
        """
        settings = self.device.board.settings()
        cert_pem = settings.get(tls.SETTING_CERT)
        if not cert_pem:
            raise DeviceError("no TLS certificate stored; `tls selfsign` or `tls import` makes one")
        lines = []
        if self._tls_saved_in_boot == self.device.boots:
            lines.append("(saved since boot: in service after reboot)")
        lines.append(cert_pem.rstrip("\n"))
        if chain_pem := settings.get(tls.SETTING_CHAIN):
            lines.append(chain_pem.rstrip("\n"))
        return "\n".join(lines)

    def tls_import(self, text: str) -> str:
        """Pasted PEM: the first certificate, its key, then any chain; checked, then saved."""
        if len(text) > MAX_TLS_PEM:
            raise tls.TlsError(f"tls import: more than {MAX_TLS_PEM} bytes of PEM")
        blocks = pem_blocks(text)
        certs = [block for label, block in blocks if label == "CERTIFICATE"]
        keys = [block for label, block in blocks if label.endswith("PRIVATE KEY")]
        known = {"CERTIFICATE", *IGNORED_PEM}
        others = sorted(
            {
                label
                for label, _ in blocks
                if label not in known and not label.endswith("PRIVATE KEY")
            }
        )
        if not certs:
            raise tls.TlsError("tls import: no -----BEGIN CERTIFICATE----- block found")
        if len(keys) != 1:
            raise tls.TlsError(
                f"tls import: expected one -----BEGIN ... PRIVATE KEY----- block, found {len(keys)}"
            )
        if others:
            raise tls.TlsError(f"tls import: unexpected PEM block(s): {', '.join(others)}")
        cert_pem, key_pem, chain_pem = certs[0], keys[0], "".join(certs[1:]) or None
        try:
            info = tls.check_pair(cert_pem, key_pem, chain_pem)
        except tls.TlsError as exc:
            raise tls.TlsError(f"tls import: {exc}") from None
        self._store_tls(tls.settings_for(cert_pem, key_pem, chain_pem))
        chain = f" with {plural(len(certs) - 1, 'chain certificate')}" if len(certs) > 1 else ""
        lines = [f"TLS certificate imported{chain} (saved; applies after reboot)"]
        return "\n".join(lines + cert_lines(info))

    def tls_selfsign(self, hostname: str | None = None) -> str:
        """A new self-signed certificate for identity.hostname (or `hostname`)."""
        name = hostname or self.device.next_profile.str("identity.hostname")
        if not is_listen_address(name):
            raise tls.TlsError(
                f"tls selfsign: {shown(name)} is not an IP address or {HOSTNAME_RULE};"
                " nothing changed"
            )
        cert_pem, key_pem = tls.make_self_signed(name)
        self._store_tls(tls.settings_for(cert_pem, key_pem))
        lines = [f"self-signed TLS certificate for {printable(name)} (saved; applies after reboot)"]
        return "\n".join(lines + cert_lines(tls.describe(cert_pem)))

    def _store_tls(self, settings: Mapping[str, str | None]) -> None:
        """Certificate, key and chain in one atomic NVRAM write; the listeners keep theirs."""
        self.device.board.set_settings(settings)
        self._tls_saved_in_boot = self.device.boots

    # ----- scans -----

    def prepare_scan(self, box: str, options: Sequence[str]) -> ScanRequest:
        """Parse `pages=N dpi=D mode=M format=F` and check them against the profile now."""
        from firmware.scanner.encode import FORMAT_MODES
        from firmware.scanner.job import ScanRequest, check_request

        profile = self.device.profile
        chosen: dict[str, str] = {
            "pages": "1",
            "dpi": "300"
            if "300" in profile.list("scan.resolutions")
            else profile.list("scan.resolutions")[0],
            "mode": profile.list("scan.color_modes")[0],
            "format": "",
        }
        for option in options:
            name, sep, text = option.partition("=")
            if not sep or name not in chosen:
                raise DeviceError(
                    f"scan: {option!r} is not an option; use pages=N dpi=D mode=M format=F"
                )
            chosen[name] = text
        try:
            pages = int(chosen["pages"])
        except ValueError:
            raise DeviceError(f"scan: pages={chosen['pages']!r} is not a number") from None
        fmt = chosen["format"] or next(
            (f for f in profile.list("scan.formats") if chosen["mode"] in FORMAT_MODES.get(f, ())),
            "pdf",
        )
        if not self.box_exists(box):
            raise DeviceError(f"scan: no box named {box!r} (see `box list`)")
        request = ScanRequest(
            box=box, pages=pages, dpi=chosen["dpi"], mode=chosen["mode"], format=fmt
        )
        check_request(request, profile)
        return request

    async def scan(self, request: ScanRequest) -> str:
        result = await self.device.scan(request)
        return (
            f"scan job {result.job_number:04d} done: {plural(result.pages, 'page')},"
            f" {format_size(result.size)} stored in box {printable(result.box)}"
            f" as {printable(result.uid)}"
        )

    # ----- maintenance -----

    def log(self, count: int = 20) -> str:
        lines = list(self.device.log_lines)[-count:] if count > 0 else []
        return "\n".join(printable(line) for line in lines) or "(log is empty)"

    async def fsck(self) -> str:
        """Re-read every record, on the store worker (the console waits, POP3 does not)."""
        report = await self.device.store_worker.run(self.device.board.fsck)
        if report.clean:
            return f"fsck: {plural(report.records_checked, 'record')} checked, all clean"
        lines = [
            f"fsck: {plural(report.records_checked, 'record')} checked, {len(report.problems)} bad:"
        ]
        for problem in report.problems[:50]:
            where = f" (box {problem.box}, message {problem.uid})" if problem.box else ""
            lines.append(
                f"  {problem.what} at {problem.position}+{problem.length}:"
                f" {printable(problem.detail)}{printable(where)}"
            )
        if len(report.problems) > 50:
            lines.append(f"  ... and {len(report.problems) - 50} more")
        return "\n".join(lines)

    async def compact(self) -> str:
        """Compact the log on the store worker, which lets readers in between segments."""
        report = await self.device.store_worker.run(self.device.board.compact)
        return (
            f"compact: {format_size(report.bytes_reclaimed)} reclaimed,"
            f" {plural(report.records_moved, 'record')} ({format_size(report.bytes_moved)}) moved"
            f" in {report.seconds:.2f} s"
        )

    def reboot(self) -> None:
        self.device.request_reboot()

    def shutdown(self) -> None:
        self.device.request_shutdown()


check_new_password = credentials.check_password_policy  # the one policy, `what: ...` line


def _field(key: str) -> Field:
    field = SCHEMA.get(key)
    if field is None:
        raise ProfileError(f"unknown profile key {shown(key)} (`profile show` lists every key)")
    return field
