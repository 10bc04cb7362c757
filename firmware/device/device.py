"""One running device: boot from a board image, run its services in one nursery, shut down.

The device owns what lives in RAM between boots (the profile in force, the RAM budget, the
POP3 service, the scan counter, recent log lines). Everything that must survive a power cut
lives in the board image, which the device opens at boot and closes at shutdown or reboot.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import overload

import trio

from firmware.config.budget import RamBudget
from firmware.config.profile import SCHEMA, Profile, Value, masked, running_after, validate
from firmware.device.boards import limits_of, open_board, save_profile, saved_profile
from firmware.device.demo import boot_notice
from firmware.device.report_file import ReportWriter, report_path
from firmware.errors import DeviceError, MemoryFullError, NotRunningError, StorageFullError
from firmware.faults.plan import DELIVER, SCAN, Fault, FaultPlan, Where
from firmware.faults.spec import FaultSpec
from firmware.ifax.poller import IfaxPoller
from firmware.pop3.auth import boxes_without_legacy_secret, legacy_warning
from firmware.pop3.report import ClientBook
from firmware.pop3.server import Pop3Service
from firmware.pop3.trace import Tracer
from firmware.scanner.feeder import ScanFeeder
from firmware.scanner.job import JobNumbers, ScanRequest, ScanResult, run_scan_async
from firmware.security.abuse import AdminLockout
from firmware.security.tls import (
    SETTING_CERT,
    SETTING_CHAIN,
    TlsError,
    certificate_host_names,
    context_from_settings,
    hostname_warning,
    names_host,
)
from firmware.store.board import Board
from firmware.store.worker import StoreWorker, favour_the_event_loop
from firmware.text import file_problem, host_port, os_reason, plural

log = logging.getLogger("dpfw.device")

MIB = 1024 * 1024
SHUTDOWN_GRACE_S = 5.0
SCAN_RAM_HINT = 4 * MIB  # what a refused scan says it needed (memory-full fault)

_storing_scan: contextvars.ContextVar[bool] = contextvars.ContextVar("storing_scan", default=False)
"""True inside `Device.scan` (trio copies it to the store worker's thread): the delivery
being stored is a scan's (for `power-cut at=mid-scan-store`)."""


@dataclass
class RunOptions:
    """How `dpfw run` was asked to run this device (not stored in the image)."""

    image: Path
    overrides: Mapping[str, str] = field(default_factory=dict)
    pop3: tuple[str, int] | None = None  # None: address and port from the profile
    pop3s: tuple[str, int] | None = None  # None: no implicit-TLS listener
    scan_feed_per_min: float = 0.0
    cert_out: Path | None = None  # written at each boot: the certificate TLS serves with
    watch_signals: bool = True  # False: the embedding program (a fleet) handles SIGTERM/SIGINT


_RUNNING: contextvars.ContextVar[Device | None] = contextvars.ContextVar(
    "dpfw_device", default=None
)
"""The device whose task (or store-worker thread) is running: trio copies it into every task
a device starts, so a fleet of devices in one process keeps each device's log lines apart."""


# Argument types a log line may keep unformatted: a value of these cannot change between the
# call and the read, so the line reads the same later (anything else is formatted at once).
_FROZEN_ARGS = (str, int, float, bytes, type(None))


class LogLines(Sequence[str]):
    """The last `size` lines a device logged, formatted only when read (oldest first).

    Holds each `logging.LogRecord` whose message and arguments cannot change (str, int, float,
    bytes, None) as it came, and formats it with `format` (the handler's) when read: a busy
    device logs a line per login and the console reads a few of them now and then, so the
    time formatting and %-interpolation are paid on reading, not on the session's path. Any
    other record (exception or stack info, other argument types) is formatted at once.
    `append` also takes a ready line (str), as firmware.http adds its own. Thread-safe for
    appends (the store worker's threads log too): a read takes a snapshot first.
    """

    def __init__(self, size: int, format: Callable[[logging.LogRecord], str]) -> None:
        self._items: collections.deque[str | logging.LogRecord] = collections.deque(maxlen=size)
        self._format = format

    @property
    def maxlen(self) -> int | None:
        """How many lines are kept."""
        return self._items.maxlen

    def append(self, line: str | logging.LogRecord) -> None:
        """Keep `line` (a text line, or a record formatted when read); the oldest drops out."""
        self._items.append(line)

    def clear(self) -> None:
        """Forget every line."""
        self._items.clear()

    def _text(self, item: str | logging.LogRecord) -> str:
        return self._format(item) if isinstance(item, logging.LogRecord) else item

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter([self._text(item) for item in list(self._items)])

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        """Line(s) by position; a slice formats only the lines it takes (`lines[-20:]`)."""
        items = list(self._items)
        if isinstance(index, slice):
            return [self._text(item) for item in items[index]]
        return self._text(items[index])


class LogRing(logging.Handler):
    """Keeps the last lines the device logged, for the console's `log` command (`lines`)."""

    def __init__(self, size: int = 500) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines = LogLines(size, self.format)

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if (
            record.exc_info is None
            and record.stack_info is None
            and isinstance(record.msg, str)
            and (
                not args
                or (isinstance(args, tuple) and all(isinstance(a, _FROZEN_ARGS) for a in args))
            )
        ):
            self.lines.append(record)  # formatted when read (LogLines)
        else:
            self.lines.append(self.format(record))


def running_device() -> Device | None:
    """The device whose task or store-worker thread is running now (None outside any)."""
    return _RUNNING.get()


class _OwnLines(logging.Filter):
    """Lets a device's LogRing keep only lines logged by that device's tasks (or by no
    device's: the process itself), when several devices share a process (firmware.fleet)."""

    def __init__(self, device: Device) -> None:
        super().__init__()
        self.device = device

    def filter(self, record: logging.LogRecord) -> bool:
        running = _RUNNING.get()
        return running is None or running is self.device


def apply_overrides(stored: Profile, overrides: Mapping[str, str]) -> Profile:
    """The stored profile with this run's `--set KEY=VALUE` values on top, validated whole."""
    return stored.with_values(overrides.items(), "--set")


Service = Callable[["Device"], Awaitable[None]]
"""A task that lives as long as the device process, across reboots (e.g. the admin console)."""


@contextlib.contextmanager
def _listen_errors(service: str, host: str, port: int) -> Iterator[None]:
    """A listener that cannot start (EADDRINUSE, EADDRNOTAVAIL, an unknown host name, EACCES
    for a port below 1024) as one `DeviceError` naming the service, the address and why."""
    try:
        yield
    except OSError as exc:
        why = os_reason(exc)
        if isinstance(exc, socket.gaierror):
            why = f"cannot resolve {host!r}: {why}"
        raise DeviceError(
            f"cannot listen for {service} on {host_port(host, port)}: {why}"
        ) from None


_WILDCARDS = ("", "0.0.0.0", "::")


def refuse_one_address_for_both(
    pop3: tuple[str, int], given: tuple[str, int] | None, pop3s: tuple[str, int] | None
) -> None:
    """DeviceError naming both options when POP3S would listen where POP3 does (same port,
    same or wildcard host; port 0 means any free port, so never a clash). Before any listener
    starts, so the line does not blame whichever service happened to bind second."""
    if pop3s is None or pop3[1] == 0 or pop3[1] != pop3s[1]:
        return
    if pop3[0] != pop3s[0] and pop3[0] not in _WILDCARDS and pop3s[0] not in _WILDCARDS:
        return
    first = (
        f"--pop3 {host_port(*pop3)}"
        if given is not None
        else f"POP3 ({host_port(*pop3)}, the profile's pop3.address and pop3.port)"
    )
    raise DeviceError(
        f"{first} and --pop3s {host_port(*pop3s)} are the same address; "
        "give each its own port (e.g. --pop3 127.0.0.1:1110 --pop3s 127.0.0.1:1995)"
    )


class Device:
    """A DP-series copier simulated in one process.

    `services` are started once and run until the device stops; the composition root
    (firmware.cli.run) passes the console this way, so this module imports no front-end.
    """

    def __init__(self, options: RunOptions, services: Sequence[Service] = ()) -> None:
        self.options = options
        self.services = tuple(services)
        self.overrides: dict[str, str] = dict(options.overrides)
        self.started_at = time.monotonic()
        self.scans_done = 0
        self.scans_failed = 0
        self.job_numbers = JobNumbers()
        self.feeder: ScanFeeder | None = None
        self.boots = 0
        self._log_ring = LogRing()
        self._log_ring.addFilter(_OwnLines(self))
        self.log_lines = self._log_ring.lines
        self._stop: trio.Event = trio.Event()
        self._booted: trio.Event = trio.Event()
        self._reboot = False
        self._board: Board | None = None
        self._profile: Profile | None = None
        self.budget = RamBudget(0)
        self.pop3: Pop3Service | None = None
        self.ifax: IfaxPoller | None = None  # the Internet Fax poller while booted
        self.trace = Tracer()
        """The POP3 protocol trace, one for every boot (firmware/pop3/trace.py)."""
        self.faults = FaultPlan()
        """The faults set on this device (firmware/faults, docs/faults.md); they live in RAM
        for the whole process, across reboots and power cuts."""
        self.power_cuts = 0
        self._cut = False
        self._stopping = False  # a shutdown or reboot is under way: no new scan jobs
        self._scans: set[trio.CancelScope] = set()  # the scan jobs in flight
        self._scans_gone = trio.Event()  # set when the last job in flight has ended
        self._outer: trio.Nursery | None = None
        self.clients = ClientBook()
        """The client report card, kept across reboots; saved beside the image
        (firmware/device/report_file.py, docs/report-card.md)."""
        self.faults.subscribe(self.clients.on_fault)  # a client's card shows the faults it met
        self.admin_lockout = AdminLockout()  # shared by the console and the HTTP API
        self.store_worker = StoreWorker()
        """The one way the running device reaches its Board for anything that writes or takes
        long (POP3 logins and commits, scans, console compact/fsck): `await
        device.store_worker.run(fn, *args)`; see firmware/store/worker.py."""
        self.pop3_addresses: list[tuple[str, int]] = []
        self.pop3s_addresses: list[tuple[str, int]] = []
        self._cert_out_line = ""  # the banner line naming --cert-out, when written this boot
        self.tls_cert_at_boot: str | None = None  # the stored certificate this boot read (PEM)

    # ----- what the console and services read -----

    @property
    def board(self) -> Board:
        if self._board is None:
            raise NotRunningError("the device is not running (booting or shutting down)")
        return self._board

    @property
    def profile(self) -> Profile:
        """The running profile, which every service reads (greeting, scans, limits, prompt).

        It is the profile the device booted with (NVRAM plus this run's `--set` overrides)
        with the live keys changed since; a change to a reboot key waits in NVRAM.
        """
        if self._profile is None:
            raise NotRunningError("the device is not running (booting or shutting down)")
        return self._profile

    @property
    def stored_profile(self) -> Profile:
        """The profile in NVRAM, without this run's overrides."""
        return saved_profile(self.board)

    @property
    def next_profile(self) -> Profile:
        """What the next boot will run: NVRAM with this run's overrides on top."""
        return apply_overrides(saved_profile(self.board), self.overrides)

    def pending(self) -> list[tuple[str, Value, Value]]:
        """(key, running, after reboot) for every saved change that waits for a reboot."""
        return self.profile.diff(self.next_profile)

    def apply_profile(self, new: Profile) -> list[str]:
        """Save `new` in NVRAM; put its live keys in force; return the changed reboot keys.

        `new` is compared with `next_profile`, what the admin sees as saved. Keys the caller
        did not change keep their stored value (a run-only `--set` override is not written to
        NVRAM); keys it did change drop their override. A reboot key keeps its running value.
        """
        running = self.profile
        before = self.next_profile
        changed = [key for key in SCHEMA if new[key] != before[key]]
        to_store = dict(saved_profile(self.board).data)
        for key in changed:
            to_store[key] = new[key]
        saved = validate(to_store, "profile")
        save_profile(self.board, saved)
        for key in changed:
            self.overrides.pop(key, None)
        self._profile = running_after(running, apply_overrides(saved, self.overrides))
        self.board.limits = limits_of(self._profile)
        if self.ifax is not None and any(key.startswith("ifax.") for key in changed):
            self.ifax.wake()
        return [key for key in changed if not SCHEMA[key].live]

    # ----- life cycle -----

    def request_shutdown(self) -> None:
        self._reboot = False
        self._stopping = True  # from now on, no new scan job
        self._stop.set()

    def request_reboot(self) -> None:
        self._reboot = True
        self._stopping = True
        self._stop.set()

    def power_cut(self, fault: Fault | None = None) -> None:
        """Cut the power now: the services stop without any shutdown step (no drain: open
        sessions end uncommitted, as a crash ends them), the image is closed as the process
        dying would close it, and the device boots again from it (same ports)."""
        what = f" (fault {fault.id})" if fault is not None else ""
        log.warning("power cut%s: stopping without shutdown", what)
        self._cut = True
        self._reboot = True
        self.store_worker.halt()  # nothing is committed after this instant
        self._stop.set()

    def add_fault(self, spec: FaultSpec) -> Fault:
        """Set a fault on this device (firmware/ops/faults.py); `power-cut at=now` fires at
        once."""
        fault = self.faults.add(spec)
        if spec.point == "device":
            later = spec.triggers.get("after_s")
            if later and self._outer is not None:
                self._outer.start_soon(self._cut_later, later)
            else:
                self._cut_now()
        return fault

    def _cut_now(self) -> None:
        for fired in self.faults.fire("device", Where()):
            self.power_cut(fired)

    async def _cut_later(self, seconds: float) -> None:
        await trio.sleep(seconds + 0.01)  # the plan's clock must see after_s passed
        self._cut_now()

    def _before_deliver(self, box: str) -> None:
        """The board's hook before each delivery: the flash-full and mid-scan-store power-cut
        faults (runs on the store worker's thread)."""
        plan = self.faults
        if not plan.active:
            return
        scan = _storing_scan.get()
        for fault in plan.fire("delivery", Where(box=box, command=SCAN if scan else DELIVER)):
            if fault.action == "power-cut":
                trio.from_thread.run_sync(self.power_cut, fault)
                raise DeviceError("power cut while the scan was being stored; nothing was stored")
            usage = self.board.usage()
            raise StorageFullError(
                f"storage full: the message does not fit: 0 bytes are free of {usage.total} "
                "(0 reclaimable); nothing was stored"
            )

    async def scan(self, request: ScanRequest) -> ScanResult:
        """Run one scan job into a box (console `scan`, the API and `dpfw scan` through the
        control socket, the lab feeder). The pages and the message are made by a scan engine,
        a child process for this job (firmware/scanner/job.py, `run_scan_async`); the budget,
        MEMORY FULL and storing stay here. A cancelled job kills and reaps its engine.

        A shutdown or reboot refuses new jobs and gives running ones the POP3 sessions' grace
        (SHUTDOWN_GRACE_S); a job still running then is stopped and stores nothing
        (DeviceError saying so)."""
        if self._stopping:
            raise DeviceError("scan refused: the device is shutting down")
        job_number = self.job_numbers.take()
        if self.faults.active and self.faults.fire("scan", Where(box=request.box, command=SCAN)):
            self.scans_failed += 1
            budget = self.budget
            raise MemoryFullError(
                f"MEMORY FULL: scan job {job_number} needs {SCAN_RAM_HINT} bytes, "
                f"{min(budget.free, SCAN_RAM_HINT - 1)} free of {budget.total}"
            )
        token = _storing_scan.set(True)
        board, boots = self.board, self.boots
        job = trio.CancelScope()
        self._scans.add(job)
        try:
            with job:
                result = await run_scan_async(
                    request,
                    board,
                    self.budget,
                    self.profile,
                    job_number=job_number,
                    worker=self.store_worker,
                )
            if job.cancelled_caught:
                raise DeviceError(
                    f"scan job {job_number:04d} stopped: the device shut down before the job "
                    f"was done ({SHUTDOWN_GRACE_S:.0f} s grace); nothing was stored"
                )
        except DeviceError as exc:
            self.scans_failed += 1
            if self._board is not board or self.boots != boots:
                # The board the job was for is gone (the store says "write failed: Bad file
                # descriptor"): say why.
                raise DeviceError(
                    f"scan job {job_number:04d} failed: the device restarted during the job "
                    "(power cut or reboot); nothing was stored"
                ) from exc
            raise
        finally:
            self._scans.discard(job)
            if not self._scans:
                self._scans_gone.set()
            _storing_scan.reset(token)
        self.scans_done += 1
        return result

    async def _finish_scans(self, grace: float) -> None:
        """Wait up to `grace` seconds for the scan jobs in flight, then stop the rest (each
        kills and reaps its engine and stores nothing) and wait until they have."""
        self._scans_gone = trio.Event()
        if self._scans:
            with trio.move_on_after(grace):
                await self._scans_gone.wait()
        for job in list(self._scans):
            job.cancel()
        if self._scans:  # cancelled jobs unwind at once (an engine killed, not drained)
            await self._scans_gone.wait()

    async def wait_booted(self) -> None:
        """Return once the device serves POP3 (after this boot; at once if it already does)."""
        await self._booted.wait()

    async def run(self) -> int:
        """Boot, serve until shutdown (reboot loops back to boot); 0 on a clean stop."""
        # Every package logs under "firmware.*" or "dpfw.*"; the ring sees both at INFO even
        # when the embedding program configured no logging.
        _RUNNING.set(self)  # this task's context: every task and thread it starts inherits it
        switch_interval = sys.getswitchinterval()
        favour_the_event_loop()  # store work runs on threads: hand the GIL back within 1 ms
        loggers = [logging.getLogger("dpfw"), logging.getLogger("firmware")]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.addHandler(self._log_ring)
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
        try:
            async with trio.open_nursery() as outer:
                self._outer = outer
                if self.options.watch_signals:
                    outer.start_soon(self._watch_signals)
                for service in self.services:
                    outer.start_soon(service, self)
                while True:
                    await self._boot_and_serve()
                    if not self._reboot:
                        break
                    log.info("power restored: booting" if self._cut else "rebooting")
                    self._stop = trio.Event()
                    self._reboot = self._cut = self._stopping = False
                    self.store_worker.resume()
                outer.cancel_scope.cancel()
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.removeHandler(self._log_ring)
                logger.setLevel(level)
            sys.setswitchinterval(switch_interval)
        return 0

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("signal %s: shutting down", signal.Signals(signum).name)
                self.request_shutdown()

    async def _boot_and_serve(self) -> None:
        board = open_board(self.options.image)
        try:
            self._board = board
            self._profile = apply_overrides(saved_profile(board), self.overrides)
            board.limits = limits_of(self._profile)
            self.boots += 1
            profile = self._profile
            self.budget = RamBudget(profile.int("memory.image_ram_mib") * MIB)
            context = self._tls_context(board)
            self.tls_cert_at_boot = board.settings().get(SETTING_CERT)
            self._cert_out_line = ""
            if self.options.cert_out is not None:
                self._export_certificate(board, self.options.cert_out, serving=context is not None)
            board.between_steps = self.store_worker.lock.pause
            board.before_deliver = self._before_deliver
            self.pop3 = Pop3Service(
                board,
                lambda: self.profile,
                self.budget,
                tls=context,
                worker=self.store_worker,
                tracer=self.trace,
                faults=self.faults,
                clients=self.clients,
            )
            self.pop3.power_cut = self.power_cut
            host, port = self.options.pop3 or (
                profile.str("pop3.address"),
                profile.int("pop3.port"),
            )
            refuse_one_address_for_both((host, port), self.options.pop3, self.options.pop3s)
            async with trio.open_nursery() as nursery:
                if self.options.pop3s is not None and context is not None:
                    s_host, s_port = self.options.pop3s
                    with _listen_errors("POP3S", s_host, s_port):
                        s_bound = await nursery.start(
                            partial(self.pop3.serve, s_host, s_port, implicit_tls=True)
                        )
                    self.pop3s_addresses = [(s_host, int(s_bound))]
                with _listen_errors("POP3", host, port):
                    bound = await nursery.start(self.pop3.serve, host, port)
                self.pop3_addresses = [(host, int(bound))]
                self._announce(host, int(bound), tls=context is not None)
                self._booted.set()
                self.ifax = IfaxPoller(
                    lambda: self.board, lambda: self.profile, lambda: self.budget, self.store_worker
                )
                nursery.start_soon(self.ifax.run)
                nursery.start_soon(ReportWriter(self.clients, report_path(self.options.image)).run)
                if self.options.scan_feed_per_min > 0:
                    self.feeder = ScanFeeder(self, self.options.scan_feed_per_min)
                    nursery.start_soon(self.feeder.run)
                await self._stop.wait()
                if not self._cut:  # request_shutdown/request_reboot set _stopping
                    log.info(
                        "stopping: no new POP3 sessions or scan jobs; %.0f s grace",
                        SHUTDOWN_GRACE_S,
                    )
                    async with trio.open_nursery() as stopping:
                        stopping.start_soon(self.pop3.drain, SHUTDOWN_GRACE_S)
                        stopping.start_soon(self._finish_scans, SHUTDOWN_GRACE_S)
                nursery.cancel_scope.cancel()  # a power cut: every session ends uncommitted
        finally:
            self._board = None
            self.pop3 = None
            self.ifax = None
            self._booted = trio.Event()
            self.pop3_addresses, self.pop3s_addresses = [], []  # nothing listens any more
            with trio.CancelScope(shield=True):  # after any operation still running:
                if self._cut:
                    await self.store_worker.finish(board.abandon)  # as a dead process would
                else:
                    await self.store_worker.run(board.close)
            if self._cut:
                self.power_cuts += 1
                log.warning("power cut: board image abandoned without shutdown")
            else:
                log.info("board image closed cleanly")

    def _tls_context(self, board: Board) -> ssl.SSLContext | None:
        """The device certificate as a server context; None (and a log line) if unusable."""
        try:
            context = context_from_settings(board.settings())
        except TlsError as exc:
            log.error("TLS disabled: the stored certificate cannot be used: %s", exc)
            return None
        if context is None:
            log.warning("TLS disabled: the image holds no certificate (dpfw tls selfsign IMG)")
        if self.options.pop3s is not None and context is None:
            log.error("--pop3s ignored: no usable TLS certificate on the image")
        return context

    def _export_certificate(self, board: Board, path: Path, *, serving: bool) -> None:
        """Write the certificate (and chain) this boot serves with to `path`, as PEM.

        For a lab client's CA file (`curl --cacert PATH`) while the image is locked by this
        device. Written at every boot (a certificate saved from the console applies after
        `reboot`), replaced atomically; removed when this boot serves no TLS, so the file never
        names a certificate the device is not using. A write that fails is logged, not fatal.
        """
        settings = board.settings()
        try:
            if not serving:
                path.unlink(missing_ok=True)
                return
            pem = settings[SETTING_CERT].rstrip("\n") + "\n" + (settings.get(SETTING_CHAIN) or "")
            partial_path = path.with_name(path.name + ".tmp")
            partial_path.write_text(pem)
            partial_path.replace(path)
        except OSError as exc:
            log.error("--cert-out %s", file_problem(path, exc, "write"))
            return
        self._cert_out_line = f"TLS certificate (PEM, for a client's CA file): {path}"

    def _announce(self, host: str, port: int, *, tls: bool) -> None:
        profile = self.profile
        lines = [
            f"{profile.model} firmware {profile.str('identity.firmware_version')} "
            f"booted from {self.options.image}",
        ]
        lines += [f"POP3S on {host_port(h, p)} (implicit TLS)" for h, p in self.pop3s_addresses]
        if self._cert_out_line:
            lines.append(self._cert_out_line)
        lines += [
            f"POP3 on {host_port(host, port)} "
            f"(max {plural(profile.int('pop3.max_sessions'), 'session')}, "
            f"idle logout {profile.int('pop3.idle_timeout_s')} s, "
            f"STLS {'offered' if tls else 'not available'})",
            f"RAM budget {self.budget.total // MIB} MiB",
        ]
        notice = self.board.settings().get("lab.notice")
        if notice:
            lines += boot_notice(notice, self.board)  # only passwords still true
        if profile.str("pop3.plaintext_auth") == "always":
            lines.append("WARNING: plaintext USER/PASS allowed without TLS (lab setting)")
        cert_names = certificate_host_names(self.board.settings().get(SETTING_CERT))
        hostname = profile.str("identity.hostname")
        if cert_names is not None and not names_host(cert_names, hostname):
            lines.append(hostname_warning(cert_names, hostname, console=True))  # image locked
        if profile.bool("pop3.apop"):
            names = boxes_without_legacy_secret(self.board.boxes())
            warning = legacy_warning(
                names, console=True
            )  # the image is locked: the console fixes it
            if warning is not None:
                lines += warning.splitlines()
        if self.overrides:
            lines.append(
                "run-only settings: "
                + ", ".join(f"{k}={masked(k, v)}" for k, v in self.overrides.items())
            )
        # Printed once (not also logged to stderr); the console's `log` still shows them.
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in lines:
            self.log_lines.append(f"{stamp} INFO dpfw.device: {line}")
            print(f"dpfw: {line}", file=sys.stderr, flush=True)
