"""The device's log ring (firmware.device.device.LogRing): lines are formatted when read.

A busy device logs a line per login; the console reads a few now and then. The ring keeps the
LogRecord of a line whose arguments cannot change and formats it on reading, and formats at
once anything that could read differently later (mutable arguments, exceptions).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from firmware.device.device import LogRing

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class CountingFormatter(logging.Formatter):
    """The ring's own format, counting how many lines were formatted."""

    def __init__(self) -> None:
        super().__init__(FORMAT)
        self.calls = 0

    def format(self, record: logging.LogRecord) -> str:
        self.calls += 1
        return super().format(record)


@pytest.fixture
def ring() -> Iterator[tuple[logging.Logger, LogRing]]:
    logger = logging.getLogger("dpfw.test-log-ring")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = LogRing(size=50)
    logger.addHandler(handler)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_lines_are_formatted_only_when_read_and_only_those_read(
    ring: tuple[logging.Logger, LogRing],
) -> None:
    logger, handler = ring
    counting = CountingFormatter()
    handler.setFormatter(counting)
    for n in range(200):
        logger.info("POP3 session %d (%s) ended: %s", n, "127.0.0.1:4000", "QUIT")
    assert counting.calls == 0
    assert len(handler.lines) == 50 and handler.lines.maxlen == 50
    tail = handler.lines[-3:]
    assert counting.calls == 3
    assert [line.split(": ", 1)[1] for line in tail] == [
        f"POP3 session {n} (127.0.0.1:4000) ended: QUIT" for n in (197, 198, 199)
    ]


def test_a_read_line_is_what_eager_formatting_gives(ring: tuple[logging.Logger, LogRing]) -> None:
    logger, handler = ring
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logger.addHandler(keep)
    try:
        logger.warning(
            "dpfw pop3 event=%s rip=%s n=%d x=%.2f b=%r none=%s", "a", "b", 3, 1.5, b"\x00", None
        )
        logger.info("no arguments: 100%")
    finally:
        logger.removeHandler(keep)
    eager = logging.Formatter(FORMAT)
    assert list(handler.lines) == [eager.format(r) for r in records]
    assert handler.lines[0] == eager.format(records[0])


def test_mutable_arguments_are_formatted_at_once(ring: tuple[logging.Logger, LogRing]) -> None:
    logger, handler = ring
    boxes = ["alice"]
    logger.info("boxes now %s", boxes)
    logger.info("settings %(k)s", {"k": boxes})
    boxes.append("bob")
    first, second = handler.lines
    assert first.endswith("boxes now ['alice']")
    assert second.endswith("settings ['alice']")


def test_an_exception_is_formatted_at_once_and_its_frames_not_kept(
    ring: tuple[logging.Logger, LogRing],
) -> None:
    logger, handler = ring
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("store worker failed")
    (line,) = handler.lines._items
    assert isinstance(line, str)
    assert "store worker failed" in line and "ValueError: boom" in line


def test_text_lines_and_records_keep_their_order_and_the_ring_its_size(
    ring: tuple[logging.Logger, LogRing],
) -> None:
    logger, handler = ring
    for n in range(60):
        if n % 2:
            handler.lines.append(f"2026-01-01 00:00:00 INFO dpfw.http: line {n}")
        else:
            logger.info("line %d", n)
    lines = list(handler.lines)
    assert len(lines) == 50
    assert [int(line.rsplit(" ", 1)[1]) for line in lines] == list(range(10, 60))
    handler.lines.clear()
    assert list(handler.lines) == [] and handler.lines[-20:] == []


def test_reading_while_threads_log_never_fails(ring: tuple[logging.Logger, LogRing]) -> None:
    """The store worker's threads log while the console reads on the event loop's thread."""
    logger, handler = ring
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            logger.info("from a thread %d", n)
            n += 1

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            assert len(list(handler.lines)) <= 50
            assert len(handler.lines[-20:]) <= 20
    finally:
        stop.set()
        for t in threads:
            t.join()
