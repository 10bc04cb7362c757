"""HTTP Basic as the console's admin, one lock-out with the console, no plain HTTP off-host."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx
import pytest
import serial

from firmware.http.auth import VerifiedCache
from firmware.security.abuse import AdminLockout
from tests.http.conftest import ADMIN, Lab, start_lab, wait_http
from tests.support import DeviceProcess, dpfw

API = "/api/v1"


def test_admin_lockout_counts_in_threes_and_doubles() -> None:
    lockout = AdminLockout()
    assert lockout.failure(0.0) == 0.0 and lockout.failure(1.0) == 0.0
    assert lockout.failure(2.0) == 30.0
    assert lockout.seconds_left(10.0) == 22.0
    for t in (40.0, 41.0):
        assert lockout.failure(t) == 0.0
    assert lockout.failure(42.0) == 60.0
    lockout.success()
    assert lockout.failures == 0 and lockout.lockouts == 0
    for n in range(3 * 12):
        lockout.failure(float(n))
    assert lockout.seconds_left(35.0) == 900.0  # capped


@pytest.mark.parametrize(
    "auth",
    [None, ("admin", "wrong"), ("root", "admin-lab"), ("Admin", "admin-lab")],
    ids=["none", "wrong-password", "other-user", "user-case"],
)
def test_every_route_but_the_openapi_document_needs_the_admin(
    lab: Lab, auth: tuple[str, str] | None
) -> None:
    with lab.client(auth) as client:
        for path in (f"{API}/boxes", "/metrics"):  # two: a third failure would lock
            got = client.get(path)
            assert got.status_code == 401, (path, got.text)
            assert got.headers["www-authenticate"].startswith("Basic ")
            assert got.json()["error"] == "unauthorized"
        assert client.get(f"{API}/openapi.json").status_code == 200


@pytest.mark.parametrize(
    "header",
    ["Bearer abc", "Basic !!!", "Basic " + "YWRtaW4=", "Basic //79", "Digest x"],
)
def test_malformed_credentials_are_401_with_a_reason(lab: Lab, header: str) -> None:
    got = httpx.get(f"{lab.base}{API}/status", headers={"Authorization": header}, timeout=10)
    assert got.status_code == 401
    assert got.json()["message"]


def test_three_wrong_passwords_lock_admin_logins_even_the_right_one(lab: Lab) -> None:
    with lab.client(("admin", "guess")) as bad:
        assert bad.get(f"{API}/status").status_code == 401
        assert bad.get(f"{API}/status").status_code == 401
        third = bad.get(f"{API}/status")
    assert third.status_code == 401 and "locked for 30 s" in third.json()["message"]
    locked = lab.api.get(f"{API}/status")
    assert locked.status_code == 429, locked.text
    assert 1 <= int(locked.headers["retry-after"]) <= 30
    assert "try again in" in locked.json()["message"]
    assert "service=http" in lab.device.output()  # the auth log line fail2ban reads


def test_console_and_api_failures_count_together(
    demo_image: Path, start_device: type[DeviceProcess]
) -> None:
    device = start_device(demo_image, "--console", "pty", "--http", "127.0.0.1:0")
    device.wait_booted()
    base = wait_http(device)
    assert device.console_path is not None
    port = serial.Serial(device.console_path, 115200, timeout=15)
    try:
        port.write(b"\r")
        port.read_until(b"Password: ")
        for attempt in ("bad1", "bad2"):
            port.write(attempt.encode() + b"\r")
            assert port.read_until(b"Login incorrect").endswith(b"Login incorrect")
        wrong = httpx.get(f"{base}{API}/status", auth=("admin", "bad3"), timeout=10)
        assert "locked for 30 s" in wrong.json()["message"]  # the third failure in a row
        port.write(b"admin-lab\r")
        locked = port.read_until(b"try again in")
        assert locked.endswith(b"console locked after failed logins; try again in"), locked
    finally:
        port.close()
    assert httpx.get(f"{base}{API}/status", auth=ADMIN, timeout=10).status_code == 429


def test_plain_http_off_loopback_is_refused_unless_the_operator_says_so(
    demo_image: Path, start_device: type[DeviceProcess]
) -> None:
    refused = dpfw("run", str(demo_image), "--http", "0.0.0.0:0", check=False)
    assert refused.returncode == 1
    assert "in clear" in refused.stderr and "--http-insecure" in refused.stderr
    assert "Traceback" not in refused.stderr
    alone = dpfw("run", str(demo_image), "--https", check=False)
    assert alone.returncode == 1 and "need --http HOST:PORT" in alone.stderr
    device = start_device(demo_image, "--http", "0.0.0.0:0", "--http-insecure")
    device.wait_booted()
    base = wait_http(device).replace("0.0.0.0", "127.0.0.1")
    assert httpx.get(f"{base}{API}/status", auth=ADMIN, timeout=10).status_code == 200


def test_https_serves_the_device_certificate(
    demo_image: Path, start_device: type[DeviceProcess], tmp_path: Path
) -> None:
    dpfw("tls", "selfsign", str(demo_image))
    cert = tmp_path / "device.pem"
    gen = start_lab(start_device, demo_image, "--https", "--cert-out", str(cert))
    lab = next(gen)
    try:
        assert lab.base.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False  # the self-signed certificate names the device
        with httpx.Client(base_url=lab.base, auth=ADMIN, verify=context, timeout=10) as client:
            got = client.get(f"{API}/status")
            assert got.status_code == 200 and got.json()["model"] == "DP-3530"
        with pytest.raises(httpx.HTTPError):  # not trusted without the certificate
            httpx.get(f"{lab.base}{API}/status", auth=ADMIN, timeout=10)
        plain = lab.base.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(f"{plain}{API}/status", auth=ADMIN, timeout=10)
    finally:
        gen.close()


def test_parallel_guesses_get_no_more_than_three_checks(lab: Lab) -> None:
    """40 wrong passwords at once: three are checked, the lock-out refuses the rest."""
    import asyncio

    async def guess_all() -> list[int]:
        async with httpx.AsyncClient(base_url=lab.base, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.get(f"{API}/status", auth=("admin", f"guess{n}")) for n in range(40))
            )
        return [answer.status_code for answer in answers]

    codes = asyncio.run(guess_all())
    assert codes.count(401) == 3 and codes.count(429) == 37, codes
    metrics = lab.device.output()
    assert metrics.count("reason=bad-credentials") == 3


def test_an_http_port_in_use_is_one_line_naming_the_api(demo_image: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = dpfw("run", str(demo_image), "--pop3", "127.0.0.1:0", "--http",
                    f"127.0.0.1:{port}", check=False)  # fmt: skip
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"dpfw: cannot listen for HTTP on 127.0.0.1:{port}: Address already in use"


def test_the_verified_cache_keys_on_a_keyed_hash_and_drops_old_generations() -> None:
    cache = VerifiedCache(ttl=60.0, size=2)
    creds = ("admin", "admin-lab")
    assert not cache.hit(creds, "gen1", 0.0)
    cache.add(creds, "gen1", 0.0)
    assert cache.hit(creds, "gen1", 59.0)
    assert not cache.hit(("admin", "admin-lab2"), "gen1", 1.0)
    assert not cache.hit(creds, "gen1", 60.0)  # too old: checked again
    cache.add(creds, "gen1", 100.0)
    assert not cache.hit(creds, "gen2", 101.0)  # the admin credentials changed
    assert len(cache) == 0
    cache.add(("admin", "a"), "gen3", 0.0)
    cache.add(("admin", "b"), "gen3", 0.0)
    cache.add(("admin", "c"), "gen3", 0.0)
    assert len(cache) == 2 and not cache.hit(("admin", "a"), "gen3", 1.0)
    held = repr(vars(cache)).encode()
    assert b"admin-lab" not in held and b"'b'" not in held  # no password is kept


def test_cached_credentials_still_meet_the_lock_out(lab: Lab) -> None:
    assert lab.api.get(f"{API}/status").status_code == 200  # verified, now cached
    assert lab.api.get(f"{API}/status").status_code == 200
    with lab.client(("admin", "guess")) as bad:
        for _ in range(3):
            assert bad.get(f"{API}/status").status_code == 401
    locked = lab.api.get(f"{API}/status")
    assert locked.status_code == 429, locked.text


def test_a_console_password_change_ends_cached_api_logins(
    demo_image: Path, start_device: type[DeviceProcess]
) -> None:
    from tests.console.test_device_console import Terminal

    device = start_device(demo_image, "--console", "pty", "--http", "127.0.0.1:0")
    device.wait_booted()
    base = wait_http(device)
    assert device.console_path is not None
    with httpx.Client(base_url=base, auth=ADMIN, timeout=10) as api:
        assert api.get(f"{API}/status").status_code == 200
        assert api.get(f"{API}/status").status_code == 200  # from the cache
        term = Terminal(device.console_path)
        try:
            term.login()
            term.run("passwd", until="Current password: ")
            term.run(ADMIN[1], until="New password: ")
            term.run("admin-new-1", until="Again: ")
            assert "password changed" in term.run("admin-new-1")
        finally:
            term.close()
        old = api.get(f"{API}/status")
        assert old.status_code == 401, old.text
    new = httpx.get(f"{base}{API}/status", auth=("admin", "admin-new-1"), timeout=10)
    assert new.status_code == 200
