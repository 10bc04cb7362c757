"""`tools/bench pop3`: the dpfw POP3 service against Dovecot and against a ceiling, in one run.

Four servers get the same users, passwords and messages, are started in the same run on
loopback ports, and are driven in turn by the same verifying load generator
(benchmarks/loadgen.py): dpfw, Dovecot at its strongest ("dovecot-fast"), Dovecot as the first
benchmark configured it ("dovecot-classic", a process per session, hashed passwords), and a
bare trio server answering from memory ("ceiling", benchmarks/pop3_ceiling.py), which shows
what Python and trio allow. The table gives every figure and dpfw's ratio to each; ratios from
one run, not absolute claims, are what carry over to another machine. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import pwd
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from benchmarks.pop3_ceiling import start_ceiling
from benchmarks.pop3_corpus import LARGE_SIZE, SMALL_SIZE, build_corpus
from benchmarks.pop3_dovecot import MAIL_USER, SCHEMES, start_dovecot, write_maildirs
from benchmarks.pop3_dpfw import ADMIN_PASSWORD, start_dpfw
from benchmarks.pop3_fetch import Feed, HttpFeed, MaildirFeed
from benchmarks.pop3_measure import Figures, Plan, Target, log, measure_all
from benchmarks.pop3_procs import ServerProcess, free_port, wait_for_greeting

SERVERS = ("dpfw", "dovecot-fast", "dovecot-classic", "ceiling")
# The ratio columns: dpfw against each other server.
RATIOS = (
    ("dpfw/fast", "dovecot-fast"),
    ("dpfw/classic", "dovecot-classic"),
    ("dpfw/ceiling", "ceiling"),
)
STLS_LEVELS = (1, 32)
FETCH_LEVELS = (32,)
FETCH_SERVERS = ("dpfw", "dovecot-fast")  # servers that delete (the ceiling cannot; classic
# would share dovecot-fast's maildirs)


def _ratio(a: float, b: float) -> str:
    if not (b and math.isfinite(a) and math.isfinite(b)):
        return "-"
    return f"{a / b:.2f}x"


def _num(x: float, digits: int = 1) -> str:
    return "-" if not math.isfinite(x) else f"{x:,.{digits}f}"


def render_table(results: dict[str, Figures], plan: Plan, header: str) -> str:
    """The side-by-side table: every server's figure, dpfw's ratio to each, the targets.

    Targets are judged against dovecot-fast, the strongest configuration of the peer.
    """
    nan = math.nan
    empty = Figures()
    figs = [results.get(name, empty) for name in SERVERS]
    ran = [name in results for name in SERVERS]
    rows: list[list[str]] = []

    def row(
        name: str,
        get: Callable[[Figures], float],
        target: str = "",
        judge: Callable[[dict[str, float]], str] | None = None,
        digits: int = 1,
        ratios_shown: bool = True,
    ) -> None:
        values = {n: get(f) if r else nan for n, f, r in zip(SERVERS, figs, ran, strict=True)}
        ratios = [
            _ratio(values["dpfw"], values[other]) if ratios_shown else "-" for _, other in RATIOS
        ]
        verdict = judge(values) if judge is not None and target else ""
        cells = [_num(values[n], digits) for n in SERVERS]
        rows.append([name, *cells, *ratios, f"{target} {verdict}".strip()])

    for c in plan.levels:
        target = ">= 2x fast" if c == 32 else ""
        row(
            f"sessions/s, {c} client{'s' if c > 1 else ''}",
            _at(lambda f: f.sessions_per_s, c),
            target,
            _judge_ge(2.0),
        )
    for c in plan.levels:
        row(
            f"server CPU ms/session, {c} cl.",
            _at(lambda f: f.server_cpu_ms_per_session, c),
            digits=2,
        )
    for c in plan.stls_levels:
        row(
            f"STLS sessions/s, {c} client{'s' if c > 1 else ''}",
            _at(lambda f: f.stls_per_s, c),
            ">= 1.5x fast" if c == 32 else "",
            _judge_ge(1.5),
        )
    for c in plan.stls_levels:
        row(
            f"STLS server CPU ms/session, {c} cl.",
            _at(lambda f: f.stls_cpu_ms_per_session, c),
            digits=2,
        )
    for c in plan.stls_levels:
        row(
            f"STLS 1st reply ms, {c} cl. (median)",
            _at(lambda f: f.stls_first_reply_ms, c),
            digits=2,
        )
    for c in plan.pop3s_levels:
        row(
            f"POP3S sessions/s, {c} client{'s' if c > 1 else ''}",
            _at(lambda f: f.pop3s_per_s, c),
            ">= 1.5x fast" if c == 32 else "",
            _judge_ge(1.5),
        )
    for c in plan.pop3s_levels:
        row(
            f"POP3S server CPU ms/session, {c} cl.",
            _at(lambda f: f.pop3s_cpu_ms_per_session, c),
            digits=2,
        )
    if 1 in plan.stls_levels:
        row("full session p50 ms, STLS, 1 cl.", _at(lambda f: f.stls_session_p50_ms, 1), digits=2)
    if 1 in plan.pop3s_levels:
        row(
            "full session p50 ms, POP3S, 1 cl.",
            _at(lambda f: f.pop3s_session_p50_ms, 1),
            digits=2,
        )
    if 1 in plan.stls_levels and 1 in plan.pop3s_levels:
        row(
            "full session p50, STLS / POP3S",
            _session_ratio,
            "dpfw <= 1.5",
            lambda v: ("met" if v["dpfw"] <= 1.5 else "MISSED") if math.isfinite(v["dpfw"]) else "",
            digits=2,
            ratios_shown=False,
        )
    for c in plan.fetch_levels:
        row(
            f"fetch+delete sessions/s, {c} cl.",
            _at(lambda f: f.fetch_per_s, c),
            ">= 2x fast" if c == 32 else "",
            _judge_ge(2.0),
        )
        row(f"fetch+delete CPU ms/session, {c} cl.", _at(lambda f: f.fetch_cpu_ms_per_session, c))
    if plan.fetch_levels:
        row(
            "idle NOOP p99 ms during fetch+delete",
            lambda f: f.noop_p99_ms,
            "dpfw <= 5",
            lambda v: ("met" if v["dpfw"] <= 5.0 else "MISSED") if math.isfinite(v["dpfw"]) else "",
            digits=2,
        )
        row("idle NOOP max ms during fetch+delete", lambda f: f.noop_max_ms, digits=2)
        row(
            "fetch+delete: found the box empty",
            lambda f: f.fetch_empty if f.fetch_per_s else math.nan,
            digits=0,
        )
    for c in plan.retr_conns:
        row(
            f"RETR MB/s, 10 MiB msg, {c} conn",
            _at(lambda f: f.retr_mb_per_s, c),
            ">= 2x fast" if c == 1 else "",
            _judge_ge(2.0),
        )
    if plan.stls_levels:
        row(
            "RETR MB/s over STLS, 10 MiB, 1 conn",
            _at(lambda f: f.stls_retr_mb_per_s, 1),
            ">= 1x fast",
            _judge_ge(1.0),
        )
    row(
        f"RSS KiB per idle session ({plan.idle})",
        lambda f: f.idle_rss_per_session / 1024,
        "dpfw <= 8 KB",
        lambda v: (
            ("met" if v["dpfw"] * 1024 <= 8000 else "MISSED") if math.isfinite(v["dpfw"]) else ""
        ),
    )
    row("PSS KiB per idle session", lambda f: f.idle_pss_per_session / 1024)
    row("errors", lambda f: f.errors, "0", _zero, digits=0)
    row("size/content mismatches", lambda f: f.mismatches, "0", _zero, digits=0)
    row("loadgen CPU %, busiest test", lambda f: max(f.loadgen_cpu_pct.values(), default=nan))
    row(
        "SYNs dropped, listen backlog full",
        lambda f: sum(f.listen_drops.values()) if f.listen_drops else nan,
        digits=0,
    )
    row("other processes' CPU %, worst", lambda f: max(f.other_cpu_pct.values(), default=nan))

    head = ["metric", *SERVERS, *(r for r, _ in RATIOS), "target"]
    widths = [max(len(r[i]) for r in [*rows, head]) for i in range(len(head))]
    lines = [header, ""]
    for i, r in enumerate([head, *rows]):
        cells = [r[0].ljust(widths[0])] + [r[k].rjust(widths[k]) for k in range(1, len(r) - 1)]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _at(table: Callable[[Figures], dict[int, float]], key: int) -> Callable[[Figures], float]:
    """Reads one entry of one per-level table of a server's figures (NaN when absent)."""
    return lambda f: table(f).get(key, math.nan)


def _session_ratio(f: Figures) -> float:
    """A server's median whole STLS session over its median whole POP3S session, at 1 client."""
    stls = f.stls_session_p50_ms.get(1, math.nan)
    pop3s = f.pop3s_session_p50_ms.get(1, math.nan)
    return stls / pop3s if pop3s > 0 else math.nan


def _judge_ge(factor: float) -> Callable[[dict[str, float]], str]:
    def judge(values: dict[str, float]) -> str:
        a, b = values["dpfw"], values["dovecot-fast"]
        if not (math.isfinite(a) and math.isfinite(b) and b > 0):
            return ""
        return "met" if a >= factor * b else "MISSED"

    return judge


def _zero(values: dict[str, float]) -> str:
    """'met' when every server that ran counted zero (NaN: that server did not run)."""
    return "met" if all(c == 0 for c in values.values() if math.isfinite(c)) else "MISSED"


def _dovecot_version() -> str:
    try:
        out = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tools/bench pop3",
        description="dpfw POP3 vs two private Dovecots (fast, classic) and a bare trio ceiling "
        "on loopback: sessions/s (plain, STLS and POP3S), RETR MB/s, RSS per idle session, "
        "errors.",
    )
    p.add_argument("--quick", action="store_true", help="short run (~2 minutes) for a smoke check")
    p.add_argument("--levels", default="1,32,128", help="concurrent clients per session test")
    p.add_argument(
        "--stls-levels",
        default=",".join(map(str, STLS_LEVELS)),
        help="concurrent clients of the STLS session test ('' skips it, and the POP3S test "
        "unless --pop3s-levels is given). Its clients keep Nagle's algorithm on, as poplib, "
        "fetchmail and mpop do",
    )
    p.add_argument(
        "--pop3s-levels",
        help="concurrent clients of the POP3S (implicit TLS) session test (default: the STLS "
        "levels; '' skips it). Its clients keep Nagle on too, from the TCP connect, like the "
        "STLS clients: the same client socket for both, so the STLS/POP3S comparison differs "
        "only in how TLS starts",
    )
    p.add_argument(
        "--fetch-levels",
        default=",".join(map(str, FETCH_LEVELS)),
        help="concurrent clients of the fetch-and-delete test (dpfw and dovecot-fast; '' skips it)",
    )
    p.add_argument(
        "--fetch-depth",
        type=int,
        help="messages in each fetch box at the start (default 60; --quick 25)",
    )
    p.add_argument(
        "--feed-rate",
        type=float,
        default=20.0,
        help="messages/s the scan feed delivers into the fetch boxes meanwhile (default 20)",
    )
    p.add_argument(
        "--noop-sessions",
        type=int,
        default=10,
        help="idle sessions timing NOOP during the fetch-and-delete test (default 10)",
    )
    p.add_argument(
        "--noop-interval-ms",
        type=float,
        default=10.0,
        help="each idle session sends a NOOP this often (default 10 ms)",
    )
    p.add_argument("--session-seconds", type=float, help="duration of each session test")
    p.add_argument("--retr-seconds", type=float, help="duration of each RETR test")
    p.add_argument(
        "--rounds", type=int, help="interleaved rounds per timed test (ABBA order; default 4)"
    )
    p.add_argument("--idle", type=int, help="idle logged-in sessions for the RSS test")
    p.add_argument(
        "--only",
        metavar="NAME[,NAME...]",
        help=f"measure these servers only (of {', '.join(SERVERS)}); ratios need dpfw and the "
        "other server",
    )
    p.add_argument(
        "--dovecot-scheme",
        choices=SCHEMES,
        default=SCHEMES[0],
        help="dovecot-classic's password scheme: ssha256 (default: one salted hash per login) "
        "or scram-sha-256 (dpfw's own credentials: 4096 PBKDF2 rounds per login on both "
        "sides); dovecot-fast always stores {PLAIN}",
    )
    p.add_argument(
        "--dovecot-lf",
        action="store_true",
        help="store Dovecot's messages with LF line ends (its default, mail_save_crlf = no) "
        "instead of CRLF (its fastest RETR)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="scheduling priority of the generator and both servers (inherited by every process "
        "they start; default -10 when run as root, so other jobs on a shared machine perturb "
        "less; 0 to leave it)",
    )
    p.add_argument("--workdir", type=Path, help="keep images, maildirs, configs and logs here")
    p.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    return p.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    levels = tuple(int(x) for x in args.levels.split(",") if x.strip())
    if not levels or min(levels) < 1:
        raise SystemExit("--levels: give positive client counts, e.g. 1,8,32,128")
    idle = args.idle if args.idle is not None else (200 if args.quick else 1000)
    session_s = args.session_seconds or (2.0 if args.quick else 6.0)
    retr_s = args.retr_seconds or (2.0 if args.quick else 6.0)
    rounds = args.rounds or (2 if args.quick else 4)
    boxes = max(idle, 2 * max(levels), 64)
    stls_levels = tuple(int(x) for x in args.stls_levels.split(",") if x.strip())
    pop3s_arg = args.stls_levels if args.pop3s_levels is None else args.pop3s_levels
    pop3s_levels = tuple(int(x) for x in pop3s_arg.split(",") if x.strip())
    if min((*stls_levels, *pop3s_levels), default=1) < 1:
        raise SystemExit("--stls-levels, --pop3s-levels: give positive client counts, e.g. 1,32")
    boxes = max(boxes, 2 * max((*stls_levels, *pop3s_levels), default=1))
    fetch_levels = tuple(int(x) for x in args.fetch_levels.split(",") if x.strip())
    return Plan(
        levels,
        session_s,
        (1, 4),
        retr_s,
        idle,
        boxes,
        rounds,
        stls_levels,
        fetch_levels,
        args.feed_rate,
        args.noop_sessions,
        args.noop_interval_ms,
        pop3s_levels,
    )


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard or (soft < hard and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(f"need {needed} open files, the limit is {soft}: raise `ulimit -n`")


def _set_priority(nice: int) -> int:
    """Set this process's nice value (servers inherit it); return the value in force."""
    if nice != 0:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as exc:
            log(f"cannot set nice {nice} ({exc}); running at the current priority")
    return os.getpriority(os.PRIO_PROCESS, 0)


def _certificate(workdir: Path) -> tuple[str, str, Path, Path]:
    """One self-signed ECDSA P-256 certificate for every server's STLS (dpfw's kind of key)."""
    from firmware.security.tls import make_self_signed

    cert_pem, key_pem = make_self_signed("127.0.0.1")
    base = workdir / "tls"
    base.mkdir(parents=True, exist_ok=True)
    cert, key = base / "cert.pem", base / "key.pem"
    cert.write_text(cert_pem)
    key.write_text(key_pem)
    key.chmod(0o600)
    return cert_pem, key_pem, cert, key


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the run's own self-signed certificate
    return context


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    chosen = tuple(SERVERS) if not args.only else tuple(args.only.split(","))
    unknown = [name for name in chosen if name not in SERVERS]
    if unknown:
        raise SystemExit(f"--only: unknown server {unknown[0]!r}; choose from {', '.join(SERVERS)}")
    dovecots = [name for name in chosen if name.startswith("dovecot")]
    _raise_fd_limit(plan.idle + 2 * max(plan.levels) + 256)
    nice = _set_priority(args.nice)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dpfw-bench-pop3-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"corpus: {plan.boxes} boxes x {SMALL_SIZE} octets + 4 boxes x {LARGE_SIZE} octets")
    fetch_boxes = max(64, 2 * max(plan.fetch_levels)) if plan.fetch_levels else 0
    depth = args.fetch_depth or (25 if args.quick else 60)
    if fetch_boxes:
        log(f"fetch+delete: {fetch_boxes} boxes x {depth} messages of {SMALL_SIZE} octets")
    corpus = build_corpus(plan.boxes, max(plan.retr_conns), fetch_boxes, depth)
    max_sessions = plan.idle + 2 * max(plan.levels) + 64
    cert_pem, key_pem, cert, key = _certificate(workdir)
    targets: list[Target] = []
    stls_targets: list[Target] = []
    servers: list[ServerProcess] = []
    fetch_targets: list[tuple[Target, Feed]] = []
    doveconf: dict[str, str] = {}
    results: dict[str, Figures] = {}
    try:
        home = workdir / "dovecot-mail" / "home"
        if dovecots:
            home.mkdir(parents=True, exist_ok=True)
            write_maildirs(home, corpus, crlf=not args.dovecot_lf)
        for name in chosen:
            port = free_port()
            t0 = time.monotonic()
            feed: Feed | None = None
            # dpfw and the ceiling serve STLS on `port` and POP3S on `pop3s` (0: none).
            pop3s = free_port() if plan.pop3s_levels and name != "dovecot-classic" else 0
            if name == "dpfw":
                http = free_port() if plan.fetch_levels else None
                server = start_dpfw(
                    workdir, corpus, port, max_sessions, (cert_pem, key_pem), http, pop3s
                )
                if http is not None:
                    feed = HttpFeed(f"http://127.0.0.1:{http}", ADMIN_PASSWORD, corpus.small)
            elif name == "ceiling":
                server = start_ceiling(workdir, corpus, port, (cert, key), pop3s)
            else:
                scheme = args.dovecot_scheme if name == "dovecot-classic" else None
                server, conf = start_dovecot(
                    workdir,
                    corpus,
                    home,
                    port,
                    max_sessions,
                    name,
                    scheme=scheme,
                    crlf=not args.dovecot_lf,
                )
                doveconf[name] = conf
                if name == "dovecot-fast" and plan.fetch_levels:
                    mail = pwd.getpwnam(MAIL_USER)
                    feed = MaildirFeed(
                        home, corpus.small, mail.pw_uid, mail.pw_gid, not args.dovecot_lf
                    )
            servers.append(server)
            target = Target(name, server, port)
            targets.append(target)
            if feed is not None and name in FETCH_SERVERS:
                fetch_targets.append((target, feed))
            log(f"{name}: serving on 127.0.0.1:{port} (set up in {time.monotonic() - t0:.1f} s)")
            if not (plan.stls_levels or plan.pop3s_levels) or name == "dovecot-classic":
                continue
            if name == "dovecot-fast":  # the same configuration with ssl = yes, for TLS only
                tls_port = free_port()
                twin, conf = start_dovecot(
                    workdir,
                    corpus,
                    home,
                    tls_port,
                    max_sessions,
                    name,
                    name="dovecot-fast-tls",
                    crlf=not args.dovecot_lf,
                    tls=(cert, key),
                    pop3s_port=pop3s,
                )
                doveconf[name] += "\n# --- its twin for STLS and POP3S (ssl = yes) ---\n" + conf
                servers.append(twin)
                target = Target(name, twin, tls_port)
                log(f"{name}: TLS twin (ssl = yes) serving on 127.0.0.1:{tls_port}")
            if pop3s:
                target = Target(name, target.server, target.port, pop3s)
                wait_for_greeting("127.0.0.1", pop3s, target.server.proc, 20.0, _client_context())
                log(f"{name}: POP3S (implicit TLS) on 127.0.0.1:{pop3s}")
            stls_targets.append(target)
        for name in dovecots:
            log(f"{name}: doveconf -n checked (kept as {name}/doveconf-n.txt with --workdir)")
        results = asyncio.run(
            measure_all(targets, corpus, plan, stls_targets, _client_context(), fetch_targets)
        )
        for name, conf in doveconf.items():
            results[name].doveconf = conf
    finally:
        for server in servers:
            server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir} (images, maildirs, configs, doveconf -n, server logs)")

    peers = (
        f"Dovecot {_dovecot_version()} (fast: reused pop3 processes, {{PLAIN}} passwords; "
        f"classic: a pop3 process per session, {args.dovecot_scheme} passwords; "
        f"{'LF' if args.dovecot_lf else 'CRLF'} maildir)"
        if dovecots
        else "no Dovecot"
    )
    header = (
        f"POP3 benchmark: {', '.join(chosen)}; {peers}; one run, loopback, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{plan.session_s:g} s per session level, {plan.retr_s:g} s per RETR test, "
        f"each in {plan.rounds} interleaved rounds; STLS and POP3S clients keep Nagle on; "
        f"nice {nice}"
    )

    print(render_table(results, plan, header))
    for name, fig in results.items():
        if fig.tls_versions:
            counts = ", ".join(f"{k} {n}" for k, n in sorted(fig.tls_versions.items()))
            print(f"{name}: TLS sessions by version: {counts}")
    for name, fig in results.items():
        for sample in fig.samples:
            print(f"{name}: {sample}")
    if args.json:
        args.json.write_text(json.dumps({k: asdict(v) for k, v in results.items()}, indent=2))
    failed = any(f.errors or f.mismatches for f in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
