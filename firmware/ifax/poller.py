"""The Internet Fax poller: a device service that fetches faxes by POP3 into the output tray.

One poll (`IfaxPoller.poll`): log in (firmware.ifax.client), UIDL and LIST, then for each
message in order: skip it if its UIDL is already in the tray (a fax fetched again after a
power cut between the store and DELE: it is never printed twice), else RETR it within
`ifax.max_message_kib`, read it (firmware.ifax.fax) within the RAM budget, store the tray
record (durable, fsync'ed, through the store worker), and only then DELE it unless
`ifax.leave_on_server`; QUIT commits the deletions (RFC 1939 §6). A poll that fails half way
(connection lost mid-RETR, MEMORY FULL, storage full) stores nothing partial: faxes already
stored stay stored and are recognised by their UIDL next time; the rest stay on the server.

The UIDL key of a fax is `user@host UIDL` (RFC 1939 §7: unique in one maildrop; the port and
TLS mode may change without re-printing, a new server or user starts a fresh history). Known
keys come from the tray records themselves and, once the tray is cleared, from the NVRAM
setting `ifax.seen` (the newest keys, SEEN_MAX_BYTES at most), so leave-on-server mode does
not re-print a cleared tray.

Timing (`run`): every `ifax.poll_interval_s` seconds while `ifax.enabled` (0: only on demand).
After a failure the next try waits longer, doubling from the interval (at least
BACKOFF_MIN_S) up to BACKOFF_MAX_S; the response codes of RFC 2449/3206 steer it:
`[LOGIN-DELAY]` and `[IN-USE]` retry after the interval, `[SYS/TEMP]` backs off,
`[AUTH]` and `[SYS/PERM]` wait BACKOFF_MAX_S (or a profile change) rather than hammer the
server with a password it refuses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from firmware.config.budget import RamBudget
from firmware.config.profile import Profile
from firmware.errors import DeviceError, MemoryFullError, StorageFullError
from firmware.ifax.client import Pop3Client, Pop3Error, ServerConfig, session
from firmware.ifax.fax import Document, read_fax, too_large
from firmware.store.board import Board
from firmware.store.worker import StoreWorker

log = logging.getLogger("firmware.ifax")

SEEN_SETTING = "ifax.seen"
SEEN_MAX_BYTES = 8 * 1024  # NVRAM is small (32 KiB slots on small images): newest keys only
BACKOFF_MIN_S = 30.0
BACKOFF_MAX_S = 3600.0


@dataclass(frozen=True)
class PollReport:
    """What one poll did: `received` printed, `errors` error reports, `skipped` already in the
    tray, `deleted` DELEs committed by QUIT, `waiting` left on the server, `failed` why the
    poll stopped early (None: it completed)."""

    received: int = 0
    errors: int = 0
    skipped: int = 0
    deleted: int = 0
    waiting: int = 0
    failed: str | None = None
    code: str | None = None
    seconds: float = 0.0


def server_config(profile: Profile) -> ServerConfig:
    return ServerConfig(
        host=profile.str("ifax.server"),
        port=profile.int("ifax.port"),
        tls=profile.str("ifax.tls"),
        user=profile.str("ifax.user"),
        password=profile.str("ifax.password"),
        auth=profile.str("ifax.auth"),
        ca_file=profile.str("ifax.ca_file"),
    )


def _tray_keys(board: Board) -> list[str]:
    """The UIDL keys of the tray's documents, oldest first (corrupt records skipped)."""
    keys = []
    for entry in board.tray():
        if entry.corrupt:
            continue
        try:
            meta, _ = board.tray_read(entry.seq)
        except DeviceError:
            continue
        key = meta.get("key")
        if isinstance(key, str) and key:
            keys.append(key)
    return keys


def known_keys(board: Board) -> set[str]:
    """UIDL keys of every fax already handled: the tray records' and `ifax.seen`'s."""
    seen = board.settings().get(SEEN_SETTING, "").splitlines()
    return {*seen, *_tray_keys(board)} - {""}


def clear_tray(board: Board) -> int:
    """Empty the tray, remembering its faxes' UIDL keys in NVRAM first (with those
    remembered before, the newest that fit in SEEN_MAX_BYTES); a cut between the two leaves
    both, which is harmless. How many documents were removed."""
    seen = board.settings().get(SEEN_SETTING, "").splitlines()
    keys = list(dict.fromkeys(k for k in [*seen, *_tray_keys(board)] if k))
    size = sum(len(k) + 1 for k in keys)
    while keys and size > SEEN_MAX_BYTES:
        size -= len(keys.pop(0)) + 1  # the oldest first
    if keys != seen:
        board.set_setting(SEEN_SETTING, "\n".join(keys))
    return board.tray_clear()


@dataclass
class PollerState:
    polls: int = 0
    received: int = 0
    errors: int = 0
    last: PollReport | None = None
    last_at: float | None = None  # Unix time
    next_at: float | None = None  # monotonic
    failures: int = 0
    known: set[str] | None = field(default=None, repr=False)


class IfaxPoller:
    """The poller of one running device; `run` is its service loop, `poll` one poll now."""

    def __init__(
        self,
        board: Callable[[], Board],
        profile: Callable[[], Profile],
        budget: Callable[[], RamBudget],
        worker: StoreWorker,
    ) -> None:
        self._board = board
        self._profile = profile
        self._budget = budget
        self._worker = worker
        self._lock = trio.Lock()
        self._wake = trio.Event()
        self.state = PollerState()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def wake(self) -> None:
        """A profile change: reconsider the schedule now.

        Callable from the loop and from a thread the loop started with `trio.to_thread`: the
        API and the web page commit profile changes on the store worker's thread, where a
        trio.Event cannot be set directly (RuntimeError, a 500 for PATCH /api/v1/profile).
        """
        try:
            trio.lowlevel.current_task()
        except RuntimeError:  # not in the loop's thread: hand the set to the loop
            trio.from_thread.run_sync(self._wake.set)
            return
        self._wake.set()

    async def poll(self) -> PollReport:
        """One poll now (console `ifax poll`); waits for one already running."""
        profile = self._profile()
        if not profile.bool("ifax.enabled"):
            raise DeviceError("Internet Fax reception is off (ifax.enabled = false)")
        if not profile.str("ifax.user"):
            raise DeviceError("ifax.user is not set")
        async with self._lock:
            report = await self._poll(profile)
        st = self.state
        st.polls += 1
        st.received += report.received
        st.errors += report.errors
        st.last, st.last_at = report, time.time()
        st.failures = st.failures + 1 if report.failed else 0
        return report

    async def _poll(self, profile: Profile) -> PollReport:
        started = time.monotonic()
        board = self._board()
        if self.state.known is None:
            self.state.known = await self._worker.run(known_keys, board)
        known = self.state.known
        cfg = server_config(profile)
        leave = profile.bool("ifax.leave_on_server")
        limit = profile.int("ifax.max_message_kib") * 1024
        accept = profile.str("ifax.accept_from")
        counts = {"received": 0, "errors": 0, "skipped": 0, "deleted": 0}
        failed: str | None = None
        code: str | None = None
        waiting = 0
        try:
            async with session(cfg) as client:
                uids = await client.uidl()
                sizes = await client.list_sizes()
                marked = 0
                for number in sorted(uids):
                    key = f"{cfg.user}@{cfg.host} {uids[number]}"
                    if key in known:
                        counts["skipped"] += 1
                    else:
                        try:
                            doc = await self._fetch(
                                client, number, uids[number], sizes, limit, accept
                            )
                            await self._store(board, doc, key, cfg.name)
                        except (MemoryFullError, StorageFullError) as exc:
                            failed = str(exc)
                            break
                        known.add(key)
                        counts["received" if doc.printed else "errors"] += 1
                    if not leave:
                        await client.dele(number)
                        marked += 1
                await client.quit()
                counts["deleted"] = marked
                waiting = len(uids) - marked
        except Pop3Error as exc:
            failed, code = str(exc), exc.code
            counts["deleted"] = 0
        if failed:
            log.warning("ifax: poll of %s stopped: %s", cfg.name, failed)
        return PollReport(
            waiting=waiting,
            failed=failed,
            code=code,
            seconds=time.monotonic() - started,
            **counts,
        )

    async def _fetch(
        self,
        client: Pop3Client,
        number: int,
        uid: str,
        sizes: dict[int, int],
        limit: int,
        accept: str,
    ) -> Document:
        size = sizes.get(number, 0)
        if size > limit:
            return too_large(uid, size, limit // 1024)
        budget = self._budget()
        with budget.reserve(max(size, 1), "Internet Fax reception") as held:
            try:
                raw = await client.retr(number, limit)
            except Pop3Error as exc:
                if "more than" in str(exc):
                    return too_large(uid, limit + 1, limit // 1024)
                raise
            capacity = budget.total - held.nbytes  # more can never be had: an error report
            return read_fax(raw, uid, accept_from=accept, reserve=held.grow, capacity=capacity)

    async def _store(self, board: Board, doc: Document, key: str, server: str) -> None:
        meta = {**doc.meta, "key": key, "server": server, "received": time.time()}
        entry = await self._worker.run(board.tray_print, meta, doc.data)
        log.info(
            "ifax: tray document %d from %s: %s", entry.number, meta.get("from"), meta["status"]
        )

    # -- the service loop --------------------------------------------------------------------

    def delay(self, report: PollReport | None, interval: int) -> float:
        """Seconds until the next poll after `report` (the back-off of the module docstring)."""
        if report is None or report.failed is None:
            return float(interval)
        if report.code in ("AUTH", "SYS/PERM"):
            return BACKOFF_MAX_S
        if report.code in ("IN-USE", "LOGIN-DELAY"):
            return float(max(interval, BACKOFF_MIN_S))
        base = max(float(interval), BACKOFF_MIN_S)
        return float(min(base * 2 ** max(self.state.failures - 1, 0), BACKOFF_MAX_S))

    async def run(self) -> None:
        """Poll on the schedule until cancelled; a failing poll never ends the service."""
        report: PollReport | None = None
        first = True
        while True:
            profile = self._profile()
            interval = profile.int("ifax.poll_interval_s")
            if profile.bool("ifax.enabled") and interval > 0 and profile.str("ifax.user"):
                wait = 0.0 if first else self.delay(report, interval)
                self.state.next_at = trio.current_time() + wait
            else:
                wait = float("inf")
                self.state.next_at = None
            with trio.move_on_after(wait):
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            first = False
            try:
                report = await self.poll()
            except DeviceError as exc:
                log.warning("ifax: %s", exc)


__all__ = ["IfaxPoller", "PollReport", "clear_tray", "known_keys", "server_config"]
