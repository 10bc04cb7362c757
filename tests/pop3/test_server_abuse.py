"""Abuse controls in the running service: login penalties per address, box lock-out,
pre-login eviction, and the auth log lines that go with them.

Two client addresses on one host: 127.0.0.1 and 127.0.0.2 are both loopback on Linux; the
client socket is bound to its source address.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from firmware.security.abuse import LOCKOUT_FAILURES, LOCKOUT_S
from firmware.security.authlog import parse
from tests.pop3.conftest import ALICE_PASSWORD, BOB_PASSWORD, Server

BASE = 0.05  # pop3.auth_failure_delay_s in these tests: 0.05, 0.1, 0.2, 0.4 ...
FAILED = b"-ERR [AUTH] invalid mailbox name or password\r\n"


def auth_log(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, str]]:
    found = [parse(r.getMessage()) for r in caplog.records if r.name == "dpfw.auth"]
    return [fields for fields in found if fields["event"] == event]


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.01)


async def test_bad_logins_from_one_address_slow_down_while_another_logs_in_at_full_speed(
    pop3: Server, caplog: pytest.LogCaptureFixture
) -> None:
    pop3.profile.set("pop3.auth_failure_delay_s", str(BASE))
    pop3.profile.set("pop3.max_auth_failures", "2")
    waits: list[float] = []
    other_logins: list[float] = []

    async def attacker() -> None:
        for _ in range(2):  # two connections: the penalty follows the address, not the link
            client = await pop3.connect(source="127.0.0.2")
            await client.line()
            for _ in range(2):
                await client.cmd("USER alice")
                start = trio.current_time()
                assert await client.cmd("PASS guess") == FAILED
                waits.append(trio.current_time() - start)
            assert await client.closed()  # pop3.max_auth_failures

    async def user() -> None:
        while len(waits) < 4:
            client = await pop3.connect(source="127.0.0.1")
            await client.line()
            start = trio.current_time()
            assert (await client.login_again("bob", BOB_PASSWORD)).startswith(b"+OK")
            other_logins.append(trio.current_time() - start)
            await client.cmd("QUIT")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(attacker)
        nursery.start_soon(user)

    expected = [min(15.0, BASE * 2**n) for n in range(4)]  # 0.05 0.1 0.2 0.4
    for waited, wanted in zip(waits, expected, strict=True):
        assert wanted <= waited < wanted + 0.3
    assert len(other_logins) >= 5
    assert max(other_logins) < 2 * BASE  # never held up by the other address's penalty
    fails = auth_log(caplog, "auth-fail")
    assert len(fails) == 4
    assert {(f["rip"], f["box"], f["mech"], f["reason"]) for f in fails} == {
        ("127.0.0.2", "alice", "PASS", "bad-credentials")
    }
    assert len(auth_log(caplog, "limit")) == 2  # limit=auth-failures, once per connection


async def test_a_good_login_resets_the_address_penalty(pop3: Server) -> None:
    pop3.profile.set("pop3.auth_failure_delay_s", str(BASE))
    pop3.profile.set("pop3.max_auth_failures", "10")
    client = await pop3.connect(source="127.0.0.2")
    await client.line()
    for _ in range(3):  # 0.05 + 0.1 + 0.2
        await client.cmd("USER alice")
        assert await client.cmd("PASS guess") == FAILED
    assert (await client.login_again()).startswith(b"+OK")
    await client.cmd("QUIT")
    client = await pop3.connect(source="127.0.0.2")
    await client.line()
    await client.cmd("USER alice")
    start = trio.current_time()
    assert await client.cmd("PASS guess") == FAILED
    assert trio.current_time() - start < 2 * BASE  # back to the base delay


async def test_a_box_guessed_from_many_addresses_is_locked_for_everyone(
    pop3: Server, caplog: pytest.LogCaptureFixture
) -> None:
    pop3.profile.set("pop3.auth_failure_delay_s", str(BASE))

    async def guess(source: str) -> None:
        client = await pop3.connect(source=source)
        await client.line()
        await client.cmd("USER bob")
        assert await client.cmd("PASS guess") == FAILED
        await client.cmd("QUIT")

    async with trio.open_nursery() as nursery:
        for n in range(LOCKOUT_FAILURES):  # one guess from each of 10 addresses
            nursery.start_soon(guess, f"127.0.0.{n + 2}")
    locked = pop3.service.locked_boxes()
    assert list(locked) == ["bob"]
    assert LOCKOUT_S - 5 < locked["bob"] <= LOCKOUT_S

    client = await pop3.connect(source="127.0.0.1")
    assert await client.login("bob", BOB_PASSWORD) == FAILED  # right password, same answer
    assert auth_log(caplog, "auth-fail")[-1]["reason"] == "box-locked"
    assert (await client.login_again()).startswith(b"+OK alice")  # other boxes are fine
    await client.cmd("QUIT")

    assert pop3.service.unlock("bob")
    assert pop3.service.locked_boxes() == {}
    client = await pop3.connect(source="127.0.0.1")
    assert (await client.login("bob", BOB_PASSWORD)).startswith(b"+OK bob")


async def test_the_oldest_silent_connection_makes_room_when_all_sessions_are_taken(
    pop3: Server, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    pop3.profile.set("pop3.max_sessions", "2")
    pop3.profile.set("pop3.max_sessions_per_client", "2")
    silent = await pop3.connect(source="127.0.0.2")
    await silent.line()
    await trio.sleep(2)
    logged_in = await pop3.connect(source="127.0.0.2")
    assert (await logged_in.login()).startswith(b"+OK alice")
    await trio.sleep(2)

    newcomer = await pop3.connect(source="127.0.0.3")
    assert (await newcomer.line()).startswith(b"+OK DP-3530")  # admitted
    assert await silent.closed()  # ... because the silent one was evicted
    [evicted] = auth_log(caplog, "evicted")
    assert evicted["rip"] == "127.0.0.2"
    assert pop3.service.stats.evictions == 1
    assert (await newcomer.login_again("bob", BOB_PASSWORD)).startswith(b"+OK")

    # Both sessions are logged in now: they are never evicted, so a third is refused.
    await trio.sleep(2)
    refused = await pop3.connect(source="127.0.0.4")
    assert await refused.line() == b"-ERR [SYS/TEMP] too many POP3 sessions; try again later\r\n"
    assert await logged_in.cmd("NOOP") == b"+OK\r\n"
    [limit] = auth_log(caplog, "limit")
    assert (limit["rip"], limit["limit"]) == ("127.0.0.4", "sessions")


async def test_a_new_connection_does_not_evict_one_that_just_arrived(pop3: Server) -> None:
    pop3.profile.set("pop3.max_sessions", "1")
    first = await pop3.connect()
    await first.line()
    second = await pop3.connect(source="127.0.0.2")
    assert (await second.line()).startswith(b"-ERR [SYS/TEMP] too many")
    assert await first.cmd("NOOP") == b"-ERR NOOP is not valid in the authorization state\r\n"


async def test_per_client_limit_and_preauth_timeout_are_logged(
    pop3: Server, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    pop3.profile.set("pop3.max_sessions_per_client", "1")
    first = await pop3.connect()
    await first.line()
    second = await pop3.connect()
    assert (await second.line()).endswith(b"from your address\r\n")
    other = await pop3.connect(source="127.0.0.2")  # another address still gets in
    assert (await other.line()).startswith(b"+OK")
    assert await first.closed()  # pop3.preauth_timeout_s later
    assert [e["limit"] for e in auth_log(caplog, "limit")] == ["per-client"]
    timeouts = auth_log(caplog, "preauth-timeout")
    assert {e["rip"] for e in timeouts} >= {"127.0.0.1"}


async def test_auth_ok_is_logged_at_info_for_every_mechanism(
    pop3: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dpfw.auth")
    client = await pop3.connect()
    await client.login("alice", ALICE_PASSWORD)
    await client.cmd("QUIT")
    [ok] = auth_log(caplog, "auth-ok")
    assert ok == {
        "event": "auth-ok",
        "rip": "127.0.0.1",
        "box": "alice",
        "mech": "PASS",
        "tls": "no",
        "session": ok["session"],
    }
    [record] = [r for r in caplog.records if r.name == "dpfw.auth"]
    assert record.levelno == logging.INFO
