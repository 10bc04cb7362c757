"""Power cuts (SIGKILL of the whole `dpfw fleet up` process) at random moments of the fleet's
start-up: while images are being created (certificate, serial, boxes; `board.img.new` renamed
into place), while devices boot, and while they start listening. After every cut each
`board.img` present is complete and fsck clean and carries its own device's serial number and
host name (one device's image never touched by another), every image that was there before
the attempt is byte for byte what it was (booting writes nothing to an image), and in the end
`fleet up` starts every device and `fleet down` stops them cleanly.

CI makes 8 cuts; DPFW_FLEET_CUTS=N makes N.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from firmware.device.boards import open_board
from firmware.fleet.plan import serial_number
from firmware.ops import storage
from firmware.ops.context import OpsContext
from firmware.ops.status import SERIAL_SETTING
from tests.reliability.fleet_soak import ADMIN, write_manifest
from tests.support import Fleet

CUTS = int(os.environ.get("DPFW_FLEET_CUTS", "8"))
COUNT = 8
NAME = "cut"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_images(directory: Path) -> dict[str, str]:
    """Every complete image: fsck clean, its own serial number and host name. Returns
    name -> sha256 of each image present."""
    found = {}
    for index in range(COUNT):
        name = f"{NAME}-{index:03d}"
        image = directory / "devices" / name / "board.img"
        if not image.exists():
            continue
        with open_board(image, repair=False) as board:
            ctx = OpsContext.offline(board)
            report = storage.fsck(ctx)
            assert report.clean, f"{name}: {report}"
            settings = board.settings()
            assert settings.get(SERIAL_SETTING) == serial_number(NAME, index), name
            assert f'hostname = "{name}.soak.test"' in board.profile_toml, name
            boxes = sorted(board.box_names())
            assert boxes == sorted([f"load{index}", f"scan{index}"]), (name, boxes)
        found[name] = digest(image)
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_power_cuts_during_fleet_start_up_touch_no_other_device(tmp_path: Path) -> None:
    directory = tmp_path / "fleet"
    write_manifest(directory, count=COUNT, name=NAME)
    rng = random.Random(int(os.environ.get("DPFW_SEED", "17")))
    # How long a start with nothing made takes here: cuts fall anywhere in it.
    write_manifest(tmp_path / "probe", count=COUNT, name=NAME)
    started = time.monotonic()
    probe = Fleet(tmp_path / "probe", "--admin-password", ADMIN)
    while not list((tmp_path / "probe").glob("devices/*/board.img*")):
        assert time.monotonic() - started < 60 and probe.popen.poll() is None, probe.output()
        time.sleep(0.005)
    first_image = time.monotonic() - started  # the interpreter and its imports come first
    probe.wait_ready()
    span = time.monotonic() - started - first_image
    probe.kill()
    cuts = dict.fromkeys(
        ["before any new image", "while creating", "every image made, before ready", "after ready"],
        0,
    )
    cuts["left a board.img.new"] = 0
    for cut in range(CUTS):
        # Remove a few images now and then, so later starts create as well as reuse.
        present = sorted(directory.glob("devices/*/board.img"))
        for image in rng.sample(present, k=min(len(present), rng.choice([0, 1, 3]))):
            image.unlink()
        before = check_images(directory)
        fleet = Fleet(directory, "--admin-password", ADMIN)
        time.sleep(first_image * 0.9 + rng.uniform(0.0, span * 1.2))
        fleet.kill()
        out = fleet.output()
        after = check_images(directory)
        # Booting and serving write nothing to an image (no load here), so every image that
        # was there before the start is byte for byte the same, whichever devices had booted.
        for name, sha in before.items():
            assert after.get(name) == sha, f"cut {cut}: {name}'s image changed or vanished"
        made = set(after) - set(before)
        halves = list(directory.glob("devices/*/board.img.new"))
        cuts["left a board.img.new"] += bool(halves)
        if "fleet ready" in out:
            cuts["after ready"] += 1
        elif len(after) == COUNT and not halves:
            cuts["every image made, before ready"] += 1
        elif made or halves:
            cuts["while creating"] += 1
        else:
            cuts["before any new image"] += 1
    print("fleet power cuts:", cuts)
    # And then the fleet starts, whatever the cuts left (stale pid file, control sockets,
    # half-made board.img.new files).
    fleet = Fleet(directory, "--admin-password", ADMIN)
    try:
        fleet.wait_ready()
        assert fleet.down() == 0, fleet.output()
    finally:
        fleet.kill()
    assert fleet.output().count("board image closed cleanly") == COUNT
    assert sorted(check_images(directory)) == [f"{NAME}-{i:03d}" for i in range(COUNT)]
    assert not list(directory.glob("devices/*/board.img.new"))
