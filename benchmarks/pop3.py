"""`tools/bench pop3`: the dpfw POP3 service side by side with a private Dovecot, in one run.

Both servers get the same users, passwords and messages, are started in the same run on loopback
ports, and are driven in turn by the same verifying load generator (benchmarks/loadgen.py).
The table gives both figures and the ratio dpfw/dovecot; ratios, not absolute claims, are what
carry over to another machine. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from benchmarks.pop3_corpus import LARGE_SIZE, SMALL_SIZE, build_corpus
from benchmarks.pop3_dovecot import SCHEMES, start_dovecot
from benchmarks.pop3_dpfw import start_dpfw
from benchmarks.pop3_measure import Figures, Plan, Target, log, measure_all
from benchmarks.pop3_procs import free_port

SERVERS = ("dpfw", "dovecot")


def _ratio(a: float, b: float) -> str:
    if not (b and math.isfinite(a) and math.isfinite(b)):
        return "-"
    return f"{a / b:.2f}x"


def _num(x: float, digits: int = 1) -> str:
    return "-" if not math.isfinite(x) else f"{x:,.{digits}f}"


def render_table(results: dict[str, Figures], plan: Plan, header: str) -> str:
    """The side-by-side table with ratios dpfw/dovecot and the targets."""
    d = results.get("dpfw", Figures())
    v = results.get("dovecot", Figures())
    rows: list[tuple[str, str, str, str, str]] = []

    def row(
        name: str,
        a: float,
        b: float,
        target: str = "",
        judge: Callable[[], str] = str,
        digits: int = 1,
    ) -> None:
        verdict = judge() if target else ""
        rows.append(
            (name, _num(a, digits), _num(b, digits), _ratio(a, b), f"{target} {verdict}".strip())
        )

    nan = math.nan
    for c in plan.levels:
        a, b = d.sessions_per_s.get(c, nan), v.sessions_per_s.get(c, nan)
        target = ">= 2x" if c == 32 else ""
        row(f"sessions/s, {c} client{'s' if c > 1 else ''}", a, b, target, _judge_ge(a, b, 2.0))
    for c in plan.levels:
        a = d.server_cpu_ms_per_session.get(c, nan)
        b = v.server_cpu_ms_per_session.get(c, nan)
        row(f"server CPU ms/session, {c} cl.", a, b)
    for c in plan.retr_conns:
        a, b = d.retr_mb_per_s.get(c, nan), v.retr_mb_per_s.get(c, nan)
        target = ">= 2x" if c == 1 else ""
        row(f"RETR MB/s, 10 MiB msg, {c} conn", a, b, target, _judge_ge(a, b, 2.0))
    a, b = d.idle_rss_per_session / 1024, v.idle_rss_per_session / 1024
    row(
        f"RSS KiB per idle session ({plan.idle})",
        a,
        b,
        "dpfw <= 8 KB",
        lambda: ("met" if a * 1024 <= 8000 else "MISSED") if math.isfinite(a) else "",
    )
    row("PSS KiB per idle session", d.idle_pss_per_session / 1024, v.idle_pss_per_session / 1024)
    ran_d, ran_v = "dpfw" in results, "dovecot" in results
    errs = (d.errors if ran_d else nan, v.errors if ran_v else nan)
    row("errors", *errs, "0", lambda: _zero(*errs), digits=0)
    mism = (d.mismatches if ran_d else nan, v.mismatches if ran_v else nan)
    row("size/content mismatches", *mism, "0", lambda: _zero(*mism), digits=0)
    lg_d = max(d.loadgen_cpu_pct.values(), default=nan)
    lg_v = max(v.loadgen_cpu_pct.values(), default=nan)
    row("loadgen CPU %, busiest test", lg_d, lg_v)
    row(
        "SYNs dropped, listen backlog full",
        sum(d.listen_drops.values()) if d.listen_drops else nan,
        sum(v.listen_drops.values()) if v.listen_drops else nan,
        digits=0,
    )
    row(
        "other processes' CPU %, worst",
        max(d.other_cpu_pct.values(), default=nan),
        max(v.other_cpu_pct.values(), default=nan),
    )

    widths = [max(len(r[i]) for r in [*rows, _HEAD]) for i in range(5)]
    lines = [header, ""]
    for i, r in enumerate([_HEAD, *rows]):
        cells = [r[0].ljust(widths[0])] + [r[k].rjust(widths[k]) for k in (1, 2, 3)]
        lines.append("  ".join([*cells, r[4]]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


_HEAD = ("metric", "dpfw", "dovecot", "dpfw/dovecot", "target")


def _judge_ge(a: float, b: float, factor: float) -> Callable[[], str]:
    def judge() -> str:
        if not (math.isfinite(a) and math.isfinite(b) and b > 0):
            return ""
        return "met" if a >= factor * b else "MISSED"

    return judge


def _zero(*counts: float) -> str:
    """'met' when every server that ran counted zero (NaN: that server did not run)."""
    return "met" if all(c == 0 for c in counts if math.isfinite(c)) else "MISSED"


def _dovecot_version() -> str:
    try:
        out = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tools/bench pop3",
        description="dpfw POP3 vs a private Dovecot on loopback: sessions/s, RETR MB/s, "
        "RSS per idle session, errors.",
    )
    p.add_argument("--quick", action="store_true", help="short run (~1 minute) for a smoke check")
    p.add_argument("--levels", default="1,8,32,128", help="concurrent clients per session test")
    p.add_argument("--session-seconds", type=float, help="duration of each session test")
    p.add_argument("--retr-seconds", type=float, help="duration of each RETR test")
    p.add_argument(
        "--rounds", type=int, help="interleaved rounds per timed test (ABBA order; default 4)"
    )
    p.add_argument("--idle", type=int, help="idle logged-in sessions for the RSS test")
    p.add_argument("--only", choices=SERVERS, help="measure one server only (no ratios)")
    p.add_argument(
        "--dovecot-scheme",
        choices=SCHEMES,
        default=SCHEMES[0],
        help="Dovecot's password scheme: ssha256 (default: one salted hash per login, Dovecot "
        "at its fastest) or scram-sha-256 (dpfw's own credentials: 4096 PBKDF2 rounds per "
        "login on both sides)",
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
    session_s = args.session_seconds or (2.0 if args.quick else 8.0)
    retr_s = args.retr_seconds or (3.0 if args.quick else 8.0)
    rounds = args.rounds or (2 if args.quick else 4)
    boxes = max(idle, 2 * max(levels), 64)
    return Plan(levels, session_s, (1, 4), retr_s, idle, boxes, rounds)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    _raise_fd_limit(plan.idle + 2 * max(plan.levels) + 256)
    nice = _set_priority(args.nice)
    chosen = (args.only,) if args.only else SERVERS
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dpfw-bench-pop3-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"corpus: {plan.boxes} boxes x {SMALL_SIZE} octets + 4 boxes x {LARGE_SIZE} octets")
    corpus = build_corpus(plan.boxes, max(plan.retr_conns))
    max_sessions = plan.idle + 2 * max(plan.levels) + 64
    targets: list[Target] = []
    results: dict[str, Figures] = {}
    try:
        for name in chosen:
            port = free_port()
            t0 = time.monotonic()
            if name == "dpfw":
                server = start_dpfw(workdir, corpus, port, max_sessions)
            else:
                server = start_dovecot(
                    workdir, corpus, port, max_sessions, args.dovecot_scheme, not args.dovecot_lf
                )
            targets.append(Target(name, server, port))
            log(f"{name}: serving on 127.0.0.1:{port} (set up in {time.monotonic() - t0:.1f} s)")
        results = asyncio.run(measure_all(targets, corpus, plan))
    finally:
        for target in targets:
            target.server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir} (images, maildirs, configs, server logs)")

    header = (
        f"POP3 benchmark: dpfw vs Dovecot {_dovecot_version()}, one run, loopback, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; Dovecot: "
        f"{args.dovecot_scheme} passwords, {'LF' if args.dovecot_lf else 'CRLF'} maildir; "
        f"{plan.session_s:g} s per session level, {plan.retr_s:g} s per RETR test, "
        f"each in {plan.rounds} interleaved rounds; nice {nice}"
    )
    print(render_table(results, plan, header))
    for name, fig in results.items():
        for sample in fig.samples:
            print(f"{name}: {sample}")
    if args.json:
        args.json.write_text(json.dumps({k: asdict(v) for k, v in results.items()}, indent=2))
    failed = any(f.errors or f.mismatches for f in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
