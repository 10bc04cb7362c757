"""The scan engine: a running device's job is drawn and encoded in a child process per job.

Real child processes throughout: the real engine (`python -m firmware.scanner.engine`) and,
through DPFW_SCAN_ENGINE, real engines that misbehave (tests/scanner/engines.py). Every failure
is one line and stores nothing; no engine outlives its job (checked in /proc, zombies too).
"""

from __future__ import annotations

import errno
import os
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import pytest
import trio

from firmware.config.budget import RamBudget
from firmware.device.boards import saved_profile
from firmware.errors import DeviceError, MemoryFullError
from firmware.scanner.engine import (
    EngineFailed,
    EngineOutput,
    EngineProtocolError,
    MessageDone,
    PageDone,
    decode_request,
    encode_request,
    record,
)
from firmware.scanner.job import ENGINE_ENV, ScanRequest, run_scan, run_scan_async
from firmware.scanner.pages import JobSpec
from firmware.store.board import Board
from tests.scanner.conftest import BOX, ENGINES, MakeBoard, MiB, children_of

WHEN = datetime(2026, 11, 27, 10, 15, tzinfo=UTC)
DIGEST = "ab" * 32
ZERO_DIVISION = "ZeroDivisionError: integer division or modulo by zero"


def children() -> set[int]:
    return set(children_of(os.getpid()))


@pytest.fixture
def no_leftover_engine() -> Iterator[None]:
    """Fails the test if a child process it started is still there (running or a zombie)."""
    before = children()
    yield
    assert children() - before == set(), "a scan engine outlived its job"


def misbehaving(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv(ENGINE_ENV, f"{sys.executable} {ENGINES} {mode}")


def stored_wire(board: Board) -> bytes:
    (info,) = board.messages(BOX)
    return b"".join(board.read_wire(BOX, info.uid))


def unique_parts_masked(wire: bytes) -> bytes:
    """Two parts of a message are unique per message, by the `email` package's design: the
    Message-ID (time, pid, random: RFC 5322 §3.6.4) and the MIME boundary (random: RFC 2046
    §5.1.1); two in-process runs of the same job differ there too."""
    wire, ids = re.subn(rb"\r\nMessage-ID: <[^>\r\n]+>\r\n", b"\r\nMessage-ID: <>\r\n", wire)
    boundaries = set(re.findall(rb'boundary="(=+\d+==)"', wire))
    assert ids == 1 and len(boundaries) == 1
    return wire.replace(boundaries.pop(), b"BOUNDARY")


@pytest.mark.parametrize(
    ("fmt", "mode", "pages", "when"),
    [
        ("tiff", "mono", 3, WHEN),
        ("pdf", "gray", 2, WHEN),
        ("jpeg", "color", 2, WHEN),
        # A zone with a name: the pages print it (%Z), so it must reach the engine as it is.
        ("pdf", "mono", 1, datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=1), "CET"))),
    ],
)
async def test_the_engine_makes_the_same_message_as_the_in_process_job(
    make_board: MakeBoard, fmt: str, mode: str, pages: int, when: datetime
) -> None:
    request = ScanRequest(BOX, pages=pages, dpi="200x100", mode=mode, format=fmt)
    here, engine = make_board(), make_board()
    budget = RamBudget(128 * MiB)
    expected = run_scan(request, here, budget, saved_profile(here), job_number=42, now=when)
    got = await run_scan_async(
        request, engine, budget, saved_profile(engine), job_number=42, now=when
    )
    assert (got.digests, got.filenames) == (expected.digests, expected.filenames)
    assert got.bytes_encoded == expected.bytes_encoded  # sizes differ with the Message-ID
    assert unique_parts_masked(stored_wire(engine)) == unique_parts_masked(stored_wire(here))
    assert budget.used == 0 and budget.holders == 0


async def test_the_device_does_not_draw_pages_itself(
    board: Board, no_leftover_engine: None
) -> None:
    """The cause of issue 11's NOOP latency: Pillow drawing text on a worker thread of the
    device took the GIL from the event loop. Now this process spends next to no CPU on a job
    (the old code spent all of it here, and none in a child)."""
    request = ScanRequest(BOX, pages=6, dpi="200x200", mode="mono", format="tiff")
    before_self = resource.getrusage(resource.RUSAGE_SELF)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    await run_scan_async(
        request, board, RamBudget(128 * MiB), saved_profile(board), job_number=1, now=WHEN
    )
    after_self = resource.getrusage(resource.RUSAGE_SELF)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)

    def cpu(a: resource.struct_rusage, b: resource.struct_rusage) -> float:
        return (b.ru_utime - a.ru_utime) + (b.ru_stime - a.ru_stime)

    here, engine = cpu(before_self, after_self), cpu(before_children, after_children)
    assert engine > 0.1, f"the engine used {engine:.3f} s of CPU"
    assert here < 0.25 * engine, f"this process used {here:.3f} s, the engine {engine:.3f} s"


async def test_memory_full_kills_the_engine_and_stores_nothing(
    board: Board, no_leftover_engine: None
) -> None:
    request = ScanRequest(BOX, pages=5, dpi="200x100", mode="mono", format="tiff")
    budget = RamBudget(60_000)  # about one page
    with pytest.raises(MemoryFullError, match=r"^MEMORY FULL: scan job 0007 page \d of 5"):
        await run_scan_async(request, board, budget, saved_profile(board), job_number=7, now=WHEN)
    assert budget.used == 0 and budget.holders == 0
    assert board.messages(BOX) == []


async def test_no_engine_exists_between_jobs(board: Board) -> None:
    before = children()
    request = ScanRequest(BOX, pages=1, dpi="200x100", mode="mono", format="tiff")
    for number in (1, 2):
        await run_scan_async(
            request, board, RamBudget(128 * MiB), saved_profile(board), job_number=number
        )
        assert children() == before
    assert len(board.messages(BOX)) == 2


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("die", "the scan engine was killed by SIGKILL"),
        ("crash", f"the scan engine exited with status 1 ({ZERO_DIVISION})"),
        ("garbage", "the scan engine wrote garbage: not a record: b'hello from a confused engine'"),
        ("truncated", "the scan engine stopped writing after page 1 of 2"),
        ("half-message", "the scan engine stopped writing inside the message (2500 of 5000 bytes)"),
        ("oserror", "Input/output error"),
    ],
)
async def test_an_engine_that_fails_is_one_line_and_stores_nothing(
    board: Board, monkeypatch: pytest.MonkeyPatch, no_leftover_engine: None, mode: str, why: str
) -> None:
    misbehaving(monkeypatch, mode)
    budget = RamBudget(128 * MiB)
    request = ScanRequest(BOX, pages=2, dpi="200x100", mode="mono", format="tiff")
    with trio.fail_after(30):  # garbage: the engine would sleep a minute; it is not waited for
        with pytest.raises(DeviceError) as caught:
            await run_scan_async(
                request, board, budget, saved_profile(board), job_number=7, now=WHEN
            )
    assert str(caught.value) == f"scan job 0007 failed: {why}; nothing was stored"
    assert budget.used == 0 and budget.holders == 0
    assert board.messages(BOX) == []


@pytest.mark.parametrize(
    ("command", "why"),
    [
        (
            "/nonexistent/python -m firmware.scanner.engine",
            "/nonexistent/python: No such file or directory",
        ),
        (str(ENGINES), f"{ENGINES}: Permission denied"),  # not executable
        ("'unbalanced", "DPFW_SCAN_ENGINE is not a command: No closing quotation"),
    ],
)
async def test_an_engine_that_cannot_start_is_one_line(
    board: Board, monkeypatch: pytest.MonkeyPatch, command: str, why: str
) -> None:
    monkeypatch.setenv(ENGINE_ENV, command)
    budget = RamBudget(128 * MiB)
    request = ScanRequest(BOX, pages=1, dpi="200x100", mode="mono", format="tiff")
    with pytest.raises(DeviceError) as caught:
        await run_scan_async(request, board, budget, saved_profile(board), job_number=3)
    assert str(caught.value) == (
        f"scan job 0003 failed: the scan engine could not start: {why}; nothing was stored"
    )
    assert budget.used == 0 and board.messages(BOX) == []


async def test_no_interpreter_to_start_the_engine_is_one_line(
    board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    monkeypatch.setattr(sys, "executable", "")  # embedded interpreters may not know their own
    request = ScanRequest(BOX, pages=1, dpi="200x100", mode="mono", format="tiff")
    with pytest.raises(DeviceError, match=r"could not start: no Python interpreter to run it"):
        await run_scan_async(
            request, board, RamBudget(128 * MiB), saved_profile(board), job_number=3
        )
    assert board.messages(BOX) == []


async def test_out_of_file_descriptors_is_one_line(board: Board) -> None:
    """EMFILE: every descriptor below the limit is taken when the job starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    taken: list[int] = []
    request = ScanRequest(BOX, pages=1, dpi="200x100", mode="mono", format="tiff")
    profile = saved_profile(board)
    top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))
    try:
        while True:
            try:
                taken.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        with pytest.raises(DeviceError) as caught:
            await run_scan_async(request, board, RamBudget(128 * MiB), profile, job_number=4)
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert str(caught.value) == (
        "scan job 0004 failed: the scan engine could not start: Too many open files; "
        "nothing was stored"
    )
    assert board.messages(BOX) == []


async def test_a_cancelled_job_kills_and_reaps_its_engine(
    board: Board, monkeypatch: pytest.MonkeyPatch, no_leftover_engine: None
) -> None:
    """Device shutdown, a power cut and Ctrl-C all cancel the job's task: the engine (stuck
    here, after its first page) is killed and reaped, nothing is stored, nothing is held."""
    misbehaving(monkeypatch, "hang")
    budget = RamBudget(128 * MiB)
    request = ScanRequest(BOX, pages=2, dpi="200x100", mode="mono", format="tiff")
    before = children()
    async with trio.open_nursery() as nursery:
        job = partial(run_scan_async, request, board, budget, saved_profile(board), job_number=5)
        nursery.start_soon(job)
        with trio.fail_after(30):
            while budget.used == 0:  # the engine reported its first page: it is running
                await trio.sleep(0.01)
        (engine,) = children() - before
        nursery.cancel_scope.cancel()
    assert not Path(f"/proc/{engine}").exists()  # reaped: not even a zombie
    assert budget.used == 0 and budget.holders == 0
    assert board.messages(BOX) == []


def test_the_engine_imports_no_trio_construct_store_or_profile(tmp_path: Path) -> None:
    """The engine's start-up is paid per job: it imports Pillow, `email` and the scanner's
    own modules, nothing of the device (`python -X importtime` lists every module)."""
    spec = JobSpec(ScanRequest(BOX, 1, "200x100", "mono", "tiff"), "DP-3530", "dp.lan", 1, WHEN)
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "firmware.scanner.engine"],
        input=encode_request(spec) + b"next\n",
        capture_output=True,
        check=True,
        timeout=60,
    )
    modules = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.decode().splitlines()}
    assert "PIL.TiffImagePlugin" in modules and "email.generator" in modules
    for unwanted in ("trio", "construct", "firmware.store", "firmware.config", "firmware.flash"):
        assert not any(m == unwanted or m.startswith(unwanted + ".") for m in modules), unwanted
    header, _, body = run.stdout.partition(b"\n")
    assert header.startswith(b'{"page":1,')
    _, _, message = body.partition(b"\n")
    assert message.startswith(b"From: DP-3530 Scanner <scanner@dp.lan>\r\n")


def test_the_request_travels_whole() -> None:
    zone = timezone(timedelta(hours=-5), "EST")
    spec = JobSpec(
        ScanRequest("b\u00f6x", 3, "200x100", "gray", "pdf"),
        "DP-3530",
        "dp.lan",
        9999,
        datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=zone),
    )
    back = decode_request(encode_request(spec))
    assert back == spec and back.timestamp.tzname() == "EST"


def two_pages() -> bytes:
    return record({"page": 1, "size": 100}) + record({"page": 2, "size": 100})


def message_record(
    length: int, names: list[str] | None = None, digests: list[str] | None = None
) -> bytes:
    names = ["a.tif"] if names is None else names
    digests = [DIGEST] if digests is None else digests
    return record({"message": length, "names": names, "digests": digests})


def feed_all(output: EngineOutput, data: bytes, step: int) -> list[object]:
    events: list[object] = []
    for i in range(0, len(data), step):
        events += output.feed(data[i : i + step])
    return events


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_engine_output_read_in_any_pieces(step: int) -> None:
    body = b"From: x\r\n\r\n" + b"y" * 3000
    data = (
        record({"page": 1, "size": 1500})
        + record({"page": 2, "size": 1600})
        + record({"message": len(body), "names": ["a.tif"], "digests": [DIGEST]})
        + body
    )
    output = EngineOutput(2)
    events = feed_all(output, data, step)
    assert output.feed(b"") == []  # EOF after a whole message
    assert events == [
        PageDone(1, 1500),
        PageDone(2, 1600),
        MessageDone(bytearray(body), ("a.tif",), (DIGEST,)),
    ]


def test_engine_output_failure_record() -> None:
    output = EngineOutput(3)
    data = record({"page": 1, "size": 10}) + record({"failed": "Input/output error"})
    assert output.feed(data) == [PageDone(1, 10), EngineFailed("Input/output error")]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x00\x01garbage\n", r"wrote garbage: not a record: b'\\x00\\x01garbage'"),
        (b"[1, 2]\n", "wrote garbage: not a record"),
        (record({"page": 2, "size": 10}), "page 2 where page 1 of 2 was due"),
        (two_pages() + record({"page": 3, "size": 1}), "page 3 of a 2-page job, where the mes"),
        (record({"page": 1, "size": -1}), "page 1 has size -1"),
        (record({"page": 1, "size": True}), "page 1 has size True"),
        (record({"pages": 1}), "an unknown record"),
        (record({"failed": ""}), "a bad failure record"),
        (record({"message": 10, "names": ["a"], "digests": [DIGEST]}), "after page 0 of 2"),
        (b"x" * (1024 * 1024 + 1), "no record in 1048577 bytes"),
    ],
)
def test_engine_output_refuses_garbage(data: bytes, why: str) -> None:
    with pytest.raises(EngineProtocolError, match=why) as caught:
        EngineOutput(2).feed(data)
    assert not caught.value.ended


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (two_pages() + message_record(10**9), "implausible message of 1000000000 bytes"),
        (two_pages() + message_record(10, names=[], digests=[]), "a bad message record"),
        (two_pages() + message_record(10, digests=["zz"]), "a bad message record"),
        (two_pages() + message_record(2) + b"abc", "garbage after its last record: b'c'"),
    ],
)
def test_engine_output_refuses_a_bad_message(data: bytes, why: str) -> None:
    with pytest.raises(EngineProtocolError, match=why):
        EngineOutput(2).feed(data)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "^stopped writing before page 1 of 2$"),
        (b'{"page": 1', r"stopped writing before page 1 of 2 \(in the middle of a record\)"),
        (record({"page": 1, "size": 1}), "stopped writing after page 1 of 2"),
        (two_pages(), "stopped writing after page 2 of 2, before the message"),
    ],
)
def test_engine_output_that_ends_early(data: bytes, why: str) -> None:
    output = EngineOutput(2)
    if data:
        output.feed(data)
    with pytest.raises(EngineProtocolError, match=why) as caught:
        output.feed(b"")
    assert caught.value.ended
