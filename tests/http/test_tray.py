"""The Internet Fax tray and poller over the API: a real `dpfw run --http` polls a real
Dovecot (tests/ifax/dovecot.py) on `POST /api/v1/ifax/poll`; `GET /api/v1/tray` lists what
was printed with the contract's fields (pages, from, subject, status)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.conftest import Lab, start_lab
from tests.ifax.conftest import pdf_page, tiff_g4
from tests.ifax.dovecot import PASSWORD, USER, Dovecot, fax_message
from tests.support import DeviceProcess, dpfw


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot()
    try:
        yield server
    finally:
        server.stop()


def test_poll_and_tray_over_the_api(
    tmp_path: Path, start_device: type[DeviceProcess], dovecot: Dovecot
) -> None:
    dovecot.deliver(fax_message(tiff_g4(1), "image/tiff", "fax one.tif", "a@example.org"))
    dovecot.deliver(fax_message(pdf_page(), "application/pdf", "report.pdf", "b@example.org"))
    image = tmp_path / "demo.img"
    dpfw("image", "demo", str(image))
    settings = {
        "ifax.enabled": "true",
        "ifax.server": "127.0.0.1",
        "ifax.port": str(dovecot.port),
        "ifax.tls": "none",
        "ifax.user": USER,
        "ifax.password": PASSWORD,
        "ifax.poll_interval_s": "0",
    }
    args = [a for key, value in settings.items() for a in ("--set", f"{key}={value}")]
    lab: Lab
    for lab in start_lab(start_device, image, *args):
        assert lab.api.get("/api/v1/tray").json() == []
        polled = lab.api.post("/api/v1/ifax/poll")
        assert polled.status_code == 200, polled.text
        assert polled.json()["received"] == 1 and polled.json()["errors"] == 1
        docs = lab.api.get("/api/v1/tray").json()
        assert [(d["status"], d["pages"], d["from"]) for d in docs] == [
            ("printed", 1, "a@example.org"),
            ("error", 0, "b@example.org"),
        ]
        assert docs[0]["subject"] and "password" not in str(docs)
        one = lab.api.get(f"/api/v1/tray/{docs[0]['number']}")
        assert one.status_code == 200 and one.json()["page_sizes"], one.text
        assert lab.api.get("/api/v1/tray/999").status_code == 404
        assert lab.api.get("/api/v1/tray/x").status_code == 400
        status = lab.api.get("/api/v1/ifax").json()
        assert status["enabled"] is True and status["tray_documents"] == 2
        assert PASSWORD not in lab.api.get("/api/v1/ifax").text
        assert lab.api.delete("/api/v1/tray").json()["removed"] == 2
        assert lab.api.get("/api/v1/tray").json() == []
        assert lab.client(auth=None).get("/api/v1/tray").status_code == 401
        assert lab.device.stop() == 0
