"""The console shell with plain bytes over a real board: login, lock-out, every command."""

from __future__ import annotations

import poplib
import re
import ssl
from functools import partial

import pytest
import trio
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.config.profile import MODELS, factory
from firmware.console.linedisc import MAX_LINE
from firmware.console.shell import (
    HELP,
    MAX_HELD,
    TLS_END,
    ConsoleShell,
    Mode,
    PowerAction,
    ScanAction,
)
from firmware.device.boards import saved_profile
from firmware.device.device import Device
from firmware.ops import render, system
from firmware.ops.profile import EXPORT_END
from firmware.ops.scans import run_scan
from firmware.scanner.feeder import ScanFeeder
from firmware.security import tls
from firmware.security.abuse import LOCKOUT_FAILURES
from firmware.security.credentials import verify_password
from tests.console.conftest import ADMIN_PASSWORD, BOX_PASSWORD, Clock, Term, wait_booted


def one_error_line(out: str) -> str:
    """The output must be exactly one line starting with 'error: '; return it."""
    assert out.startswith("error: "), out
    assert out.count("\n") == 1 and out.endswith("\n"), out
    return out


# ----- login, lock-out, logout -----


async def test_connect_greets_with_the_model_and_asks_for_the_password(shell: ConsoleShell) -> None:
    assert shell.connect() == b"DP-3530 admin console\r\nPassword: "
    assert not shell.logged_in


async def test_the_password_is_not_echoed_and_login_shows_the_model_prompt(term: Term) -> None:
    out = term.login()
    assert ADMIN_PASSWORD not in out
    assert out.startswith("\r\nlogged in to DP-3530")
    assert out.endswith("DP-3530> ")
    assert term.shell.logged_in


async def test_an_empty_line_at_the_password_prompt_is_not_a_failure(term: Term) -> None:
    for _ in range(5):
        assert term.type("\r") == "\rPassword: "
    assert term.shell.failures == 0


async def test_the_first_enter_redraws_the_login_prompt_instead_of_asking_twice(
    shell: ConsoleShell,
) -> None:
    """A serial user presses Enter to wake the line: the screen must show one prompt."""
    screen = shell.connect() + shell.feed(b"\r") + shell.feed(b"\r\n")
    assert screen == b"DP-3530 admin console\r\nPassword: \rPassword: \rPassword: "
    assert screen.count(b"\n") == 1  # every redraw is on the prompt's own line
    out = shell.feed(ADMIN_PASSWORD.encode() + b"\r")
    assert out.startswith(b"\r\nlogged in") and shell.logged_in


async def test_three_failures_lock_the_console_for_a_growing_time(term: Term, clock: Clock) -> None:
    shell = term.shell
    assert "Login incorrect" in term.login("wrong1")
    assert "Login incorrect" in term.login("wrong2")
    out = term.login("wrong3")
    assert "console locked for 30 s" in out
    out = term.login()  # even the right password is refused while locked
    assert "try again in 30 s" in out and not shell.logged_in
    clock.now += 31
    for attempt in range(3):
        term.login(f"bad{attempt}")
    assert shell.locked_until == clock.now + 60  # the second lock-out is twice as long
    clock.now += 61
    assert "logged in" in term.login()
    assert shell.failures == 0 and shell.lockouts == 0


async def test_the_lock_out_survives_a_reconnect(term: Term, clock: Clock) -> None:
    for attempt in range(3):
        term.login(f"bad{attempt}")
    term.shell.disconnect()
    term.shell.connect()
    assert "locked" in term.login()


async def test_ctrl_d_logs_out_and_ctrl_c_drops_the_line(admin_term: Term) -> None:
    out = admin_term.type("reboot\x03")
    assert out.endswith("^C\r\nDP-3530> ")
    assert admin_term.shell.take_action() is None
    out = admin_term.type("stat\x04")
    assert "logged out" in out and out.endswith("Password: ")
    assert not admin_term.shell.logged_in


async def test_logout_command(admin_term: Term) -> None:
    assert "logged out" in admin_term.type("logout\r")
    assert not admin_term.shell.logged_in


async def test_idle_logout_after_the_profile_timeout(admin_term: Term, clock: Clock) -> None:
    shell = admin_term.shell
    assert shell.next_deadline() == clock.now + 300
    clock.now += 299
    assert shell.tick() == b""
    admin_term.type("\r")  # typing restarts the timer
    clock.now += 299
    assert shell.tick() == b""
    clock.now += 2
    out = shell.tick().decode()
    assert "idle timeout: logged out" in out and out.endswith("Password: ")
    assert not shell.logged_in and shell.next_deadline() is None


async def test_the_idle_timeout_is_live(admin_term: Term, clock: Clock) -> None:
    assert "applied now" in admin_term.run("profile set console.admin_idle_timeout_s 10")
    clock.now += 11
    assert b"idle timeout" in admin_term.shell.tick()


async def test_input_after_the_deadline_logs_out_first(admin_term: Term, clock: Clock) -> None:
    clock.now += 301
    out = admin_term.type("status\r")
    assert "idle timeout" in out
    assert "model" not in out  # the line went to the password prompt, unechoed


async def test_an_overlong_command_is_refused(admin_term: Term) -> None:
    out = admin_term.type("x" * (MAX_LINE + 10) + "\r")
    assert f"error: line longer than {MAX_LINE} characters refused" in out
    assert out.endswith("DP-3530> ")


async def test_unbalanced_quotes_are_one_error_line(admin_term: Term) -> None:
    one_error_line(admin_term.run('box show "alice'))


# ----- help and dispatch -----


async def test_help_lists_every_command(admin_term: Term) -> None:
    out = admin_term.run("help")
    for h in HELP.values():
        assert h.usage in out


@pytest.mark.parametrize("topic", sorted(HELP))
async def test_help_explains_every_command(admin_term: Term, topic: str) -> None:
    out = admin_term.run(f"help {topic}")
    assert out.startswith(HELP[topic].usage)
    assert f"`help {topic}`" not in out  # a page does not send the reader to itself


@pytest.mark.parametrize(
    "line",
    [
        "help",
        *(f"help {topic}" for topic in HELP),
        "status",
        "profile list",
        "box list",
        "tls show",
    ],
)
async def test_output_fits_an_80_column_terminal(admin_term: Term, line: str) -> None:
    for text in admin_term.run(line).splitlines():
        assert len(text) < 80, text


async def test_help_of_a_group_lists_its_sub_commands(admin_term: Term) -> None:
    out = admin_term.run("help box")
    for sub in ("list", "show", "add", "del", "passwd"):
        assert f"box {sub}" in out


@pytest.mark.parametrize(
    "line",
    [
        "frobnicate",
        "help frobnicate",
        "profile",
        "profile frob",
        "box",
        "status now",
        "profile get",
        "profile set pop3.port",
        "box add",
        "box del a b c",
        "box del alice please",
        "session kill",
        "scan",
        "log many",
        "log 0",
        "fsck now",
        "reboot now",
        "tls",
        "tls show now",
        "tls import now",
        "tls selfsign a b",
        "box unlock",
        "box passwd alice legacy more",
    ],
)
async def test_bad_usage_is_one_error_line(admin_term: Term, line: str) -> None:
    one_error_line(admin_term.run(line))
    assert admin_term.shell.mode is Mode.COMMAND


async def test_commands_are_case_insensitive(admin_term: Term) -> None:
    assert "model" in admin_term.run("STATUS")
    assert "DP-6030" in admin_term.run("Profile List")


# ----- status, log, fsck, compact -----


async def test_status_shows_every_figure(admin_term: Term, device: Device) -> None:
    device.started_at -= 3725.0  # booted 1 h 2 min 5 s ago
    out = admin_term.run("status")
    assert "DP-3530" in out
    assert "1.00-sim" in out
    assert re.search(r"uptime\s+0d 01:02:0\d", out)
    assert re.search(r"RAM\s+0 B used, 128.0 MiB free of 128.0 MiB", out)
    assert re.search(r"flash\s+.* used, .* free, .* reclaimable of ", out)
    assert re.search(r"^POP3\s+0 of 16 sessions open$", out, re.M)
    assert re.search(r"scans\s+0 done", out)


def test_status_of_a_board_without_services(offline_term: Term) -> None:
    out = offline_term.run("status")
    assert re.search(r"^model\s+DP-3530$", out, re.M)
    assert re.search(r"uptime\s+0d 00:00:00", out)
    assert "0 of 16 sessions open (service not running)" in out
    assert "TLS" not in out and "logins" not in out  # nothing to say without the service


async def test_log_shows_the_last_lines(admin_term: Term, device: Device) -> None:
    device.log_lines.clear()
    assert admin_term.run("log") == "(log is empty)\n"
    for n in range(30):
        device.log_lines.append(f"line {n}")
    assert admin_term.run("log").splitlines() == [f"line {n}" for n in range(10, 30)]
    assert admin_term.run("log 2").splitlines() == ["line 28", "line 29"]
    device.log_lines.append("evil \x1b[2J escape")
    assert "\x1b" not in admin_term.run("log 1")


async def test_fsck_and_compact_report_without_error(admin_term: Term) -> None:
    for command in ("fsck", "compact"):
        out = admin_term.run(command)
        assert out and not out.startswith("error"), out


# ----- profiles -----


async def test_profile_list_marks_the_active_model(admin_term: Term) -> None:
    out = admin_term.run("profile list").splitlines()
    assert len(out) == len(MODELS) + 1
    assert [line for line in out if line.startswith("*")] == [out[MODELS.index("DP-3530")]]


async def test_profile_show_and_get(admin_term: Term) -> None:
    out = admin_term.run("profile show")
    assert re.search(r"^pop3.max_sessions\s+= 16$", out, re.M)
    assert re.search(r"^scan.color_modes\s+= mono, gray, color$", out, re.M)
    assert re.search(r"^pop3.apop\s+= false$", out, re.M)  # booleans as TOML writes them
    assert "(" not in out and "'" not in out  # no Python tuples or quotes
    assert admin_term.run("profile show pop3.port") == admin_term.run("profile get pop3.port")
    other = admin_term.run("profile show dp-6030")
    assert re.search(r"^identity.model\s+= DP-6030$", other, re.M)
    one_error_line(admin_term.run("profile show DP-9999"))
    out = admin_term.run("profile get pop3.max_sessions")
    assert out.startswith("pop3.max_sessions = 16\n")
    assert "from 1 to 4096" in out and "live" in out
    assert "applies after reboot" in admin_term.run("profile get pop3.port")
    assert 'profile get: unknown key "pop3.nope"' in one_error_line(
        admin_term.run("profile get pop3.nope")
    )


async def test_profile_set_live_and_after_reboot(admin_term: Term, device: Device) -> None:
    out = admin_term.run("profile set mailbox.max_boxes 7")
    assert out == "mailbox.max_boxes = 7 (saved; applied now)\n"
    assert saved_profile(device.board).int("mailbox.max_boxes") == 7  # in NVRAM
    out = admin_term.run("profile set pop3.port 1110")
    assert out == "pop3.port = 1110 (saved; applies after reboot; running: 110)\n"
    assert "no value changed" in admin_term.run("profile set pop3.port 1110")


async def test_a_saved_reboot_key_is_pending_not_running(admin_term: Term, device: Device) -> None:
    _listed, out = confirm(admin_term, "profile apply dp-4520", "y")
    assert "identity.model: DP-3530 -> DP-4520 (applies after reboot; running: DP-3530)" in out
    assert admin_term.type("\r").endswith("\r\nDP-3530> ")  # the prompt keeps the running model
    assert saved_profile(device.board).model == "DP-4520"
    show = admin_term.run("profile show")
    assert re.search(r"^identity.model\s+= DP-3530  \(pending: DP-4520 after reboot\)$", show, re.M)
    get = admin_term.run("profile get identity.model")
    assert get.startswith(
        "identity.model = DP-3530\n  pending: DP-4520 saved, applies after reboot"
    )
    assert "  identity.model: DP-3530 -> DP-4520" in admin_term.run("profile diff")
    status = admin_term.run("status")
    assert re.search(r"^model\s+DP-3530 \(DP-4520 after reboot\)$", status, re.M)
    assert re.search(r"^profile    \d+ saved changes pending reboot", status, re.M)
    listing = admin_term.run("profile list").splitlines()
    assert listing[MODELS.index("DP-4520")].startswith("> DP-4520")


@pytest.mark.parametrize("value", ['""', '"my host"', "-x.lan", "a_b.lan"])
async def test_a_bad_host_name_is_one_line_naming_key_value_and_rule(
    admin_term: Term, device: Device, value: str
) -> None:
    before = saved_profile(device.board)
    out = one_error_line(admin_term.run(f"profile set identity.hostname {value}"))
    shown = value if value.startswith('"') else f'"{value}"'
    assert out.startswith(f"error: profile set: identity.hostname = {shown} is not allowed;")
    assert "host name (RFC 1123)" in out
    assert saved_profile(device.board) == before


async def test_profile_set_refuses_bad_values_naming_key_and_range(
    admin_term: Term, device: Device
) -> None:
    before = saved_profile(device.board)
    out = one_error_line(admin_term.run("profile set pop3.max_sessions 0"))
    assert out == (
        "error: profile set: pop3.max_sessions = 0 is not allowed;"
        " expected an integer from 1 to 4096\n"
    )
    out = one_error_line(admin_term.run("profile set pop3.apop maybe"))
    assert "true or false" in out
    out = one_error_line(admin_term.run("profile set scan.formats tiff,gif"))
    assert "scan.formats" in out
    out = one_error_line(admin_term.run("profile set pop3.max_sessions 2 pop3.apop 7"))
    assert "pop3.apop" in out  # one bad pair refuses the whole command
    assert saved_profile(device.board) == before


async def test_profile_set_several_keys_at_once(admin_term: Term, device: Device) -> None:
    out = admin_term.run("profile set pop3.max_sessions_per_client 2 pop3.max_sessions 2")
    assert "2 values changed and saved" in out and "applied now" in out
    assert saved_profile(device.board).int("pop3.max_sessions") == 2


def confirm(term: Term, line: str, answer: str) -> tuple[str, str]:
    """A command that asks `apply? [y/N]`: (what it listed, what the answer brought)."""
    out = term.type(line + "\r").replace("\r\n", "\n")
    assert out.startswith(line + "\n") and out.endswith("apply? [y/N] "), out
    after = term.type(answer + "\r").replace("\r\n", "\n")
    assert after.startswith(answer + "\n") and after.endswith("DP-3530> "), after
    return out[len(line) + 1 :], after[len(answer) + 1 : -len("DP-3530> ")]


async def test_profile_diff_apply_reset(admin_term: Term, device: Device) -> None:
    assert admin_term.run("profile diff") == "no differences from the DP-3530 factory profile\n"
    admin_term.run("profile set mailbox.quota_mib 5")
    admin_term.run("profile set pop3.plaintext_auth always")
    out = admin_term.run("profile diff")
    assert "mailbox.quota_mib = 5 | 64" in out
    before = saved_profile(device.board)
    listed, result = confirm(admin_term, "profile apply dp-6030", "n")
    assert listed.startswith("profile apply DP-6030 changes ")
    assert "  identity.model: DP-3530 -> DP-6030 (after reboot)\n" in listed
    assert "  mailbox.quota_mib: 5 -> 128 (now)\n" in listed
    assert "plaintext_auth" not in listed  # a site setting: kept
    assert result == "not applied; nothing changed\n"
    assert saved_profile(device.board) == before
    listed, result = confirm(admin_term, "profile apply DP-6030", "y")
    assert "identity.model: DP-3530 -> DP-6030 (applies after reboot; running: DP-3530)" in result
    assert saved_profile(device.board).model == "DP-6030"
    assert saved_profile(device.board).str("pop3.plaintext_auth") == "always"
    assert admin_term.type("\r").endswith("DP-3530> ")  # running model until reboot
    listed, result = confirm(admin_term, "profile reset", "yes")
    assert listed.startswith("profile reset to DP-6030 factory values changes 2 values:\n")
    assert "  identity.hostname: dp3530.local -> dp6030.local (after reboot)\n" in listed
    assert "  pop3.plaintext_auth: always -> tls_only (now)\n" in listed
    assert saved_profile(device.board) == factory("DP-6030")
    assert admin_term.run("profile reset") == (
        "profile reset to DP-6030 factory values: no value changed\n"
    )


async def test_profile_apply_factory_resets_site_settings_and_ctrl_c_cancels(
    admin_term: Term, device: Device
) -> None:
    admin_term.run("profile set pop3.plaintext_auth always")
    before = saved_profile(device.board)
    admin_term.type("profile apply DP-3530 factory\r")
    out = admin_term.type("\x03").replace("\r\n", "\n")
    assert "cancelled; nothing changed" in out and saved_profile(device.board) == before
    listed, result = confirm(admin_term, "profile apply DP-3530 factory", "y")
    assert listed == (
        "profile apply DP-3530 factory changes 1 value:\n"
        "  pop3.plaintext_auth: always -> tls_only (now)\n"
        "apply? [y/N] "
    )
    assert result == "pop3.plaintext_auth = tls_only (saved; applied now)\n"
    assert device.profile.str("pop3.plaintext_auth") == "tls_only"
    assert "usage: profile apply MODEL [factory]" in admin_term.run("profile apply DP-3530 x")


@pytest.mark.parametrize("model", MODELS)
async def test_every_factory_profile_exports_and_imports_back(
    admin_term: Term, device: Device, model: str
) -> None:
    if model != "DP-3530":  # the bench starts on DP-3530: nothing to change, nothing asked
        confirm(admin_term, f"profile apply {model} factory", "y")
    exported = admin_term.run("profile export")
    assert exported.startswith(f"# BEGIN DPFW PROFILE {model}\n")
    assert exported.endswith(f"{EXPORT_END}\n")
    other = "DP-3510" if model != "DP-3510" else "DP-6030"
    confirm(admin_term, f"profile apply {other} factory", "y")
    assert saved_profile(device.board) != factory(model)
    prompt = admin_term.run("profile import")
    assert EXPORT_END in prompt
    out = ""
    for line in exported.splitlines():
        out = admin_term.type(line + "\r")
    assert "values changed and saved" in out
    assert saved_profile(device.board) == factory(model)
    assert device.next_profile == factory(model)


def paste(term: Term, text: str) -> str:
    term.run("profile import")
    return term.type(text.replace("\n", "\r\n") + f"\r\n{EXPORT_END}\r\n").replace("\r\n", "\n")


async def test_an_invalid_import_changes_nothing(admin_term: Term, device: Device) -> None:
    before = saved_profile(device.board)
    text = factory("DP-3530").to_toml().replace("max_sessions = 16", "max_sessions = 99999")
    out = paste(admin_term, text)
    assert "error: profile import: pop3.max_sessions = 99999 is not allowed" in out
    assert "nothing changed" in out
    out = paste(admin_term, "this is not toml")
    assert "not valid TOML" in out
    out = paste(admin_term, "[pop3]\nmax_sessions = 3\n")
    assert "missing key" in out
    out = paste(admin_term, text.replace("[pop3]", "[pop3]\nturbo = true"))
    assert 'error: profile import: unknown key "pop3.turbo"; did you mean "pop3.port"?' in out
    assert saved_profile(device.board) == before
    assert admin_term.shell.mode is Mode.COMMAND


async def test_import_can_be_cancelled_and_is_bounded(admin_term: Term, device: Device) -> None:
    before = saved_profile(device.board)
    admin_term.run("profile import")
    out = admin_term.type("[pop3]\r\nmax_sessions = 3\r\n\x03")
    assert "import cancelled; nothing changed" in out and out.endswith("DP-3530> ")
    admin_term.run("profile import")
    admin_term.type("# x\r\n" * 500)
    assert admin_term.shell.buffered < 500 * 4
    out = admin_term.type(EXPORT_END + "\r\n")
    assert "more than" in out and "nothing changed" in out
    admin_term.run("profile import")
    admin_term.type("y" * (MAX_LINE + 1) + "\r\n")
    out = admin_term.type(EXPORT_END + "\r\n")
    assert "longer than" in out
    assert saved_profile(device.board) == before


# ----- boxes -----


def add_box(term: Term, name: str, password: str = "box-pw-1", again: str | None = None) -> str:
    out = term.run(f"box add {name}")
    assert out == f"Password for box {name}: "
    assert term.type(password + "\r") == "\r\nAgain: "
    return term.type((again or password) + "\r")


async def test_box_add_asks_for_the_password_twice_unechoed(
    admin_term: Term, device: Device
) -> None:
    out = add_box(admin_term, "alice")
    assert "box-pw-1" not in out
    assert "box alice added" in out and out.endswith("DP-3530> ")
    assert [b.name for b in device.board.boxes()] == ["alice"]


async def test_box_add_errors(admin_term: Term, device: Device) -> None:
    out = add_box(admin_term, "bob", "one-pass", "two-pass")
    assert "error: box add: the two passwords differ; nothing changed" in out
    out = add_box(admin_term, "bob", "pw", "pw")
    assert "error: box add: a password has 4 to 64 characters" in out
    assert device.board.boxes() == []
    add_box(admin_term, "bob")
    one_error_line(admin_term.run("box add bob"))
    out = one_error_line(admin_term.run('box add "two words"'))
    assert "box name 'two words' is not allowed" in out
    assert [b.name for b in device.board.boxes()] == ["bob"]


async def test_one_password_rule_on_every_console_path(admin_term: Term, device: Device) -> None:
    rule = "a password has 4 to 64 characters; nothing changed"
    for bad in ("abc", "x" * 65):
        assert f"error: box add: {rule}" in add_box(admin_term, "bob", bad, bad)
    add_box(admin_term, "bob")
    for bad in ("abc", "x" * 65):
        admin_term.run("box passwd bob")
        admin_term.type(bad + "\r")
        assert f"error: box passwd: {rule}" in admin_term.type(bad + "\r")
        admin_term.run("passwd")
        for answer in (ADMIN_PASSWORD, bad):
            admin_term.type(answer + "\r")
        assert f"error: passwd: {rule}" in admin_term.type(bad + "\r")
    assert device.board.check_admin_password(ADMIN_PASSWORD)


async def test_box_list_show_passwd_del(admin_term: Term, device: Device) -> None:
    assert admin_term.run("box list") == "no boxes\n"
    add_box(admin_term, "alice")
    add_box(admin_term, "carol")
    out = admin_term.run("box list")
    assert "alice" in out and "carol" in out
    assert "messages   0 of 1000" in admin_term.run("box show alice")
    one_error_line(admin_term.run("box show nobody"))
    assert admin_term.run("box passwd alice") == "New password for box alice: "
    admin_term.type("new-secret\r")
    assert "password of box alice changed" in admin_term.type("new-secret\r")
    one_error_line(admin_term.run("box passwd nobody"))
    assert admin_term.run("box del carol") == "box carol deleted\n"
    one_error_line(admin_term.run("box del carol"))
    assert [b.name for b in device.board.boxes()] == ["alice"]


async def test_ctrl_c_at_a_password_question_changes_nothing(
    admin_term: Term, device: Device
) -> None:
    admin_term.run("box add dave")
    out = admin_term.type("half\x03")
    assert "cancelled; nothing changed" in out
    assert device.board.boxes() == []


# ----- sessions -----


def test_sessions_without_the_pop3_service(offline_term: Term) -> None:
    assert offline_term.run("session list") == "POP3 service not running\n"
    assert "not running" in one_error_line(offline_term.run("session kill 1"))


async def test_no_sessions_on_a_running_device(admin_term: Term) -> None:
    assert admin_term.run("session list") == "no POP3 sessions open (limit 16)\n"
    assert "no open session 1" in one_error_line(admin_term.run("session kill 1"))


# ----- scans -----


async def test_scan_hands_an_action_to_the_transport_and_holds_input(admin_term: Term) -> None:
    add_box(admin_term, "alice")
    shell = admin_term.shell
    out = admin_term.type("scan alice pages=2 dpi=200x200 mode=mono format=pdf\rstatus\r")
    assert out.endswith("scanning 2 pages into box alice ...\r\n")
    action = shell.take_action()
    assert isinstance(action, ScanAction)
    assert (action.request.box, action.request.pages, action.request.format) == ("alice", 2, "pdf")
    assert shell.take_action() is None and shell.mode is Mode.BUSY
    assert shell.next_deadline() is None  # no idle logout while a job runs
    assert admin_term.type("x" * (MAX_HELD * 2)) == ""
    assert shell.buffered <= MAX_HELD
    out = shell.finish_action("scan job 0001 done").decode()
    assert out.startswith("scan job 0001 done\r\nDP-3530> status\r\n")  # the held line runs
    assert "model" in out


async def test_scan_defaults_follow_the_profile(admin_term: Term) -> None:
    add_box(admin_term, "alice")
    chosen = []
    for line in ("scan alice", "scan alice mode=gray", "scan alice mode=color dpi=600"):
        admin_term.type(line + "\r")
        action = admin_term.shell.take_action()
        assert isinstance(action, ScanAction)
        admin_term.shell.finish_action("")
        request = action.request
        chosen.append((request.pages, request.dpi, request.mode, request.format))
    assert chosen == [
        (1, "300", "mono", "tiff"),
        (1, "300", "gray", "pdf"),
        (1, "600", "color", "pdf"),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "scan nobody",
        "scan alice pages=0",
        "scan alice pages=many",
        "scan alice pages=9999",
        "scan alice dpi=1200",
        "scan alice mode=sepia",
        "scan alice mode=color format=tiff",
        "scan alice colour=red",
    ],
)
async def test_scan_errors_are_refused_before_any_work(admin_term: Term, line: str) -> None:
    add_box(admin_term, "alice")
    one_error_line(admin_term.run(line))
    assert admin_term.shell.take_action() is None


async def test_a_scan_runs_into_the_box(admin_term: Term, device: Device) -> None:
    add_box(admin_term, "alice")
    admin_term.type("scan alice\r")
    action = admin_term.shell.take_action()
    assert isinstance(action, ScanAction)
    text = render.scan_done(await run_scan(admin_term.shell.ctx, action.request))
    assert text.startswith("scan job 0001 done: 1 page,")
    assert admin_term.shell.finish_action(text).endswith(b"DP-3530> ")
    assert device.scans_done == 1
    assert len(device.board.messages("alice")) == 1
    assert re.search(r"scans\s+1 done", admin_term.run("status"))


# ----- passwd, reboot, shutdown -----


async def test_passwd_changes_the_admin_password(admin_term: Term, device: Device) -> None:
    assert admin_term.run("passwd") == "Current password: "
    admin_term.type("wrong\r")
    admin_term.type("next-pass\r")
    out = admin_term.type("next-pass\r")
    assert "error: passwd: the current password is wrong; nothing changed" in out
    admin_term.run("passwd")
    for answer in (ADMIN_PASSWORD, "next-pass", "next-pass"):
        out = admin_term.type(answer + "\r")
    assert "admin password changed" in out
    assert device.board.check_admin_password("next-pass")
    admin_term.type("logout\r")
    assert "Login incorrect" in admin_term.login()
    assert "logged in" in admin_term.login("next-pass")


async def test_reboot_and_shutdown_are_actions(admin_term: Term, device: Device) -> None:
    shell = admin_term.shell
    assert admin_term.type("reboot\r").endswith("rebooting ...\r\n")
    assert shell.take_action() == PowerAction("reboot")
    system.reboot(shell.ctx)
    shell.finish_action("")
    out = shell.power_done("reboot").decode()
    assert "session closed by reboot" in out
    assert out.endswith("Password: ") and not shell.logged_in
    await wait_booted(device, boots=2)  # the real device rebooted
    admin_term.login()
    assert admin_term.type("shutdown\r").endswith("shutting down ...\r\n")
    assert shell.take_action() == PowerAction("shutdown")


# ----- noise -----


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(noise=st.lists(st.binary(max_size=600), max_size=8))
def test_line_noise_never_raises_and_memory_stays_bounded(
    offline_shell: ConsoleShell, clock: Clock, noise: list[bytes]
) -> None:
    shell = offline_shell  # a board with no services: noise needs no listener
    shell.connect()
    shell.feed(ADMIN_PASSWORD.encode() + b"\r")
    for chunk in noise:
        out = shell.feed(chunk)
        assert isinstance(out, bytes)
        assert shell.buffered <= MAX_LINE + MAX_HELD + 400 * MAX_LINE
        if shell.take_action() is not None:
            shell.finish_action("done")
        clock.now += 1
        shell.tick()
    shell.disconnect()


async def test_a_failing_operation_is_logged_and_ends_only_the_session(
    admin_term: Term, device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    device.log_lines.append(b"a bytes log line: a bug elsewhere")  # type: ignore[arg-type]
    out = admin_term.type("log\r")
    assert "error: internal error in `log` (logged); logging out" in out
    assert out.endswith("Password: ") and not admin_term.shell.logged_in
    assert any(r.exc_info for r in caplog.records if "internal error" in r.getMessage())
    assert "logged in" in admin_term.login()  # the console itself goes on
    assert "model" in admin_term.run("status")


# ----- security: the TLS certificate, legacy secrets, box lock-outs -----


def paste_pem(term: Term, text: str) -> str:
    """Pasted text as a terminal sends it: each line ended by CRLF (one Enter)."""
    return "".join(term.type(line + "\r\n") for line in text.splitlines())


def stored_tls(device: Device) -> tuple[str | None, str | None, str | None]:
    settings = device.board.settings()
    return tuple(settings.get(k) for k in (tls.SETTING_CERT, tls.SETTING_KEY, tls.SETTING_CHAIN))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def ca_issued() -> tuple[str, str, str]:
    """(leaf, key, chain) PEM: a leaf for the device issued by an intermediate CA."""
    leaf = trustme.CA().create_child_ca().issue_cert("copier.lab.example")
    pems = [blob.bytes().decode() for blob in leaf.cert_chain_pems]
    return pems[0], leaf.private_key_pem.bytes().decode(), "".join(pems[1:])


async def test_tls_show_describes_the_factory_certificate(admin_term: Term, device: Device) -> None:
    out = admin_term.run("tls show")
    hostname = device.profile.str("identity.hostname")
    info = tls.describe(device.board.settings()[tls.SETTING_CERT])
    assert f"subject:     {info.subject}\n" in out
    assert f"names:       DNS:{hostname}, DNS:localhost, IP:127.0.0.1, IP:::1\n" in out
    assert re.search(r"^valid until: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", out, re.M)
    digest = re.search(r"^sha256:      (\S+)\n {13}(\S+)$", out, re.M)
    assert digest is not None and digest.group(1) + digest.group(2) == info.sha256_fingerprint
    assert "usable:      yes\n" in out
    assert "in service:  STLS/POP3S with the certificate loaded at boot\n" in out
    assert "saved since boot" not in out


async def test_tls_show_pem_prints_the_certificate_never_the_key(
    admin_term: Term, device: Device
) -> None:
    out = admin_term.run("tls show pem")
    cert_pem = device.board.settings()[tls.SETTING_CERT]
    assert out == cert_pem.rstrip() + "\n"
    assert "PRIVATE KEY" not in out
    one_error_line(admin_term.run("tls show key"))
    admin_term.run("tls selfsign")
    out = admin_term.run("tls show pem")
    assert "(saved since boot: in service after reboot)\n-----BEGIN CERTIFICATE-----" in out
    assert device.board.settings()[tls.SETTING_CERT].rstrip() in out


async def test_tls_selfsign_makes_a_new_certificate_for_the_hostname(
    admin_term: Term, device: Device
) -> None:
    before = stored_tls(device)
    out = admin_term.run("tls selfsign")
    hostname = device.profile.str("identity.hostname")
    assert out.startswith(
        f"self-signed TLS certificate for {hostname} (saved; applies after reboot)"
    )
    after = stored_tls(device)
    assert after[0] != before[0] and after[1] != before[1]
    loopback = ("DNS:localhost", "IP:127.0.0.1", "IP:::1")
    assert tls.check_pair(after[0] or "", after[1] or "").san == (f"DNS:{hostname}", *loopback)
    assert "saved since boot: in service after reboot" in admin_term.run("tls show")
    admin_term.run("tls selfsign 192.0.2.7")
    named = ("DNS:localhost", "IP:192.0.2.7", "IP:127.0.0.1", "IP:::1")
    assert tls.describe(stored_tls(device)[0] or "").san == named
    one_error_line(admin_term.run('tls selfsign "two words"'))
    assert tls.describe(stored_tls(device)[0] or "").san == named


async def test_tls_import_reads_pasted_pem_up_to_the_end_marker(
    admin_term: Term, device: Device, ca_issued: tuple[str, str, str]
) -> None:
    leaf, key, chain = ca_issued
    out = admin_term.run("tls import")
    assert out.endswith(f"end with the line {TLS_END} (Ctrl-C cancels)\n")
    assert admin_term.shell.mode is Mode.IMPORT
    # What `openssl pkcs12 -nodes` prints: attribute lines between the blocks are ignored.
    ec_parameters = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    out = paste_pem(admin_term, f"Bag Attributes\n{leaf}{ec_parameters}{key}  \n{chain}{TLS_END}")
    assert "TLS certificate imported with 1 chain certificate " in out
    assert "(saved; applies after reboot)" in out and "names:       DNS:copier.lab.example" in out
    assert out.endswith("DP-3530> ")
    assert stored_tls(device) == (leaf, key, chain)
    assert "usable:      yes" in admin_term.run("tls show")


@pytest.mark.parametrize(
    ("pasted", "error"),
    [
        (
            "{leaf}{other_key}",
            "tls import: key: the private key does not belong to the certificate",
        ),
        ("{leaf}", "expected one -----BEGIN ... PRIVATE KEY----- block, found 0"),
        ("{key}", "no -----BEGIN CERTIFICATE----- block found"),
        ("{leaf}{key}{key}", "found 2"),
        ("{leaf}{key}{leaf}", "chain: certificate 1 .* did not sign"),
        ("{leaf}{key}-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "X509 CRL"),
        ("garbage\n", "no -----BEGIN CERTIFICATE-----"),
    ],
)
async def test_a_refused_tls_import_changes_nothing(
    admin_term: Term, device: Device, ca_issued: tuple[str, str, str], pasted: str, error: str
) -> None:
    leaf, key, _ = ca_issued
    other_key = tls.make_self_signed("other.example")[1]
    before = stored_tls(device)
    admin_term.run("tls import")
    out = paste_pem(admin_term, pasted.format(leaf=leaf, key=key, other_key=other_key) + TLS_END)
    echoed, _, result = out.removesuffix("DP-3530> ").partition(f"{TLS_END}\r\n")
    assert "error" not in echoed
    line = one_error_line(result.replace("\r\n", "\n"))
    assert re.search(error, line) and line.endswith("; nothing changed\n"), line
    assert stored_tls(device) == before


async def test_tls_import_can_be_cancelled_and_is_bounded(
    admin_term: Term, device: Device, ca_issued: tuple[str, str, str]
) -> None:
    before = stored_tls(device)
    admin_term.run("tls import")
    paste_pem(admin_term, ca_issued[0])
    assert "import cancelled; nothing changed" in admin_term.type("\x03")
    admin_term.run("tls import")
    paste_pem(admin_term, "A" * 64 + "\n" * 0 + ("x\n" * 401))
    out = admin_term.type(TLS_END + "\r")
    assert "error: tls import refused: more than 400 lines; nothing changed" in out
    assert stored_tls(device) == before


async def test_box_show_and_list_say_whether_a_box_has_a_legacy_secret(
    admin_term: Term, device: Device
) -> None:
    add_box(admin_term, "alice")  # the factory has pop3.apop off: no legacy secret
    assert "legacy" not in admin_term.run("box list")
    assert "no legacy secret: no APOP, CRAM-MD5" in admin_term.run("box show alice")
    out = admin_term.run("profile set pop3.apop true").replace("\r\n", "\n")
    assert "pop3.apop = true (saved; applied now)\n" in out
    assert "WARNING: pop3.apop is on, but 1 box has no APOP/CRAM-MD5 secret\n" in out
    assert "  and cannot log in with APOP or CRAM-MD5: alice\n" in out
    assert "`box passwd NAME legacy`" in out
    assert "box bob added (APOP/CRAM-MD5 secret kept)" in add_box(admin_term, "bob")
    admin_term.run("box add carol nolegacy")
    admin_term.type("carol-pw-1\r")
    assert "box carol added; it keeps no APOP/CRAM-MD5 secret" in admin_term.type("carol-pw-1\r")
    out = admin_term.run("box list")
    assert re.search(r"^bob .* legacy secret \(APOP, CRAM-MD5\)$", out, re.M)
    assert not re.search(r"^alice .*legacy", out, re.M)
    assert "legacy secret kept: APOP and CRAM-MD5 work" in admin_term.run("box show bob")
    admin_term.run("profile set pop3.apop false")
    assert "APOP, CRAM-MD5 off (pop3.apop = false)" in admin_term.run("box show bob")


@pytest.mark.parametrize(
    ("option", "had", "has", "says"),
    [
        ("legacy", False, True, "APOP/CRAM-MD5 secret kept from now on"),
        ("--legacy", False, True, "kept from now on"),
        ("", False, False, "password of box alice changed\n"),
        ("", True, True, "password of box alice changed\n"),
        ("nolegacy", True, False, "APOP/CRAM-MD5 secret dropped"),
        ("LEGACY", True, True, "password of box alice changed\n"),
    ],
)
async def test_box_passwd_keeps_enables_or_drops_the_legacy_secret(
    admin_term: Term, device: Device, option: str, had: bool, has: bool, says: str
) -> None:
    device.board.add_box("alice", "old-pw", legacy=had)
    assert admin_term.run(f"box passwd alice {option}".strip()) == "New password for box alice: "
    admin_term.type("new-pw\r")
    out = admin_term.type("new-pw\r").replace("\r\n", "\n")
    assert says in out
    creds = device.board.box_credentials("alice")
    assert creds is not None and verify_password(creds, "new-pw")
    assert creds.legacy_secret == ("new-pw" if has else None)


async def test_box_passwd_gives_a_legacy_secret_while_pop3_apop_is_on(
    admin_term: Term, device: Device
) -> None:
    device.board.add_box("alice", "old-pw")
    admin_term.run("profile set pop3.apop true")
    admin_term.run("box passwd alice")
    admin_term.type("new-pw\r")
    assert "APOP/CRAM-MD5 secret kept from now on" in admin_term.type("new-pw\r")
    creds = device.board.box_credentials("alice")
    assert creds is not None and creds.legacy_secret == "new-pw"


async def test_box_passwd_refuses_an_unknown_option(admin_term: Term, device: Device) -> None:
    device.board.add_box("alice", "old-pw")
    assert "usage: box passwd NAME [[no]legacy]" in one_error_line(
        admin_term.run("box passwd alice maybe")
    )


def test_security_commands_without_the_pop3_service(offline_term: Term) -> None:
    assert "POP3 service is not running" in one_error_line(offline_term.run("box unlock alice"))
    assert "TLS" not in offline_term.run("status")  # nothing to say without the service
    assert "in service" not in offline_term.run("tls show")  # nothing runs: nothing to say


async def test_status_shows_failed_scans_and_the_lab_feeder(
    admin_term: Term, device: Device
) -> None:
    assert "feeder" not in admin_term.run("status")
    device.scans_done, device.scans_failed = 3, 2
    device.feeder = ScanFeeder(device, 6.0)
    out = admin_term.run("status")
    assert re.search(r"^scans\s+3 done, 2 failed$", out, re.M)
    assert re.search(
        r"^feeder\s+scan feeder 6 jobs/min: 0 done \(0 pages, 0 bytes\), 0 failed$", out, re.M
    )


# ----- the security commands on a running device -----


def pop3_fail_login(address: tuple[str, int], box: str) -> str:
    client = poplib.POP3(*address, timeout=10)
    try:
        client.user(box)
        client.pass_("wrong")
    except poplib.error_proto as exc:
        return str(exc)
    finally:
        client.close()
    raise AssertionError("a wrong password was accepted")


def pop3_login(address: tuple[str, int], *, stls: bool = False) -> poplib.POP3:
    client = poplib.POP3(*address, timeout=10)
    if stls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        client.stls(context)
    try:
        client.user("alice")
        client.pass_(BOX_PASSWORD)
    except poplib.error_proto:
        client.close()  # an open session would hold the device's shutdown for its grace
        raise
    return client


async def test_a_locked_box_shows_in_status_until_box_unlock(
    live_term: Term, live_device: Device
) -> None:
    address = live_device.pop3_addresses[0]
    for _ in range(LOCKOUT_FAILURES):
        await trio.to_thread.run_sync(pop3_fail_login, address, "alice")
    with pytest.raises(poplib.error_proto):  # locked: even the right password fails
        await trio.to_thread.run_sync(pop3_login, address)
    out = live_term.run("status")
    assert re.search(r"^locked\s+1 box after failed logins \(`box unlock NAME`\):$", out, re.M)
    assert re.search(r"^\s+alice 1[45]:\d\d$", out, re.M)
    assert re.search(rf"^logins\s+0 ok, {LOCKOUT_FAILURES + 1} failed; 0 evicted", out, re.M)
    assert re.search(r"^alice .* locked 1[45]:\d\d$", live_term.run("box list"), re.M)
    assert "left after failed logins (`box unlock`)" in live_term.run("box show alice")
    out = live_term.run("box unlock alice")
    assert out == "box alice unlocked; its failed-login count is cleared\n"
    assert "locked" not in live_term.run("status")
    client = await trio.to_thread.run_sync(pop3_login, address)
    await trio.to_thread.run_sync(client.quit)
    assert live_term.run("box unlock alice") == "box alice is not locked\n"
    one_error_line(live_term.run("box unlock nobody"))


async def test_status_shows_tls_and_sessions_in_tls(live_term: Term, live_device: Device) -> None:
    out = live_term.run("status")
    host, port = live_device.pop3s_addresses[0]
    assert f"TLS        STLS offered, POP3S on {host}:{port}; 0 handshakes, 0 failed\n" in out
    client = await trio.to_thread.run_sync(
        partial(pop3_login, live_device.pop3_addresses[0], stls=True)
    )
    try:
        out = live_term.run("status")
        assert "1 of 16 sessions open, 1 in TLS" in out
        assert "; 1 handshake, 0 failed" in out
        assert re.search(r"^logins\s+1 ok, 0 failed", out, re.M)
    finally:
        await trio.to_thread.run_sync(client.quit)
    assert "in service:  STLS/POP3S with the certificate loaded at boot" in live_term.run(
        "tls show"
    )
    for line in live_term.run("status").splitlines() + live_term.run("tls show").splitlines():
        assert len(line) < 80, line
