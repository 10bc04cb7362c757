"""The operations over a board image with nothing running (the CLI's context), the message
operations, and the promise the HTTP front-end relies on: every result is plain JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from firmware.config.profile import factory
from firmware.device.boards import create_board, open_board, saved_profile
from firmware.device.device import apply_overrides
from firmware.errors import BoxError, DeviceError, ProfileError
from firmware.ops import boxes, messages, profile, render, sessions, status, storage, system
from firmware.ops import tls as ops_tls
from firmware.ops.context import OpsContext

ADMIN_PASSWORD = "admin-pw"
MIB = 1 << 20


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[OpsContext]:
    with create_board(tmp_path / "b.img", factory("DP-3530"), ADMIN_PASSWORD, size=8 * MIB) as b:
        b.add_box("alice", "alice-pw")
        yield OpsContext.offline(b)


def scanned_mail() -> bytes:
    """A message as a scan job or a mail client makes one: encoded subject, two attachments."""
    msg = EmailMessage()
    msg["From"] = "=?utf-8?q?Scanner_=C3=A9?= <scanner@dp3530.local>"
    msg["Subject"] = "=?utf-8?q?Scan_=C3=BCbersicht?="
    msg["Date"] = "Mon, 30 Nov 2026 01:02:03 +0000"
    msg.set_content("Pages attached.\n.a line starting with a dot\n")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="p1.pdf")
    msg.add_attachment(b"II*\x00", maintype="image", subtype="tiff", filename="p2.tif")
    return msg.as_bytes()


def test_messages_list_headers_and_attachment_names(ctx: OpsContext) -> None:
    raw = scanned_mail()
    stored = messages.deliver(ctx, "alice", raw)
    listing = messages.list_messages(ctx, "alice")
    assert [m.uid for m in listing.messages] == [stored.uid]
    msg = listing.messages[0]
    assert msg.subject == "Scan übersicht" and msg.sender == "Scanner é <scanner@dp3530.local>"
    assert msg.date == 1796000523.0  # 2026-11-30 01:02:03 UTC, epoch seconds
    assert msg.attachments == ["p1.pdf", "p2.tif"] and not msg.corrupt
    assert msg.size == stored.size
    text = render.messages(listing)
    assert "Scan übersicht [p1.pdf, p2.tif]".replace("ü", "?") not in text  # printable keeps ü
    assert "Scan übersicht [p1.pdf, p2.tif]" in text


def test_raw_message_is_what_retr_gives_and_delete_removes_one(ctx: OpsContext) -> None:
    raw = scanned_mail()
    first = messages.deliver(ctx, "alice", raw)
    second = messages.deliver(ctx, "alice", b"Subject: two\n\nbody\n")
    got = messages.raw_message(ctx, "alice", first.uid)
    assert got == raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # CRLF, dots unstuffed
    assert b"\r\n.a line starting with a dot\r\n" in got
    assert len(got) == first.size
    messages.delete_message(ctx, "alice", first.uid)
    assert [m.uid for m in messages.list_messages(ctx, "alice").messages] == [second.uid]
    with pytest.raises(BoxError, match="holds no message with uid"):
        messages.raw_message(ctx, "alice", first.uid)
    with pytest.raises(BoxError, match="no box named"):
        messages.list_messages(ctx, "nobody")


def test_a_message_without_headers_or_with_a_bad_date_is_listed_bare(ctx: OpsContext) -> None:
    ctx.board.deliver("alice", b"no header separator at all")  # as an older dpfw stored it
    messages.deliver(ctx, "alice", b"Date: yesterday-ish\r\nSubject: s\r\n\r\nx\r\n")
    bare, dated = messages.list_messages(ctx, "alice").messages
    assert (bare.subject, bare.sender, bare.date, bare.attachments) == (None, None, None, [])
    assert dated.subject == "s" and dated.date is None


def test_a_corrupt_message_is_listed_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "c.img"
    with create_board(path, factory("DP-3530"), ADMIN_PASSWORD, size=8 * MIB) as board:
        board.add_box("alice", "alice-pw")
        board.deliver("alice", b"Subject: fine\r\n\r\nUNIQUE-PAYLOAD-MARKER\r\n")
        board.deliver("alice", b"Subject: after\r\n\r\nso the bad one is not the tail\r\n")
    raw = bytearray(path.read_bytes())
    at = raw.find(b"UNIQUE-PAYLOAD-MARKER")
    raw[at] ^= 0x20
    path.write_bytes(bytes(raw))
    with open_board(path, repair=False) as board:
        ctx = OpsContext.offline(board)
        msg, after = messages.list_messages(ctx, "alice").messages
        assert msg.corrupt and msg.subject is None and after.subject == "after"
        assert "CORRUPT" in render.messages(messages.list_messages(ctx, "alice"))
        assert not storage.fsck(ctx).clean


def test_offline_nothing_runs_and_changes_apply_at_next_boot(ctx: OpsContext) -> None:
    s = status.status(ctx)
    assert not s.running and not s.pop3.running and s.uptime_s == 0 and s.pending == 0
    assert not sessions.session_list(ctx).running
    with pytest.raises(DeviceError, match=r"^session kill: the POP3 service is not running$"):
        sessions.session_kill(ctx, 1)
    with pytest.raises(DeviceError, match=r"^reboot: needs the running device"):
        system.reboot(ctx)
    update = profile.commit(ctx, profile.plan_set(ctx, [("pop3.max_sessions", "3")]))
    assert [(c.key, c.when) for c in update.changes] == [("pop3.max_sessions", "boot")]
    assert render.update(update) == "pop3.max_sessions = 3 (saved; applies at next boot)"
    assert saved_profile(ctx.board).int("pop3.max_sessions") == 3 and ctx.pending() == []
    view = ops_tls.tls_show(ctx)
    assert view.serving is None and not view.saved_since_boot
    assert "in service" not in render.tls_view(view)


@pytest.mark.parametrize(
    "change",
    [
        lambda ctx: profile.plan_set(ctx, [("pop3.prot", "1")]),
        lambda ctx: profile.plan_import(ctx, "[pop3]\nprot = 1\n"),
        lambda ctx: apply_overrides(saved_profile(ctx.board), {"pop3.prot": "1"}),
    ],
    ids=["set", "import", "--set"],
)
def test_one_error_vocabulary_for_every_profile_change(change: object, ctx: OpsContext) -> None:
    """Old main: `--set` listed all 40 keys, import rewrote that list, set said "unknown
    profile key"; now one line naming the key and the nearest one, whichever path."""
    with pytest.raises(ProfileError) as caught:
        change(ctx)  # type: ignore[operator]
    message = str(caught.value)
    assert message.endswith(': unknown key "pop3.prot"; did you mean "pop3.port"?'), message
    assert "known keys" not in message


def test_a_plan_is_checked_again_against_what_is_saved_when_committed(ctx: OpsContext) -> None:
    plan = profile.plan_apply(ctx, "DP-6030")
    profile.commit(ctx, profile.plan_apply(ctx, "DP-6030"))
    update = profile.commit(ctx, plan)
    assert "identity.model" not in [c.key for c in update.changes]  # already saved
    assert saved_profile(ctx.board).model == "DP-6030"


def test_every_result_is_plain_json(ctx: OpsContext) -> None:
    """dataclasses.asdict of every operation's result goes through json.dumps unchanged in
    kind: str, int, float, bool, None, lists and dicts only (times as numbers or ISO text)."""
    messages.deliver(ctx, "alice", scanned_mail())
    uid = messages.list_messages(ctx, "alice").messages[0].uid
    results = [
        status.status(ctx),
        boxes.box_list(ctx),
        boxes.box_show(ctx, "alice"),
        messages.list_messages(ctx, "alice"),
        messages.delete_message(ctx, "alice", uid),
        profile.profile_view(ctx),
        profile.profile_get(ctx, "scan.formats"),
        profile.profile_diff(ctx),
        profile.ModelList(profile.models(ctx)),
        profile.plan_apply(ctx, "DP-4520"),
        profile.commit(ctx, profile.plan_apply(ctx, "DP-4520")),
        sessions.session_list(ctx),
        ops_tls.tls_show(ctx),
        ops_tls.tls_pem(ctx),
        storage.fsck(ctx),
        storage.compact(ctx),
    ]
    plain = (str, int, float, bool, type(None))

    def check(value: object, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                assert isinstance(key, str), where
                check(item, f"{where}.{key}")
        elif isinstance(value, list | tuple):
            for item in value:
                check(item, where)
        else:
            assert isinstance(value, plain), f"{where}: {type(value).__name__}"

    for result in results:
        assert dataclasses.is_dataclass(result) and not isinstance(result, type)
        data = dataclasses.asdict(result)
        check(data, type(result).__name__)
        json.dumps(data)


def test_deliver_refuses_what_is_not_a_message_and_stores_nothing(ctx: OpsContext) -> None:
    for data, why in [
        (b"", "empty, not an RFC 5322 message"),
        (b"no header separator at all", "line 1 is not a header field"),
        (b"Subject: s\r\n\0\r\n", "a NUL byte in header line 2"),
    ]:
        with pytest.raises(DeviceError, match=why):
            messages.deliver(ctx, "alice", data)
    assert messages.list_messages(ctx, "alice").messages == []
    stored = messages.deliver(ctx, "alice", scanned_mail())  # a real scan still goes in
    assert [m.uid for m in messages.list_messages(ctx, "alice").messages] == [stored.uid]
