"""The serial admin console as a sans-IO machine: bytes in, bytes out, no clock of its own.

`ConsoleShell.feed(data)` returns what to send back (echo, command output, prompts). The
transport learns of time through `next_deadline()` / `tick()` (idle logout) and of work that
must be awaited through `take_action()` (a scan, fsck, compact, a reboot): it runs the action
on the device and hands the outcome back with `finish_action()`. Each command parses its
words, calls one operation of firmware.ops over the shell's OpsContext and prints
firmware.ops.render of the result: the operations and their texts are the CLI's too.
Everything the administrator types goes through one bounded line editor, so line noise can
cost output but never memory or a crash.

One table, HELP, names every command with its usage: dispatch, `help`, Tab completion and
the "did you mean" suggestions for mistyped commands all read it, and profile keys come from
the profile schema (firmware.config.profile.SCHEMA), so nothing here is a second list to keep
in step by hand.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from firmware.config.profile import MODELS, SCHEMA
from firmware.console.linedisc import MAX_LINE, Event, Kind, LineEditor
from firmware.errors import DeviceError
from firmware.ops import boxes, ifax, profile, render, sessions, status, storage, system
from firmware.ops import clients as ops_clients
from firmware.ops import faults as ops_faults
from firmware.ops import tls as ops_tls
from firmware.ops import trace as ops_trace
from firmware.ops.context import OpsContext
from firmware.ops.profile import EXPORT_END, ProfilePlan, parse_pairs
from firmware.ops.scans import OPTIONS as SCAN_OPTION_NAMES
from firmware.ops.scans import prepare_scan
from firmware.security.abuse import AdminLockout
from firmware.text import plural

if TYPE_CHECKING:
    from firmware.scanner.job import ScanRequest

log = logging.getLogger("dpfw.console")

MAX_HELD = 4096  # bytes that arrived behind a running scan, replayed after it
MAX_IMPORT_LINES = 400
MAX_LOG_LINES = 500
TLS_END = "# END DPFW TLS"  # ends a pasted `tls import`


@dataclass(frozen=True)
class ScanAction:
    """Run this scan on the device, then call `finish_action` with its outcome."""

    request: ScanRequest


@dataclass(frozen=True)
class PowerAction:
    """Reboot or shut the device down once the output before it has been sent."""

    what: str  # "reboot" | "shutdown"


@dataclass(frozen=True)
class StoreAction:
    """Run a long store operation (`STORE_OPERATIONS[what]`) where store work belongs
    (`OpsContext.run_store`: the device's store worker), then call `finish_action` with its
    text; the console holds input meanwhile, POP3 does not wait."""

    what: str  # "fsck" | "compact"


STORE_OPERATIONS: dict[str, tuple[Callable[[OpsContext], object], Callable[[Any], str]]] = {
    "fsck": (storage.fsck, render.fsck),
    "compact": (storage.compact, render.compact),
}
"""what -> (the operation, its renderer)."""


@dataclass(frozen=True)
class AsyncAction:
    """Run an operation that waits on the network or the store (`ASYNC_OPERATIONS[what]`,
    awaited with `args`), then call `finish_action` with its text; input is held meanwhile."""

    what: str  # "ifax poll" | "ifax tray list" | "ifax tray show" | "ifax tray clear"
    args: tuple[int, ...] = ()


async def _ifax_poll(ctx: OpsContext) -> str:
    return render.ifax_poll(await ifax.poll(ctx))


async def _tray_list(ctx: OpsContext) -> str:
    return render.tray_list(await ctx.run_store(ifax.tray_list, ctx))


async def _tray_show(ctx: OpsContext, number: int) -> str:
    return render.tray_show(await ctx.run_store(ifax.tray_show, ctx, number))


async def _tray_clear(ctx: OpsContext) -> str:
    return render.tray_cleared(await ctx.run_store(ifax.tray_clear, ctx))


ASYNC_OPERATIONS: dict[str, Callable[..., Any]] = {
    "ifax poll": _ifax_poll,
    "ifax tray list": _tray_list,
    "ifax tray show": _tray_show,
    "ifax tray clear": _tray_clear,
}
"""what -> async fn(ctx, *args) -> text."""


Action = ScanAction | PowerAction | StoreAction | AsyncAction


class Mode(Enum):
    LOGIN = "login"  # waiting for the admin password
    COMMAND = "command"  # logged in, at the prompt
    ASK = "ask"  # answering a command's questions (passwords)
    IMPORT = "import"  # collecting pasted text (profile TOML, TLS PEM) up to an end marker
    BUSY = "busy"  # an action runs on the device; input is held


@dataclass
class _Questions:
    """A command that needs answers typed after it (passwords are never on the command line)."""

    prompts: list[tuple[str, bool]]  # (question, secret)
    then: Callable[[list[str]], str]
    answers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Paste:
    """A command that reads pasted lines up to an end marker, then gets them as one text."""

    what: str  # "profile import", for the error lines
    end: str
    then: Callable[[str], str]


@dataclass(frozen=True)
class Help:
    usage: str
    summary: str
    detail: str = ""


def _command_name(usage: str) -> str:
    """'box del NAME [purge]' -> 'box del': the lower-case words before the arguments."""
    return " ".join(itertools.takewhile(lambda w: w.isalpha() and w.islower(), usage.split()))


HELP: dict[str, Help] = {
    _command_name(h.usage): h
    for h in [
        Help("help [COMMAND]", "list the commands, or explain one"),
        Help(
            "status",
            "uptime, RAM, flash, POP3, TLS, locks, scans",
            "model and firmware, uptime, RAM budget used/free, flash used/free/\n"
            "reclaimable, POP3 sessions open (and in TLS) against the bound; whether\n"
            "STLS and POP3S are offered, TLS handshakes done and failed; logins ok and\n"
            "failed, connections evicted before login; boxes locked after failed\n"
            "logins with the time left (`box unlock NAME` lifts a lock); scans done\n"
            "and failed; the lab scan feeder's counts when it runs",
        ),
        Help("profile list", "the nine factory profiles; * the running one"),
        Help(
            "profile show [KEY|MODEL]",
            "running profile (pending marked), KEY, MODEL",
            "Without an argument: every key of the running profile; a value saved but\n"
            "waiting for a reboot is shown next to it as (pending: VALUE after reboot).\n"
            "With a KEY: as `profile get KEY`. With a MODEL: its factory values.",
        ),
        Help("profile get KEY", "running/saved value, what it accepts, when"),
        Help(
            "profile set KEY VALUE [...]",
            "change values; saved to NVRAM atomically",
            "profile set KEY VALUE [KEY VALUE ...]   (KEY=VALUE, as --set takes it, too)\n"
            "Values are checked against the schema; an error names the key and what\n"
            "is allowed, and nothing is saved. Several pairs are checked together and\n"
            "saved in one NVRAM write, e.g.\n"
            "  profile set pop3.max_sessions 2 pop3.max_sessions_per_client 2\n"
            "Live keys apply at once; the others are saved and apply after `reboot`\n"
            "(the running value stays in force until then; `profile diff` lists them).\n"
            "Lists are comma-separated (mono, gray); booleans are true/false.",
        ),
        Help("profile diff", "saved vs factory values; pending changes"),
        Help(
            "profile apply MODEL [factory]",
            "switch model, keep site settings; asks",
            "Takes MODEL's factory values for the model's own keys (hardware, limits)\n"
            "and keeps the site settings: identity.hostname, pop3 address and ports,\n"
            "the POP3 security policy (plaintext_auth, apop, timeouts, login failures)\n"
            "and the console idle timeout. With `factory` every key takes MODEL's\n"
            "factory value. Lists each change (old -> new) and asks `apply? [y/N]`;\n"
            "anything but y changes nothing. Most keys apply after `reboot`.",
        ),
        Help(
            "profile export",
            "the profile as TOML between marker lines",
            "The block is valid TOML as it stands; paste it back with `profile import`.\n"
            f"It ends with the line: {EXPORT_END}",
        ),
        Help(
            "profile import",
            "paste a profile; checked whole, then saved",
            f"Paste TOML (an export block, markers included) and end with the line\n"
            f"  {EXPORT_END}\n"
            "Ctrl-C abandons the import. An invalid profile changes nothing.",
        ),
        Help(
            "profile reset",
            "every key to factory values; asks",
            "Site settings too (pop3.plaintext_auth goes back to tls_only). Lists each\n"
            "change (old -> new) and asks `apply? [y/N]`; anything but y changes nothing.",
        ),
        Help("box list", "mailboxes with message counts and sizes"),
        Help("box show NAME", "one mailbox: limits and latest messages"),
        Help(
            "box add NAME [[no]legacy]",
            "create a mailbox (asks for its password)",
            "The password is asked twice and not echoed. `legacy` also keeps the\n"
            "plaintext-equivalent secret APOP and CRAM-MD5 need, `nolegacy` keeps only\n"
            "salted SCRAM keys; without either the box keeps one while pop3.apop is on.",
        ),
        Help("box del NAME [purge]", "delete a mailbox (purge: with its messages)"),
        Help(
            "box passwd NAME [[no]legacy]",
            "set a mailbox's password (asked twice)",
            "The password is asked twice and not echoed. `legacy` keeps a\n"
            "plaintext-equivalent secret from now on, so APOP and CRAM-MD5 work for\n"
            "the box (while pop3.apop is true); `nolegacy` drops it; without either\n"
            "it keeps one if it had one or pop3.apop is on. `box show NAME` says which.",
        ),
        Help(
            "box unlock NAME",
            "end a box's lock-out after failed logins",
            "A box that fails 10 logins within 10 minutes is locked for 15 minutes\n"
            "(whatever the password; `status` lists locked boxes and the time left).\n"
            "This ends the lock now and clears the box's failure count.",
        ),
        Help("session list", "the open POP3 sessions"),
        Help("session kill ID", "end one POP3 session now (deletes nothing)"),
        Help(
            "clients [ADDRESS]",
            "each POP3 client's report card",
            "What each client address did and how it grades against RFC 1939, 2449\n"
            "and 2595: CAPA, UIDL when leaving mail, QUIT or a drop, pipelining,\n"
            "back-off after [IN-USE]/[SYS/TEMP], LOGIN-DELAY, TLS, faults met. With\n"
            "ADDRESS: every item's reason, the boxes, the latest sessions. Saved\n"
            "beside the image; `dpfw report IMG --format md|junit` exports it.",
        ),
        Help(
            "trace on",
            "record the POP3 protocol trace",
            "Each session's commands and reply first lines, with the time and the\n"
            "direction (c->s, s->c); a multi-line body as <N octets>. Passwords,\n"
            "APOP digests and AUTH responses show as ***. The device keeps the last\n"
            "1000 records (`trace show`); `dpfw run --trace FILE` and the API's\n"
            "/api/v1/trace stream them whether or not the trace is on here.",
        ),
        Help("trace off", "stop recording the protocol trace"),
        Help("trace show [SESSION]", "the recorded trace (one session's)"),
        Help(
            "fault add ACTION [K=V ...]",
            "inject a POP3 or device fault (docs/faults.md)",
            "Actions: retr-break, stall-before-end, flip-byte, reply-error,\n"
            "drop-after-greeting, drop-after-reply, delay, bandwidth, vanish, tls-fail,\n"
            "unreadable, power-cut, flash-full, memory-full. Triggers: box=, client=,\n"
            "command=, nth_session=, nth_command=, after_s=, probability=, times=\n"
            "(absent: every match, until cleared). E.g.\n"
            "  fault add retr-break box=alice after_percent=50 times=1\n"
            "  fault add reply-error command=PASS code=IN-USE\n"
            "Every firing is logged (dpfw fault event=fault-fired ...) and counted.",
        ),
        Help("fault list", "the faults set and how often each fired"),
        Help("fault clear [ID]", "remove one fault, or all of them"),
        Help(
            "scan BOX [OPTION=VALUE ...]",
            "scan a test job into BOX (`help scan`)",
            "scan BOX [pages=N] [dpi=D] [mode=M] [format=F]\n"
            "dpi is one of the profile's scan.resolutions (300, 200x100, ...), mode\n"
            "one of mono, gray, color, format one of tiff, pdf, jpeg. Defaults:\n"
            "1 page, 300 dpi, mono, and the first offered format that carries the\n"
            "mode (tiff for mono, pdf for gray and color).",
        ),
        Help(
            "tls show [pem]",
            "the device certificate, its fingerprint",
            "Subject, issuer, names (SAN), validity, key, SHA-256 fingerprint and\n"
            "chain of the stored certificate, whether it is usable, and whether the\n"
            "running service offers TLS (STLS, POP3S) with it. `tls show pem` prints\n"
            "the certificate and chain as PEM (never the key), for a client's CA file.",
        ),
        Help(
            "tls import",
            "paste a certificate and key (PEM)",
            "Paste PEM blocks: the certificate first, its private key (unencrypted)\n"
            "and any chain certificates leaf-first, then end with the line\n"
            f"  {TLS_END}\n"
            "Key, validity, usage and chain are checked first; a refused import\n"
            "changes nothing. Saved in one NVRAM write; the running listeners keep\n"
            "their certificate: it applies after `reboot`. Ctrl-C abandons it.",
        ),
        Help(
            "tls selfsign [HOSTNAME]",
            "make a new self-signed certificate",
            "A new ECDSA P-256 key and self-signed certificate naming HOSTNAME\n"
            "(default: the profile's identity.hostname), valid 10 years. It replaces\n"
            "the stored one (key included) and applies after `reboot`.",
        ),
        Help("log [N]", f"the last N log lines (default 20, max {MAX_LOG_LINES})"),
        Help(
            "ifax status",
            "Internet Fax: server, mode, polls, last result",
        ),
        Help(
            "ifax poll",
            "poll the fax mail server now",
            "Logs in to ifax.server, fetches every fax not yet in the tray, prints\n"
            "TIFF-FX faxes into the tray (other attachments: an error report) and\n"
            "deletes them from the server once stored, unless ifax.leave_on_server.",
        ),
        Help(
            "ifax tray list|show N|clear",
            "the fax output tray",
            "`clear` removes every document in one record; their UIDLs are kept so\n"
            "a fax left on the server is not printed again.",
        ),
        Help("fsck", "check every record on the board image"),
        Help("compact", "reclaim flash held by deleted messages"),
        Help("passwd", "change the admin password"),
        Help("reboot", "restart; saved settings apply, sessions end"),
        Help("shutdown", "stop the device cleanly"),
        Help("logout", "end this console session (so does Ctrl-D)"),
    ]
}
ALIASES = {"exit": "logout"}
GROUPS = tuple(dict.fromkeys(key.split(" ", 1)[0] for key in HELP if " " in key))
COMMANDS = tuple(dict.fromkeys(key.split(" ", 1)[0] for key in HELP))  # first words, in order
SCAN_OPTIONS = tuple(f"{name}=" for name in SCAN_OPTION_NAMES)


def _any_case(word: str, candidates: Iterable[str]) -> list[str]:
    """The candidates `word` begins in any case, each spelled with `word`'s own letters then
    the candidate's rest in `word`'s case when it has one (`dp-45` and DP-4520 -> `dp-4520`,
    `STA` and status -> `STATUS`), so the editor's prefix match and common-prefix extension
    work as typed. For words the shell reads in any case only."""
    size = len(word)
    case = str.lower if word.islower() else str.upper if word.isupper() else str
    return [word + case(c[size:]) for c in candidates if c[:size].lower() == word.lower()]


def suggest(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """'; did you mean "PREFIXx"?' for the nearest choice (difflib ratio >= 0.6, case
    ignored), or ''."""
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f'; did you mean "{prefix}{by_lower[close[0]]}"?' if close else ""


def subcommands(group: str) -> list[str]:
    """'box' -> ['list', 'show', 'add', ...], in HELP's order."""
    return [key.split(" ", 1)[1] for key in HELP if key.startswith(group + " ")]


def _arguments(name: str) -> list[str]:
    """The argument words of a command's usage: 'box del' -> ['NAME', '[purge]']."""
    return HELP[name].usage.split()[len(name.split()) :]


key_value_pairs = parse_pairs  # the console reads KEY VALUE as the CLI does


class ConsoleShell:
    """One admin console: login, lock-out, idle logout and every command, over bytes."""

    def __init__(
        self,
        ctx: OpsContext,
        clock: Callable[[], float] = time.monotonic,
        lockout: AdminLockout | None = None,
    ) -> None:
        self.ctx = ctx
        self.clock = clock
        self.editor = LineEditor(MAX_LINE)
        self.editor.completer = self.complete
        self.mode = Mode.LOGIN
        self.lockout = lockout if lockout is not None else AdminLockout()
        self._last_input = 0.0
        self._out: list[bytes] = []
        self._questions: _Questions | None = None
        self._import: list[str] = []
        self._import_error = ""
        self._paste: _Paste | None = None
        self._action: Action | None = None
        self._held = bytearray()

    # The admin lock-out's counts (shared with the HTTP API on a running device).
    @property
    def failures(self) -> int:
        return self.lockout.failures

    @property
    def lockouts(self) -> int:
        return self.lockout.lockouts

    @property
    def locked_until(self) -> float:
        return self.lockout.locked_until

    # ----- what the transport calls -----

    @property
    def logged_in(self) -> bool:
        return self.mode is not Mode.LOGIN

    def connect(self) -> bytes:
        """A (new) peer: start a fresh session at the login prompt. Lock-outs stay."""
        self._reset_session()
        self._say(f"{system.prompt_name(self.ctx)} admin console")
        self._login_prompt()
        return self._flush()

    def disconnect(self) -> None:
        """The peer went away: log out without a word (nobody would read it)."""
        if self.logged_in:
            log.info("console: peer disconnected; logged out")
        self._reset_session()

    def feed(self, data: bytes) -> bytes:
        """Take received bytes; return the bytes to send back."""
        self._expire()
        if self.mode is Mode.BUSY:
            self._hold(data)
            return self._flush()
        if self.logged_in:
            self._last_input = self.clock()
        for index, byte in enumerate(data):
            self.editor.editing = self.mode is Mode.COMMAND  # never at a password or a paste
            echo, event = self.editor.push(byte)
            if self.mode is Mode.LOGIN and event == Event(Kind.LINE, ""):
                echo = b"\r"  # an empty Enter redraws the login prompt in place (see _on_event)
            if echo:
                self._out.append(echo)
            if event is not None:
                self._on_event(event)
            if self._busy():
                self._hold(data[index + 1 :])
                break
        return self._flush()

    def next_deadline(self) -> float | None:
        """When `tick()` must be called (idle logout), in the clock's time; None: no timer."""
        if not self.logged_in or self.mode is Mode.BUSY:
            return None
        return self._last_input + system.idle_timeout_s(self.ctx)

    def tick(self) -> bytes:
        """Let timers fire; returns what to send (the idle-logout notice)."""
        self._expire()
        return self._flush()

    def take_action(self) -> Action | None:
        """The action a command started, once; the shell stays busy until `finish_action`."""
        action, self._action = self._action, None
        return action

    def finish_action(self, text: str) -> bytes:
        """The outcome of the last action (one line or more); then the prompt, then held input."""
        if self.mode is not Mode.BUSY:
            return b""
        if text:
            self._say(text)
        self.mode = Mode.COMMAND
        self._last_input = self.clock()
        self._prompt()
        held, self._held = bytes(self._held), bytearray()
        return self._flush() + (self.feed(held) if held else b"")

    def power_done(self, what: str) -> bytes:
        """After a reboot or shutdown was requested: the session ends, as on the real panel."""
        self._reset_session()
        self._say(f"session closed by {what}")
        self._login_prompt()
        return self._flush()

    @property
    def buffered(self) -> int:
        """Bytes and characters held in memory for the peer (for the noise tests' bound)."""
        return self.editor.pending + len(self._held) + sum(map(len, self._import))

    def _busy(self) -> bool:
        return self.mode is Mode.BUSY

    # ----- sessions -----

    def _reset_session(self) -> None:
        self.mode = Mode.LOGIN
        self.editor.reset()
        self.editor.clear_history()
        self.editor.echo = False
        self._questions = None
        self._import = []
        self._import_error = ""
        self._paste = None
        self._action = None
        self._held.clear()

    def _expire(self) -> None:
        deadline = self.next_deadline()
        if deadline is not None and self.clock() >= deadline:
            log.info("console: admin idle for %.0f s; logged out", system.idle_timeout_s(self.ctx))
            self._reset_session()
            self._say("")
            self._say("idle timeout: logged out")
            self._login_prompt()

    def _login_prompt(self) -> None:
        self.editor.echo = False
        self._write("Password: ")

    def _login(self, password: str) -> None:
        now = self.clock()
        if now < self.locked_until:
            wait = int(self.lockout.seconds_left(now) + 0.999)
            self._say(f"console locked after failed logins; try again in {wait} s")
            self._login_prompt()
            return
        try:
            good = system.check_admin_password(self.ctx, password)
        except DeviceError as exc:
            self._error(exc)
            self._login_prompt()
            return
        if not good:
            span = self.lockout.failure(now)
            log.warning("console: failed admin login (%d in a row)", self.failures)
            self._say("Login incorrect")
            if span:
                self._say(f"{self.failures} failed logins: console locked for {span:.0f} s")
            self._login_prompt()
            return
        log.info("console: admin logged in")
        self.lockout.success()
        self.mode = Mode.COMMAND
        self.editor.echo = True
        self._last_input = now
        self._say(f"logged in to {system.prompt_name(self.ctx)}; `help` lists the commands")
        self._prompt()

    def _logout(self, why: str = "logged out") -> None:
        log.info("console: admin %s", why)
        self._reset_session()
        self._say(why)
        self._login_prompt()

    # ----- events from the line editor -----

    def _on_event(self, event: Event) -> None:
        if self.mode is Mode.LOGIN:
            # The first thing a serial user does is press Enter to wake the line. That empty
            # answer used to be echoed as a new line and asked again under the connect
            # banner's prompt, so the screen showed `Password:` twice; `feed` now echoes a
            # bare CR for it and the prompt is redrawn over itself (a lost banner still gets
            # a prompt this way).
            if event.kind is Kind.LINE and event.text:
                self._login(event.text)
            else:
                self._login_prompt()
        elif event.kind is Kind.EOF:
            self._logout()
        elif self.mode is Mode.COMMAND:
            if event.kind is Kind.LINE:
                self._command(event.text)
            elif event.kind is Kind.TOO_LONG:
                self._say(f"error: line longer than {MAX_LINE} characters refused")
            if self.mode is Mode.COMMAND:
                self._prompt()
        elif self.mode is Mode.ASK:
            self._answer(event)
        elif self.mode is Mode.IMPORT:
            self._import_line(event)

    def _command(self, line: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self._say(f"error: cannot read that line: {exc}")
            return
        if not words:
            return
        try:
            self._dispatch(words)
        except DeviceError as exc:
            self._error(exc)
        except Exception:
            log.exception("console: internal error running %r", words[0])
            self._say(f"error: internal error in `{words[0]}` (logged); logging out")
            self._logout()

    def _answer(self, event: Event) -> None:
        questions = self._questions
        assert questions is not None
        if event.kind is not Kind.LINE:
            self._say("cancelled; nothing changed")
            self._back_to_prompt()
            return
        questions.answers.append(event.text)
        if len(questions.answers) < len(questions.prompts):
            self._ask_next()
            return
        self._back_to_prompt(prompt=False)
        try:
            self._say(questions.then(questions.answers))
        except DeviceError as exc:
            self._error(exc)
        except Exception:
            log.exception("console: internal error after questions")
            self._say("error: internal error (logged); logging out")
            self._logout()
            return
        self._prompt()

    def _import_line(self, event: Event) -> None:
        paste = self._paste
        assert paste is not None
        if event.kind is Kind.CANCEL:
            self._say("import cancelled; nothing changed")
            self._back_to_prompt()
            return
        if event.kind is Kind.TOO_LONG:
            self._import_error = f"a line is longer than {MAX_LINE} characters"
            return
        if event.text.strip() != paste.end:
            if len(self._import) >= MAX_IMPORT_LINES:
                self._import_error = f"more than {MAX_IMPORT_LINES} lines"
                self._import = []
            elif not self._import_error:
                self._import.append(event.text)
            return
        text, error = "\n".join(self._import), self._import_error
        self._back_to_prompt(prompt=False)
        if error:
            self._say(f"error: {paste.what} refused: {error}; nothing changed")
        else:
            try:
                self._say(paste.then(text))
            except DeviceError as exc:
                self._error(exc, suffix="; nothing changed")
        self._prompt()

    # ----- commands -----

    def _dispatch(self, words: list[str]) -> None:
        name, args = words[0].lower(), words[1:]
        name = ALIASES.get(name, name)
        if name in GROUPS:
            if not args:
                raise DeviceError(f"{name}: which one? {self._group_usage(name)}")
            sub, args = args[0].lower(), args[1:]
            if sub not in subcommands(name):
                hint = suggest(sub, subcommands(name), f"{name} ")
                hint = hint or f"; {self._group_usage(name)}"
                raise DeviceError(f'unknown command "{name} {sub}"{hint}')
            name = f"{name} {sub}"
        if name not in HELP:
            hint = suggest(name, COMMANDS + tuple(ALIASES)) or "; `help` lists them"
            raise DeviceError(f'unknown command "{words[0]}"{hint}')
        handler: Callable[[list[str]], None] = getattr(self, "_cmd_" + name.replace(" ", "_"))
        handler(args)

    def _group_usage(self, group: str) -> str:
        return f"{group} {'|'.join(subcommands(group))}"

    # ----- Tab completion (from HELP, the profile schema and the board's boxes) -----

    def complete(self, line: str) -> tuple[int, list[str]]:
        """The editor's completer: where the last word of `line` starts, and the words that
        may stand there. Commands and sub-commands come from HELP; `KEY` from the profile
        schema, `MODEL` from the factory models, `NAME`/`BOX` from the board's boxes, and
        lower-case words in a usage's brackets (`[purge]`) as they are.

        Words the shell reads in any case (commands, models, `purge`, scan options) match
        what was typed in any case: `dp-45` offers `dp-4510`..., the typed letters kept and
        the rest taken from the candidate. Profile keys and box names match exactly, as they
        are read."""
        start = len(line) - len(line.split(" ")[-1])
        words = line[:start].split()
        if not words:
            return start, _any_case(line[start:], [*COMMANDS, *ALIASES])
        first = words[0].lower()
        if first in GROUPS:
            if len(words) == 1:
                return start, _any_case(line[start:], subcommands(first))
            name, args = f"{first} {words[1].lower()}", words[2:]
        else:
            name, args = first, words[1:]
        if name not in HELP:
            return start, []
        found = self._argument_candidates(name, args)
        exact = set(SCHEMA) | set(self._box_names())
        return start, [c for c in found if c in exact] + _any_case(
            line[start:], [c for c in found if c not in exact]
        )

    def _argument_candidates(self, name: str, before: list[str]) -> list[str]:
        if name == "help":
            return [*COMMANDS, *subcommands(before[0].lower())] if before else list(COMMANDS)
        if name == "profile set":
            return list(SCHEMA) if self._expecting_key(before) else []
        if name == "scan":
            return self._box_names() if not before else list(SCAN_OPTIONS)
        usage = _arguments(name)
        if len(before) >= len(usage):
            return []
        placeholder = usage[len(before)].strip("[].")
        if placeholder == "KEY":
            return list(SCHEMA)
        if placeholder == "MODEL":
            return list(MODELS)
        if placeholder in ("NAME", "BOX"):
            return self._box_names()
        if placeholder == "[no]legacy":
            return ["legacy", "nolegacy"]
        return [placeholder] if placeholder.isalpha() and placeholder.islower() else []

    @staticmethod
    def _expecting_key(before: list[str]) -> bool:
        """After these `profile set` words, is the next word a key (not a value)?
        Follows key_value_pairs: KEY VALUE, KEY=VALUE, KEY= VALUE, KEY =VALUE, KEY = VALUE."""
        state = "key"  # "key": a key comes next; "bare": after KEY; "value": a value comes next
        for word in before:
            if state == "key":
                _, eq, value = word.partition("=")
                state = "key" if eq and value else "value" if eq else "bare"
            elif state == "bare" and word == "=":
                state = "value"
            else:
                state = "key"  # the value itself, or "=VALUE"
        return state == "key"

    def _box_names(self) -> list[str]:
        try:
            return [info.name for info in self.ctx.board.boxes()]
        except (DeviceError, OSError, ValueError):
            return []

    def _cmd_help(self, args: list[str]) -> None:
        topic = " ".join(args).lower()
        if not topic:
            width = max(len(h.usage) for h in HELP.values())
            for h in HELP.values():
                self._say(f"  {h.usage:{width}}  {h.summary}")
            self._say("Keys: BS/DEL erase, Ctrl-U clears, Ctrl-C drops the line, Ctrl-D logs out,")
            self._say("      Up/Down recall lines, Left/Right/Ctrl-A/Ctrl-E move, Tab completes")
            self._say("      commands, profile keys, models and boxes.")
            return
        chosen = [(k, h) for k, h in HELP.items() if k == topic or k.startswith(topic + " ")]
        if not chosen:
            hint = suggest(topic, HELP) or "; `help` lists them"
            raise DeviceError(f'help: no command "{topic}"{hint}')
        for key, h in chosen:
            self._say(f"{h.usage}")
            # The list's pointer to a page ("(`help scan`)") is not repeated on that page.
            self._say(f"  {h.summary.replace(f' (`help {key}`)', '')}")
            if h.detail and len(chosen) == 1:
                for line in h.detail.splitlines():
                    self._say(f"  {line}")

    def _cmd_status(self, args: list[str]) -> None:
        self._arity("status", args, 0)
        self._say(render.status(status.status(self.ctx)))

    def _cmd_profile_list(self, args: list[str]) -> None:
        self._arity("profile list", args, 0)
        self._say(render.models(profile.models(self.ctx)))

    def _cmd_profile_show(self, args: list[str]) -> None:
        self._arity("profile show", args, 0, 1)
        if args and args[0] in SCHEMA:
            self._say(render.profile_key(profile.profile_get(self.ctx, args[0])))
        else:
            self._say(render.profile_view(profile.profile_view(self.ctx, *args)))

    def _cmd_profile_get(self, args: list[str]) -> None:
        self._arity("profile get", args, 1)
        self._say(render.profile_key(profile.profile_get(self.ctx, args[0])))

    def _cmd_profile_set(self, args: list[str]) -> None:
        usage = "profile set KEY VALUE [KEY VALUE ...] or KEY=VALUE [KEY=VALUE ...]"
        if not args:
            raise DeviceError(f"usage: {usage}")
        plan = profile.plan_set(self.ctx, key_value_pairs(args, usage))
        self._say(render.update(profile.commit(self.ctx, plan)))

    def _cmd_profile_diff(self, args: list[str]) -> None:
        self._arity("profile diff", args, 0)
        self._say(render.profile_diff(profile.profile_diff(self.ctx)))

    def _cmd_profile_apply(self, args: list[str]) -> None:
        self._arity("profile apply", args, 1, 2)
        if len(args) == 2 and args[1].lower().lstrip("-") != "factory":
            raise DeviceError(f"usage: {HELP['profile apply'].usage}")
        self._confirm(profile.plan_apply(self.ctx, args[0], keep_site=len(args) == 1))

    def _cmd_profile_reset(self, args: list[str]) -> None:
        self._arity("profile reset", args, 0)
        self._confirm(profile.plan_reset(self.ctx))

    def _confirm(self, plan: ProfilePlan) -> None:
        """Show a planned profile change and make it only on `y`: a sub-state of ASK."""
        self._say(render.plan(plan))
        if not plan.changes:
            return

        def answer(words: list[str]) -> str:
            if words[0].strip().lower() in ("y", "yes"):
                return render.update(profile.commit(self.ctx, plan))
            return "not applied; nothing changed"

        self._ask([("apply? [y/N] ", False)], answer)

    def _cmd_profile_export(self, args: list[str]) -> None:
        self._arity("profile export", args, 0)
        self._say(profile.profile_export(self.ctx))

    def _cmd_profile_import(self, args: list[str]) -> None:
        self._arity("profile import", args, 0)
        self._say(f"paste the profile; end with the line {EXPORT_END} (Ctrl-C cancels)")

        def save(text: str) -> str:
            return render.update(profile.commit(self.ctx, profile.plan_import(self.ctx, text)))

        self._start_paste(_Paste("profile import", EXPORT_END, save))

    def _cmd_box_list(self, args: list[str]) -> None:
        self._arity("box list", args, 0)
        self._say(render.box_list(boxes.box_list(self.ctx)))

    def _cmd_box_show(self, args: list[str]) -> None:
        self._arity("box show", args, 1)
        self._say(render.box_detail(boxes.box_show(self.ctx, args[0])))

    def _cmd_box_add(self, args: list[str]) -> None:
        self._arity("box add", args, 1, 2)
        name, legacy = args[0], self._legacy_option("box add", args)
        boxes.check_new_box(self.ctx, name)
        self._ask(
            [(f"Password for box {name}: ", True), ("Again: ", True)],
            lambda a: render.box_change(boxes.box_add(self.ctx, name, a[0], a[1], legacy=legacy)),
        )

    def _cmd_box_del(self, args: list[str]) -> None:
        self._arity("box del", args, 1, 2)
        if len(args) == 2 and args[1].lower() != "purge":
            raise DeviceError(f"usage: {HELP['box del'].usage}")
        self._say(render.box_change(boxes.box_del(self.ctx, args[0], purge=len(args) == 2)))

    def _cmd_box_passwd(self, args: list[str]) -> None:
        self._arity("box passwd", args, 1, 2)
        name, legacy = args[0], self._legacy_option("box passwd", args)
        boxes.find_box(self.ctx, name, "box passwd")  # before anyone types a password
        self._ask(
            [(f"New password for box {name}: ", True), ("Again: ", True)],
            lambda a: render.box_change(
                boxes.box_passwd(self.ctx, name, a[0], a[1], legacy=legacy)
            ),
        )

    def _legacy_option(self, name: str, args: list[str]) -> bool | None:
        """`legacy` True, `nolegacy` False, neither None (the default pop3.apop decides)."""
        if len(args) < 2:
            return None
        option = args[1].lower().lstrip("-")
        if option not in ("legacy", "nolegacy", "no-legacy"):
            raise DeviceError(f"usage: {HELP[name].usage}")
        return option == "legacy"

    def _cmd_box_unlock(self, args: list[str]) -> None:
        self._arity("box unlock", args, 1)
        self._say(render.unlock(boxes.box_unlock(self.ctx, args[0])))

    def _cmd_session_list(self, args: list[str]) -> None:
        self._arity("session list", args, 0)
        self._say(render.sessions(sessions.session_list(self.ctx)))

    def _cmd_session_kill(self, args: list[str]) -> None:
        self._arity("session kill", args, 1)
        ident = sessions.parse_session_id(args[0])
        self._say(render.session_killed(sessions.session_kill(self.ctx, ident)))

    def _cmd_clients(self, args: list[str]) -> None:
        self._arity("clients", args, 0, 1)
        address = args[0] if args else None
        result = ops_clients.client_list(self.ctx, address)
        self._say(render.clients(result, detail=address is not None))

    def _cmd_trace_on(self, args: list[str]) -> None:
        self._arity("trace on", args, 0)
        self._say(render.trace_state(ops_trace.trace_switch(self.ctx, True)))

    def _cmd_trace_off(self, args: list[str]) -> None:
        self._arity("trace off", args, 0)
        self._say(render.trace_state(ops_trace.trace_switch(self.ctx, False)))

    def _cmd_trace_show(self, args: list[str]) -> None:
        self._arity("trace show", args, 0, 1)
        session = ops_trace.parse_trace_session(args[0]) if args else None
        self._say(render.trace_show(ops_trace.trace_show(self.ctx, session)))

    def _cmd_fault_add(self, args: list[str]) -> None:
        if not args:
            raise DeviceError(f"usage: {HELP['fault add'].usage}")
        self._say(render.fault_added(ops_faults.add_fault_words(self.ctx, args[0], args[1:])))

    def _cmd_fault_list(self, args: list[str]) -> None:
        self._arity("fault list", args, 0)
        self._say(render.fault_list(ops_faults.list_faults(self.ctx)))

    def _cmd_fault_clear(self, args: list[str]) -> None:
        self._arity("fault clear", args, 0, 1)
        fault_id = ops_faults.parse_fault_id(args[0]) if args else None
        self._say(render.faults_cleared(ops_faults.clear_faults(self.ctx, fault_id)))

    def _cmd_tls_show(self, args: list[str]) -> None:
        self._arity("tls show", args, 0, 1)
        if args and args[0] != "pem":
            raise DeviceError(f"usage: {HELP['tls show'].usage}")
        if args:
            self._say(render.tls_pem(ops_tls.tls_pem(self.ctx)))
        else:
            self._say(render.tls_view(ops_tls.tls_show(self.ctx)))

    def _cmd_tls_import(self, args: list[str]) -> None:
        self._arity("tls import", args, 0)
        self._say("paste the certificate, its key and any chain certificates (PEM);")
        self._say(f"end with the line {TLS_END} (Ctrl-C cancels)")

        def save(text: str) -> str:
            saved = ops_tls.tls_import(self.ctx, *ops_tls.split_pem(text))
            return render.tls_saved(saved, live=self.ctx.live)

        self._start_paste(_Paste("tls import", TLS_END, save))

    def _cmd_tls_selfsign(self, args: list[str]) -> None:
        self._arity("tls selfsign", args, 0, 1)
        saved = ops_tls.tls_selfsign(self.ctx, args[0] if args else None)
        self._say(render.tls_saved(saved, live=self.ctx.live))

    def _cmd_scan(self, args: list[str]) -> None:
        if not args:
            raise DeviceError(f"usage: {HELP['scan'].usage}")
        usage = "scan BOX [pages=N] [dpi=D] [mode=M] [format=F]"
        options = {}
        for name, value in key_value_pairs(args[1:], usage):
            if name.lower() not in SCAN_OPTION_NAMES:
                hint = suggest(name.lower(), SCAN_OPTION_NAMES) or f"; usage: {usage}"
                raise DeviceError(f'scan: unknown option "{name}"{hint}')
            options[name.lower()] = value
        request = prepare_scan(self.ctx, args[0], options)
        self._say(f"scanning {plural(request.pages, 'page')} into box {request.box} ...")
        self._start(ScanAction(request))

    def _cmd_log(self, args: list[str]) -> None:
        self._arity("log", args, 0, 1)
        count = 20
        if args:
            if not args[0].isdigit() or not 1 <= int(args[0]) <= MAX_LOG_LINES:
                raise DeviceError(f"log: N must be a number from 1 to {MAX_LOG_LINES}")
            count = int(args[0])
        self._say(render.log(system.log_tail(self.ctx, count)))

    def _cmd_ifax_status(self, args: list[str]) -> None:
        self._arity("ifax status", args, 0)
        self._say(render.ifax_status(ifax.status(self.ctx)))

    def _cmd_ifax_poll(self, args: list[str]) -> None:
        self._arity("ifax poll", args, 0)
        self._start(AsyncAction("ifax poll"))

    def _cmd_ifax_tray(self, args: list[str]) -> None:
        usage = f"usage: {HELP['ifax tray'].usage}"
        what = args[0].lower() if args else ""
        if what in ("list", "clear") and len(args) == 1:
            self._start(AsyncAction(f"ifax tray {what}"))
        elif what == "show" and len(args) == 2:
            if not args[1].isdigit() or not 1 <= int(args[1]) <= 1_000_000:
                raise DeviceError(f"ifax tray show: N must be a document number, not {args[1]!r}")
            self._start(AsyncAction("ifax tray show", (int(args[1]),)))
        else:
            raise DeviceError(usage)

    def _cmd_fsck(self, args: list[str]) -> None:
        self._arity("fsck", args, 0)
        self._start(StoreAction("fsck"))

    def _cmd_compact(self, args: list[str]) -> None:
        self._arity("compact", args, 0)
        self._start(StoreAction("compact"))

    def _cmd_passwd(self, args: list[str]) -> None:
        self._arity("passwd", args, 0)

        def change(a: list[str]) -> str:
            system.set_admin_password(self.ctx, a[0], a[1], a[2])
            return "admin password changed (saved in NVRAM)"

        self._ask(
            [("Current password: ", True), ("New password: ", True), ("Again: ", True)], change
        )

    def _cmd_reboot(self, args: list[str]) -> None:
        self._arity("reboot", args, 0)
        self._say("rebooting ...")
        self._start(PowerAction("reboot"))

    def _cmd_shutdown(self, args: list[str]) -> None:
        self._arity("shutdown", args, 0)
        self._say("shutting down ...")
        self._start(PowerAction("shutdown"))

    def _cmd_logout(self, args: list[str]) -> None:
        self._logout()

    # ----- helpers -----

    def _arity(self, name: str, args: list[str], least: int, most: int | None = None) -> None:
        most = least if most is None else most
        if not least <= len(args) <= most:
            raise DeviceError(f"usage: {HELP[name].usage}")

    def _start_paste(self, paste: _Paste) -> None:
        self._paste = paste
        self._import = []
        self._import_error = ""
        self.mode = Mode.IMPORT

    def _ask(self, prompts: list[tuple[str, bool]], then: Callable[[list[str]], str]) -> None:
        self._questions = _Questions(prompts, then)
        self.mode = Mode.ASK
        self._ask_next()

    def _ask_next(self) -> None:
        assert self._questions is not None
        question, secret = self._questions.prompts[len(self._questions.answers)]
        self.editor.echo = not secret
        self._write(question)

    def _back_to_prompt(self, prompt: bool = True) -> None:
        self._questions = None
        self._import = []
        self._import_error = ""
        self._paste = None
        self.editor.echo = True
        self.mode = Mode.COMMAND
        if prompt:
            self._prompt()

    def _start(self, action: Action) -> None:
        self._action = action
        self.mode = Mode.BUSY

    def _hold(self, data: bytes) -> None:
        room = MAX_HELD - len(self._held)
        self._held += data[: max(0, room)]

    def _prompt(self) -> None:
        self.editor.prompt = f"{system.prompt_name(self.ctx)}> "
        self._write(self.editor.prompt)

    def _error(self, exc: DeviceError, suffix: str = "") -> None:
        message = " ".join(str(exc).split())
        if suffix and not message.endswith("nothing changed"):
            message += suffix
        self._say(f"error: {message}")

    def _say(self, text: str) -> None:
        """Lines of output, each ended with CRLF as a terminal expects."""
        for line in text.split("\n"):
            self._write(line + "\r\n")

    def _write(self, text: str) -> None:
        self._out.append(text.encode("ascii", "replace"))

    def _flush(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out
