"""`tools/bench pop3`'s POP3S (implicit TLS) path: real servers, real sockets, short runs.

A whole `tools/bench pop3` run against `dpfw run` and the ceiling, each with its POP3S
listener, checks that every STLS and POP3S session was verified and that the new rows are in
the table; a session whose expected message differs from the served one checks that the
POP3S client really compares what it retrieves; the table's verdicts are checked on figures
given by hand. Dovecot's TLS twin with its pop3s listener runs when root and dovecot-pop3d
are there (as in .ci/run).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import loadgen
from benchmarks.pop3 import _certificate, _client_context, _session_ratio, main, render_table
from benchmarks.pop3_ceiling import start_ceiling
from benchmarks.pop3_corpus import Account, Corpus, build_corpus
from benchmarks.pop3_dovecot import start_dovecot, write_maildirs
from benchmarks.pop3_measure import Figures, Plan
from benchmarks.pop3_procs import ServerProcess, free_port

POP3S_ROWS = (
    "POP3S sessions/s, 1 client",
    "POP3S sessions/s, 2 clients",
    "POP3S server CPU ms/session, 1 cl.",
    "POP3S server CPU ms/session, 2 cl.",
    "full session p50 ms, STLS, 1 cl.",
    "full session p50 ms, POP3S, 1 cl.",
    "full session p50, STLS / POP3S",
)


def test_a_short_run_verifies_every_pop3s_session_on_dpfw_and_the_ceiling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = tmp_path / "figures.json"
    status = main(
        [
            "--only=dpfw,ceiling",
            "--levels=1",
            "--stls-levels=1",
            "--pop3s-levels=1,2",
            "--fetch-levels=",
            "--idle=2",
            "--session-seconds=0.6",
            "--retr-seconds=0.2",
            "--rounds=1",
            "--nice=0",
            f"--json={figures}",
        ]
    )
    table = capsys.readouterr().out
    assert status == 0, table
    lines = {line.split("  ")[0]: line for line in table.splitlines()}
    for row in POP3S_ROWS:
        assert row in lines, f"no row {row!r} in\n{table}"
    assert "STLS and POP3S clients keep Nagle on" in table
    results = json.loads(figures.read_text())
    assert set(results) == {"dpfw", "ceiling"}
    for name, fig in results.items():
        assert fig["errors"] == 0 and fig["mismatches"] == 0, (name, fig["samples"])
        for level in ("1", "2"):
            assert fig["pop3s_per_s"][level] > 0, (name, level)
            assert fig["pop3s_cpu_ms_per_session"][level] > 0, (name, level)
        assert fig["stls_per_s"]["1"] > 0, name
        for key in ("stls_session_p50_ms", "pop3s_session_p50_ms"):
            assert 0 < fig[key]["1"] < 1000, (name, key, fig[key])
        # Same TLS version for both ways in (the client offers 1.3, every server takes it).
        assert set(fig["tls_versions"]) == {"STLS TLSv1.3", "POP3S TLSv1.3"}, fig["tls_versions"]
        assert f"{name}: TLS sessions by version: POP3S TLSv1.3 " in table
        # Not the STLS figures under another name: measured on their own sessions.
        assert fig["pop3s_per_s"]["1"] != fig["stls_per_s"]["1"], name


@pytest.fixture
def ceiling(tmp_path: Path) -> Iterator[tuple[Corpus, int, int]]:
    """The ceiling with STLS and a POP3S listener: (corpus, plain port, POP3S port)."""
    corpus = build_corpus(4, 1)
    _, _, cert, key = _certificate(tmp_path)
    port, pop3s = free_port(), free_port()
    server = start_ceiling(tmp_path, corpus, port, (cert, key), pop3s)
    try:
        yield corpus, port, pop3s
    finally:
        server.stop()


def test_a_pop3s_session_compares_the_retrieved_message(ceiling: tuple[Corpus, int, int]) -> None:
    corpus, _, pop3s = ceiling
    good = corpus.session_accounts[0]
    octets = asyncio.run(_pop3s_session(pop3s, good, {}))
    assert octets == len(good.message)
    # The same box, but the client expects one octet changed: the served body must not pass.
    changed = good.message[:-3] + bytes([good.message[-3] ^ 1]) + good.message[-2:]
    wrong = Account(good.name, good.password, changed)
    with pytest.raises(loadgen.Mismatch, match="body differs"):
        asyncio.run(_pop3s_session(pop3s, wrong, {}))


def test_the_pop3s_port_speaks_tls_before_the_greeting(ceiling: tuple[Corpus, int, int]) -> None:
    corpus, port, pop3s = ceiling
    account = corpus.session_accounts[1]
    # Implicit TLS on the plain port: the server greets in plain text, the handshake fails.
    with pytest.raises((loadgen.ProtocolFailure, OSError)):
        asyncio.run(_pop3s_session(port, account, {}))
    # A plain client on the POP3S port: the server waits for a ClientHello, no greeting.
    with pytest.raises(TimeoutError):
        asyncio.run(_plain_greeting(pop3s))


async def _pop3s_session(port: int, account: Account, seen: dict[str, list[bytes]]) -> int:
    async with asyncio.timeout(20):
        times: list[float] = []
        octets = await loadgen.full_session(
            "127.0.0.1", port, account, seen, pop3s=_client_context(), session_s=times
        )
        assert len(times) == 1 and times[0] > 0
        return octets


async def _plain_greeting(port: int) -> None:
    async with asyncio.timeout(0.5):
        await loadgen.Pop3Client.connect("127.0.0.1", port)


def test_the_targets_are_judged_against_dovecot_fast() -> None:
    plan = Plan((1,), 1.0, (1,), 1.0, 1, 1, stls_levels=(1, 32), pop3s_levels=(1, 32))
    dpfw = Figures(
        stls_per_s={1: 300.0, 32: 140.0},
        pop3s_per_s={1: 320.0, 32: 160.0},
        stls_session_p50_ms={1: 4.0},
        pop3s_session_p50_ms={1: 2.0},
    )
    fast = Figures(
        stls_per_s={1: 100.0, 32: 100.0},
        pop3s_per_s={1: 100.0, 32: 100.0},
        stls_session_p50_ms={1: 3.0},
        pop3s_session_p50_ms={1: 3.0},
    )
    table = render_table({"dpfw": dpfw, "dovecot-fast": fast}, plan, "header")
    rows = {line.split("  ")[0]: line for line in table.splitlines()}
    assert rows["STLS sessions/s, 32 clients"].endswith(">= 1.5x fast MISSED")  # 1.4x
    assert rows["POP3S sessions/s, 32 clients"].endswith(">= 1.5x fast met")  # 1.6x
    assert rows["POP3S sessions/s, 1 client"].endswith(" 3.20x             -             -")
    ratio = rows["full session p50, STLS / POP3S"]
    assert ratio.endswith("dpfw <= 1.5 MISSED")  # 4 / 2
    # dpfw 2.00, fast 1.00, classic and ceiling did not run, and no ratio of two ratios.
    assert ratio.split()[6:13] == ["2.00", "1.00", "-", "-", "-", "-", "-"]
    dpfw.stls_session_p50_ms[1] = 2.9
    table = render_table({"dpfw": dpfw, "dovecot-fast": fast}, plan, "header")
    assert "full session p50, STLS / POP3S" in table and "dpfw <= 1.5 met" in table  # 1.45
    # A server without a POP3S figure has no ratio (NaN, shown as "-"), not a division error.
    assert math.isnan(_session_ratio(Figures(stls_session_p50_ms={1: 3.0})))


@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("dovecot") or Path("/usr/sbin/dovecot").exists()),
    reason="needs root and dovecot-pop3d (installed by .ci/run)",
)
def test_dovecot_fasts_tls_twin_serves_pop3s_with_the_runs_certificate() -> None:
    # Not under pytest's tmp_path: its parents are 0700 and Dovecot's users must traverse.
    work = Path(tempfile.mkdtemp(prefix="dpfw-pop3sbench-"))
    server: ServerProcess | None = None
    try:
        corpus = build_corpus(4, 1)
        home = work / "home"
        home.mkdir(parents=True)
        write_maildirs(home, corpus, crlf=True)
        _, _, cert, key = _certificate(work)
        port, pop3s = free_port(), free_port()
        server, conf = start_dovecot(
            work,
            corpus,
            home,
            port,
            32,
            "dovecot-fast",
            name="dovecot-fast-tls",
            tls=(cert, key),
            pop3s_port=pop3s,
        )
        assert f"port = {pop3s}" in conf
        seen: dict[str, list[bytes]] = {}
        result = asyncio.run(
            loadgen.run_sessions(
                "127.0.0.1",
                pop3s,
                corpus.session_accounts,
                2,
                0.3,
                seen,
                pop3s=_client_context(),
            )
        )
        assert result.tally.errors == 0 and result.tally.mismatches == 0, result.tally.samples
        assert result.tally.done > 0 and len(result.tally.session_s) == result.tally.done
        assert result.tally.tls_versions == {"TLSv1.3": result.tally.done}
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
