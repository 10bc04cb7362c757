"""The power-cut campaign (tests/reliability/powercut.py) in CI and for releases.

CI: 30 cuts (about a minute). Release: `DPFW_POWERCUT_KILLS=500 .venv/bin/pytest
tests/reliability/test_powercut.py -m slow` or `tools/powercut --kills 500`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from tests.reliability.harness import Device, demo_image, login
from tests.reliability.powercut import (
    CampaignError,
    Figures,
    Ledger,
    check_offline,
    check_online,
    run_campaign,
)

CI_KILLS = 30
RELEASE_KILLS = int(os.environ.get("DPFW_POWERCUT_KILLS", "0"))


@pytest.mark.slow
def test_thirty_power_cuts_lose_nothing_acknowledged(tmp_path: Path) -> None:
    seed = int(os.environ.get("DPFW_POWERCUT_SEED", "20261128"))
    figures = run_campaign(tmp_path, CI_KILLS, seed)
    print("power-cut figures:", figures.line())
    assert figures.kills == CI_KILLS
    # The campaign did real work between the cuts, not just boots.
    assert figures.scans_acked >= CI_KILLS and figures.quits_committed >= CI_KILLS
    assert figures.deletions_committed > 0 and figures.sessions_dropped > 0


@pytest.mark.slow
@pytest.mark.skipif(not RELEASE_KILLS, reason="release campaign: set DPFW_POWERCUT_KILLS")
@pytest.mark.timeout(60 + 10 * RELEASE_KILLS)  # a cut takes 1.5-4 s on a busy 2-core machine
def test_release_power_cut_campaign(tmp_path: Path) -> None:
    kills = RELEASE_KILLS
    seed = int(os.environ.get("DPFW_POWERCUT_SEED", "1"))
    figures = run_campaign(tmp_path, kills, seed, log=True)
    print("power-cut figures:", figures.line())
    assert figures.kills == kills


def test_the_checks_catch_loss_resurrection_and_half_applied_quits(tmp_path: Path) -> None:
    """The ledger check fails on each kind of broken promise (so a green campaign means it)."""
    image = demo_image(tmp_path / "check.img", size="2MiB")
    device = Device(image)
    try:
        port = device.wait_booted()
        ledger, figures = Ledger(), Figures()
        check_online(port, ledger, figures, first=True)
        alice = sorted(ledger.present["alice"])
        assert len(alice) >= 2

        lost = copy.deepcopy(ledger.present)
        ledger.present["alice"]["0badc0de.999"] = None
        with pytest.raises(CampaignError, match="is lost"):
            check_online(port, ledger, figures)
        ledger.present = lost

        ledger.deleted["alice"].add(alice[0])
        with pytest.raises(CampaignError, match="came back"):
            check_online(port, ledger, figures)
        ledger.deleted["alice"].clear()

        ledger.in_doubt.append(("alice", frozenset([alice[0], "0badc0de.998"])))
        with pytest.raises(CampaignError, match="half-applied"):
            check_online(port, ledger, figures)
        ledger.in_doubt.clear()

        client = login(port, "alice", "alice-lab")
        client.dele(1)
        client.quit()  # a deletion the ledger never heard of
        with pytest.raises(CampaignError, match="is lost"):
            check_online(port, ledger, figures)
    finally:
        device.kill()
    check_offline(image, figures)  # an intact image passes the offline check
