"""Device to device: device A's scan box is device B's Internet Fax server.

Two real `dpfw run` processes. A (the demo image) serves POP3 with STLS; B polls A's box
`bob` over STLS, verifying A's certificate (`--cert-out`), from its serial console
(`ifax poll`), and the tray is read back with `dpfw ifax tray list IMG --json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.console.test_device_console import Terminal
from tests.support import DeviceProcess, dpfw

DEMO_BOB = ("bob", "bob-lab")


def test_a_scan_on_a_appears_in_bs_tray(tmp_path: Path, start_device: type[DeviceProcess]) -> None:
    a_img, b_img, cert = tmp_path / "a.img", tmp_path / "b.img", tmp_path / "a-cert.pem"
    dpfw("image", "demo", str(a_img))
    dpfw("image", "demo", str(b_img))
    # bob's demo box: 3 mail messages and a 1-page PDF scan; now a 3-page fax-fine TIFF scan
    dpfw("scan", str(a_img), "bob", "--pages", "3", "--dpi", "200x200", "--format", "tiff")
    a = start_device(a_img, "--cert-out", str(cert))
    a_port = a.wait_booted()
    user, password = DEMO_BOB
    b = start_device(
        b_img,
        "--console", "pty",
        "--set", "ifax.enabled=true",
        "--set", "ifax.server=localhost",
        "--set", f"ifax.port={a_port}",
        "--set", "ifax.tls=stls",
        "--set", f"ifax.ca_file={cert}",
        "--set", f"ifax.user={user}",
        "--set", f"ifax.password={password}",
        "--set", "ifax.poll_interval_s=0",
    )  # fmt: skip
    b.wait_booted()
    assert b.console_path is not None, b.output()
    term = Terminal(b.console_path)
    try:
        term.login()
        out = term.run("ifax poll")
        assert "1 document received, 4 refused (error report in the tray)" in out, out
        assert "5 deleted from the server" in out
        out = term.run("ifax tray show 5")
        assert "document 5: printed" in out and "pages      3 at 200x200" in out, out
        assert "page 3" in out
        assert "1 document received" not in term.run("ifax poll")  # the box is empty now
        status = term.run("ifax status")
        assert "tray    5 documents" in status, status
        assert password not in term.run("profile get ifax.password")
    finally:
        term.close()
    assert b.stop() == 0 and a.stop() == 0
    docs = json.loads(dpfw("ifax", "tray", "list", str(b_img), "--json").stdout)
    assert [(d["status"], d["pages"]) for d in docs] == [
        ("error", 0),
        ("error", 0),
        ("error", 0),
        ("error", 0),
        ("printed", 3),
    ]
    assert all(d["from"] for d in docs) and docs[4]["subject"]
    assert "application/pdf" in docs[3]["error"]
    boxes = json.loads(dpfw("box", "list", str(a_img), "--json").stdout)["boxes"]
    assert {b["name"]: b["messages"] for b in boxes}["bob"] == 0  # A's box: emptied
