"""Scan jobs end to end on a real board: stored whole or not at all, memory always given back."""

from __future__ import annotations

import email
import email.policy
import hashlib
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
import trio

from firmware.config.budget import RamBudget
from firmware.device.boards import saved_profile
from firmware.errors import BoxError, DeviceError, MemoryFullError, QuotaError, StorageFullError
from firmware.scanner.job import JobNumbers, ScanRequest, check_request, run_scan, run_scan_async
from firmware.store.board import Board
from firmware.store.wire import unstuff
from tests.scanner.conftest import BOX, MakeBoard, MiB, lab_profile

WHEN = datetime(2026, 11, 27, 10, 15, tzinfo=UTC)
BIG = RamBudget(128 * MiB)


def stored_message(board: Board, uid: str) -> EmailMessage:
    wire = b"".join(board.read_wire(BOX, uid))
    msg = email.message_from_bytes(unstuff(wire), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def assert_idle(budget: RamBudget) -> None:
    assert budget.used == 0 and budget.holders == 0


@pytest.mark.parametrize(
    ("fmt", "mode", "files"),
    [("tiff", "mono", 1), ("pdf", "gray", 1), ("jpeg", "color", 2)],
)
def test_job_is_stored_as_one_message(board: Board, fmt: str, mode: str, files: int) -> None:
    budget = RamBudget(128 * MiB)
    request = ScanRequest(BOX, pages=2, dpi="200x100", mode=mode, format=fmt)
    result = run_scan(request, board, budget, saved_profile(board), job_number=42, now=WHEN)
    assert_idle(budget)
    (info,) = board.messages(BOX)
    assert (info.uid, info.size) == (result.uid, result.size)
    assert result.pages == 2 and len(result.filenames) == files
    assert result.filename.startswith("scan_20261127_101500_0042")
    msg = stored_message(board, result.uid)
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == list(result.filenames)
    digests = [hashlib.sha256(a.get_content()).hexdigest() for a in attachments]
    assert digests == list(result.digests)
    assert result.bytes_encoded == sum(len(a.get_content()) for a in attachments)


@pytest.mark.parametrize(
    ("change", "request_", "why"),
    [
        ({}, ScanRequest(BOX, 0, "200x100", "mono", "tiff"), "at least 1 page"),
        (
            {"scan__max_pages_per_job": "3"},
            ScanRequest(BOX, 4, "200x100", "mono", "tiff"),
            "at most 3 pages per job",
        ),
        (
            {"scan__resolutions": "200x100,200x200"},
            ScanRequest(BOX, 1, "600", "mono", "tiff"),
            "resolution '600' is not offered",
        ),
        (
            {"scan__color_modes": "mono"},
            ScanRequest(BOX, 1, "300", "gray", "pdf"),
            "colour mode 'gray' is not offered",
        ),
        (
            {"scan__formats": "tiff,pdf"},
            ScanRequest(BOX, 1, "300", "gray", "jpeg"),
            "format 'jpeg' is not offered",
        ),
        ({}, ScanRequest(BOX, 1, "300", "mono", "jpeg"), "jpeg cannot carry mono"),
        ({}, ScanRequest(BOX, 1, "300", "color", "tiff"), "tiff cannot carry color"),
    ],
)
def test_refused_before_it_starts(
    make_board: MakeBoard, change: dict[str, str], request_: ScanRequest, why: str
) -> None:
    board = make_board(**change)
    with pytest.raises(DeviceError, match=why):
        check_request(request_, saved_profile(board))
    budget = RamBudget(1)  # nothing is rendered or held: even a 1-byte budget is untouched
    with pytest.raises(DeviceError, match=why):
        run_scan(request_, board, budget, saved_profile(board), job_number=1, now=WHEN)
    assert_idle(budget)
    assert board.messages(BOX) == []


def test_unknown_box_is_refused_before_rendering(board: Board) -> None:
    budget = RamBudget(1)
    with pytest.raises(BoxError, match="nobody"):
        run_scan(
            ScanRequest("nobody", 1, "200x100", "mono", "tiff"),
            board,
            budget,
            saved_profile(board),
            job_number=1,
            now=WHEN,
        )
    assert_idle(budget)


@pytest.mark.parametrize(("fmt", "mode"), [("tiff", "mono"), ("pdf", "mono"), ("jpeg", "gray")])
def test_memory_full_at_the_exact_boundary(make_board: MakeBoard, fmt: str, mode: str) -> None:
    request = ScanRequest(BOX, pages=2, dpi="200x100", mode=mode, format=fmt)
    probe = run_scan(
        request, make_board(), RamBudget(128 * MiB), lab_profile(), job_number=7, now=WHEN
    )
    need = probe.bytes_encoded
    session = 8192  # a POP3 session holding memory at the same time
    board = make_board()

    fits = RamBudget(need + session)
    held = fits.reserve(session, "POP3 session")
    run_scan(request, board, fits, saved_profile(board), job_number=7, now=WHEN)
    assert fits.used == session and fits.holders == 1  # the job gave back all it held
    held.release()
    assert len(board.messages(BOX)) == 1

    short = RamBudget(need + session - 1)
    held = short.reserve(session, "POP3 session")
    with pytest.raises(MemoryFullError) as failure:
        run_scan(request, board, short, saved_profile(board), job_number=7, now=WHEN)
    message = str(failure.value)
    assert message.startswith("MEMORY FULL: scan job 0007 page 2 of 2 needs ")
    needed = int(message.split(" needs ")[1].split()[0])
    free = int(message.split(" bytes, ")[1].split()[0])
    assert free == needed - 1  # one byte short, and the message says so
    assert short.used == session and short.holders == 1
    held.release()
    assert_idle(short)
    assert len(board.messages(BOX)) == 1  # nothing partial was stored


def test_first_page_too_big_is_memory_full(board: Board) -> None:
    budget = RamBudget(1000)
    with pytest.raises(MemoryFullError, match=r"page 1 of 1 needs \d+ bytes, 1000 free of 1000"):
        run_scan(
            ScanRequest(BOX, 1, "200x100", "mono", "tiff"),
            board,
            budget,
            saved_profile(board),
            job_number=1,
            now=WHEN,
        )
    assert_idle(budget)
    assert board.messages(BOX) == []


def test_quota_full_stores_nothing_and_frees_memory(make_board: MakeBoard) -> None:
    board = make_board(mailbox__quota_mib="1")
    budget = RamBudget(128 * MiB)
    request = ScanRequest(BOX, pages=4, dpi="200x100", mode="gray", format="pdf")  # > 1 MiB
    with pytest.raises(QuotaError, match="over quota"):
        run_scan(request, board, budget, saved_profile(board), job_number=1, now=WHEN)
    assert_idle(budget)
    assert board.messages(BOX) == []


async def test_a_job_over_quota_stops_as_soon_as_its_pages_exceed_it(
    make_board: MakeBoard,
) -> None:
    """Found in a user's trial: a 50-page job into a box with too little quota left drew every
    page (7 s) before the delivery said no. Now the device stops it once the pages' base64
    alone exceeds what the box may take: the refusal names a few pages' bytes, not 30 MB."""
    board = make_board(mailbox__quota_mib="1")
    budget = RamBudget(256 * MiB)
    request = ScanRequest(BOX, pages=50, dpi="300", mode="gray", format="pdf")  # ~20 MB whole
    with pytest.raises(QuotaError, match=r"over quota: 0 bytes stored \+ (\d+) bytes new") as full:
        await run_scan_async(request, board, budget, saved_profile(board), job_number=1)
    new = int(str(full.value).split(" + ")[1].split(" ")[0])
    assert 1 * MiB < new < 4 * MiB  # a page or two past the quota, not the whole document
    assert_idle(budget)
    assert board.messages(BOX) == []


def test_message_count_limit_stores_nothing(make_board: MakeBoard) -> None:
    board = make_board(mailbox__max_messages="1")
    budget = RamBudget(128 * MiB)
    request = ScanRequest(BOX, pages=1, dpi="200x100", mode="mono", format="tiff")
    run_scan(request, board, budget, saved_profile(board), job_number=1, now=WHEN)
    with pytest.raises(QuotaError, match="is full"):
        run_scan(request, board, budget, saved_profile(board), job_number=2, now=WHEN)
    assert_idle(budget)
    assert len(board.messages(BOX)) == 1


def test_flash_full_stores_nothing_and_frees_memory(make_board: MakeBoard) -> None:
    board = make_board(size=1 * MiB)
    budget = RamBudget(128 * MiB)
    before = board.usage()
    request = ScanRequest(BOX, pages=4, dpi="200x100", mode="gray", format="pdf")  # > 1 MiB
    with pytest.raises(StorageFullError, match="nothing was stored"):
        run_scan(request, board, budget, saved_profile(board), job_number=1, now=WHEN)
    assert_idle(budget)
    assert board.messages(BOX) == []
    assert board.usage() == before


async def test_async_job_matches_the_sync_job(make_board: MakeBoard) -> None:
    request = ScanRequest(BOX, pages=2, dpi="200x100", mode="mono", format="pdf")
    sync_board, async_board = make_board(), make_board()
    budget = RamBudget(128 * MiB)
    expected = run_scan(
        request, sync_board, budget, saved_profile(sync_board), job_number=3, now=WHEN
    )
    got = await run_scan_async(
        request, async_board, budget, saved_profile(async_board), job_number=3, now=WHEN
    )
    assert got.digests == expected.digests and got.bytes_encoded == expected.bytes_encoded
    assert_idle(budget)


async def test_concurrent_jobs_compete_for_the_budget(make_board: MakeBoard) -> None:
    """Two jobs that each fit alone but not together: one wins, one is MEMORY FULL."""
    request = ScanRequest(BOX, pages=6, dpi="200x100", mode="mono", format="tiff")
    probe = run_scan(
        request, make_board(), RamBudget(128 * MiB), lab_profile(), job_number=1, now=WHEN
    )
    page = probe.bytes_encoded // request.pages
    board = make_board()
    budget = RamBudget(probe.bytes_encoded + page)  # room for one job and about one more page
    outcomes: list[str] = []

    async def job(number: int) -> None:
        try:
            await run_scan_async(
                request, board, budget, saved_profile(board), job_number=number, now=WHEN
            )
            outcomes.append("stored")
        except MemoryFullError as exc:
            # Failing at all proves the other job held memory at the same time: alone, it fits.
            assert f"MEMORY FULL: scan job {number:04d}" in str(exc)
            outcomes.append("memory full")

    async with trio.open_nursery() as jobs:
        jobs.start_soon(job, 1)
        jobs.start_soon(job, 2)

    assert sorted(outcomes) == ["memory full", "stored"]
    assert len(board.messages(BOX)) == 1
    assert_idle(budget)


def test_job_numbers_wrap_after_9999() -> None:
    numbers = JobNumbers(9998)
    assert [numbers.take() for _ in range(3)] == [9998, 9999, 1]


@pytest.mark.parametrize("fmt", ["tiff", "pdf", "jpeg"])
def test_a_host_io_error_while_encoding_is_one_line_and_stores_nothing(
    board: Board, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the libfiu campaign against a running device: an injected open() failure hit
    Pillow loading an encoder plugin from disk on first use, and the OSError reached the
    console as a traceback. Pillow (not ours) is made to fail as the host would."""
    import errno

    from PIL import Image

    def failing_save(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    budget = RamBudget(128 * MiB)
    mode = "color" if fmt == "jpeg" else "mono" if fmt == "tiff" else "gray"
    request = ScanRequest(BOX, pages=2, dpi="200x100", mode=mode, format=fmt)
    with pytest.raises(DeviceError) as caught:
        run_scan(request, board, budget, saved_profile(board), job_number=7, now=WHEN)
    assert str(caught.value) == ("scan job 0007 failed: Input/output error; nothing was stored")
    assert_idle(budget)
    assert board.messages(BOX) == []
