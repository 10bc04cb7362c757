"""Commands of every state: QUIT (RFC 1939 §6 UPDATE) and CAPA (RFC 2449 §5).

CAPA lists what the installed handlers declare, in installation order, then the session-wide
capabilities CAPA's own handler declares (response codes, pipelining, EXPIRE, LOGIN-DELAY,
IMPLEMENTATION).
"""

from __future__ import annotations

from firmware.pop3.framing import fixed_body
from firmware.pop3.protocol import CAPA_HEAD, Handler, Pop3Protocol, Reply, State, reply_line

_BOTH = frozenset({State.AUTHORIZATION, State.TRANSACTION})


async def _quit(s: Pop3Protocol, rest: str) -> Reply:
    bad = s.no_args("QUIT", rest)
    if bad:
        return bad
    if s.state is State.TRANSACTION:
        return await s.update()
    s.end()
    return Reply(b"+OK signing off\r\n", close=True)


def _capa(s: Pop3Protocol, rest: str) -> Reply:
    bad = s.no_args("CAPA", rest)
    return bad or Reply(CAPA_HEAD, fixed_body(s.commands.capabilities(s)))


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
    caps.append(reply_line(f"IMPLEMENTATION dpfw {profile.model} firmware {version}"))
    return caps


QUIT = Handler("QUIT", _BOTH, _quit)
CAPA = Handler("CAPA", _BOTH, _capa, _session_capabilities)
