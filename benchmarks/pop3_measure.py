"""The measurement schedule of `tools/bench pop3`: which test runs when, on which server.

The machine is shared (by the generator, the servers and whatever else runs), so tests are
interleaved: every timed test is split into rounds run in alternating order (A B C D, D C B A,
...), which cancels a steady drift of background load, and each round records how much CPU
processes other than the server and the generator took meanwhile.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from benchmarks import loadgen
from benchmarks.pop3_corpus import Account, Corpus
from benchmarks.pop3_fetch import Feed, NoopProbe, percentile, run_feed
from benchmarks.pop3_procs import ServerProcess, listen_drops, machine_busy_s

HOST = "127.0.0.1"


@dataclass
class Plan:
    """What one run measures and for how long (durations are per server, over all rounds)."""

    levels: tuple[int, ...]
    session_s: float
    retr_conns: tuple[int, ...]
    retr_s: float
    idle: int
    boxes: int
    rounds: int = 2
    stls_levels: tuple[int, ...] = ()  # concurrent clients of the STLS session test
    fetch_levels: tuple[int, ...] = ()  # concurrent clients of the fetch-and-delete test
    feed_rate: float = 20.0  # messages/s delivered into the fetch boxes during that test
    noop_sessions: int = 10  # idle sessions probing NOOP latency during that test
    noop_interval_ms: float = 10.0  # each sends a NOOP this often
    pop3s_levels: tuple[int, ...] = ()  # concurrent clients of the POP3S session test


@dataclass
class Target:
    """A server under test and where it listens."""

    name: str
    server: ServerProcess
    port: int
    pop3s_port: int = 0  # its implicit-TLS listener (0: none)


@dataclass
class Figures:
    """Everything measured on one server."""

    sessions_per_s: dict[int, float] = field(default_factory=dict)
    server_cpu_ms_per_session: dict[int, float] = field(default_factory=dict)
    retr_mb_per_s: dict[int, float] = field(default_factory=dict)
    stls_retr_mb_per_s: dict[int, float] = field(default_factory=dict)  # RETR behind STLS
    stls_per_s: dict[int, float] = field(default_factory=dict)  # full sessions behind STLS
    stls_first_reply_ms: dict[int, float] = field(default_factory=dict)  # median, USER's reply
    stls_cpu_ms_per_session: dict[int, float] = field(default_factory=dict)  # server CPU, STLS
    stls_session_p50_ms: dict[int, float] = field(default_factory=dict)  # median whole session
    pop3s_per_s: dict[int, float] = field(default_factory=dict)  # full sessions, implicit TLS
    pop3s_first_reply_ms: dict[int, float] = field(default_factory=dict)  # median, USER's reply
    pop3s_cpu_ms_per_session: dict[int, float] = field(default_factory=dict)  # server CPU
    pop3s_session_p50_ms: dict[int, float] = field(default_factory=dict)  # median whole session
    tls_versions: dict[str, int] = field(default_factory=dict)  # "STLS TLSv1.3": sessions
    doveconf: str = ""  # `doveconf -n` of a Dovecot (its TLS twin's appended), for the record
    loadgen_cpu_pct: dict[str, float] = field(default_factory=dict)
    other_cpu_pct: dict[str, float] = field(default_factory=dict)  # 100 = one whole CPU
    listen_drops: dict[str, int] = field(default_factory=dict)  # SYNs dropped: backlog full
    fetch_per_s: dict[int, float] = field(default_factory=dict)  # fetch-and-delete sessions
    fetch_cpu_ms_per_session: dict[int, float] = field(default_factory=dict)
    fetch_empty: int = 0  # fetch sessions that found an empty box
    fetch_fed: int = 0  # messages the feed delivered
    fetch_deleted: int = 0  # deletions acknowledged by +OK to QUIT
    fetch_noops: int = 0  # NOOPs of the idle probe sessions during this server's fetch rounds
    noop_p99_ms: float = math.nan
    noop_max_ms: float = math.nan
    idle_sessions: int = 0
    idle_rss_per_session: float = math.nan  # bytes
    idle_pss_per_session: float = math.nan  # bytes
    idle_processes: tuple[int, int] = (0, 0)  # before, after
    errors: int = 0
    mismatches: int = 0
    samples: list[str] = field(default_factory=list)

    def count(self, tally: loadgen.Tally) -> None:
        self.errors += tally.errors
        self.mismatches += tally.mismatches
        self.samples.extend(tally.samples[: max(0, 5 - len(self.samples))])


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class _Sum:
    """One test on one server, summed over its rounds."""

    tally: loadgen.Tally = field(default_factory=loadgen.Tally)
    wall_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    listen_drops: int = 0


async def _timed(
    target: Target, acc: _Sum, run: Callable[[], Awaitable[loadgen.RunResult]]
) -> None:
    server0 = target.server.usage(with_pss=False).cpu_s
    busy0, drops0 = machine_busy_s(), listen_drops()
    result = await run()
    busy = machine_busy_s() - busy0
    acc.listen_drops += listen_drops() - drops0
    server = target.server.usage(with_pss=False).cpu_s - server0
    acc.tally.add(result.tally)
    acc.wall_s += result.wall_s
    acc.loadgen_cpu_s += result.cpu_s
    acc.server_cpu_s += server
    acc.other_cpu_s += max(0.0, busy - server - result.cpu_s)


async def _rounds(
    targets: Sequence[Target],
    rounds: int,
    make: Callable[[Target], Callable[[], Awaitable[loadgen.RunResult]]],
) -> dict[str, _Sum]:
    sums = {t.name: _Sum() for t in targets}
    for r in range(rounds):
        order = targets if r % 2 == 0 else list(reversed(targets))
        for target in order:
            await _timed(target, sums[target.name], make(target))
    return sums


async def warm_up(
    target: Target, corpus: Corpus, fig: Figures, uid_seen: dict[str, list[bytes]]
) -> None:
    """One verified session on every box, so first-touch costs are paid before timing."""
    boxes = corpus.session_accounts
    warm = await loadgen.run_sessions(
        HOST, target.port, boxes, 32, 3600.0, uid_seen, max_sessions=math.ceil(len(boxes) / 32)
    )
    fig.count(warm.tally)
    log(f"{target.name}: warm-up {warm.tally.done} sessions, {warm.tally.errors} errors")


async def idle_memory(target: Target, corpus: Corpus, plan: Plan, fig: Figures) -> None:
    """Memory growth of the server's whole process group per idle logged-in session."""
    await asyncio.sleep(1.0)
    before = target.server.usage()
    idle = loadgen.IdleSessions()
    await idle.open(HOST, target.port, corpus.session_accounts[: plan.idle])
    await asyncio.sleep(1.0)
    after = target.server.usage()
    opened = len(idle.clients)
    alive = await idle.still_open()
    await idle.close()
    fig.count(idle.tally)
    if alive != plan.idle:
        fig.errors += 1
        fig.samples.append(f"idle: {alive} of {plan.idle} sessions open and answering NOOP")
    n = max(1, opened)
    fig.idle_sessions = alive
    fig.idle_rss_per_session = (after.rss - before.rss) / n
    fig.idle_pss_per_session = (after.pss - before.pss) / n
    fig.idle_processes = (before.processes, after.processes)
    log(
        f"{target.name}: {alive} idle sessions: RSS {before.rss / 1e6:.1f} -> "
        f"{after.rss / 1e6:.1f} MB ({fig.idle_rss_per_session / 1024:.1f} KiB/session), "
        f"PSS {fig.idle_pss_per_session / 1024:.1f} KiB/session, "
        f"{before.processes} -> {after.processes} processes"
    )


def _pct(cpu_s: float, wall_s: float) -> float:
    return 100 * cpu_s / wall_s if wall_s > 0 else math.nan


async def fetch_delete(
    fetch_targets: Sequence[tuple[Target, Feed]],
    corpus: Corpus,
    plan: Plan,
    figs: dict[str, Figures],
) -> None:
    """The fetch-and-delete test (benchmarks/pop3_fetch.py) at `plan.fetch_levels`, with the
    feed running and the NOOP probe timing idle sessions; then every box is counted: the
    messages left must be those built + fed - deleted (a deletion acknowledged by +OK to QUIT
    that did not stick, or one applied without it, shows as a mismatch)."""
    boxes = corpus.fetch_accounts
    idle = corpus.session_accounts[-plan.noop_sessions :] if plan.noop_sessions else ()
    feeds = {t.name: feed for t, feed in fetch_targets}
    windows: dict[str, list[tuple[float, float]]] = {t.name: [] for t, _ in fetch_targets}
    probes: dict[str, NoopProbe] = {}
    for t, _ in fetch_targets:
        # First touch of every box (Dovecot builds its index files) before any timing.
        found = await loadgen.count_messages(HOST, t.port, boxes)
        if found != len(boxes) * corpus.fetch_depth:
            raise RuntimeError(f"{t.name}: {found} messages in the fetch boxes before the test")
        if idle:
            probes[t.name] = NoopProbe(t.port, idle, plan.noop_interval_ms)
            await probes[t.name].start()
    try:
        for clients in plan.fetch_levels:
            seconds = plan.session_s / plan.rounds

            def fetch(
                t: Target, c: int = clients, s: float = seconds
            ) -> Callable[[], Awaitable[loadgen.RunResult]]:
                async def run() -> loadgen.RunResult:
                    stop = asyncio.Event()
                    feeding = asyncio.create_task(
                        run_feed(feeds[t.name], boxes, plan.feed_rate, stop)
                    )
                    start = time.monotonic()
                    try:
                        return await loadgen.run_fetch_delete(HOST, t.port, boxes, c, s)
                    finally:
                        windows[t.name].append((start, time.monotonic()))
                        stop.set()
                        fed, failed = await feeding
                        figs[t.name].fetch_fed += fed
                        figs[t.name].errors += failed

                return run

            sums = await _rounds([t for t, _ in fetch_targets], plan.rounds, fetch)
            for name, acc in sums.items():
                fig = figs[name]
                fig.count(acc.tally)
                key = f"fetch x{clients}"
                fig.listen_drops[key] = acc.listen_drops
                fig.fetch_per_s[clients] = acc.tally.done / acc.wall_s
                fig.fetch_cpu_ms_per_session[clients] = (
                    acc.server_cpu_s * 1000 / max(1, acc.tally.done)
                )
                fig.fetch_empty += acc.tally.empty
                fig.fetch_deleted += acc.tally.deleted
                fig.loadgen_cpu_pct[key] = _pct(acc.loadgen_cpu_s, acc.wall_s)
                fig.other_cpu_pct[key] = _pct(acc.other_cpu_s, acc.wall_s)
                log(
                    f"{name}: fetch+delete {clients:>3} clients: {fig.fetch_per_s[clients]:8.1f} "
                    f"sessions/s, {acc.server_cpu_s * 1000 / max(1, acc.tally.done):.2f} ms CPU "
                    f"each ({acc.tally.done} in {acc.wall_s:.1f} s, {acc.tally.empty} found "
                    f"the box empty; {acc.tally.errors} errors, {acc.tally.mismatches} "
                    f"mismatches; other processes {fig.other_cpu_pct[key]:.0f}%)"
                )
    finally:
        samples = {name: await probe.stop() for name, probe in probes.items()}
        for feed in feeds.values():
            await feed.aclose()
    for t, _ in fetch_targets:
        fig = figs[t.name]
        inside = [
            lat * 1000
            for at, lat in samples.get(t.name, [])
            if any(start <= at <= end for start, end in windows[t.name])
        ]
        fig.fetch_noops = len(inside)
        fig.noop_p99_ms = percentile(inside, 0.99)
        fig.noop_max_ms = max(inside, default=math.nan)
        left = await loadgen.count_messages(HOST, t.port, boxes)
        expected = len(boxes) * corpus.fetch_depth + fig.fetch_fed - fig.fetch_deleted
        if left != expected:
            fig.mismatches += 1
            fig.samples.append(
                f"fetch+delete: {left} messages left, expected {expected} (built "
                f"{len(boxes) * corpus.fetch_depth} + fed {fig.fetch_fed} - deleted "
                f"{fig.fetch_deleted})"
            )
        log(
            f"{t.name}: idle NOOP during fetch+delete: {fig.fetch_noops} sent, p99 "
            f"{fig.noop_p99_ms:.2f} ms, max {fig.noop_max_ms:.2f} ms; {fig.fetch_fed} fed, "
            f"{fig.fetch_deleted} deleted, {left} left (expected {expected})"
        )


def _median_ms(seconds: Sequence[float]) -> float:
    return statistics.median(seconds) * 1000 if seconds else math.nan


async def tls_sessions(
    targets: Sequence[Target],
    boxes: Sequence[Account],
    plan: Plan,
    context: ssl.SSLContext,
    figs: dict[str, Figures],
    uid_seen: dict[str, dict[str, list[bytes]]],
    clients: int,
    *,
    pop3s: bool,
) -> None:
    """The full-session test over TLS from `clients` concurrent clients, with STLS on each
    target's port, or (`pop3s`) with implicit TLS on each target's `pop3s_port`.

    Fills that level's STLS or POP3S figures: sessions/s, server CPU ms per session, the
    median time of USER's reply and the median wall time of a whole session (connect to the
    server's close).
    """
    mode = "POP3S" if pop3s else "STLS"
    if not targets:
        return
    seconds = plan.session_s / plan.rounds

    def run(
        t: Target, c: int = clients, s: float = seconds
    ) -> Callable[[], Awaitable[loadgen.RunResult]]:
        if pop3s:
            return lambda: loadgen.run_sessions(
                HOST, t.pop3s_port, boxes, c, s, uid_seen[t.name], pop3s=context
            )
        return lambda: loadgen.run_sessions(
            HOST, t.port, boxes, c, s, uid_seen[t.name], stls=context
        )

    sums = await _rounds(targets, plan.rounds, run)
    for name, acc in sums.items():
        fig = figs[name]
        fig.count(acc.tally)
        key = f"{mode} x{clients}"
        fig.listen_drops[key] = acc.listen_drops
        rate = acc.tally.done / acc.wall_s
        first = _median_ms(acc.tally.first_reply_s)
        cpu = acc.server_cpu_s * 1000 / max(1, acc.tally.done)
        whole = _median_ms(acc.tally.session_s)
        if pop3s:
            fig.pop3s_per_s[clients] = rate
            fig.pop3s_first_reply_ms[clients] = first
            fig.pop3s_cpu_ms_per_session[clients] = cpu
            fig.pop3s_session_p50_ms[clients] = whole
        else:
            fig.stls_per_s[clients] = rate
            fig.stls_first_reply_ms[clients] = first
            fig.stls_cpu_ms_per_session[clients] = cpu
            fig.stls_session_p50_ms[clients] = whole
        fig.loadgen_cpu_pct[key] = _pct(acc.loadgen_cpu_s, acc.wall_s)
        fig.other_cpu_pct[key] = _pct(acc.other_cpu_s, acc.wall_s)
        for version, n in acc.tally.tls_versions.items():
            tag = f"{mode} {version}"
            fig.tls_versions[tag] = fig.tls_versions.get(tag, 0) + n
        versions = ", ".join(f"{v} {n}" for v, n in sorted(acc.tally.tls_versions.items()))
        log(
            f"{name}: {mode} {clients:>3} clients: {rate:8.1f} sessions/s, whole session "
            f"{whole:.2f} ms median, first reply after the handshake {first:.2f} ms "
            f"median, {cpu:.2f} ms server CPU each ({acc.tally.done} in "
            f"{acc.wall_s:.1f} s; {acc.tally.errors} errors, {acc.tally.mismatches} "
            f"mismatches; other processes {fig.other_cpu_pct[key]:.0f}%; sessions by TLS "
            f"version: {versions or 'none'})"
        )


async def measure_all(
    targets: Sequence[Target],
    corpus: Corpus,
    plan: Plan,
    stls_targets: Sequence[Target] = (),
    stls: ssl.SSLContext | None = None,
    fetch_targets: Sequence[tuple[Target, Feed]] = (),
) -> dict[str, Figures]:
    """Warm-up and idle memory per server, then every timed test interleaved in rounds.

    `stls_targets` (named like the target whose figures they add to; may be the same server
    or a TLS-enabled twin) run the STLS session test at `plan.stls_levels` with the client
    context `stls`, and those with a `pop3s_port` the POP3S (implicit TLS) session test at
    `plan.pop3s_levels` with the same context;
    `fetch_targets` (servers that can delete, each with its scan feed) the fetch-and-delete
    test at `plan.fetch_levels`.
    """
    figs = {t.name: Figures() for t in targets}
    uid_seen = {t.name: dict[str, list[bytes]]() for t in targets}
    for t in targets:
        await warm_up(t, corpus, figs[t.name], uid_seen[t.name])
    for t in stls_targets:
        if all(t.server is not u.server for u in targets):  # a twin: its own caches to warm
            await warm_up(t, corpus, figs[t.name], uid_seen[t.name])
    # Idle memory before the load tests: memory those free could otherwise be reused by the
    # idle sessions and hide what they cost.
    for t in targets:
        await idle_memory(t, corpus, plan, figs[t.name])

    boxes = corpus.session_accounts
    for clients in plan.levels:
        seconds = plan.session_s / plan.rounds

        def sessions(
            t: Target, c: int = clients, s: float = seconds
        ) -> Callable[[], Awaitable[loadgen.RunResult]]:
            return lambda: loadgen.run_sessions(HOST, t.port, boxes, c, s, uid_seen[t.name])

        sums = await _rounds(targets, plan.rounds, sessions)
        for name, acc in sums.items():
            fig = figs[name]
            fig.count(acc.tally)
            key = f"sessions x{clients}"
            fig.listen_drops[key] = acc.listen_drops
            fig.sessions_per_s[clients] = acc.tally.done / acc.wall_s
            fig.server_cpu_ms_per_session[clients] = (
                acc.server_cpu_s * 1000 / max(1, acc.tally.done)
            )
            fig.loadgen_cpu_pct[key] = _pct(acc.loadgen_cpu_s, acc.wall_s)
            fig.other_cpu_pct[key] = _pct(acc.other_cpu_s, acc.wall_s)
            log(
                f"{name}: {clients:>3} clients: {fig.sessions_per_s[clients]:8.1f} sessions/s "
                f"({acc.tally.done} in {acc.wall_s:.1f} s; {acc.tally.errors} errors, "
                f"{acc.tally.mismatches} mismatches; loadgen CPU {fig.loadgen_cpu_pct[key]:.0f}%, "
                f"other processes {fig.other_cpu_pct[key]:.0f}%; {acc.listen_drops} SYNs dropped "
                "by a full listen backlog)"
            )

    if stls is not None and stls_targets:
        # Level by level, STLS then POP3S, so the two are measured close together in time.
        pop3s_targets = [t for t in stls_targets if t.pop3s_port]
        for c in sorted({*plan.stls_levels, *plan.pop3s_levels}):
            if c in plan.stls_levels:
                await tls_sessions(stls_targets, boxes, plan, stls, figs, uid_seen, c, pop3s=False)
            if c in plan.pop3s_levels:
                await tls_sessions(pop3s_targets, boxes, plan, stls, figs, uid_seen, c, pop3s=True)

    if fetch_targets and plan.fetch_levels:
        await fetch_delete(fetch_targets, corpus, plan, figs)

    for conns in plan.retr_conns:
        seconds = plan.retr_s / plan.rounds

        def retr(
            t: Target, n: int = conns, s: float = seconds
        ) -> Callable[[], Awaitable[loadgen.RunResult]]:
            return lambda: loadgen.run_retr(HOST, t.port, corpus.large_accounts, n, s)

        sums = await _rounds(targets, plan.rounds, retr)
        for name, acc in sums.items():
            fig = figs[name]
            fig.count(acc.tally)
            key = f"RETR x{conns}"
            fig.listen_drops[key] = acc.listen_drops
            fig.retr_mb_per_s[conns] = acc.tally.octets / acc.wall_s / 1e6
            fig.loadgen_cpu_pct[key] = _pct(acc.loadgen_cpu_s, acc.wall_s)
            fig.other_cpu_pct[key] = _pct(acc.other_cpu_s, acc.wall_s)
            log(
                f"{name}: RETR on {conns} conn: {fig.retr_mb_per_s[conns]:8.1f} MB/s "
                f"({acc.tally.done} messages; {acc.tally.errors} errors, "
                f"{acc.tally.mismatches} mismatches; loadgen CPU {fig.loadgen_cpu_pct[key]:.0f}%, "
                f"other processes {fig.other_cpu_pct[key]:.0f}%)"
            )
    if stls is not None and stls_targets and plan.stls_levels:
        conns = 1
        seconds = plan.retr_s / plan.rounds

        def stls_retr(
            t: Target, n: int = conns, s: float = seconds
        ) -> Callable[[], Awaitable[loadgen.RunResult]]:
            return lambda: loadgen.run_retr(HOST, t.port, corpus.large_accounts, n, s, stls)

        sums = await _rounds(stls_targets, plan.rounds, stls_retr)
        for name, acc in sums.items():
            fig = figs[name]
            fig.count(acc.tally)
            key = f"STLS RETR x{conns}"
            fig.stls_retr_mb_per_s[conns] = acc.tally.octets / acc.wall_s / 1e6
            fig.other_cpu_pct[key] = _pct(acc.other_cpu_s, acc.wall_s)
            log(
                f"{name}: RETR over STLS on {conns} conn: {fig.stls_retr_mb_per_s[conns]:8.1f} "
                f"MB/s ({acc.tally.done} messages; {acc.tally.errors} errors, "
                f"{acc.tally.mismatches} mismatches; other processes {fig.other_cpu_pct[key]:.0f}%)"
            )
    return figs
