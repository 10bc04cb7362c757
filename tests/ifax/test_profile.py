"""The ifax profile keys: settable by `dpfw profile set`, the password never shown in clear."""

from __future__ import annotations

from pathlib import Path

from firmware.device.boards import open_board, saved_profile
from tests.support import create_image, dpfw

SECRET = "fax-S3cret!"


def test_keys_settable_and_password_masked_everywhere(tmp_path: Path) -> None:
    img = create_image(tmp_path / "b.img")
    dpfw(
        "profile", "set", str(img),
        "ifax.enabled", "true", "ifax.server", "127.0.0.1", "ifax.port", "1110",
        "ifax.tls", "stls", "ifax.user", "fax", "ifax.password", SECRET, "ifax.auth", "sasl",
        "ifax.poll_interval_s", "0", "ifax.leave_on_server", "true",
    )  # fmt: skip
    shown = dpfw("profile", "show", str(img)).stdout
    as_json = dpfw("profile", "show", str(img), "--json").stdout
    assert 'password = "********"' in shown and 'tls = "stls"' in shown
    assert SECRET not in shown and SECRET not in as_json
    with open_board(img) as board:
        prof = saved_profile(board)
        assert prof.str("ifax.password") == SECRET and prof.int("ifax.port") == 1110
        assert prof.bool("ifax.leave_on_server") and prof.str("ifax.auth") == "sasl"


def test_import_of_an_export_keeps_the_password(tmp_path: Path) -> None:
    from firmware.ops import profile as ops_profile
    from firmware.ops.context import OpsContext

    img = create_image(tmp_path / "b.img")
    dpfw("profile", "set", str(img), "ifax.password", SECRET, "ifax.port", "995")
    with open_board(img) as board:
        ctx = OpsContext.offline(board)
        text = ops_profile.profile_export(ctx)
        assert SECRET not in text and "********" in text
        plan = ops_profile.plan_import(ctx, text.replace("port = 995", "port = 996"))
        assert all(SECRET not in str(c) for c in plan.changes)
        ops_profile.commit(ctx, plan)
        prof = saved_profile(board)
        assert prof.str("ifax.password") == SECRET and prof.int("ifax.port") == 996


def test_bad_values_get_one_line(tmp_path: Path) -> None:
    img = create_image(tmp_path / "b.img")
    proc = dpfw("profile", "set", str(img), "ifax.tls", "ssl", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        'dpfw: profile set: ifax.tls = "ssl" is not allowed; expected one of none, stls, pop3s'
    ]
