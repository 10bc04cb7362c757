"""Commands of every state: QUIT (RFC 1939 §6 UPDATE) and CAPA (RFC 2449 §5).

CAPA lists what the installed handlers declare, in installation order, then the session-wide
capabilities CAPA's own handler declares (response codes, pipelining, EXPIRE, LOGIN-DELAY,
IMPLEMENTATION).
"""

from __future__ import annotations

from firmware.pop3.events import Command
from firmware.pop3.protocol import (
    CAPA_HEAD,
    Answer,
    Handler,
    Pop3Protocol,
    State,
    capability,
    fixed_body,
    ok,
)

_BOTH = frozenset({State.AUTHORIZATION, State.TRANSACTION})


async def _quit(s: Pop3Protocol, command: Command) -> Answer:
    if s.state is State.TRANSACTION:
        return await s.update()
    s.end()
    return Answer(ok("signing off"), close=True)


def _capa(s: Pop3Protocol, command: Command) -> Answer:
    return Answer(CAPA_HEAD, fixed_body(s.commands.capabilities(s)))


def _session_capabilities(s: Pop3Protocol) -> list[bytes]:
    profile = s.profile()
    caps = [b"RESP-CODES\r\n", b"AUTH-RESP-CODE\r\n", b"PIPELINING\r\n"]
    expire = profile.int("pop3.expire_days")
    if expire >= 0:
        caps.append(b"EXPIRE %d\r\n" % expire)
    login_delay = profile.int("pop3.login_delay_s")
    if login_delay > 0:
        caps.append(b"LOGIN-DELAY %d\r\n" % login_delay)
    version = profile.str("identity.firmware_version")
    caps.append(capability(f"IMPLEMENTATION dpfw {profile.model} firmware {version}"))
    return caps


QUIT = Handler("QUIT", _BOTH, _quit, "QUIT takes no arguments")
CAPA = Handler("CAPA", _BOTH, _capa, "CAPA takes no arguments", _session_capabilities)
