"""The trio adapter of the POP3 service: sockets, admission, timers, streaming.

Everything POP3 means lives in `Pop3Protocol`; this module only moves bytes and enforces the
device's limits. We run our own accept loop because trio's `serve_tcp` admits without limit
and lets one failing handler take the server down: here a session over `pop3.max_sessions`
(or over the RAM budget) gets `-ERR [SYS/TEMP]` and is closed at once, and a session that
fails is logged and ends alone.
"""

from __future__ import annotations

import errno
import itertools
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from firmware.device.budget import RamBudget, Reservation
from firmware.device.profile import Profile
from firmware.errors import DeviceError, MemoryFullError
from firmware.pop3.framing import LineReader
from firmware.pop3.locks import BoxLocks
from firmware.pop3.mailbox import BoardMailstore
from firmware.pop3.protocol import Pop3Protocol, Pop3Stats, Reply

if TYPE_CHECKING:
    from firmware.store.board import Board

log = logging.getLogger(__name__)

BACKLOG: Final = 64
"""Listen backlog: small and explicit, as on an embedded board (trio's default is the max)."""

RECEIVE_SIZE: Final = 4096
"""Bytes asked of the socket per read; a command line is at most 255."""

SESSION_RAM: Final = 8192
"""Bytes each session reserves from the RAM budget for its receive and line buffers."""

SEND_COALESCE: Final = 16384
"""Reply pieces smaller than this are joined before sending, to save packets and syscalls."""

REFUSE_TIMEOUT_S: Final = 2.0
MAX_REFUSING: Final = 32
CLOSE_DRAIN_S: Final = 1.0
_ACCEPT_RETRY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One open session as the console shows it."""

    id: int
    peer: str
    box: str | None
    state: str
    started: float  # wall-clock time.time() of the accept


class _Session:
    __slots__ = ("host", "id", "peer", "protocol", "scope", "started", "stream")

    def __init__(self, session_id: int, stream: trio.SocketStream, peer: str, host: str) -> None:
        self.id = session_id
        self.stream = stream
        self.peer = peer
        self.host = host
        self.started = time.time()
        self.scope = trio.CancelScope()
        self.protocol: Pop3Protocol | None = None


def _peer_of(stream: trio.SocketStream) -> tuple[str, str]:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "unknown", "unknown"
    host, port = str(address[0]), address[1]
    return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Pop3Service:
    """The device's POP3 service over a Board; one instance per device."""

    def __init__(
        self,
        board: Board,
        profile: Callable[[], Profile],
        budget: RamBudget,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._store = BoardMailstore(board)
        self._profile = profile
        self._budget = budget
        self._tls = tls  # STLS / POP3S arrive with the TLS issue; kept for the constructor shape
        self._locks = BoxLocks()
        self.stats = Pop3Stats()
        self._sessions: dict[int, _Session] = {}
        self._per_host: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._refusing = 0
        self._accept_scope: trio.CancelScope | None = None
        self._sessions_gone: trio.Event | None = None

    # -- console-facing ------------------------------------------------------------------

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[SessionInfo]:
        """The open sessions, oldest first."""
        return [
            SessionInfo(
                id=s.id,
                peer=s.peer,
                box=s.protocol.box if s.protocol is not None else None,
                state=s.protocol.state.value if s.protocol is not None else "starting",
                started=s.started,
            )
            for s in self._sessions.values()
        ]

    def kill(self, session_id: int) -> bool:
        """End one session at once, committing nothing; False if there is no such session."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        log.info("POP3 session %d (%s) ended by the administrator", session.id, session.peer)
        session.scope.cancel()
        return True

    async def drain(self, grace: float) -> None:
        """Stop accepting; give open sessions `grace` seconds, then cancel the rest."""
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        with trio.move_on_after(grace):
            await self._wait_sessions_gone()
        for session in list(self._sessions.values()):
            session.scope.cancel()
        await self._wait_sessions_gone()

    async def _wait_sessions_gone(self) -> None:
        while self._sessions:
            if self._sessions_gone is None or self._sessions_gone.is_set():
                self._sessions_gone = trio.Event()
            await self._sessions_gone.wait()

    # -- accept loop ---------------------------------------------------------------------

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on host:port and serve until cancelled (or drained)."""
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=BACKLOG)
        try:
            async with trio.open_nursery() as sessions:
                with trio.CancelScope() as accept_scope:
                    self._accept_scope = accept_scope
                    async with trio.open_nursery() as accepters:
                        for listener in listeners:
                            accepters.start_soon(self._accept_loop, listener, sessions)
                        task_status.started(listeners[0].socket.getsockname()[1])
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
        finally:
            for listener in listeners:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(listener)

    async def _accept_loop(self, listener: trio.SocketListener, sessions: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY_ERRNOS:
                    log.warning("POP3 accept: %s; retrying in 100 ms", exc)
                    await trio.sleep(0.1)
                    continue
                raise
            try:
                self._admit(stream, sessions)
            except Exception:
                log.exception("POP3 could not admit a connection; closing it")
                stream.socket.close()

    def _admit(self, stream: trio.SocketStream, sessions: trio.Nursery) -> None:
        """Start a session for `stream`, or refuse it at once with -ERR [SYS/TEMP]."""
        profile = self._profile()
        host, peer = _peer_of(stream)
        refusal: bytes | None = None
        reservation: Reservation | None = None
        if len(self._sessions) >= profile.int("pop3.max_sessions"):
            refusal = b"-ERR [SYS/TEMP] too many POP3 sessions; try again later\r\n"
        elif self._per_host.get(host, 0) >= profile.int("pop3.max_sessions_per_client"):
            refusal = b"-ERR [SYS/TEMP] too many POP3 sessions from your address\r\n"
        else:
            try:
                reservation = self._budget.reserve(SESSION_RAM, "POP3 session")
            except MemoryFullError:
                refusal = b"-ERR [SYS/TEMP] out of memory; try again later\r\n"
        if refusal is not None or reservation is None:
            self.stats.sessions_refused += 1
            log.info("POP3 refused %s: %s", peer, (refusal or b"").decode().strip())
            if self._refusing >= MAX_REFUSING:
                stream.socket.close()  # refusals are already busy: drop without a word
                return
            self._refusing += 1
            sessions.start_soon(self._refuse, stream, refusal or b"")
            return
        session = _Session(next(self._ids), stream, peer, host)
        self._sessions[session.id] = session
        self._per_host[host] = self._per_host.get(host, 0) + 1
        self.stats.sessions_total += 1
        sessions.start_soon(self._run, session, reservation)

    async def _refuse(self, stream: trio.SocketStream, refusal: bytes) -> None:
        try:
            with trio.move_on_after(REFUSE_TIMEOUT_S):
                await stream.send_all(refusal)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._refusing -= 1
            await trio.aclose_forcefully(stream)

    # -- one session ---------------------------------------------------------------------

    async def _run(self, session: _Session, reservation: Reservation) -> None:
        """Run one session; whatever happens, commit nothing unasked and free everything."""
        protocol = Pop3Protocol(
            self._store,
            self._profile,
            self._locks,
            self._budget,
            session_id=session.id,
            clock=trio.current_time,
            stats=self.stats,
        )
        session.protocol = protocol
        closed_by_protocol = False
        try:
            with session.scope:
                closed_by_protocol = await self._converse(session, protocol)
            if session.scope.cancelled_caught:
                idle = session.scope.deadline <= trio.current_time()
                if idle:
                    self.stats.idle_logouts += 1
                why = "idle logout" if idle else "stopped"
                log.info("POP3 session %d (%s) ended: %s", session.id, session.peer, why)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away: nothing is committed
        except Exception:
            log.exception(
                "POP3 session %d (%s, box %s, %s) failed",
                session.id,
                session.peer,
                protocol.box,
                protocol.state.value,
            )
        finally:
            protocol.end()
            reservation.release()
            del self._sessions[session.id]
            left = self._per_host[session.host] - 1
            if left:
                self._per_host[session.host] = left
            else:
                del self._per_host[session.host]
            if not self._sessions and self._sessions_gone is not None:
                self._sessions_gone.set()
            if closed_by_protocol:
                await self._close_gently(session.stream)
            await trio.aclose_forcefully(session.stream)

    def _idle_limit(self, protocol: Pop3Protocol) -> float:
        key = "pop3.preauth_timeout_s" if protocol.box is None else "pop3.idle_timeout_s"
        return float(self._profile().int(key))

    async def _converse(self, session: _Session, protocol: Pop3Protocol) -> bool:
        """Serve commands until EOF (False) or a reply that closes the session (True)."""
        stream = session.stream
        scope = session.scope
        reader = LineReader()
        scope.deadline = trio.current_time() + self._idle_limit(protocol)
        await self._send(session, protocol, protocol.greeting())
        while True:
            line = reader.next_line()
            if line is None:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    return False  # EOF: the client left without QUIT
                reader.feed(data)
                continue
            reply = protocol.receive_line(line)
            if reply.delay > 0:
                await trio.sleep(reply.delay)
            await self._send(session, protocol, reply)
            if reply.close:
                return True
            scope.deadline = trio.current_time() + self._idle_limit(protocol)

    async def _send(self, session: _Session, protocol: Pop3Protocol, reply: Reply) -> None:
        """Send a reply; a body is pulled from the store chunk by chunk as the peer reads."""
        stream = session.stream
        body = reply.body
        if body is None:
            await stream.send_all(reply.head)
            return
        try:
            pending = reply.head
            for chunk in body:
                if len(pending) < SEND_COALESCE or len(chunk) < SEND_COALESCE:
                    pending += chunk
                    if len(pending) < SEND_COALESCE:
                        continue
                    chunk = b""
                await stream.send_all(pending)
                session.scope.deadline = trio.current_time() + self._idle_limit(protocol)
                pending = chunk
            if pending:
                await stream.send_all(pending)
        except DeviceError as exc:
            # The store failed after +OK went out: the reply cannot be completed, so end the
            # session (commits nothing) rather than send a truncated message.
            log.error("POP3 session %d: message read failed mid-stream: %s", session.id, exc)
            raise trio.BrokenResourceError("message read failed mid-stream") from exc
        finally:
            body.close()

    async def _close_gently(self, stream: trio.SocketStream) -> None:
        """Half-close and drain briefly, so a last reply is not lost to a TCP reset.

        Runs after the session's slot, lock and RAM are given back, so a client that is slow
        to close does not hold up admission.
        """
        with trio.move_on_after(CLOSE_DRAIN_S):
            try:
                await stream.send_eof()
                while await stream.receive_some(RECEIVE_SIZE):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
