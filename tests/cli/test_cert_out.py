"""`dpfw run --cert-out FILE`: the certificate in service at each boot, never a stale one."""

from __future__ import annotations

from pathlib import Path

from firmware.device.boards import open_board
from firmware.security import tls
from tests.support import DeviceProcess, create_image


def run_once(image: Path, cert_out: Path, start: type[DeviceProcess]) -> DeviceProcess:
    device = start(image, "--cert-out", str(cert_out))
    device.wait_booted()
    assert device.stop() == 0, device.output()
    return device


def test_cert_out_is_the_stored_certificate_then_removed_without_one(
    tmp_path: Path, start_device: type[DeviceProcess]
) -> None:
    image = create_image(tmp_path / "board.img")
    cert_out = tmp_path / "cert.pem"
    device = run_once(image, cert_out, start_device)
    with open_board(image) as board:
        stored = board.settings()[tls.SETTING_CERT]
        assert cert_out.read_text() == stored.rstrip("\n") + "\n"
        assert "PRIVATE KEY" not in cert_out.read_text()
        board.set_settings({tls.SETTING_CERT: None, tls.SETTING_KEY: None})
    assert f"dpfw: TLS certificate (PEM, for a client's CA file): {cert_out}" in device.lines
    device = run_once(image, cert_out, start_device)
    assert not cert_out.exists()  # this boot serves no TLS: no file naming an unused cert
    assert not any("TLS certificate (PEM" in line for line in device.lines)
