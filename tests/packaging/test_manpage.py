"""The man page (docs/dpfw.1) is rendered from the parser: complete, valid roff, up to date."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from firmware.cli import build_parser
from firmware.cli.manpage import commands, escape, render

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "dpfw.1"


def test_the_page_names_every_sub_command_and_option() -> None:
    parser = build_parser()
    page = render(parser)
    listed = list(commands(parser))
    names = {" ".join(path) for path, _help, _parser in listed}
    # the nested ones are there too, and every top-level command
    assert {"run", "image create", "profile set", "box add", "tls selfsign"} <= names
    for path, _help, child in listed:
        assert f".SS {escape(' '.join(('dpfw', *path)))}\n" in page, path
        for action in child._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert escape(option) in page, (path, option)
    assert escape("--version") in page


def test_the_committed_page_is_up_to_date() -> None:
    assert PAGE.read_text() == render(build_parser()), (
        "docs/dpfw.1 is stale: run tools/manpage and commit it"
    )


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_groff_reads_the_page_without_warnings() -> None:
    proc = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(PAGE)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_roff_escapes() -> None:
    assert escape("a-b") == "a\\-b"
    assert escape(".TH not a request\n'neither") == "\\&.TH not a request\n\\&'neither"
    assert escape("C:\\path") == "C:\\epath"
