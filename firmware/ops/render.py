"""Text for people from the operations' dataclasses: the console and the CLI print these.

Every string that came from stored data or a peer (box names, uids, log lines, certificate
problems) goes through `printable`, so nothing stored can send escape sequences to a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from firmware.config.profile import render as format_value
from firmware.ops.boxes import BoxChange, BoxDetail, BoxList, Unlock
from firmware.ops.clients import ClientList
from firmware.ops.faults import FaultInfo, FaultList, FaultsCleared
from firmware.ops.ifax import IfaxStatus, PollResult, TrayCleared, TrayDoc, TrayList
from firmware.ops.messages import MessageList
from firmware.ops.profile import (
    KeyChange,
    ModelRow,
    ProfileDiff,
    ProfileKey,
    ProfilePlan,
    ProfileUpdate,
    ProfileView,
)
from firmware.ops.scans import ScanDone
from firmware.ops.sessions import SessionList
from firmware.ops.status import Pop3Status, Status
from firmware.ops.storage import Compact, Fsck
from firmware.ops.tls import Cert, TlsPem, TlsSaved, TlsView
from firmware.ops.trace import TraceShow, TraceState
from firmware.pop3.auth import legacy_warning
from firmware.security.tls import hostname_warning
from firmware.text import plural

MAX_LOCKED_SHOWN = 8  # `status` names this many locked boxes, then counts the rest
MAX_PROBLEMS_SHOWN = 50

__all__ = ["format_value"]


def format_size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def format_uptime(seconds: float) -> str:
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    return f"{days}d {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def format_left(seconds: float) -> str:
    """Time left as M:SS (a box lock-out is at most minutes)."""
    whole = max(0, int(seconds + 0.999))
    return f"{whole // 60}:{whole % 60:02d}"


def printable(text: str) -> str:
    """One line of text safe to send to a terminal (no escape sequences from stored data)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


# ----- status -----


def status(s: Status) -> str:
    lines = [
        f"model      {s.model}"
        + (f" ({s.next_model} after reboot)" if s.next_model != s.model else ""),
        f"firmware   {s.firmware_version} (dpfw {s.dpfw_version})",
        *([f"serial     {printable(s.serial)}"] if s.serial else []),
        f"uptime     {format_uptime(s.uptime_s)}",
        f"RAM        {format_size(s.ram.used)} used, {format_size(s.ram.free)} free"
        f" of {format_size(s.ram.total)}",
        f"flash      {format_size(s.flash.used)} used, {format_size(s.flash.free)} free,"
        f" {format_size(s.flash.reclaimable)} reclaimable of {format_size(s.flash.total)}",
        f"POP3       {s.pop3.sessions} of {s.pop3.max_sessions} sessions open"
        + (f", {s.pop3.in_tls} in TLS" if s.pop3.in_tls else "")
        + ("" if s.pop3.running else " (service not running)"),
    ]
    if s.pop3.running:
        lines += _security(s.pop3)
    lines.append(
        f"scans      {s.scans_done} done" + (f", {s.scans_failed} failed" if s.scans_failed else "")
    )
    if s.feeder is not None:
        lines.append(f"feeder     {s.feeder}")
    if s.pending:
        lines.append(
            f"profile    {plural(s.pending, 'saved change')} pending reboot (`profile diff`)"
        )
    return "\n".join(lines)


def _security(p: Pop3Status) -> list[str]:
    """TLS, logins and box lock-outs: what an administrator checks when mail stops."""
    if p.tls_available:
        offered = ["STLS offered", *(f"POP3S on {where}" for where in p.pop3s)]
        tls_line = (
            f"TLS        {', '.join(offered)}; {plural(p.tls_handshakes, 'handshake')}"
            f", {p.tls_failures} failed"
        )
    else:
        tls_line = "TLS        not available: no usable certificate (`tls show`)"
    lines = [
        tls_line,
        f"logins     {p.logins_ok} ok, {p.logins_failed} failed;"
        f" {p.evictions} evicted before login",
    ]
    if p.locked:
        shown = [
            f"{printable(box)} {format_left(left)}"
            for box, left in list(p.locked.items())[:MAX_LOCKED_SHOWN]
        ]
        more = len(p.locked) - len(shown)
        lines.append(
            f"locked     {plural(len(p.locked), 'box')} after failed logins (`box unlock NAME`):"
        )
        lines.append("           " + ", ".join(shown) + (f" and {more} more" if more else ""))
    return lines


# ----- profiles -----


def models(rows: Sequence[ModelRow]) -> str:
    """The factory profiles; `*` the running model, `>` the saved one waiting for a reboot."""
    marked = any(row.running for row in rows)
    lines = []
    for row in rows:
        mark = "*" if row.running else ">" if row.saved else " "
        lines.append(
            (f"{mark} " if marked else "")
            + f"{row.model}  {row.ppm:>3} ppm  RAM {row.ram_mib:>4} MiB"
            f"  flash {row.flash_mib:>5} MiB  POP3 {row.pop3_sessions:>3}"
            f"  boxes {row.boxes:>5}"
        )
    later = any(row.saved and not row.running for row in rows)
    note = (
        ("* running" + ("; > saved, runs after reboot" if later else "") + "; ") if marked else ""
    )
    lines.append(f"({note}modelled values, not Panasonic specifications)")
    return "\n".join(lines)


def profile_view(view: ProfileView) -> str:
    """Every key, `KEY = VALUE`, a pending saved value marked after it."""
    width = max(len(k.key) for k in view.keys)
    lines = []
    for k in view.keys:
        line = f"{k.key:{width}} = {format_value(k.running)}"
        if k.saved != k.running:
            line += f"  (pending: {format_value(k.saved)} after reboot)"
        lines.append(line)
    if view.pending:
        lines.append(f"({plural(len(view.pending), 'saved value')} pending reboot)")
    return "\n".join(lines)


def profile_key(k: ProfileKey) -> str:
    when = "live" if k.live else "applies after reboot"
    site = "; site setting (kept by `profile apply`)" if k.site else ""
    lines = [f"{k.key} = {format_value(k.running)}"]
    if k.saved != k.running:
        lines.append(f"  pending: {format_value(k.saved)} saved, applies after reboot")
    lines.append(f"  {k.doc}; {k.allowed}; {when}{site}")
    return "\n".join(lines)


def key_docs(keys: Sequence[ProfileKey]) -> str:
    """`dpfw profile keys`: each key, what it accepts and means, and when it applies."""
    lines = []
    for k in keys:
        when = "live" if k.live else "after reboot"
        site = ", site setting" if k.site else ""
        lines.append(f"{k.key:34} {k.allowed}; {k.doc} ({when}{site})")
    return "\n".join(lines)


_PLANNED = {"now": "now", "reboot": "after reboot", "running": "the running value", "boot": ""}


def plan(p: ProfilePlan, *, dry_run: bool = False) -> str:
    """A planned change: the keys that change, old -> new, and when each takes effect."""
    if not p.changes:
        return f"{p.what}: no value changed"
    verb = "would change" if dry_run else "changes"
    lines = [f"{p.what} {verb} {plural(len(p.changes), 'value')}:"]
    for c in p.changes:
        when = _PLANNED[c.when]
        lines.append(
            f"  {c.key}: {format_value(c.before)} -> {format_value(c.after)}"
            + (f" ({when})" if when else "")
        )
    return "\n".join(lines)


def _done(c: KeyChange) -> str:
    if c.when == "now":
        return "applied now"
    if c.when == "running":
        return "back to the running value"
    if c.when == "boot":
        return "applies at next boot"
    return f"applies after reboot; running: {format_value(c.running)}"


def update(u: ProfileUpdate, *, console: bool = True) -> str:
    """A change made: one key on one line, several as a list; then the warning for boxes
    that cannot use APOP/CRAM-MD5 now on (naming the console's or the CLI's fix)."""
    if not u.changes:
        lines = [f"{u.what}: no value changed"]
    elif len(u.changes) == 1:
        c = u.changes[0]
        lines = [f"{c.key} = {format_value(c.after)} (saved; {_done(c)})"]
    else:
        lines = [f"{u.what}: {plural(len(u.changes), 'value')} changed and saved"]
        lines += [
            f"  {c.key}: {format_value(c.before)} -> {format_value(c.after)} ({_done(c)})"
            for c in u.changes
        ]
    warning = update_warning(u, console=console)
    return "\n".join(lines + ([warning] if warning else []))


def update_warning(u: ProfileUpdate, *, console: bool = True) -> str | None:
    """The warnings a change gives, else None: pop3.apop switched on while boxes cannot use
    APOP/CRAM-MD5; identity.hostname changed to a name the TLS certificate does not hold.
    Each names the console's (or the CLI's) command that fixes it."""
    warnings = [legacy_warning(u.boxes_without_legacy_secret, console=console)]
    if u.certificate_names is not None:
        warnings.append(hostname_warning(u.certificate_names, u.hostname, console=console))
    shown = [w for w in warnings if w is not None]
    return "\n".join(shown) if shown else None


def profile_diff(d: ProfileDiff) -> str:
    if not d.from_factory:
        lines = [f"no differences from the {d.model} factory profile"]
    else:
        lines = [f"differences from the {d.model} factory profile (saved | factory):"]
        lines += [
            f"  {r.key} = {format_value(r.ours)} | {format_value(r.theirs)}" for r in d.from_factory
        ]
    if d.pending:
        lines.append("pending: saved, applies after reboot (running -> saved):")
        lines += [
            f"  {r.key}: {format_value(r.ours)} -> {format_value(r.theirs)}" for r in d.pending
        ]
    return "\n".join(lines)


# ----- boxes and messages -----


def box_list(b: BoxList) -> str:
    if not b.boxes:
        return "no boxes"
    lines = [f"{'box':20} {'messages':>8} {'size':>10}  notes"]
    for box in b.boxes:
        notes = []
        if box.legacy_secret:
            notes.append("legacy secret (APOP, CRAM-MD5)")
        if box.locked_s is not None:
            notes.append(f"locked {format_left(box.locked_s)}")
        if box.corrupt:
            notes.append(f"{box.corrupt} corrupt")
        lines.append(
            f"{printable(box.name):20} {box.messages:>8} {format_size(box.bytes):>10}"
            f"  {', '.join(notes)}".rstrip()
        )
    lines.append(f"({len(b.boxes)} of {plural(b.max_boxes, 'box')})")
    return "\n".join(lines)


def box_detail(d: BoxDetail) -> str:
    box = d.box
    if not box.legacy_secret:
        legacy = "no legacy secret: no APOP, CRAM-MD5 (`box passwd NAME legacy`)"
    elif d.apop_on:
        legacy = "legacy secret kept: APOP and CRAM-MD5 work"
    else:
        legacy = "legacy secret kept; APOP, CRAM-MD5 off (pop3.apop = false)"
    lines = [
        f"box        {printable(box.name)}",
        f"messages   {box.messages} of {d.max_messages}"
        + (f" ({box.corrupt} corrupt)" if box.corrupt else ""),
        f"size       {format_size(box.bytes)} of {format_size(d.quota_bytes)}",
        "auth       SCRAM-SHA-256 keys (USER/PASS, PLAIN, SCRAM-SHA-256)",
        f"           {legacy}",
    ]
    if box.locked_s is not None:
        lines.append(
            f"locked     {format_left(box.locked_s)} left after failed logins (`box unlock`)"
        )
    if d.latest:
        lines.append(f"latest     {len(d.latest)} of {box.messages}:")
    for msg in d.latest:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(msg.arrived))
        flag = "  CORRUPT" if msg.corrupt else ""
        lines.append(f"  {printable(msg.uid):24} {msg.size:>10} bytes  {when}{flag}")
    return "\n".join(lines)


def box_change(c: BoxChange) -> str:
    """What `box add|passwd|del` did; a second line when the box's legacy secret and the
    pop3.apop switch disagree (a secret kept while APOP is off, none while it is on)."""
    name = printable(c.name)
    if c.what == "deleted":
        return f"box {name} deleted"
    if c.what == "added":
        if c.legacy_secret:
            off = "; pop3.apop is off" if not c.apop_on else ""
            return f"box {name} added (APOP/CRAM-MD5 secret kept{off})"
        if c.apop_on:
            return f"box {name} added; it keeps no APOP/CRAM-MD5 secret and cannot use them"
        return f"box {name} added"
    line = f"password of box {name} changed"
    if c.legacy_secret and not c.had_legacy_secret:
        line += "; APOP/CRAM-MD5 secret kept from now on"
    elif c.had_legacy_secret and not c.legacy_secret:
        line += "; APOP/CRAM-MD5 secret dropped"
    if c.legacy_secret and not c.apop_on:
        line += "\n(APOP/CRAM-MD5 secret kept; pop3.apop is off)"
    elif not c.legacy_secret and c.apop_on:
        line += "\n(no APOP/CRAM-MD5 secret: this box cannot use APOP or CRAM-MD5)"
    return line


def unlock(u: Unlock) -> str:
    if u.was_locked:
        return f"box {printable(u.name)} unlocked; its failed-login count is cleared"
    return f"box {printable(u.name)} is not locked"


def messages(m: MessageList) -> str:
    if not m.messages:
        return f"box {printable(m.box)}: no messages"
    lines = [f"{'uid':24} {'size':>10}  {'arrived':19}  subject"]
    for msg in m.messages:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(msg.arrived))
        subject = "CORRUPT" if msg.corrupt else printable(msg.subject or "")
        files = f" [{', '.join(map(printable, msg.attachments))}]" if msg.attachments else ""
        lines.append(f"{printable(msg.uid):24} {msg.size:>10}  {when}  {subject}{files}")
    return "\n".join(lines)


# ----- sessions, scans, log, storage -----


def sessions(s: SessionList) -> str:
    if not s.running:
        return "POP3 service not running"
    if not s.sessions:
        return f"no POP3 sessions open (limit {s.limit})"
    lines = [f"{len(s.sessions)} of {s.limit} POP3 sessions open:"]
    lines.append(f"  {'id':>5}  {'peer':24} {'box':16} {'state':14} since")
    for info in s.sessions:
        since = time.strftime("%H:%M:%S", time.localtime(info.started))
        lines.append(
            f"  {info.id:>5}  {printable(info.peer):24} {printable(info.box or '-'):16}"
            f" {info.state:14} {since}"
        )
    return "\n".join(lines)


_VERDICT = {"pass": "pass", "warn": "WARN", "fail": "FAIL", "not-seen": "-"}


def clients(c: ClientList, *, detail: bool = False) -> str:
    """The report card: one line per client, or (`detail`) every item, counter and session."""
    source = "" if c.live or c.written is None else " (saved " + _when(c.written) + ")"
    if not c.clients:
        return "no POP3 client has connected yet" + source
    if not detail:
        lines = [f"{plural(len(c.clients), 'client')}{source}:"]
        lines.append(f"  {'address':24} {'sessions':>8}  {'grade':5}  {'last seen':19}  items")
        for card in c.clients:
            bad = [i.name for i in card.items if i.verdict in ("fail", "warn")]
            flagged = ", ".join(
                f"{i.name} {_VERDICT[i.verdict]}" for i in card.items if i.name in bad
            )
            lines.append(
                f"  {printable(card.address):24} {card.counters.get('sessions', 0):>8}  "
                f"{_VERDICT[card.worst]:5}  {_when(card.last_seen):19}  "
                f"{printable(flagged) or 'all graded items pass'}"
            )
        lines.append("  (clients ADDRESS: every item with its reason)")
        return "\n".join(lines)
    out: list[str] = []
    for card in c.clients:
        k = card.counters
        out.append(
            f"client {printable(card.address)}{source}: {_VERDICT[card.worst]}; "
            f"{plural(k.get('sessions', 0), 'session')}, "
            f"{plural(k.get('commands', 0), 'command')}, {k.get('retrieved', 0)} retrieved, "
            f"{k.get('deleted', 0)} deleted; first {_when(card.first_seen)}, "
            f"last {_when(card.last_seen)}"
        )
        for item in card.items:
            out.append(
                f"  {_VERDICT[item.verdict]:4}  {printable(item.title)}: "
                f"{printable(item.reason)} [{item.rfc}]"
            )
        for box in card.boxes:
            out.append(
                f"  box {printable(box.box)}: {plural(box.sessions, 'session')}, "
                f"{box.retrieved} retrieved, {box.deleted} deleted, {box.quit} QUIT, "
                f"{box.dropped} dropped"
            )
        for line in card.history:
            out.append(f"  {printable(line)}")
    return "\n".join(out)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def session_killed(ident: int) -> str:
    return f"session {ident} closed (nothing committed)"


def trace_state(t: TraceState) -> str:
    readers = f"; {plural(t.subscribers, 'stream')} reading" if t.subscribers else ""
    lost = f"; {plural(t.dropped, 'record')} dropped by slow readers" if t.dropped else ""
    return f"protocol trace {'on' if t.on else 'off'}{readers}{lost}"


def trace_show(t: TraceShow) -> str:
    if not t.records:
        which = f" of session {t.session}" if t.session is not None else ""
        hint = "" if t.on else " (tracing is off: `trace on`)"
        return f"no trace records{which}{hint}"
    lines = []
    for r in t.records:
        when = (
            time.strftime("%H:%M:%S", time.localtime(r.time)) + f".{int(r.time * 1000) % 1000:03d}"
        )
        lines.append(f"{when} {r.session:>5} {printable(r.peer)} {r.direction} {printable(r.line)}")
    return "\n".join(lines)


def scan_done(r: ScanDone) -> str:
    return (
        f"scan job {r.job_number:04d} done: {plural(r.pages, 'page')},"
        f" {format_size(r.size)} stored in box {printable(r.box)} as {printable(r.uid)}"
    )


def log(lines: Sequence[str]) -> str:
    return "\n".join(printable(line) for line in lines) or "(log is empty)"


def fsck(f: Fsck) -> str:
    records = plural(f.records_checked, "record")
    if f.clean:
        return f"fsck: {records} checked, all clean"
    lines = [f"fsck: {records} checked, {len(f.problems)} bad:"]
    for p in f.problems[:MAX_PROBLEMS_SHOWN]:
        where = f" (box {p.box}, message {p.uid})" if p.box else ""
        lines.append(
            f"  {p.what} at {p.log_offset}+{p.length}: {printable(p.detail)}{printable(where)}"
        )
    if len(f.problems) > MAX_PROBLEMS_SHOWN:
        lines.append(f"  ... and {len(f.problems) - MAX_PROBLEMS_SHOWN} more")
    return "\n".join(lines)


def compact(c: Compact) -> str:
    line = (
        f"compact: {format_size(c.bytes_reclaimed)} reclaimed,"
        f" {plural(c.records_moved, 'record')} ({format_size(c.bytes_moved)}) moved"
        f" in {c.seconds:.2f} s"
    )
    return line if c.stalled is None else f"{line}; stopped {c.stalled}"


# ----- TLS -----


def cert_lines(c: Cert) -> list[str]:
    """`label: value` lines, the fingerprint over two lines for an 80-column terminal."""
    lines = [
        f"subject:     {printable(c.subject)}",
        f"issuer:      {printable(c.issuer)}" + (" (self-signed)" if c.self_signed else ""),
        f"names:       {printable(', '.join(c.names)) or '(none)'}",
        f"valid from:  {_utc(c.not_before)} UTC",
        f"valid until: {_utc(c.not_after)} UTC",
        f"key:         {c.key}",
    ]
    digest = c.sha256
    if len(digest) > 60:
        half = digest.index(":", len(digest) // 2 - 1) + 1
        lines += [f"sha256:      {digest[:half]}", f"             {digest[half:]}"]
    else:
        lines.append(f"sha256:      {digest}")
    return lines


def _utc(iso: str) -> str:
    """'2026-11-30T00:00:00+00:00' -> '2026-11-30 00:00:00'."""
    return iso.replace("T", " ")[:19]


def tls_view(v: TlsView) -> str:
    lines = cert_lines(v.cert)
    lines.append(f"chain:       {plural(v.chain, 'certificate')}")
    lines.append(
        "usable:      yes" if v.usable else f"usable:      no: {printable(v.problem or '')}"
    )
    if v.serving is not None:
        lines.append(
            "in service:  "
            + ("STLS/POP3S with the certificate loaded at boot" if v.serving else "no TLS now")
        )
        if v.saved_since_boot:
            lines.append(
                "             (the one above was saved since boot: in service after reboot)"
            )
    return "\n".join(lines)


def tls_pem(p: TlsPem) -> str:
    """PEM for a CA file; a note line before it (PEM readers skip text outside blocks)."""
    note = "(saved since boot: in service after reboot)\n" if p.saved_since_boot else ""
    return note + p.pem.rstrip("\n")


def tls_saved(s: TlsSaved, *, live: bool) -> str:
    when = "saved; applies after reboot" if live else "saved; applies at next boot"
    if s.how == "imported":
        chain = f" with {plural(s.chain, 'chain certificate')}" if s.chain else ""
        first = f"TLS certificate imported{chain} ({when})"
    else:
        first = f"self-signed TLS certificate for {printable(', '.join(s.names))} ({when})"
    return "\n".join([first, *cert_lines(s.cert)])


# ----- Internet Fax (firmware/ops/ifax.py) -----


def ifax_status(s: IfaxStatus) -> str:
    state = "on" if s.enabled else "off (ifax.enabled = false)"
    every = f"every {s.poll_interval_s} s" if s.poll_interval_s else "on demand only"
    lines = [
        f"Internet Fax: {state}",
        f"  server  {printable(s.user)}@{printable(s.server)} tls {s.tls}, auth {s.auth}",
        f"  mode    {'leave on server (UIDL)' if s.leave_on_server else 'delete once stored'}"
        f", poll {every}",
        f"  polls   {s.polls} since boot: {s.received} received, {s.errors} refused"
        + (" (polling now)" if s.busy else ""),
    ]
    if s.last_result is not None and s.last_poll_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.last_poll_at))
        lines.append(f"  last    {when}: {printable(s.last_result)}")
    if s.next_poll_in_s is not None:
        lines.append(f"  next    in {s.next_poll_in_s:.0f} s")
    lines.append(f"  tray    {plural(s.tray_documents, 'document')}")
    return "\n".join(lines)


def ifax_poll(r: PollResult) -> str:
    """`ifax poll`: '2 documents received' first, then the rest."""
    head = f"{plural(r.received, 'document')} received"
    rest = []
    if r.errors:
        rest.append(f"{r.errors} refused (error report in the tray)")
    if r.skipped:
        rest.append(f"{r.skipped} already in the tray")
    if r.deleted:
        rest.append(f"{r.deleted} deleted from the server")
    line = head + (", " + ", ".join(rest) if rest else "")
    if r.failed:
        code = f" [{r.code}]" if r.code else ""
        line += f"\npoll stopped{code}: {printable(' '.join(r.failed.split()))}"
    return line


def tray_list(t: TrayList) -> str:
    if not t.documents:
        return "the tray is empty"
    lines = [f"{'N':>3}  {'status':<8} {'pages':>5}  {'res':<8} {'from':<28} subject"]
    for d in t.documents:
        lines.append(
            f"{d.number:>3}  {d.status:<8} {d.pages:>5}  {d.resolution or '-':<8} "
            f"{printable(d.sender)[:28]:<28} {printable(d.subject)[:40]}"
        )
    return "\n".join(lines)


def tray_show(d: TrayDoc) -> str:
    received = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.received)) if d.received else "-"
    lines = [
        f"document {d.number}: {d.status}",
        f"  from       {printable(d.sender)}",
        f"  subject    {printable(d.subject)}",
        f"  date       {printable(d.date)}",
        f"  received   {received} (UIDL {printable(d.uidl)})",
        f"  pages      {d.pages}" + (f" at {d.resolution}" if d.resolution else ""),
        f"  stored     {format_size(d.bytes)}",
    ]
    for n, (w, h) in enumerate(d.page_sizes, 1):
        lines.append(f"  page {n:<5} {w}x{h} pixels")
    if d.error:
        lines.append(f"  error      {printable(d.error)}")
    return "\n".join(lines)


def tray_cleared(c: TrayCleared) -> str:
    return f"tray cleared: {plural(c.removed, 'document')} removed"


def _fault_line(f: FaultInfo) -> str:
    keys = [f"{k}={v}" for k, v in f.spec.items() if k != "action"]
    state = (
        ("until cleared" if f.remaining is None else f"{f.remaining} left") if f.live else "spent"
    )
    return " ".join([f.action, *keys, f"(fired {f.fired}, {state})"])


def fault_added(f: FaultInfo) -> str:
    return f"fault {f.id} set: {_fault_line(f)}"


def fault_list(faults: FaultList) -> str:
    if not faults.faults:
        return "no faults set"
    seed = "random" if faults.seed is None else str(faults.seed)
    return "\n".join([f"seed {seed}", *(f"{f.id:>4} {_fault_line(f)}" for f in faults.faults)])


def faults_cleared(cleared: FaultsCleared) -> str:
    if not cleared.ids:
        return "no faults set"
    return f"cleared {plural(len(cleared.ids), 'fault')}: {', '.join(map(str, cleared.ids))}"
