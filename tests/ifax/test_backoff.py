"""The poller's schedule after each kind of answer (docs/ifax.md, "Schedule and back-off")."""

from __future__ import annotations

import pytest

from firmware.config.budget import RamBudget
from firmware.config.profile import factory
from firmware.ifax.poller import BACKOFF_MAX_S, IfaxPoller, PollReport
from firmware.store.worker import StoreWorker


def poller() -> IfaxPoller:
    def no_board() -> object:
        raise AssertionError("not used")

    return IfaxPoller(no_board, lambda: factory("DP-3530"), lambda: RamBudget(0), StoreWorker())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "failures", "interval", "wait"),
    [
        (None, 0, 300, 300.0),  # success: the interval
        ("IN-USE", 1, 300, 300.0),
        ("LOGIN-DELAY", 1, 10, 30.0),  # at least 30 s
        ("SYS/TEMP", 1, 60, 60.0),
        ("SYS/TEMP", 3, 60, 240.0),  # doubling
        ("SYS/TEMP", 12, 60, BACKOFF_MAX_S),  # capped
        ("AUTH", 1, 60, BACKOFF_MAX_S),  # never hammer a refused password
        ("SYS/PERM", 1, 60, BACKOFF_MAX_S),
    ],
)
def test_delay(code: str | None, failures: int, interval: int, wait: float) -> None:
    p = poller()
    p.state.failures = failures
    report = PollReport(failed=None if failures == 0 else "x", code=code)
    assert p.delay(report, interval) == wait
