"""`dpfw ifax ...` on an image: one clear line for every refusal, a poll from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.ifax.conftest import ifax_profile, tiff_g4
from tests.ifax.dovecot import Dovecot, fax_message
from tests.support import create_image, dpfw


def test_refusals_are_one_line(tmp_path: Path) -> None:
    img = create_image(tmp_path / "b.img")
    assert dpfw("ifax", "tray", "list", str(img)).stdout == "the tray is empty\n"
    for args, line in [
        (("tray", "show", str(img), "1"), "dpfw: ifax tray show: no document 1 (documents: none: "
         "the tray is empty)"),
        (("poll", str(img)), "dpfw: Internet Fax reception is off (ifax.enabled = false)"),
    ]:  # fmt: skip
        proc = dpfw("ifax", *args, check=False)
        assert (proc.returncode, proc.stderr.strip()) == (1, line)


def test_poll_from_the_command_line(tmp_path: Path, dovecot: Dovecot) -> None:
    img = create_image(tmp_path / "b.img", size="4MiB")
    prof = ifax_profile(dovecot)
    pairs = [x for k in prof if k.startswith("ifax.") and prof[k] != "" for x in (k, str(prof[k]))]
    dpfw("profile", "set", str(img), *[p.lower() if p in ("True", "False") else p for p in pairs])
    dovecot.deliver(fax_message(tiff_g4(2), "image/tiff", "two.tif", "a@example.org"))
    out = dpfw("ifax", "poll", str(img)).stdout
    assert out.startswith("1 document received, 1 deleted from the server"), out
    docs = json.loads(dpfw("ifax", "tray", "list", str(img), "--json").stdout)
    assert [(d["status"], d["pages"], d["from"]) for d in docs] == [("printed", 2, "a@example.org")]
    shown = dpfw("ifax", "tray", "show", str(img), "1").stdout
    assert "  page 2     1728x1144 pixels\n" in shown
    assert "tray cleared: 1 document removed" in dpfw("ifax", "tray", "clear", str(img)).stdout
    assert "tray    0 documents" in dpfw("ifax", "status", str(img)).stdout
