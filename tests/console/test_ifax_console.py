"""The console's `ifax` commands over a board (offline shell; the live device: tests/ifax)."""

from __future__ import annotations

import trio

from firmware.console.port import _perform
from firmware.console.shell import AsyncAction
from tests.console.conftest import Term


def run_async(term: Term, line: str) -> str:
    out = term.type(line + "\r")
    action = term.shell.take_action()
    assert isinstance(action, AsyncAction), out
    done = trio.run(_perform, term.shell, action)  # as the port runs it, errors included
    return (out + done.decode("ascii")).replace("\r\n", "\n")


def test_status_and_an_empty_tray(offline_term: Term) -> None:
    out = offline_term.run("ifax status")
    assert out.startswith("Internet Fax: off (ifax.enabled = false)\n"), out
    assert "tray    0 documents" in out
    assert "the tray is empty" in run_async(offline_term, "ifax tray list")
    assert "tray cleared: 0 documents removed" in run_async(offline_term, "ifax tray clear")


def test_tray_documents_listed_and_shown(offline_term: Term) -> None:
    board = offline_term.shell.ctx.board
    board.tray_print(
        {"status": "error", "from": "a@b.example", "subject": "s", "error": "PDF"}, b"r"
    )
    out = run_async(offline_term, "ifax tray list")
    assert "  1  error        0  -        a@b.example                  s" in out, out
    shown = run_async(offline_term, "ifax tray show 1")
    assert "document 1: error" in shown and "error      PDF" in shown


def test_refusals_name_the_usage(offline_term: Term) -> None:
    assert offline_term.run("ifax tray") == "error: usage: ifax tray list|show N|clear\n"
    assert offline_term.run("ifax tray show x") == (
        "error: ifax tray show: N must be a document number, not 'x'\n"
    )
    assert "error: ifax tray show: no document 3 (documents: none: the tray is empty)" in (
        run_async(offline_term, "ifax tray show 3")
    )
    out = run_async(offline_term, "ifax poll")
    assert "error: ifax poll: needs the running device (`dpfw run`)" in out, out
    assert "tray" in offline_term.type("ifax tr\t")
