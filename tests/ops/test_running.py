"""The operations (firmware.ops) on a real running Device: real board, POP3 service, scans.

What the console prints is `firmware.ops.render` of what these return; the texts are checked
here as the console shows them, and the dataclasses where a front-end reads fields."""

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
from firmware.device.boards import create_board, open_board, saved_profile
from firmware.device.device import Device, RunOptions, apply_overrides
from firmware.errors import BoxError, DeviceError, ProfileError, QuotaError
from firmware.ops import boxes, profile, render, sessions, status, storage, system
from firmware.ops import tls as ops_tls
from firmware.ops.context import OpsContext
from firmware.ops.profile import EXPORT_BEGIN, EXPORT_END
from firmware.ops.render import format_left, format_size, format_uptime, format_value
from firmware.ops.scans import prepare_scan, run_scan
from firmware.security import tls
from firmware.security.abuse import LOCKOUT_FAILURES
from tests.console.conftest import running_device, wait_booted

ADMIN_PASSWORD = "admin-test-pw"
ALICE_PASSWORD = "alice-pw"
MIB = 1 << 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "board.img"
    profile = factory("DP-3530").with_value("pop3.plaintext_auth", "always")
    profile = profile.with_value("pop3.auth_failure_delay_s", "0")
    board = create_board(path, profile, ADMIN_PASSWORD, size=16 * MIB)
    board.add_box("alice", ALICE_PASSWORD)
    board.deliver("alice", b"Subject: hello\r\n\r\nbody\r\n")
    board.close()
    return path


@pytest.fixture
async def device(image: Path) -> AsyncIterator[Device]:
    async with running_device(RunOptions(image=image, pop3=("127.0.0.1", 0))) as device:
        yield device


class Admin:
    """The console's calls, without the console: an operation, then its rendering."""

    def __init__(self, device: Device) -> None:
        self.ctx = OpsContext.running(device)

    def status(self) -> str:
        return render.status(status.status(self.ctx))

    def session_list(self) -> str:
        return render.sessions(sessions.session_list(self.ctx))

    def session_kill(self, ident: str) -> str:
        killed = sessions.session_kill(self.ctx, sessions.parse_session_id(ident))
        return render.session_killed(killed)

    def profile_set(self, pairs: list[tuple[str, str]]) -> str:
        return render.update(profile.commit(self.ctx, profile.plan_set(self.ctx, pairs)))

    def profile_import(self, text: str) -> str:
        return render.update(profile.commit(self.ctx, profile.plan_import(self.ctx, text)))

    def profile_apply(self, model: str, *, keep_site: bool = True) -> str:
        plan = profile.plan_apply(self.ctx, model, keep_site=keep_site)
        return render.update(profile.commit(self.ctx, plan))

    def profile_reset(self) -> str:
        return render.update(profile.commit(self.ctx, profile.plan_reset(self.ctx)))

    def profile_export(self) -> str:
        return profile.profile_export(self.ctx)

    def profile_diff(self) -> str:
        return render.profile_diff(profile.profile_diff(self.ctx))

    def profile_show(self) -> str:
        return render.profile_view(profile.profile_view(self.ctx))

    def profile_get(self, key: str) -> str:
        return render.profile_key(profile.profile_get(self.ctx, key))

    def prompt_name(self) -> str:
        return system.prompt_name(self.ctx)

    def box_show(self, name: str) -> str:
        return render.box_detail(boxes.box_show(self.ctx, name))

    def box_list(self) -> str:
        return render.box_list(boxes.box_list(self.ctx))

    def box_add(self, name: str, password: str, again: str) -> str:
        return render.box_change(boxes.box_add(self.ctx, name, password, again))

    def box_passwd(self, name: str, password: str, again: str, legacy: bool | None = None) -> str:
        return render.box_change(boxes.box_passwd(self.ctx, name, password, again, legacy=legacy))

    def box_del(self, name: str, purge: bool = False) -> str:
        return render.box_change(boxes.box_del(self.ctx, name, purge=purge))

    def box_unlock(self, name: str) -> str:
        return render.unlock(boxes.box_unlock(self.ctx, name))

    def tls_show(self) -> str:
        return render.tls_view(ops_tls.tls_show(self.ctx))

    def tls_import(self, text: str) -> str:
        saved = ops_tls.tls_import(self.ctx, *ops_tls.split_pem(text))
        return render.tls_saved(saved, live=True)

    def tls_selfsign(self) -> str:
        return render.tls_saved(ops_tls.tls_selfsign(self.ctx), live=True)

    async def scan(self, box: str, options: dict[str, str]) -> str:
        request = prepare_scan(self.ctx, box, options)
        return render.scan_done(await run_scan(self.ctx, request))


@pytest.fixture
def admin(device: Device) -> Admin:
    return Admin(device)


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


async def test_status_counts_sessions_and_scans(admin: Admin, device: Device) -> None:
    out = admin.status()
    assert re.search(r"^model\s+DP-3530$", out, re.M)
    assert "0 of 16 sessions open" in out
    client = await trio.to_thread.run_sync(pop3_login, device.pop3_addresses[0])
    try:
        assert "1 of 16 sessions open" in admin.status()
        assert re.search(r"RAM\s+[1-9][\d.]* KiB used", admin.status())
    finally:
        await trio.to_thread.run_sync(client.quit)


async def test_session_list_and_kill(admin: Admin, device: Device) -> None:
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


async def test_a_live_setting_binds_the_running_service(admin: Admin, device: Device) -> None:
    assert admin.profile_set([("pop3.max_sessions", "1")]) == (
        "pop3.max_sessions = 1 (saved; applied now)"
    )
    assert saved_profile(device.board).int("pop3.max_sessions") == 1
    address = device.pop3_addresses[0]
    first = await trio.to_thread.run_sync(pop3_login, address)
    try:
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            await trio.to_thread.run_sync(pop3_login, address)
    finally:
        await trio.to_thread.run_sync(first.quit)


async def test_a_reboot_keeps_what_was_saved(admin: Admin, device: Device) -> None:
    assert "applies after reboot" in admin.profile_set([("engine.ppm", "12")])
    system.reboot(admin.ctx)
    await wait_booted(device, boots=2)
    assert device.profile.int("engine.ppm") == 12
    assert saved_profile(device.board).int("engine.ppm") == 12


async def test_an_invalid_import_changes_nothing(admin: Admin, device: Device) -> None:
    before = saved_profile(device.board)
    bad = before.to_toml().replace("ppm = 35", "ppm = 9000")
    with pytest.raises(ProfileError, match=r"engine.ppm = 9000 is not allowed; expected an "):
        admin.profile_import(bad)
    with pytest.raises(ProfileError, match="not valid TOML"):
        admin.profile_import("[pop3\n")
    assert saved_profile(device.board) == before and device.profile == before


async def test_every_factory_profile_exports_and_imports_back(admin: Admin, device: Device) -> None:
    for model in MODELS:
        admin.profile_apply(model, keep_site=False)
        exported = admin.profile_export()
        assert exported.startswith(f"{EXPORT_BEGIN} {model}\n")
        assert exported.endswith(f"\n{EXPORT_END}")
        admin.profile_reset()
        admin.profile_apply("DP-3510" if model != "DP-3510" else "DP-6030")
        admin.profile_import(exported)
        assert saved_profile(device.board) == factory(model)


async def test_profile_apply_reset_and_diff(admin: Admin, device: Device) -> None:
    assert "pop3.plaintext_auth = always | tls_only" in admin.profile_diff()
    out = admin.profile_apply("dp-4520")
    assert "values changed and saved" in out
    assert "  identity.model: DP-3530 -> DP-4520 (applies after reboot; running: DP-3530)" in out
    assert "pop3.plaintext_auth" not in out  # a site setting: kept
    assert saved_profile(device.board).str("pop3.plaintext_auth") == "always"
    assert saved_profile(device.board).model == "DP-4520"
    plan = profile.plan_reset(admin.ctx)
    assert ("pop3.plaintext_auth", "always", "tls_only") in [
        (c.key, c.before, c.after) for c in plan.changes
    ]
    assert "  pop3.plaintext_auth: always -> tls_only (now)" in render.plan(plan)
    out = render.update(profile.commit(admin.ctx, plan))
    assert "pop3.plaintext_auth: always -> tls_only (applied now)" in out
    assert saved_profile(device.board) == factory("DP-4520")
    assert admin.profile_reset() == "profile reset to DP-4520 factory values: no value changed"
    diff = admin.profile_diff()
    assert diff.startswith("no differences from the DP-4520 factory profile\npending: saved")
    assert "  identity.model: DP-3530 -> DP-4520" in diff
    with pytest.raises(ProfileError, match="unknown model"):
        admin.profile_apply("DP-1")


async def test_a_reboot_key_stays_pending_until_reboot(admin: Admin, device: Device) -> None:
    """The greeting, CRAM challenge, prompt, status and scans keep the running identity."""
    out = admin.profile_apply("dp-4520")
    assert "  identity.model: DP-3530 -> DP-4520 (applies after reboot; running: DP-3530)" in out
    admin.profile_set([("pop3.apop", "true")])  # live: the greeting carries a timestamp now
    out = admin.profile_set([("identity.hostname", "copier.example")])
    assert out == (
        "identity.hostname = copier.example (saved; applies after reboot; running: dp3530.local)"
        "\nWARNING: the TLS certificate names dp3530.local, localhost, not copier.example;"
        " `tls selfsign` makes one for copier.example"
    )
    assert saved_profile(device.board).model == "DP-4520"

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
    pending = len(device.pending())
    assert f"profile    {pending} saved changes pending reboot (`profile diff`)" in status
    shown = admin.profile_show()
    assert re.search(
        r"^identity\.model += DP-3530  \(pending: DP-4520 after reboot\)$", shown, re.M
    )
    assert shown.endswith(f"\n({pending} saved values pending reboot)")
    assert admin.profile_get("identity.model").startswith(
        "identity.model = DP-3530\n  pending: DP-4520 saved, applies after reboot\n"
    )
    assert "  identity.hostname: dp3530.local -> copier.example" in admin.profile_diff()
    await admin.scan("alice", {"pages": "1", "format": "pdf"})
    uid = device.board.messages("alice")[-1].uid
    scanned = b"".join(device.board.read_wire("alice", uid))
    assert b"From: DP-3530 Scanner <scanner@dp3530.local>" in scanned
    assert re.search(rb"Message-ID: <[^>]*@dp3530\.local>", scanned)

    system.reboot(admin.ctx)
    await wait_booted(device, boots=2)
    welcome = await trio.to_thread.run_sync(greeting)
    assert welcome.startswith(b"+OK DP-4520 POP3 service ready")
    assert b"@copier.example>" in welcome
    assert admin.prompt_name() == "DP-4520" and device.pending() == []
    assert "pending" not in admin.status() and "pending" not in admin.profile_show()


async def test_setting_a_pending_key_back_to_its_running_value(
    admin: Admin, device: Device
) -> None:
    admin.profile_set([("engine.ppm", "12")])
    assert admin.profile_set([("engine.ppm", "35")]) == (
        "engine.ppm = 35 (saved; back to the running value)"
    )
    assert device.pending() == [] and saved_profile(device.board).int("engine.ppm") == 35


async def test_a_model_change_keeps_plaintext_pop3_for_the_readme_example(
    admin: Admin, device: Device
) -> None:
    admin.profile_apply("DP-6030")
    system.reboot(admin.ctx)
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
    async with running_device(options) as device:
        admin = Admin(device)
        assert device.profile.str("identity.hostname") == "bench.lab"
        assert device.pending() == []
        out = admin.profile_set([("identity.hostname", "saved.lab")])
        assert out.startswith(
            "identity.hostname = saved.lab (saved; applies after reboot; running: bench.lab)\n"
            "WARNING: the TLS certificate names "
        )
        assert device.profile.str("identity.hostname") == "bench.lab"
        assert saved_profile(device.board).str("identity.hostname") == "saved.lab"
        assert saved_profile(device.board).int("pop3.max_sessions") == 16  # never written


def test_a_bad_run_only_host_name_is_refused(image: Path) -> None:
    with pytest.raises(ProfileError, match=r'--set: identity.hostname = "my host" is not allowed'):
        apply_overrides(factory("DP-3530"), {"identity.hostname": "my host"})


async def test_box_operations(admin: Admin, device: Device) -> None:
    assert admin.box_add("carol", "carol-pw", "carol-pw") == "box carol added"
    with pytest.raises(BoxError, match="already exists"):
        boxes.check_new_box(admin.ctx, "carol")
    with pytest.raises(DeviceError, match="differ"):
        admin.box_passwd("carol", "aaaa", "bbbb")
    assert admin.box_passwd("carol", "new-carol", "new-carol") == "password of box carol changed"
    assert device.board.box_credentials("carol") is not None
    with pytest.raises(BoxError, match="holds 1 message; delete it first"):
        admin.box_del("alice")
    assert "messages   1 of 1000" in admin.box_show("alice")
    assert admin.box_del("alice", purge=True) == "box alice deleted"
    assert [b.name for b in device.board.boxes()] == ["carol"]


async def test_scan_into_a_box(admin: Admin, device: Device) -> None:
    text = await admin.scan("alice", {"pages": "2", "mode": "gray", "format": "pdf"})
    assert re.fullmatch(r"scan job 0001 done: 2 pages, .* stored in box alice as \S+", text)
    assert device.scans_done == 1
    assert len(device.board.messages("alice")) == 2
    with pytest.raises(DeviceError, match="at most"):
        prepare_scan(admin.ctx, "alice", {"pages": "100000"})


async def test_admin_password(admin: Admin, device: Device) -> None:
    ctx = admin.ctx
    assert system.check_admin_password(ctx, ADMIN_PASSWORD)
    with pytest.raises(DeviceError, match="4 to 64"):
        system.set_admin_password(ctx, ADMIN_PASSWORD, "abc", "abc")
    system.set_admin_password(ctx, ADMIN_PASSWORD, "fresh-pw", "fresh-pw")
    assert system.check_admin_password(ctx, "fresh-pw")
    assert not system.check_admin_password(ctx, ADMIN_PASSWORD)


async def test_fsck_compact_log(admin: Admin) -> None:
    assert re.fullmatch(
        r"fsck: \d+ records? checked, all clean", render.fsck(storage.fsck(admin.ctx))
    )
    assert render.compact(storage.compact(admin.ctx)).startswith("compact: ")
    logging.getLogger("dpfw.test").warning("marker \x1b[31m line")
    out = render.log(system.log_tail(admin.ctx, 1))
    assert out.endswith("WARNING dpfw.test: marker ?[31m line")


async def test_while_rebooting_everything_is_a_clear_error(admin: Admin, device: Device) -> None:
    system.reboot(admin.ctx)
    with trio.fail_after(10):
        while device.boots < 2:
            assert admin.prompt_name() in ("DP", "DP-3530")
            try:
                admin.status()
            except DeviceError as exc:
                assert "not running" in str(exc)
            await trio.sleep(0)


async def test_status_counts_failed_logins_and_locks_until_unlock(
    admin: Admin, device: Device
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


async def test_a_guessed_name_that_got_locked_can_be_unlocked(admin: Admin, device: Device) -> None:
    for _ in range(LOCKOUT_FAILURES):
        await trio.to_thread.run_sync(pop3_refused, device.pop3_addresses[0], "mallory", "x")
    assert re.search(r"^\s+mallory 1[45]:\d\d$", admin.status(), re.M)
    assert admin.box_unlock("mallory").startswith("box mallory unlocked")


async def test_status_counts_failed_scans(admin: Admin, device: Device) -> None:
    request = prepare_scan(admin.ctx, "alice", {})
    admin.box_del("alice", purge=True)  # gone before the job stores its message
    with pytest.raises(BoxError):
        await run_scan(admin.ctx, request)
    assert re.search(r"^scans\s+0 done, 1 failed$", admin.status(), re.M)


async def test_tls_import_and_selfsign_apply_after_reboot(admin: Admin, device: Device) -> None:
    leaf = trustme.CA().issue_cert("copier.lab.example")
    cert_pem = leaf.cert_chain_pems[0].bytes().decode()
    key_pem = leaf.private_key_pem.bytes().decode()
    out = admin.tls_import(key_pem + "\n" + cert_pem)  # the key may come first
    assert out.startswith("TLS certificate imported (saved; applies after reboot)")
    assert device.board.settings()[tls.SETTING_CERT] == cert_pem
    assert tls.SETTING_CHAIN not in device.board.settings()
    assert "in service after reboot" in admin.tls_show()
    system.reboot(admin.ctx)
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


async def test_box_legacy_secret_and_what_box_show_says(admin: Admin, device: Device) -> None:
    assert "no legacy secret: no APOP, CRAM-MD5" in admin.box_show("alice")
    out = admin.box_passwd("alice", "alice-new", "alice-new", legacy=True)
    first, note = out.split("\n")  # the factory has pop3.apop off: the second line says so
    assert first.endswith("APOP/CRAM-MD5 secret kept from now on")
    assert note == "(APOP/CRAM-MD5 secret kept; pop3.apop is off)"
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
    admin: Admin, device: Device, password: str
) -> None:
    with pytest.raises(
        DeviceError, match=r"^box add: the password cannot be used: .*; nothing changed$"
    ):
        admin.box_add("carol", password, password)
    with pytest.raises(DeviceError, match=r"^passwd: the password cannot be used"):
        system.set_admin_password(admin.ctx, ADMIN_PASSWORD, password, password)
    assert [b.name for b in device.board.boxes()] == ["alice"]


async def test_a_non_ascii_password_logs_in_however_it_is_normalised(
    admin: Admin, device: Device
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


async def test_a_certificate_saved_since_boot_is_seen_by_every_front_end(
    admin: Admin, device: Device
) -> None:
    """Old main kept "saved since boot" in the console's DeviceAdmin: a second front-end (the
    HTTP API, a reconnected console) said the new certificate was in service. The device now
    records the certificate it booted with."""
    other = OpsContext.running(device)
    assert not ops_tls.tls_show(other).saved_since_boot
    admin.tls_selfsign()
    view = ops_tls.tls_show(other)
    assert view.saved_since_boot and view.serving
    assert "(the one above was saved since boot: in service after reboot)" in render.tls_view(view)
    assert ops_tls.tls_pem(other).saved_since_boot
    system.reboot(other)
    await wait_booted(device, boots=2)
    assert not ops_tls.tls_show(OpsContext.running(device)).saved_since_boot


async def test_a_message_is_not_deleted_under_an_open_pop3_session(
    admin: Admin, device: Device
) -> None:
    from firmware.ops import messages

    uid = messages.list_messages(admin.ctx, "alice").messages[0].uid
    client = await trio.to_thread.run_sync(pop3_login, device.pop3_addresses[0])
    try:
        with pytest.raises(DeviceError, match="open in a POP3 session; nothing changed"):
            messages.delete_message(admin.ctx, "alice", uid)
    finally:
        await trio.to_thread.run_sync(client.quit)
    messages.delete_message(admin.ctx, "alice", uid)
    assert device.board.messages("alice") == []


async def test_status_fields_on_a_running_device(admin: Admin, device: Device) -> None:
    s = status.status(admin.ctx)
    assert s.running and s.pop3.running and s.pop3.tls_available
    assert (s.model, s.next_model, s.pending) == ("DP-3530", "DP-3530", 0)
    assert s.ram.total == 128 * MIB and s.flash.total > 0


async def test_run_only_limits_are_the_ones_the_store_enforces(image: Path) -> None:
    """`--set mailbox.max_messages=2 --set mailbox.max_boxes=1` for one run: the store refuses
    the third message and a second box then (it used to read the saved profile); offline
    afterwards the saved values are in force again."""
    options = RunOptions(
        image=image,
        pop3=("127.0.0.1", 0),
        overrides={"mailbox.max_messages": "2", "mailbox.max_boxes": "1"},
    )
    async with running_device(options) as device:
        board = device.board
        board.deliver("alice", b"Subject: two\r\n\r\nbody\r\n")
        with pytest.raises(QuotaError, match=r"allows 2 \(mailbox.max_messages\)"):
            board.deliver("alice", b"Subject: three\r\n\r\nbody\r\n")
        with pytest.raises(QuotaError, match=r"\(mailbox\.max_boxes\)"):
            board.add_box("bob", "bob-password")
        # A live change on the console moves the store's limit with the running profile.
        Admin(device).profile_set([("mailbox.max_messages", "3")])
        board.deliver("alice", b"Subject: three\r\n\r\nbody\r\n")
    with open_board(image) as board:
        assert board.limits.max_messages == 3  # the console's change was saved
        assert board.limits.max_boxes == factory("DP-3530").int("mailbox.max_boxes")
        board.add_box("bob", "bob-password")  # the run-only bound is gone
