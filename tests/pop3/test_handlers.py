"""The command handlers over the in-memory maildrop: no Board, no socket, no thread.

What each handler declares for CAPA, that CAPA is built from the installed set (a session with
fewer handlers neither accepts nor advertises the others), and the handlers' store effects
through `MemoryMailstore`.
"""

from __future__ import annotations

import pytest

from firmware.config.budget import RamBudget
from firmware.config.profile import Profile, factory
from firmware.errors import CorruptRecordError
from firmware.pop3.handlers import INSTALLED
from firmware.pop3.handlers.session import CAPA, QUIT
from firmware.pop3.handlers.transaction import NOOP, STAT
from firmware.pop3.locks import BoxLocks
from firmware.pop3.memory import MemoryMailstore
from firmware.pop3.protocol import Commands, Pop3Protocol, State
from tests.pop3.driver import Driver

PASSWORD = "handler-pw"


def profile() -> Profile:
    return factory("DP-3530").with_value("pop3.plaintext_auth", "always")


@pytest.fixture
def store() -> MemoryMailstore:
    store = MemoryMailstore()
    store.add_box("alice", PASSWORD)
    store.deliver("alice", b"Subject: a\r\n\r\none\r\ntwo\r\n")
    store.deliver("alice", b"Subject: b\r\n\r\n.starts with a dot\r\n")
    return store


def session(store: MemoryMailstore, commands: Commands | None = None) -> Driver:
    """A session behind the protocol library (bytes in, bytes out), as the adapter runs it."""
    return Driver(
        Pop3Protocol(
            store,
            profile,
            BoxLocks(),
            RamBudget(1 << 22),
            session_id=1,
            clock=lambda: 1000.0,
            commands=commands,
            tls_available=True,
        )
    )


async def send(wire: Driver, line: str) -> bytes:
    return await wire.feed(line.encode() + b"\r\n")


def test_every_command_has_one_handler_and_capa_follows_installation_order() -> None:
    keywords = [h.keyword for h in INSTALLED]
    assert sorted(keywords) == sorted(set(keywords))
    assert set(keywords) == {
        "USER", "PASS", "APOP", "AUTH", "STLS", "QUIT", "CAPA",
        "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL",
    }  # fmt: skip


async def test_capa_lists_what_the_installed_handlers_declare(store: MemoryMailstore) -> None:
    capa = (await send(session(store), "CAPA")).split(b"\r\n")
    assert capa[:5] == [
        b"+OK capability list follows",
        b"TOP",
        b"UIDL",
        b"USER",
        b"STLS",
    ]
    assert capa[5].startswith(b"SASL ")
    assert capa[6:9] == [b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING"]
    assert capa[-3].startswith(b"IMPLEMENTATION dpfw DP-3530") and capa[-2:] == [b".", b""]


async def test_a_session_with_fewer_handlers_neither_accepts_nor_advertises_the_rest(
    store: MemoryMailstore,
) -> None:
    p = session(store, Commands([STAT, NOOP, QUIT, CAPA]))
    capa = await send(p, "CAPA")
    assert b"TOP\r\n" not in capa and b"UIDL\r\n" not in capa and b"USER\r\n" not in capa
    assert b"SASL" not in capa and b"PIPELINING\r\n" in capa
    assert await send(p, "USER alice") == b"-ERR unknown command\r\n"
    assert await send(p, "STAT") == b"-ERR STAT is not valid in the authorization state\r\n"
    assert await send(p, "QUIT") == b"+OK signing off\r\n"


async def test_login_retr_top_dele_quit_through_the_memory_maildrop(
    store: MemoryMailstore,
) -> None:
    p = session(store)
    assert await send(p, "USER alice") == b"+OK send PASS\r\n"
    assert (await send(p, f"PASS {PASSWORD}")).startswith(b"+OK alice has 2 messages")
    assert p.p.state is State.TRANSACTION
    retr = await send(p, "RETR 2")
    assert retr.endswith(b"\r\n..starts with a dot\r\n.\r\n")
    assert await send(p, "TOP 1 1") == (
        b"+OK top of message follows\r\nSubject: a\r\n\r\none\r\n.\r\n"
    )
    assert await send(p, "DELE 1") == b"+OK message 1 deleted\r\n"
    assert await send(p, "QUIT") == b"+OK signing off (1 message left)\r\n"
    assert [box for box, _ in store.deletions] == ["alice"]
    assert len(store.stored("alice")) == 1


async def test_a_damaged_message_is_refused_before_any_body(store: MemoryMailstore) -> None:
    p = session(store)
    await send(p, "USER alice")
    await send(p, f"PASS {PASSWORD}")
    store.fail = CorruptRecordError("CRC mismatch")
    assert await send(p, "RETR 1") == b"-ERR [SYS/PERM] message 1 is damaged: CRC mismatch\r\n"
    store.fail = None
    assert (await send(p, "RETR 1")).startswith(b"+OK")


async def test_a_wrong_password_goes_through_the_maildrop_and_fails(
    store: MemoryMailstore,
) -> None:
    p = session(store)
    await send(p, "USER alice")
    assert await send(p, "PASS wrong") == b"-ERR [AUTH] invalid mailbox name or password\r\n"
    assert p.p.state is State.AUTHORIZATION
