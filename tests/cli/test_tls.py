"""`dpfw tls show|import|selfsign` on real board images."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from firmware.cli import COMMAND_MODULES
from firmware.cli import tls as tls_cli
from firmware.config.profile import factory
from firmware.device.boards import create_board, open_board
from firmware.errors import DeviceError
from firmware.security import tls
from tests.support import ADMIN_PASSWORD, dpfw


@pytest.fixture
def image(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "board.img"
    create_board(path, factory("DP-3530"), ADMIN_PASSWORD, size=1 << 20).close()
    yield path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run a `dpfw tls ...` command in-process as firmware.cli.main does."""
    parser = argparse.ArgumentParser(prog="dpfw")
    tls_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["tls", *argv])
    try:
        code = args.func(args)
    except DeviceError as exc:
        print(f"dpfw: {exc}")
        code = 1
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def stored(image: Path) -> dict[str, str]:
    with open_board(image) as board:
        return dict(board.settings())


def test_show_without_certificate_says_how_to_make_one(
    image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_board(image) as board:  # every new image has one; take it away
        board.set_settings({tls.SETTING_CERT: None, tls.SETTING_KEY: None})
    code, out, _ = run(capsys, "show", str(image))
    assert code == 1 and "no TLS certificate" in out and "selfsign" in out


def test_selfsign_then_show(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "selfsign", str(image))
    assert code == 0 and "dp3530.local" in out
    code, out, _ = run(capsys, "show", str(image))
    assert code == 0
    assert "DNS:dp3530.local" in out and "(self-signed)" in out and "usable:      yes" in out
    fingerprint = tls.describe(stored(image)[tls.SETTING_CERT]).sha256_fingerprint
    assert fingerprint[:48] in out and fingerprint[48:] in out  # over two lines, as on the console
    shown = json.loads(run(capsys, "show", str(image), "--json")[1])
    assert shown["cert"]["sha256"] == fingerprint and shown["usable"] is True
    assert shown["serving"] is None  # nothing runs on an image the CLI opened
    code, out, _ = run(capsys, "show", str(image), "--pem")
    assert out == stored(image)[tls.SETTING_CERT].rstrip("\n") + "\n"
    assert "PRIVATE" not in out


def test_selfsign_with_hostname(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "selfsign", str(image), "--hostname", "copier.lab.example")
    assert tls.describe(stored(image)[tls.SETTING_CERT]).san == (
        "DNS:copier.lab.example",
        "DNS:localhost",
        "IP:127.0.0.1",
        "IP:::1",
    )
    run(capsys, "selfsign", str(image), "--hostname", "copier.lab.example", "--no-loopback")
    assert tls.describe(stored(image)[tls.SETTING_CERT]).san == ("DNS:copier.lab.example",)


def test_import_a_ca_issued_certificate_with_chain(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    intermediate = trustme.CA().create_child_ca()
    leaf = intermediate.issue_cert("dp3530.local")
    pems = [blob.bytes().decode() for blob in leaf.cert_chain_pems]
    key = leaf.private_key_pem.bytes().decode()
    code, out, _ = run(
        capsys,
        "import",
        str(image),
        "--cert",
        write(tmp_path, "cert.pem", pems[0]),
        "--key",
        write(tmp_path, "key.pem", key),
        "--chain",
        write(tmp_path, "chain.pem", "".join(pems[1:])),
    )
    assert code == 0 and "imported" in out
    settings = stored(image)
    assert settings[tls.SETTING_CERT] == pems[0]
    assert settings[tls.SETTING_KEY] == key
    assert settings[tls.SETTING_CHAIN] == "".join(pems[1:])
    code, out, _ = run(capsys, "show", str(image))
    assert "chain:       1 certificate\n" in out and "usable:      yes" in out
    # A later self-signed certificate drops the chain that belonged to the old one.
    run(capsys, "selfsign", str(image))
    assert tls.SETTING_CHAIN not in stored(image)


def test_import_refuses_a_mismatched_pair_and_leaves_the_board_alone(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "selfsign", str(image))
    before = stored(image)
    cert, _ = tls.make_self_signed("a.example")
    _, other_key = tls.make_self_signed("b.example")
    code, out, _ = run(
        capsys,
        "import",
        str(image),
        "--cert",
        write(tmp_path, "c.pem", cert),
        "--key",
        write(tmp_path, "k.pem", other_key),
    )
    assert code == 1 and "does not belong to the certificate" in out
    assert stored(image) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x30\x82\x01\x00", "not PEM text"),
        (b"A" * (tls_cli.MAX_PEM_BYTES + 1), "at most"),
    ],
)
def test_import_refuses_non_pem_and_huge_files(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    _cert, key = tls.make_self_signed("a.example")
    (tmp_path / "bad.pem").write_bytes(content)
    code, out, _ = run(
        capsys,
        "import",
        str(image),
        "--cert",
        str(tmp_path / "bad.pem"),
        "--key",
        write(tmp_path, "k.pem", key),
    )
    assert code == 1 and message in out


def test_import_names_an_unreadable_file(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "import", str(image), "--cert", str(tmp_path / "nope"), "--key", "x")
    assert (
        code == 1 and f"--cert {tmp_path / 'nope'}: cannot read: No such file or directory" in out
    )


def test_show_reports_an_unusable_stored_pair(
    image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, _ = tls.make_self_signed("a.example")
    _, key = tls.make_self_signed("a.example")
    with open_board(image) as board:
        board.set_setting(tls.SETTING_CERT, cert)
        board.set_setting(tls.SETTING_KEY, key)
    code, out, _ = run(capsys, "show", str(image))
    assert code == 0 and "usable:      no: key: the private key does not belong" in out


@pytest.mark.skipif("tls" not in COMMAND_MODULES, reason="`tls` not yet in COMMAND_MODULES")
def test_real_command_line(image: Path) -> None:
    dpfw("tls", "selfsign", str(image))
    assert "usable:      yes" in dpfw("tls", "show", str(image)).stdout
