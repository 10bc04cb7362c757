"""Real board images for scanner tests: small, sparse, one box per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware.config.profile import Profile, factory
from firmware.device.boards import create_board
from firmware.store.board import Board

MiB = 1024 * 1024
ENGINES = Path(__file__).with_name("engines.py")  # scan engines that misbehave
BOX, BOX_PASSWORD = "alice", "alice-scan-pw"
MakeBoard = Callable[..., Board]


def lab_profile(**settings: str) -> Profile:
    """DP-3530 factory profile with USER/PASS allowed in clear (loopback tests) and overrides."""
    profile = factory("DP-3530").with_value("pop3.plaintext_auth", "always")
    for key, value in settings.items():
        profile = profile.with_value(key.replace("__", "."), value)
    return profile


@pytest.fixture
def make_board(tmp_path: Path) -> Iterator[MakeBoard]:
    """`make_board(size=..., **profile_settings)`: a new image with box alice; closed after."""
    opened: list[Board] = []

    def make(size: int = 8 * MiB, **settings: str) -> Board:
        board = create_board(
            tmp_path / f"board{len(opened)}.img", lab_profile(**settings), "admin-pw", size=size
        )
        opened.append(board)
        board.add_box(BOX, BOX_PASSWORD)
        return board

    yield make
    for board in opened:
        board.close()


@pytest.fixture
def board(make_board: MakeBoard) -> Board:
    return make_board()


def children_of(pid: int) -> dict[int, str]:
    """The child processes of `pid` now and their states (R, S, Z, ...: zombies too), from
    /proc: what outlives a job is seen here, whatever our own bookkeeping says."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid:
            found[int(entry.name)] = state
    return found
