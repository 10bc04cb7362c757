"""The admin operations against a real running Device: real board, POP3 service, scans."""

from __future__ import annotations

import datetime
import logging
import poplib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trustme

from firmware.config.profile import MODELS, factory
from firmware.device.admin import (
    EXPORT_BEGIN,
    EXPORT_END,
    DeviceAdmin,
    format_left,
    format_size,
    format_uptime,
    format_value,
)
from firmware.device.device import Device, RunOptions, apply_overrides
from firmware.errors import BoxError, DeviceError, ProfileError
from firmware.security import tls
from firmware.security.abuse import LOCKOUT_FAILURES
from firmware.store.board import Board

ADMIN_PASSWORD = "admin-test-pw"
ALICE_PASSWORD = "alice-pw"
MIB = 1 << 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "board.img"
    profile = factory("DP-3530").with_value("pop3.plaintext_auth", "always")
    profile = profile.with_value("pop3.auth_failure_delay_s", "0")
    board = Board.create(path, profile, ADMIN_PASSWORD, size=16 * MIB)
    board.add_box("alice", ALICE_PASSWORD)
    board.deliver("alice", b"Subject: hello\r\n\r\nbody\r\n")
    board.close()
    return path


async def wait_booted(device: Device, boots: int = 1) -> tuple[str, int]:
    with trio.fail_after(20):
        while device.boots < boots or not device.pop3_addresses or device.pop3 is None:
            await trio.sleep(0.01)
    return device.pop3_addresses[0]


@pytest.fixture
async def device(image: Path) -> AsyncIterator[Device]:
    device = Device(RunOptions(image=image, pop3=("127.0.0.1", 0)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(device.run)
        await wait_booted(device)
        try:
            yield device
        finally:
            device.request_shutdown()


@pytest.fixture
def admin(device: Device) -> DeviceAdmin:
    return DeviceAdmin(device)


def pop3_login(
    address: tuple[str, int], box: str = "alice", password: str = ALICE_PASSWORD
) -> poplib.POP3:
    client = poplib.POP3(address[0], address[1], timeout=10)
    client.user(box)
    client.pass_(password)
    return client


def pop3_refused(address: tuple[str, int], box: str, password: str) -> None:
    client = poplib.POP3(address[0], address[1], timeout=10)
    try:
        client.user(box)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
            client.pass_(password)
    finally:
        client.close()


async def test_status_counts_sessions_and_scans(admin: DeviceAdmin, device: Device) -> None:
    out = admin.status()
    assert re.search(r"^model\s+DP-3530$", out, re.M)
    assert "0 of 16 sessions open" in out
    client = await trio.to_thread.run_sync(pop3_login, device.pop3_addresses[0])
    try:
        assert "1 of 16 sessions open" in admin.status()
        assert re.search(r"RAM\s+[1-9][\d.]* KiB used", admin.status())
    finally:
        await trio.to_thread.run_sync(client.quit)


async def test_session_list_and_kill(admin: DeviceAdmin, device: Device) -> None:
    assert admin.session_list() == "no POP3 sessions open (limit 16)"
    client = await trio.to_thread.run_sync(pop3_login, device.pop3_addresses[0])
    listing = admin.session_list()
    assert "1 of 16 POP3 sessions open" in listing
    assert re.search(r"^\s+1\s+127\.0\.0\.1:\d+\s+alice\s+transaction", listing, re.M)
    assert admin.session_kill("1") == "session 1 closed (nothing committed)"
    with pytest.raises(Exception):  # noqa: B017 - whatever poplib raises on a dropped line
        await trio.to_thread.run_sync(client.stat)
    client.close()
    with trio.fail_after(5):
        while device.pop3 is not None and device.pop3.sessions():
            await trio.sleep(0.01)
    with pytest.raises(DeviceError, match="no open session 1"):
        admin.session_kill("1")
    with pytest.raises(DeviceError, match="not a session id"):
        admin.session_kill("one")
    assert len(device.board.messages("alice")) == 1  # a killed session deletes nothing


async def test_a_live_setting_binds_the_running_service(admin: DeviceAdmin, device: Device) -> None:
    assert admin.profile_set([("pop3.max_sessions", "1")]) == (
        "pop3.max_sessions = 1 (saved; applied now)"
    )
    assert device.board.profile.int("pop3.max_sessions") == 1
    address = device.pop3_addresses[0]
    first = await trio.to_thread.run_sync(pop3_login, address)
    try:
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            await trio.to_thread.run_sync(pop3_login, address)
    finally:
        await trio.to_thread.run_sync(first.quit)


async def test_a_reboot_keeps_what_was_saved(admin: DeviceAdmin, device: Device) -> None:
    assert "applies after reboot" in admin.profile_set([("engine.ppm", "12")])
    admin.reboot()
    await wait_booted(device, boots=2)
    assert device.profile.int("engine.ppm") == 12
    assert device.board.profile.int("engine.ppm") == 12


async def test_an_invalid_import_changes_nothing(admin: DeviceAdmin, device: Device) -> None:
    before = device.board.profile
    bad = before.to_toml().replace("ppm = 35", "ppm = 9000")
    with pytest.raises(ProfileError, match=r"engine.ppm = 9000 is not allowed; expected an "):
        admin.profile_import(bad)
    with pytest.raises(ProfileError, match="not valid TOML"):
        admin.profile_import("[pop3\n")
    assert device.board.profile == before and device.profile == before


async def test_every_factory_profile_exports_and_imports_back(
    admin: DeviceAdmin, device: Device
) -> None:
    for model in MODELS:
        admin.profile_apply(model, keep_site=False)
        exported = admin.profile_export()
        assert exported.startswith(f"{EXPORT_BEGIN} {model}\n")
        assert exported.endswith(f"\n{EXPORT_END}")
        admin.profile_reset()
        admin.profile_apply("DP-3510" if model != "DP-3510" else "DP-6030")
        admin.profile_import(exported)
        assert device.board.profile == factory(model)


async def test_profile_apply_reset_and_diff(admin: DeviceAdmin, device: Device) -> None:
    assert "pop3.plaintext_auth = always | tls_only" in admin.profile_diff()
    out = admin.profile_apply("dp-4520")
    assert "values changed and saved" in out
    assert "  identity.model: DP-3530 -> DP-4520 (applies after reboot; running: DP-3530)" in out
    assert "pop3.plaintext_auth" not in out  # a site setting: kept
    assert device.board.profile.str("pop3.plaintext_auth") == "always"
    assert device.board.profile.model == "DP-4520"
    plan = admin.plan_reset()
    assert ("pop3.plaintext_auth", "always", "tls_only") in plan.changes
    assert "  pop3.plaintext_auth: always -> tls_only (now)" in plan.describe(device.profile)
    out = admin.commit(plan)
    assert "pop3.plaintext_auth: always -> tls_only (applied now)" in out
    assert device.board.profile == factory("DP-4520")
    assert admin.profile_reset() == "profile reset to DP-4520 factory values: no value changed"
    diff = admin.profile_diff()
    assert diff.startswith("no differences from the DP-4520 factory profile\npending: saved")
    assert "  identity.model: DP-3530 -> DP-4520" in diff
    with pytest.raises(ProfileError, match="unknown model"):
        admin.profile_apply("DP-1")


async def test_a_reboot_key_stays_pending_until_reboot(admin: DeviceAdmin, device: Device) -> None:
    """The greeting, CRAM challenge, prompt, status and scans keep the running identity."""
    out = admin.profile_set([("identity.model", "dp-4520")])
    assert out == "identity.model = DP-4520 (saved; applies after reboot; running: DP-3530)"
    out = admin.profile_set([("identity.hostname", "copier.example")])
    assert out == (
        "identity.hostname = copier.example (saved; applies after reboot; running: dp3530.local)"
    )
    assert device.board.profile.model == "DP-4520"

    def greeting() -> bytes:
        address = device.pop3_addresses[0]
        client = poplib.POP3(address[0], address[1], timeout=10)
        try:
            return client.getwelcome()
        finally:
            client.quit()

    welcome = await trio.to_thread.run_sync(greeting)
    assert welcome.startswith(b"+OK DP-3530 POP3 service ready")
    assert b"@dp3530.local>" in welcome  # the APOP timestamp names the running host
    assert admin.prompt_name() == "DP-3530"
    status = admin.status()
    assert re.search(r"^model\s+DP-3530 \(DP-4520 after reboot\)$", status, re.M)
    assert "profile    2 saved change(s) pending reboot (`profile diff`)" in status
    shown = admin.profile_show()
    assert re.search(
        r"^identity\.model += DP-3530  \(pending: DP-4520 after reboot\)$", shown, re.M
    )
    assert shown.endswith("\n(2 saved value(s) pending reboot)")
    assert admin.profile_get("identity.model").startswith(
        "identity.model = DP-3530\n  pending: DP-4520 saved, applies after reboot\n"
    )
    assert "  identity.hostname: dp3530.local -> copier.example" in admin.profile_diff()
    await admin.scan(admin.prepare_scan("alice", ["pages=1", "format=pdf"]))
    uid = device.board.messages("alice")[-1].uid
    scanned = b"".join(device.board.read_wire("alice", uid))
    assert b"From: DP-3530 Scanner <scanner@dp3530.local>" in scanned
    assert re.search(rb"Message-ID: <[^>]*@dp3530\.local>", scanned)

    admin.reboot()
    await wait_booted(device, boots=2)
    welcome = await trio.to_thread.run_sync(greeting)
    assert welcome.startswith(b"+OK DP-4520 POP3 service ready")
    assert b"@copier.example>" in welcome
    assert admin.prompt_name() == "DP-4520" and device.pending() == []
    assert "pending" not in admin.status() and "pending" not in admin.profile_show()


async def test_setting_a_pending_key_back_to_its_running_value(
    admin: DeviceAdmin, device: Device
) -> None:
    admin.profile_set([("engine.ppm", "12")])
    assert admin.profile_set([("engine.ppm", "35")]) == (
        "engine.ppm = 35 (saved; back to the running value)"
    )
    assert device.pending() == [] and device.board.profile.int("engine.ppm") == 35


async def test_a_model_change_keeps_plaintext_pop3_for_the_readme_example(
    admin: DeviceAdmin, device: Device
) -> None:
    admin.profile_apply("DP-6030")
    admin.reboot()
    await wait_booted(device, boots=2)
    assert device.profile.model == "DP-6030"
    client = await trio.to_thread.run_sync(pop3_login, device.pop3_addresses[0])
    await trio.to_thread.run_sync(client.quit)


async def test_a_run_only_override_is_the_running_value(image: Path) -> None:
    options = RunOptions(
        image=image,
        pop3=("127.0.0.1", 0),
        overrides={"identity.hostname": "bench.lab", "pop3.max_sessions": "3"},
    )
    device = Device(options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(device.run)
        await wait_booted(device)
        admin = DeviceAdmin(device)
        try:
            assert device.profile.str("identity.hostname") == "bench.lab"
            assert device.pending() == []
            out = admin.profile_set([("identity.hostname", "saved.lab")])
            assert (
                out
                == "identity.hostname = saved.lab (saved; applies after reboot; running: bench.lab)"
            )
            assert device.profile.str("identity.hostname") == "bench.lab"
            assert device.board.profile.str("identity.hostname") == "saved.lab"
            assert device.board.profile.int("pop3.max_sessions") == 16  # never written
        finally:
            device.request_shutdown()


def test_a_bad_run_only_host_name_is_refused(image: Path) -> None:
    with pytest.raises(ProfileError, match=r'--set: identity.hostname = "my host" is not allowed'):
        apply_overrides(factory("DP-3530"), {"identity.hostname": "my host"})


async def test_box_operations(admin: DeviceAdmin, device: Device) -> None:
    assert admin.box_add("carol", "carol-pw", "carol-pw") == "box carol added"
    with pytest.raises(BoxError, match="already exists"):
        admin.check_new_box("carol")
    with pytest.raises(DeviceError, match="differ"):
        admin.box_passwd("carol", "aaaa", "bbbb")
    assert admin.box_passwd("carol", "new-carol", "new-carol") == "password of box carol changed"
    assert device.board.box_credentials("carol") is not None
    with pytest.raises(BoxError, match="holds 1 message; delete it first"):
        admin.box_del("alice")
    assert "messages   1 of 1000" in admin.box_show("alice")
    assert admin.box_del("alice", purge=True) == "box alice deleted"
    assert [b.name for b in device.board.boxes()] == ["carol"]


async def test_scan_into_a_box(admin: DeviceAdmin, device: Device) -> None:
    request = admin.prepare_scan("alice", ["pages=2", "mode=gray", "format=pdf"])
    text = await admin.scan(request)
    assert re.fullmatch(r"scan job 0001 done: 2 pages, .* stored in box alice as \S+", text)
    assert device.scans_done == 1
    assert len(device.board.messages("alice")) == 2
    with pytest.raises(DeviceError, match="at most"):
        admin.prepare_scan("alice", ["pages=100000"])


async def test_admin_password(admin: DeviceAdmin, device: Device) -> None:
    assert admin.check_password(ADMIN_PASSWORD)
    with pytest.raises(DeviceError, match="4 to 64"):
        admin.set_password(ADMIN_PASSWORD, "abc", "abc")
    assert admin.set_password(ADMIN_PASSWORD, "fresh-pw", "fresh-pw").startswith("admin password")
    assert admin.check_password("fresh-pw") and not admin.check_password(ADMIN_PASSWORD)


async def test_fsck_compact_log(admin: DeviceAdmin) -> None:
    assert re.fullmatch(r"fsck: \d+ records? checked, all clean", await admin.fsck())
    assert (await admin.compact()).startswith("compact: ")
    logging.getLogger("dpfw.test").warning("marker \x1b[31m line")
    assert admin.log(1).endswith("WARNING dpfw.test: marker ?[31m line")


async def test_while_rebooting_everything_is_a_clear_error(
    admin: DeviceAdmin, device: Device
) -> None:
    admin.reboot()
    with trio.fail_after(10):
        while device.boots < 2:
            assert admin.prompt_name() in ("DP", "DP-3530")
            try:
                admin.status()
            except DeviceError as exc:
                assert "not running" in str(exc)
            await trio.sleep(0)


async def test_status_counts_failed_logins_and_locks_until_unlock(
    admin: DeviceAdmin, device: Device
) -> None:
    address = device.pop3_addresses[0]
    out = admin.status()
    assert "TLS        STLS offered; 0 handshakes, 0 failed" in out  # no --pop3s here
    assert "locked" not in out
    for _ in range(LOCKOUT_FAILURES):
        await trio.to_thread.run_sync(pop3_refused, address, "alice", "wrong")
    await trio.to_thread.run_sync(pop3_refused, address, "alice", ALICE_PASSWORD)
    out = admin.status()
    assert re.search(rf"^logins\s+0 ok, {LOCKOUT_FAILURES + 1} failed;", out, re.M)
    assert re.search(r"^locked\s+1 box .*\n\s+alice 1[45]:\d\d$", out, re.M)
    assert admin.box_unlock("alice") == "box alice unlocked; its failed-login count is cleared"
    assert "locked" not in admin.status()
    client = await trio.to_thread.run_sync(pop3_login, address)
    await trio.to_thread.run_sync(client.quit)
    assert re.search(r"^logins\s+1 ok,", admin.status(), re.M)
    assert admin.box_unlock("alice") == "box alice is not locked"
    with pytest.raises(DeviceError, match="no box named 'nobody' is locked"):
        admin.box_unlock("nobody")


async def test_a_guessed_name_that_got_locked_can_be_unlocked(
    admin: DeviceAdmin, device: Device
) -> None:
    for _ in range(LOCKOUT_FAILURES):
        await trio.to_thread.run_sync(pop3_refused, device.pop3_addresses[0], "mallory", "x")
    assert re.search(r"^\s+mallory 1[45]:\d\d$", admin.status(), re.M)
    assert admin.box_unlock("mallory").startswith("box mallory unlocked")


async def test_status_counts_failed_scans(admin: DeviceAdmin, device: Device) -> None:
    request = admin.prepare_scan("alice", [])
    admin.box_del("alice", purge=True)  # gone before the job stores its message
    with pytest.raises(BoxError):
        await admin.scan(request)
    assert re.search(r"^scans\s+0 done, 1 failed$", admin.status(), re.M)


async def test_tls_import_and_selfsign_apply_after_reboot(
    admin: DeviceAdmin, device: Device
) -> None:
    leaf = trustme.CA().issue_cert("copier.lab.example")
    cert_pem = leaf.cert_chain_pems[0].bytes().decode()
    key_pem = leaf.private_key_pem.bytes().decode()
    out = admin.tls_import(key_pem + "\n" + cert_pem)  # the key may come first
    assert out.startswith("TLS certificate imported (saved; applies after reboot)")
    assert device.board.settings()[tls.SETTING_CERT] == cert_pem
    assert tls.SETTING_CHAIN not in device.board.settings()
    assert "in service after reboot" in admin.tls_show()
    admin.reboot()
    await wait_booted(device, boots=2)
    out = admin.tls_show()
    assert "names:       DNS:copier.lab.example" in out
    assert "after reboot" not in out and "in service:  STLS/POP3S" in out
    with pytest.raises(tls.TlsError, match="expired"):
        expired = trustme.CA().issue_cert("old.example", not_after=datetime.datetime(2001, 1, 1))
        admin.tls_import(
            expired.cert_chain_pems[0].bytes().decode() + expired.private_key_pem.bytes().decode()
        )
    assert device.board.settings()[tls.SETTING_CERT] == cert_pem
    assert "for dp3530.local (saved; applies after reboot)" in admin.tls_selfsign()


async def test_box_legacy_secret_and_what_box_show_says(admin: DeviceAdmin, device: Device) -> None:
    assert "no legacy secret: no APOP, CRAM-MD5" in admin.box_show("alice")
    out = admin.box_passwd("alice", "alice-new", "alice-new", legacy=True)
    assert out.endswith("APOP/CRAM-MD5 secret kept from now on")
    creds = device.board.box_credentials("alice")
    assert creds is not None and creds.legacy_secret == "alice-new"
    assert "legacy secret kept" in admin.box_show("alice")
    assert "legacy secret (APOP, CRAM-MD5)" in admin.box_list()
    admin.box_passwd("alice", "alice-new2", "alice-new2")  # keeps it
    assert device.board.box_credentials("alice").legacy_secret == "alice-new2"  # type: ignore[union-attr]
    assert admin.box_passwd("alice", "alice-new3", "alice-new3", legacy=False).endswith("dropped")
    assert device.board.box_credentials("alice").legacy_secret is None  # type: ignore[union-attr]


@pytest.mark.parametrize("password", ["bell\x07pw", "pw\u0221x", "\u00ad\u00ad\u00ad\u00ad"])
async def test_a_password_saslprep_refuses_changes_nothing(
    admin: DeviceAdmin, device: Device, password: str
) -> None:
    with pytest.raises(
        DeviceError, match=r"^box add: the password cannot be used: .*; nothing changed$"
    ):
        admin.box_add("carol", password, password)
    with pytest.raises(DeviceError, match=r"^passwd: the password cannot be used"):
        admin.set_password(ADMIN_PASSWORD, password, password)
    assert [b.name for b in device.board.boxes()] == ["alice"]


async def test_a_non_ascii_password_logs_in_however_it_is_normalised(
    admin: DeviceAdmin, device: Device
) -> None:
    admin.box_add("dora", "pässwörd", "pässwörd")  # composed (NFC)
    address = device.pop3_addresses[0]
    for typed in ("pässwörd", "pa\u0308sswo\u0308rd"):  # composed, decomposed
        client = await trio.to_thread.run_sync(pop3_login, address, "dora", typed)
        await trio.to_thread.run_sync(client.quit)
    await trio.to_thread.run_sync(pop3_refused, address, "dora", "passwort")


def test_formatting_helpers() -> None:
    assert format_value(True) == "true"
    assert format_value(("mono", "gray")) == "mono, gray"
    assert format_size(512) == "512 B"
    assert format_size(3 * MIB // 2) == "1.5 MiB"
    assert format_uptime(90061) == "1d 01:01:01"
    assert format_left(899.2) == "15:00" and format_left(61) == "1:01" and format_left(-1) == "0:00"
