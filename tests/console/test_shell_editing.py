"""The shell's first-contact help over plain bytes: suggestions, KEY=VALUE, history, Tab."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.config.profile import SCHEMA
from firmware.console.linedisc import MAX_LINE
from firmware.console.shell import (
    COMMANDS,
    GROUPS,
    HELP,
    MAX_HELD,
    ConsoleShell,
    ScanAction,
    subcommands,
)
from firmware.device.device import Device
from tests.console.conftest import ADMIN_PASSWORD, Clock, Term

UP, DOWN, SS3_UP = b"\x1b[A", b"\x1b[B", b"\x1bOA"


def error_line(out: str) -> str:
    assert out.startswith("error: ") and out.count("\n") == 1, out
    return out.strip()


# ----- one table -----


def test_groups_commands_and_help_come_from_one_table() -> None:
    assert set(GROUPS) == {"profile", "box", "session", "trace", "fault", "tls", "ifax"}
    assert COMMANDS[0] == "help" and "status" in COMMANDS and "profile" in COMMANDS
    for name in HELP:
        assert hasattr(ConsoleShell, "_cmd_" + name.replace(" ", "_")), name
    assert subcommands("session") == ["list", "kill"]


# ----- did you mean -----


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("staus", 'error: unknown command "staus"; did you mean "status"?'),
        ("STAUS", 'error: unknown command "STAUS"; did you mean "status"?'),
        ("profil list", 'error: unknown command "profil"; did you mean "profile"?'),
        ("profile lst", 'error: unknown command "profile lst"; did you mean "profile list"?'),
        ("box unlok bob", 'error: unknown command "box unlok"; did you mean "box unlock"?'),
        ("help sttus", 'error: help: no command "sttus"; did you mean "status"?'),
        ("xyzzy", 'error: unknown command "xyzzy"; `help` lists them'),
        ("tls qqq", 'error: unknown command "tls qqq"; tls show|import|selfsign'),
        ("exti", 'error: unknown command "exti"; did you mean "exit"?'),
    ],
)
async def test_unknown_commands_get_the_nearest_suggestion(
    admin_term: Term, line: str, message: str
) -> None:
    assert error_line(admin_term.run(line)) == message


async def test_unknown_profile_keys_get_the_nearest_key(admin_term: Term) -> None:
    assert error_line(admin_term.run("profile get pop3.max_sesions")) == (
        'error: profile get: unknown key "pop3.max_sesions"; did you mean "pop3.max_sessions"?'
    )
    out = error_line(admin_term.run("profile set pop3.prot=1110"))
    assert out.endswith('unknown key "pop3.prot"; did you mean "pop3.port"?')
    assert "`profile show` lists every key" in admin_term.run("profile get zzzzzz")
    assert 'did you mean "pop3.port"?' in admin_term.run("profile get POP3.PORT")


# ----- profile set KEY=VALUE -----


@pytest.mark.parametrize(
    "args",
    [
        "mailbox.max_boxes=7 pop3.max_sessions=3",
        "mailbox.max_boxes = 7 pop3.max_sessions= 3",
        "mailbox.max_boxes =7 pop3.max_sessions 3",
        "mailbox.max_boxes 7 pop3.max_sessions 3",
    ],
)
async def test_profile_set_takes_the_cli_key_equals_value_form(
    admin_term: Term, device: Device, args: str
) -> None:
    out = admin_term.run(f"profile set {args}")
    assert not out.startswith("error"), out
    assert device.profile.int("mailbox.max_boxes") == 7
    assert device.profile.int("pop3.max_sessions") == 3


async def test_a_value_may_contain_an_equals_sign(admin_term: Term, device: Device) -> None:
    out = admin_term.run("profile set identity.hostname=a=b")
    assert device.profile.str("identity.hostname") == "a=b" or out.startswith("error"), out


@pytest.mark.parametrize("args", ["pop3.port", "pop3.port=", "=1110", "pop3.port =", "a 1 b"])
async def test_a_key_without_a_value_is_answered_with_the_syntax(
    admin_term: Term, args: str
) -> None:
    out = error_line(admin_term.run(f"profile set {args}"))
    assert "KEY=VALUE" in out and "KEY VALUE" in out, out


async def test_scan_options_take_the_same_key_value_forms_and_suggestions(
    admin_term: Term, device: Device
) -> None:
    device.board.add_box("bob", "bob-pw-1")
    admin_term.type(b"scan bob pages = 2 mode= gray\r")
    action = admin_term.shell.take_action()
    assert isinstance(action, ScanAction)
    assert action.request.pages == 2 and action.request.mode == "gray"
    admin_term.shell.finish_action("skipped")
    assert error_line(admin_term.run("scan bob pgaes=2")) == (
        'error: scan: unknown option "pgaes"; did you mean "pages"?'
    )
    out = error_line(admin_term.run("scan bob pages"))
    assert "has no value" in out and "pages=N" in out


# ----- history -----


async def test_up_recalls_commands_down_returns_and_enter_runs_the_recalled_line(
    admin_term: Term,
) -> None:
    admin_term.run("log 1")
    admin_term.run("profile get pop3.port")
    assert admin_term.type(UP).endswith("profile get pop3.port")
    assert admin_term.type(UP).endswith("log 1")
    assert admin_term.type(DOWN).endswith("profile get pop3.port")
    out = admin_term.type("\r")
    assert "pop3.port = 110" in out and out.endswith("DP-3530> ")


async def test_passwords_never_enter_the_history_and_logout_clears_it(admin_term: Term) -> None:
    admin_term.run("status")
    out = admin_term.type("box add carol\r")
    assert out.endswith("Password for box carol: ")
    # At a password prompt Up and Tab do nothing and echo nothing: no recall, no completion.
    assert admin_term.type(b"s3cret-pw" + UP + b"\t\r") == "\r\nAgain: "
    assert "box carol added" in admin_term.type(b"s3cret-pw\r")  # Up and Tab added nothing
    shell = admin_term.shell
    assert shell.editor.history == ["status", "box add carol"]
    admin_term.type(UP + b"\x15")  # browsing, then the line cleared
    admin_term.run("logout")
    assert shell.editor.history == []
    assert admin_term.type(UP) == ""  # at the login prompt: no history, nothing echoed
    admin_term.type(b"\x15")
    admin_term.login()
    assert admin_term.type(UP) == ""  # the next session starts with none


async def test_a_failed_login_password_is_not_recorded(term: Term) -> None:
    term.login("wrong-password")
    term.login()
    assert term.shell.editor.history == []
    assert term.type(SS3_UP) == ""


# ----- Tab completion -----


async def test_tab_completes_a_unique_command_word(admin_term: Term) -> None:
    assert admin_term.type(b"sta\t") == "status "
    assert "uptime" in admin_term.type(b"\r")


async def test_tab_lists_several_commands_and_redraws_the_line(admin_term: Term) -> None:
    out = admin_term.type(b"s\t")
    assert out == "s\r\nscan  session  shutdown  status\r\nDP-3530> s"
    assert admin_term.type(b"e\t") == "ession "


async def test_tab_completes_subcommands_keys_models_and_boxes(
    admin_term: Term, device: Device
) -> None:
    device.board.add_box("bob", "bob-pw-1")
    assert admin_term.type(b"profile se\t").endswith("set ")
    assert admin_term.type(b"pop3.max_sessions_p\t").endswith("_per_client ")
    assert admin_term.type(b"2 pop3.por\t").endswith("port ")
    admin_term.type(b"\x15")
    out = admin_term.type(b"profile set pop3.port=1 console.ad\t")
    assert out.endswith("min_idle_timeout_s ")
    admin_term.type(b"\x15")
    assert admin_term.type(b"profile set pop3.port 1\t").endswith("1\x07")  # a value: no offer
    admin_term.type(b"\x15")
    assert admin_term.type(b"profile apply DP-353\t").endswith("DP-3530 ")
    admin_term.type(b"\x15")
    assert admin_term.type(b"box show b\t").endswith("ob ")
    admin_term.type(b"\x15")
    assert admin_term.type(b"box del bob p\t").endswith("urge ")
    admin_term.type(b"\x15")
    assert admin_term.type(b"scan bob pa\t").endswith("ges=")
    admin_term.type(b"\x15")
    assert admin_term.type(b"help prof\t").endswith("ile ")


async def test_every_profile_key_is_offered_for_get_and_set(shell: ConsoleShell) -> None:
    for key in SCHEMA:
        for line in (f"profile get {key[:3]}", f"profile set a=1 {key[:3]}", f"PROFILE SET {key}"):
            start, found = shell.complete(line)
            assert line[start:] == line.split(" ")[-1] and key in found, line


# ----- noise with keys -----

KEYS = st.sampled_from([UP, DOWN, SS3_UP, b"\t", b"\x1b", b"\x1b[", b"\x1bO", b"\r", b"p\t"])


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pieces=st.lists(st.one_of(st.binary(max_size=60), KEYS), max_size=60))
def test_keys_escapes_and_noise_never_raise_and_stay_bounded(
    offline_shell: ConsoleShell, clock: Clock, pieces: list[bytes]
) -> None:
    shell = offline_shell  # a board with no services: noise needs no listener
    shell.connect()
    shell.feed(ADMIN_PASSWORD.encode() + b"\r")
    for piece in pieces:
        assert isinstance(shell.feed(piece), bytes)
        assert shell.buffered <= MAX_LINE + MAX_HELD + 400 * MAX_LINE
        assert len(shell.editor.history) <= 32
        if shell.take_action() is not None:
            shell.finish_action("done")
        clock.now += 1
        shell.tick()
    shell.disconnect()
    assert shell.editor.history == []


async def test_tab_matches_words_read_in_any_case_in_any_case(admin_term: Term) -> None:
    """`profile apply dp-45<Tab>` used to ring the bell while `DP-45<Tab>` listed the models."""
    out = admin_term.type(b"profile apply dp-45\t")
    assert out.endswith("\r\ndp-4510  dp-4520  dp-4530\r\nDP-3530> profile apply dp-45"), out
    assert admin_term.type(b"2\t") == "20 "
    assert "profile apply DP-4520 changes" in admin_term.type(b"\r")
    admin_term.type(b"n\r")
    assert admin_term.type(b"STA\t") == "STATUS "
    admin_term.type(b"\x15")
    assert admin_term.type(b"PROFILE SE\t").endswith("T ")
    admin_term.type(b"\x15")
    assert admin_term.type(b"scan alice PA\t").endswith("GES=")


async def test_tab_keeps_keys_and_box_names_exact(admin_term: Term, device: Device) -> None:
    device.board.add_box("Bob", "bob-pw-1")
    assert admin_term.type(b"box show b\t").endswith("\x07")  # box names are case-sensitive
    assert admin_term.type(b"\bB\t").endswith("ob ")
    admin_term.type(b"\x15")
    assert admin_term.type(b"profile get POP3.\t").endswith("\x07")  # so are keys
