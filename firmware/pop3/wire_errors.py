"""The two error kinds of the POP3 protocol library (as h11 has them).

`LocalProtocolError`: our side tried something the protocol forbids (a bug in the caller).
`RemoteProtocolError`: the peer broke the protocol in a way the session cannot survive; the
adapter closes the connection, after sending `error.reply` if it is not None (server role).
After either, the connection is in state ERROR and refuses further use.
Errors the session survives (an unknown command, bad arguments) are not exceptions: the server
receives a `BadCommand` event and answers -ERR.
"""

from __future__ import annotations

from firmware.pop3.events import Reply


class ProtocolError(Exception):
    """Base of both kinds; `reply` is the last reply to send before closing, or None."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class LocalProtocolError(ProtocolError):
    """Our side broke the protocol: wrong event for the state, bad text, a second reply."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol fatally: close the connection."""
