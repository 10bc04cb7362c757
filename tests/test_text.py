"""Counts printed for people say "1 message", "2 messages": firmware/text.py and its users."""

from __future__ import annotations

import ast
import poplib
import re
from pathlib import Path

import pytest

from firmware.text import host_port, plural
from tests.support import DeviceProcess, create_image, dpfw


@pytest.mark.parametrize(
    ("count", "noun", "expected"),
    [
        (0, "page", "0 pages"),
        (1, "page", "1 page"),
        (2, "page", "2 pages"),
        (1, "box", "1 box"),
        (3, "box", "3 boxes"),
        (-1, "second", "-1 second"),
        (1, "chain certificate", "1 chain certificate"),
        (2, "datum", "2 data"),
    ],
)
def test_plural(count: int, noun: str, expected: str) -> None:
    form = "data" if noun == "datum" else None
    assert plural(count, noun, form) == expected


def test_one_message_and_one_page_on_the_cli_and_over_pop3(
    tmp_path: Path, start_device: type[DeviceProcess]
) -> None:
    image = create_image(tmp_path / "board.img", size="4MiB")
    dpfw("box", "add", str(image), "alice", "--password", "alice-pw")
    out = dpfw("scan", str(image), "alice", "--pages", "1").stdout
    assert "(1 page, " in out and "pages" not in out
    out = dpfw("box", "list", str(image)).stdout
    assert re.search(r"^alice +1 ", out, re.M) and "1 messages" not in out  # a count column
    assert "(1 of 20 boxes)" in out
    assert dpfw("image", "fsck", str(image)).stdout == "fsck: 1 record checked, all clean\n"

    device = start_device(image, "--set", "pop3.plaintext_auth=always")
    port = device.wait_booted()
    client = poplib.POP3("127.0.0.1", port, timeout=15)
    client.user("alice")
    assert client.pass_("alice-pw").startswith(b"+OK alice has 1 message (")
    assert client.list()[0].startswith(b"+OK 1 message (")
    assert client.quit() == b"+OK signing off (1 message left)"
    assert device.stop() == 0


def _printed_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal (f-string parts too) that is not a docstring or a comment."""
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_noun_with_an_optional_plural_is_printed() -> None:
    """ "value(s)", "box(es)": every count the firmware prints goes through plural()."""
    root = Path(__file__).resolve().parent.parent / "firmware"
    found = [
        f"{path.relative_to(root.parent)}:{line}: {text!r}"
        for path in sorted(root.rglob("*.py"))
        for line, text in _printed_strings(ast.parse(path.read_text("utf-8")))
        if re.search(r"[A-Za-z]\((s|es)\)", text)
    ]
    assert found == []


def test_host_port_brackets_ipv6_only() -> None:
    assert host_port("127.0.0.1", 1110) == "127.0.0.1:1110"
    assert host_port("dp3530.local", 110) == "dp3530.local:110"
    assert host_port("::1", 2197) == "[::1]:2197"
    assert host_port("fe80::1%eth0", "995") == "[fe80::1%eth0]:995"
