"""Honest defaults: on images made the documented way, every login method the device
advertises works for the boxes made the documented way.

Real `dpfw` processes on real images (`dpfw image create|demo`, `dpfw box add`, `dpfw run`),
real clients (curl, poplib, fetchmail, mpop) and a small wire client below that tries each
method the greeting and CAPA advertise. Nothing here uses the tests/pop3 fixture board, whose
profile is changed for the other tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import poplib
import re
import secrets
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.config.profile import MODELS, factory
from firmware.device.boards import open_board
from tests.pop3.test_clients import need
from tests.support import DeviceProcess, create_image, dpfw

HOSTNAME = "dp3530.local"  # identity.hostname of the DP-3530 factory profile: the cert's name
CAROL_PASSWORD = "carol-pw"
MESSAGE = b"From: scanner@dp3530.local\r\nSubject: default box\r\n\r\nhello carol\r\n"


# -- a small wire client: what does the device advertise, and does each method work? -------


class Wire:
    """One POP3 connection, byte-exact; `stls` upgrades it with a verifying context."""

    def __init__(self, port: int) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> bytes:
        return self.file.readline()

    def cmd(self, text: str | bytes) -> bytes:
        self.sock.sendall((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.line()

    def capa(self) -> list[str]:
        assert self.cmd("CAPA").startswith(b"+OK")
        caps = []
        while (line := self.line()) != b".\r\n":
            caps.append(line.decode().strip())
        return caps

    def stls(self, cafile: Path) -> None:
        assert self.cmd("STLS").startswith(b"+OK")
        context = ssl.create_default_context(cafile=str(cafile))
        self.sock = context.wrap_socket(self.sock, server_hostname=HOSTNAME)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.sock.close()


def advertised(wire: Wire) -> list[str]:
    """Every login method the greeting and CAPA of this connection offer."""
    methods = ["APOP"] if re.search(rb"<[^<>]+>\r\n$", wire.greeting) else []
    for cap in wire.capa():
        if cap == "USER":
            methods.append("USER")
        elif cap.startswith("SASL "):
            methods += [f"AUTH {name}" for name in cap.split()[1:]]
    return methods


def b64(data: bytes | str) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


def challenge(reply: bytes) -> bytes:
    assert reply.startswith(b"+ "), reply
    return base64.b64decode(reply[2:].strip())


def scram_login(wire: Wire, box: str, password: str) -> bytes:
    """RFC 5802/7677 client side, written from the RFC for this test."""
    nonce = secrets.token_urlsafe(18)
    bare = f"n={box},r={nonce}"
    first = challenge(wire.cmd(b"AUTH SCRAM-SHA-256 " + b64("n,," + bare))).decode()
    attrs = dict(part.split("=", 1) for part in first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{bare},{first},{without_proof}".encode()
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = challenge(wire.cmd(b64(f"{without_proof},p={base64.b64encode(proof).decode()}")))
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    assert final == b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, "sha256"))
    return wire.cmd("")


def log_in(wire: Wire, method: str, box: str, password: str) -> bytes:
    """The reply that ends a login with `method` (USER, APOP or AUTH <mechanism>)."""
    if method == "USER":
        assert wire.cmd(f"USER {box}").startswith(b"+OK")
        return wire.cmd(f"PASS {password}")
    if method == "APOP":
        match = re.search(rb"<[^<>]+>", wire.greeting)
        assert match is not None
        digest = hashlib.md5(match.group() + password.encode()).hexdigest()
        return wire.cmd(f"APOP {box} {digest}")
    if method == "AUTH PLAIN":
        return wire.cmd(b"AUTH PLAIN " + b64(f"\0{box}\0{password}"))
    if method == "AUTH CRAM-MD5":
        data = challenge(wire.cmd("AUTH CRAM-MD5"))
        return wire.cmd(b64(f"{box} {hmac.new(password.encode(), data, 'md5').hexdigest()}"))
    if method == "AUTH SCRAM-SHA-256":
        return scram_login(wire, box, password)
    raise AssertionError(f"the device advertises a method this test does not know: {method}")


def check_every_advertised_method(
    port: int, box: str, password: str, cafile: Path | None = None
) -> list[str]:
    """Log in to `box` once with each advertised method, each on a fresh connection (after
    STLS when `cafile` is given); returns the methods, having asserted each one worked."""
    wire = Wire(port)
    if cafile is not None:
        wire.stls(cafile)
    methods = advertised(wire)
    wire.close()
    for method in methods:
        wire = Wire(port)
        try:
            if cafile is not None:
                wire.stls(cafile)
            reply = log_in(wire, method, box, password)
            assert reply.startswith(f"+OK {box} has ".encode()), (method, reply)
            assert wire.cmd("QUIT").startswith(b"+OK")
        finally:
            wire.close()
    return methods


# -- images made the documented way -----------------------------------------------------------


@pytest.fixture
def factory_image(tmp_path: Path) -> Path:
    """`dpfw image create` (DP-3530 factory profile) and `dpfw box add IMG carol`: defaults."""
    image = create_image(tmp_path / "factory.img", model="DP-3530", size="4MiB")
    dpfw("box", "add", str(image), "carol", "--password-stdin", stdin=f"{CAROL_PASSWORD}\n")
    with open_board(image) as board:  # delivery is not what these tests are about
        board.deliver("carol", MESSAGE)
    return image


@pytest.fixture
def device_cert(factory_image: Path, tmp_path: Path) -> Path:
    """The image's own self-signed certificate, as an operator exports it to trust it."""
    path = tmp_path / "device.pem"
    path.write_text(dpfw("tls", "show", str(factory_image), "--pem").stdout)
    return path


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, capture_output=True, timeout=60, check=False, env=env)


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return run([need("curl"), "-sS", "--max-time", "20", *args])


def pop3s_port(device: DeviceProcess) -> int:
    match = re.search(r"^dpfw: POP3S on \S+:(\d+)", device.output(), re.M)
    assert match is not None, device.output()
    return int(match.group(1))


def test_factory_profiles_leave_the_legacy_methods_off() -> None:
    assert len(MODELS) == 9
    for model in MODELS:
        assert factory(model).bool("pop3.apop") is False, model


def test_curl_logs_in_to_a_default_box_on_a_factory_image(
    factory_image: Path, device_cert: Path, start_device: type[DeviceProcess]
) -> None:
    # Old main: the greeting had an APOP timestamp and CAPA offered CRAM-MD5, carol had no
    # legacy secret, and curl failed with "Login denied".
    device = start_device(factory_image, "--set", "pop3.plaintext_auth=always")
    port = device.wait_booted()
    url = f"pop3://127.0.0.1:{port}"
    listing = curl("-u", f"carol:{CAROL_PASSWORD}", f"{url}/")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout == b"1 %d\r\n" % len(MESSAGE)
    assert curl("-u", f"carol:{CAROL_PASSWORD}", f"{url}/1").stdout == MESSAGE
    assert device.stop() == 0

    # The factory policy as shipped (plaintext only inside TLS): STLS and POP3S, verified.
    device = start_device(factory_image, "--pop3s", "127.0.0.1:0")
    port = device.wait_booted()
    resolve = ["--cacert", str(device_cert), "--ssl-reqd"]
    for scheme, tls_port in (("pop3", port), ("pop3s", pop3s_port(device))):
        where = ["--resolve", f"{HOSTNAME}:{tls_port}:127.0.0.1"]
        url = f"{scheme}://{HOSTNAME}:{tls_port}"
        got = curl(*resolve, *where, "-u", f"carol:{CAROL_PASSWORD}", f"{url}/1")
        assert got.returncode == 0, (scheme, got.stderr)
        assert got.stdout == MESSAGE
    # Without TLS nothing curl can do is advertised (only SCRAM-SHA-256), so it tries nothing.
    plain = curl("-v", "-u", f"carol:{CAROL_PASSWORD}", f"pop3://127.0.0.1:{port}/")
    assert plain.returncode == 67  # login denied
    assert b"No known authentication mechanisms supported" in plain.stderr
    assert b"> AUTH" not in plain.stderr and b"> APOP" not in plain.stderr


def test_every_advertised_method_works_for_a_default_box(
    factory_image: Path, device_cert: Path, start_device: type[DeviceProcess]
) -> None:
    device = start_device(factory_image)
    port = device.wait_booted()
    assert check_every_advertised_method(port, "carol", CAROL_PASSWORD) == ["AUTH SCRAM-SHA-256"]
    assert check_every_advertised_method(port, "carol", CAROL_PASSWORD, device_cert) == [
        "USER",
        "AUTH SCRAM-SHA-256",
        "AUTH PLAIN",
    ]
    assert device.stop() == 0
    device = start_device(factory_image, "--set", "pop3.plaintext_auth=always")
    port = device.wait_booted()
    assert check_every_advertised_method(port, "carol", CAROL_PASSWORD) == [
        "USER",
        "AUTH SCRAM-SHA-256",
        "AUTH PLAIN",
    ]


# -- switching the legacy methods on -------------------------------------------------------------


@pytest.fixture
def legacy_image(factory_image: Path) -> Iterator[Path]:
    """The factory image with pop3.apop switched on after carol, and dave made after that."""
    out = dpfw("profile", "set", str(factory_image), "pop3.apop", "true").stdout
    assert re.search(r"^pop3\.apop = [Tt]rue \(saved; applies at next boot\)$", out, re.M), out
    assert "WARNING: pop3.apop is on, but 1 box has no APOP/CRAM-MD5 secret\n" in out
    assert "  and cannot log in with APOP or CRAM-MD5: carol\n" in out
    assert "`dpfw box passwd IMG NAME --legacy`" in out
    dpfw("box", "add", str(factory_image), "dave", "--password", "dave-pw")
    dpfw("box", "add", str(factory_image), "erin", "--password", "erin-pw", "--no-legacy")
    assert legacy_secrets(factory_image) == {"carol": False, "dave": True, "erin": False}
    with open_board(factory_image) as board:
        board.deliver("dave", MESSAGE)
    yield factory_image


def legacy_secrets(image: Path) -> dict[str, bool]:
    with open_board(image) as board:
        return {info.name: info.has_legacy_secret for info in board.boxes()}


def test_dpfw_box_passwd_gives_keeps_or_drops_the_legacy_secret(legacy_image: Path) -> None:
    image = str(legacy_image)
    out = dpfw("box", "passwd", image, "carol", "--password", "carol-pw2").stdout
    assert out == (  # pop3.apop is on: she gets one
        "password of box carol changed; APOP/CRAM-MD5 secret kept from now on\n"
    )
    out = dpfw("box", "passwd", image, "dave", "--password", "dave-pw2", "--no-legacy").stdout
    assert "no APOP/CRAM-MD5 secret: this box cannot use APOP or CRAM-MD5" in out
    assert legacy_secrets(legacy_image) == {"carol": True, "dave": False, "erin": False}
    dpfw("profile", "set", image, "pop3.apop", "false")
    # Old main dropped the secret on every `passwd` without --legacy; now it keeps what was.
    out = dpfw("box", "passwd", image, "carol", "--password", "carol-pw3").stdout
    assert "APOP/CRAM-MD5 secret kept; pop3.apop is off" in out
    assert dpfw("box", "add", image, "fred", "--password", "fred-pw").stdout == ("box fred added\n")
    assert legacy_secrets(legacy_image) == {
        "carol": True,
        "dave": False,
        "erin": False,
        "fred": False,
    }


def test_switching_apop_on_names_the_boxes_that_cannot_use_it(
    legacy_image: Path, start_device: type[DeviceProcess]
) -> None:
    device = start_device(legacy_image)
    device.wait_booted()
    assert (
        "dpfw: WARNING: pop3.apop is on, but 2 boxes have no APOP/CRAM-MD5 secret\n"
        "dpfw:   and cannot log in with APOP or CRAM-MD5: carol, erin\n"
    ) in device.output()


def test_run_set_apop_on_warns_at_boot(
    factory_image: Path, start_device: type[DeviceProcess]
) -> None:
    device = start_device(factory_image, "--set", "pop3.apop=true")
    device.wait_booted()
    assert "cannot log in with APOP or CRAM-MD5: carol\n" in device.output()
    quiet = start_device(factory_image) if device.stop() == 0 else None
    assert quiet is not None
    quiet.wait_booted()
    assert "APOP/CRAM-MD5 secret" not in quiet.output()


def test_with_apop_on_a_box_made_after_can_use_every_method(
    legacy_image: Path, device_cert: Path, start_device: type[DeviceProcess], tmp_path: Path
) -> None:
    device = start_device(legacy_image)
    port = device.wait_booted()
    assert check_every_advertised_method(port, "dave", "dave-pw") == [
        "APOP",
        "AUTH SCRAM-SHA-256",
        "AUTH CRAM-MD5",
    ]
    assert check_every_advertised_method(port, "dave", "dave-pw", device_cert) == [
        "APOP",
        "USER",
        "AUTH SCRAM-SHA-256",
        "AUTH PLAIN",
        "AUTH CRAM-MD5",
    ]
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        client.apop("dave", "dave-pw")
        assert client.stat() == (1, len(MESSAGE))
        client.quit()
    finally:
        client.close()
    # fetchmail `protocol apop` and mpop `auth cram-md5`, plain TCP (neither sends a password)
    assert fetchmail_apop(port, tmp_path).count(b"Subject: default box") == 1
    assert mpop_cram_md5(port, tmp_path).count(b"Subject: default box") == 1


def test_with_apop_on_a_box_without_a_secret_is_told_and_not_locked_out(
    legacy_image: Path, start_device: type[DeviceProcess]
) -> None:
    device = start_device(legacy_image, "--set", "pop3.auth_failure_delay_s=0")
    port = device.wait_booted()
    expected = (
        b"-ERR [AUTH] no APOP/CRAM-MD5 secret is kept for carol; log in another way (see CAPA)\r\n"
    )
    for _ in range(12):  # more than the 10 failures that lock a box out
        wire = Wire(port)
        assert log_in(wire, "APOP", "carol", CAROL_PASSWORD) == expected
        assert log_in(wire, "AUTH CRAM-MD5", "carol", CAROL_PASSWORD) == expected
        wire.close()
    wire = Wire(port)
    assert log_in(wire, "AUTH SCRAM-SHA-256", "carol", CAROL_PASSWORD).startswith(b"+OK carol")
    wire.close()


def fetchmail_apop(port: int, tmp_path: Path) -> bytes:
    out = tmp_path / "fetched"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 with protocol APOP port {port}\n"
        '  user "dave" there with password "dave-pw" is "tester" here\n'
        f'  options keep fetchall sslproto ""\n'
        f'  mda "cat >> {out}"\n'
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    pidfile = str(tmp_path / "pid")
    result = run(
        [need("fetchmail"), "-f", str(rc), "--nosyslog", "-N", "-d0", "-v", "--pidfile", pidfile],
        env=env,
    )
    log = result.stderr.decode() + result.stdout.decode()
    assert result.returncode == 0, log
    assert re.search(r"POP3> APOP dave [0-9a-f]{32}\n", log), log  # it really used APOP
    return out.read_bytes()


def mpop_cram_md5(port: int, tmp_path: Path) -> bytes:
    mbox = tmp_path / "mpop.mbox"
    rc = tmp_path / "mpoprc"
    rc.write_text("")
    rc.chmod(0o600)
    result = run(
        [
            need("mpop"),
            "-C",
            str(rc),
            "--host=127.0.0.1",
            f"--port={port}",
            "--user=dave",
            "--passwordeval=echo dave-pw",
            "--tls=off",
            "--auth=cram-md5",
            f"--delivery=mbox,{mbox}",
            "--keep=on",
            "--only-new=off",
            f"--uidls-file={tmp_path / 'uidls'}",
        ],
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    return mbox.read_bytes()


# -- the README, word for word, against a fresh demo image ---------------------------------------


def readme_block(title: str) -> str:
    """The first ```sh block after the README heading `title`."""
    readme = (Path(__file__).parents[2] / "README.md").read_text("utf-8")
    section = readme.split(f"\n## {title}\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_fetching_examples_work_on_a_fresh_demo_image(
    demo_image: Path, start_device: type[DeviceProcess], tmp_path: Path
) -> None:
    block = readme_block("Fetching scans")
    assert "curl -u alice:alice-lab pop3://127.0.0.1:1110/" in block
    need("curl")
    cert = tmp_path / "demo.pem"
    cert.write_text(dpfw("tls", "show", str(demo_image), "--pem").stdout)
    device = start_device(demo_image)
    port = device.wait_booted()
    lines = block.replace("\\\n", "").splitlines()
    commands = [line.split("  #")[0].strip().replace("1110", str(port)) for line in lines]
    listing, first, stat = (
        subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=60, check=True)
        for cmd in commands
    )
    count = len(listing.stdout.splitlines())
    assert count >= 3 and listing.stdout.startswith(b"1 ")
    assert b"Subject: Welcome to the DP-3530 demo" in first.stdout
    assert stat.stdout.decode().startswith(f"({count}, ")

    # The same curl lines inside TLS (STLS), trusting the image's own certificate.
    tls = f"--ssl-reqd --cacert {cert} --resolve {HOSTNAME}:{port}:127.0.0.1"
    for cmd, expected in ((commands[0], listing.stdout), (commands[1], first.stdout)):
        over_tls = cmd.replace("curl ", f"curl {tls} ").replace("127.0.0.1:", f"{HOSTNAME}:")
        got = subprocess.run(["sh", "-c", over_tls], capture_output=True, timeout=60, check=False)
        assert got.returncode == 0, (over_tls, got.stderr)
        assert got.stdout == expected
