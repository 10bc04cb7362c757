"""The three login methods against the device's own POP3 service (a `dpfw run` demo image:
APOP on, SCRAM-SHA-256 and PLAIN offered), and a wrong password in each."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from firmware.config.budget import RamBudget
from firmware.config.profile import factory
from firmware.ifax.client import Pop3Error, ServerConfig, session
from firmware.ifax.poller import IfaxPoller
from firmware.store.board import Board
from firmware.store.worker import StoreWorker
from tests.support import DeviceProcess, dpfw


@pytest.fixture
def device_a(tmp_path: Path, start_device: type[DeviceProcess]) -> tuple[int, Path]:
    image, cert = tmp_path / "a.img", tmp_path / "a.pem"
    dpfw("image", "demo", str(image))
    port = start_device(image, "--cert-out", str(cert)).wait_booted()
    return port, cert


@pytest.mark.parametrize("auth", ["user", "apop", "sasl"])
def test_each_method_logs_in_and_prints_alices_scan(
    auth: str, device_a: tuple[int, Path], board: Board
) -> None:
    port, cert = device_a
    profile = factory("DP-3530").with_values(
        [
            ("ifax.enabled", "true"),
            ("ifax.server", "localhost"),
            ("ifax.port", str(port)),
            ("ifax.tls", "stls"),
            ("ifax.ca_file", str(cert)),
            ("ifax.user", "alice"),
            ("ifax.password", "alice-lab"),
            ("ifax.auth", auth),
            ("ifax.leave_on_server", "true"),
        ],
        "test",
    )
    poller = IfaxPoller(lambda: board, lambda: profile, lambda: RamBudget(64 << 20), StoreWorker())
    report = trio.run(poller.poll)
    assert report.failed is None
    assert (report.received, report.errors) == (1, 3)  # the 2-page TIFF scan; 3 plain mails


@pytest.mark.parametrize("auth", ["user", "apop", "sasl"])
def test_a_wrong_password_is_refused(auth: str, device_a: tuple[int, Path]) -> None:
    port, cert = device_a
    config = ServerConfig("localhost", port, "stls", "alice", "wrong-pw", auth, 10.0, str(cert))

    async def login() -> None:
        async with session(config):
            pass

    with pytest.raises(Pop3Error) as caught:
        trio.run(login)
    assert caught.value.code == "AUTH", str(caught.value)
