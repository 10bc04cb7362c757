"""`dpfw run --trace FILE` with a real client, and `dpfw trace replay` against real devices."""

from __future__ import annotations

import json
import os
import poplib
import time
from pathlib import Path

from firmware.device.demo import BOXES
from tests.support import DeviceProcess, dpfw


def _records(path: Path, count: int, timeout: float = 20.0) -> list[dict[str, object]]:
    """The file's records once it has at least `count` (the device writes as it serves)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)


def _session(port: int) -> bytes:
    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    pop.user("alice")
    pop.pass_(BOXES["alice"])
    pop.stat()
    _, lines, _ = pop.retr(1)
    pop.quit()
    return b"\r\n".join(lines)


def test_run_trace_writes_redacted_json_lines_and_replay_finds_a_deleted_message(
    demo_image: Path, start_device: type[DeviceProcess], tmp_path: Path
) -> None:
    trace = tmp_path / "trace.jsonl"
    device = start_device(demo_image, "--trace", str(trace))
    port = device.wait_booted()
    _session(port)
    records = _records(trace, 12)
    lines = [(r["direction"], str(r["line"]).split(" ")[0]) for r in records]
    assert lines == [
        ("s->c", "+OK"),
        ("c->s", "USER"),
        ("s->c", "+OK"),
        ("c->s", "PASS"),
        ("s->c", "+OK"),
        ("c->s", "STAT"),
        ("s->c", "+OK"),
        ("c->s", "RETR"),
        ("s->c", "+OK"),
        ("s->c", str(records[9]["line"]).split(" ")[0]),
        ("c->s", "QUIT"),
        ("s->c", "+OK"),
    ]
    assert str(records[9]["line"]).endswith(" octets>")
    assert records[3]["line"] == "PASS ***"
    assert BOXES["alice"] not in trace.read_text()
    assert {r["session"] for r in records} == {records[0]["session"]}

    to = f"127.0.0.1:{port}"
    redacted = dpfw("trace", "replay", str(trace), "--to", to, check=False)
    assert redacted.returncode == 2 or "--password alice=PW" in redacted.stderr, redacted
    agree = dpfw("trace", "replay", str(trace), "--to", to, "--password", f"alice={BOXES['alice']}")
    assert "all 6 replies agree" in agree.stdout, agree.stdout

    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    pop.user("alice")
    pop.pass_(BOXES["alice"])
    pop.dele(1)
    pop.quit()
    differ = dpfw(
        "trace",
        "replay",
        str(trace),
        "--to",
        to,
        "--password",
        f"alice={BOXES['alice']}",
        check=False,
    )
    assert differ.returncode == 1, differ
    # message 2 is now message 1: RETR 1 still succeeds, with another body
    assert differ.stdout.splitlines()[0].startswith(
        "session 1, command 4 'RETR 1': recorded a body of "
    ), differ.stdout
    text = dpfw(
        "trace",
        "replay",
        str(trace),
        "--to",
        to,
        "--password",
        "alice=alice-lab",
        "--text",
        check=False,
    )
    assert text.returncode == 1 and "command 3 'STAT': recorded '+OK " in text.stdout, text
    assert device.stop() == 0


def test_replay_of_a_bad_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"session": 1}\n')
    result = dpfw("trace", "replay", str(bad), "--to", "127.0.0.1:1", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"dpfw: {bad}:1: not a trace record: trace record without 'peer'"
    ]


def test_run_trace_to_a_directory_is_refused_before_boot(demo_image: Path, tmp_path: Path) -> None:
    result = dpfw("run", str(demo_image), "--trace", str(tmp_path), check=False)
    assert result.returncode != 0
    assert result.stderr.startswith("dpfw: --trace ") and "Traceback" not in result.stderr


def test_a_trace_file_nobody_reads_never_stalls_pop3(
    demo_image: Path, start_device: type[DeviceProcess], tmp_path: Path
) -> None:
    """The trace is written off the event loop: a FIFO whose reader never reads (a disk
    that stops answering) fills after ~64 KiB, and POP3 must go on serving regardless. The
    old writer wrote on the loop and hung every session there (NOOP timed out)."""
    fifo = tmp_path / "trace.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # there, but never reads
    try:
        device = start_device(demo_image, "--trace", str(fifo))
        port = device.wait_booted()
        pop = poplib.POP3("127.0.0.1", port, timeout=10)
        pop.user("alice")
        pop.pass_(BOXES["alice"])
        for _ in range(1500):  # 3000 records of ~100 bytes: far over a pipe's 64 KiB
            assert pop.noop().startswith(b"+OK")
        assert pop.stat()[0] > 0
        pop.quit()
    finally:
        os.close(reader)  # the writer now gets EPIPE: logged once, the device runs on
    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    pop.user("alice")
    pop.pass_(BOXES["alice"])
    pop.quit()
    assert device.stop() == 0, device.output()
    assert "--trace:" in device.output() and "Traceback" not in device.output()
