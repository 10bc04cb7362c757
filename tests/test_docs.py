"""Claims in docs/*.md that the product can check: run the command, compare with the page."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import dpfw

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def test_storage_md_gives_the_demo_boxes_message_count(tmp_path: Path) -> None:
    out = dpfw("image", "demo", str(tmp_path / "demo.img")).stdout
    counts = {int(n) for n in re.findall(r"^box \w+: password \S+, (\d+) messages?$", out, re.M)}
    text = " ".join((DOCS / "storage.md").read_text().split())
    claim = re.search(r"Each box holds (\w+) messages", text)
    assert claim is not None and counts == {WORDS[claim[1]]}, (counts, claim)


def test_scan_help_and_scanner_md_name_the_fax_resolutions_alike() -> None:
    help_text = " ".join(dpfw("scan", "--help").stdout.split())
    assert "200x100 = fax standard, 200x200 = fax fine" in help_text
    page = (DOCS / "scanner.md").read_text()
    assert '`200x100` is fax "standard"' in page and '`200x200` is fax "fine"' in page


def test_no_doc_gives_a_test_count_that_would_go_stale() -> None:
    for page in [*DOCS.glob("*.md"), ROOT / "README.md"]:
        text = page.read_text()
        stale = re.findall(r"\b\d+ (?:tests|passed)\b", text)
        assert not stale, f"{page.name}: {stale}"


def test_profiles_md_table_is_the_schema() -> None:
    """docs/profiles.md's key table says what `dpfw profile keys` says: accepts and meaning."""
    from firmware.config.profile import SCHEMA

    page = (DOCS / "profiles.md").read_text()
    for key, spec in SCHEMA.items():
        applies = "live" if spec.live else "after reboot"
        site = "site" if spec.site else ""
        row = f"| `{key}` | {spec.allowed()} | {spec.doc} | {applies} | {site} |"
        assert " ".join(row.split()) in [" ".join(line.split()) for line in page.splitlines()], row


def test_storage_flash_mib_says_it_sizes_new_images_only() -> None:
    out = " ".join(dpfw("profile", "keys").stdout.split())
    assert "size of a NEW board image (`image create` without --size)" in out
    assert "an existing image keeps its size" in out
