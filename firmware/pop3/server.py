"""The trio adapter of the POP3 service: sockets, admission, timers, streaming.

The protocol library's `ServerConnection` frames, parses and checks the POP3 conversation;
the device's `Pop3Protocol` answers each client event; this module only moves bytes between
the socket and the library and enforces the device's limits. We run our own accept loop
because trio's `serve_tcp` admits without limit and lets one failing handler take the server
down: here a session over `pop3.max_sessions` (or over the RAM budget) gets `-ERR [SYS/TEMP]`
and is closed at once (unless a connection that has not logged in can make room), and a
session that fails is logged and ends alone.

TLS (RFC 2595 STLS, or implicit on a second listener) wraps the session's stream in trio's
SSLStream; the session task is the only reader and the only writer of its stream.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from firmware.config.budget import RamBudget, Reservation
from firmware.config.profile import Profile
from firmware.errors import DeviceError, MemoryFullError
from firmware.faults.plan import Fault, FaultPlan, Where
from firmware.pop3 import faultwire, syntax
from firmware.pop3.admission import Admission, Refuse
from firmware.pop3.connection import ServerConnection
from firmware.pop3.direct import can_map, send_from_image
from firmware.pop3.events import (
    NEED_DATA,
    BadCommand,
    Command,
    ConnectionClosed,
    Data,
    MultilineEnd,
    SaslResponse,
    TlsStart,
)
from firmware.pop3.locks import BoxLocks
from firmware.pop3.mailbox import BoardMailstore, Mailstore
from firmware.pop3.protocol import (
    MAX_DISCARD,
    SASL_LINE_LIMIT,
    STREAM_CHUNK,
    Answer,
    Pop3Protocol,
    Pop3Stats,
)
from firmware.pop3.report import ClientBook
from firmware.pop3.trace import Tracer
from firmware.pop3.wire_errors import RemoteProtocolError
from firmware.security.abuse import LoginGuard
from firmware.security.authlog import log_event
from firmware.store.worker import StoreWorker
from firmware.text import host_port

if TYPE_CHECKING:
    from firmware.store.board import Board

log = logging.getLogger(__name__)


def listen_backlog(max_sessions: int) -> int:
    """Kernel accept queue: explicit and sized to the session bound, not trio's maximum.

    Twice the bound (at least 64, at most 4096) lets a burst of clients at the bound connect
    without SYN drops (each drop costs a client a one-second retry), while connections
    beyond it are accepted and refused with [SYS/TEMP] instead of queueing silently.
    """
    return max(64, min(4096, 2 * max_sessions))


RECEIVE_SIZE: Final = 4096
"""Bytes asked of the socket per read; a command line is at most 255."""

SEND_COALESCE: Final = 16384
"""Reply pieces smaller than this are joined before sending, to save packets and syscalls
(the replies to pipelined commands, a body's small chunks)."""
_END: Final = MultilineEnd()

REFUSE_TIMEOUT_S: Final = 2.0
MAX_REFUSING: Final = 32
CLOSE_DRAIN_S: Final = 1.0
IDLE_SLACK_S: Final = 0.5
"""An idle session is logged out between its limit and this much later (never earlier): its
deadline moves only when it would otherwise fall outside that window, not on every command
(each move costs trio a deadline registration; a session answers several commands a ms)."""
CLOSE_DRAIN_BYTES: Final = 65536
"""After a closing reply, at most this much more is read (and dropped) before closing."""
TLS_SESSION_RAM: Final = 40960
"""Bytes a TLS session reserves on top of SESSION_RAM: OpenSSL's record buffers and state."""

TLS_HANDSHAKE_S: Final = 10.0
"""A TLS handshake (STLS or implicit) that takes longer than this ends the connection."""
_ACCEPT_RETRY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One open session as the console shows it."""

    id: int
    peer: str
    box: str | None
    state: str
    started: float  # wall-clock time.time() of the accept
    tls: bool = False  # the session runs inside TLS (STLS or POP3S)


class _Session:
    __slots__ = (
        "after_reply",
        "body_faults",
        "body_size",
        "device_closed",
        "evicted",
        "fault_commands",
        "fault_nth",
        "host",
        "id",
        "implicit_tls",
        "linger",
        "peer",
        "protocol",
        "scope",
        "socket_stream",
        "started",
        "stream",
        "tls_reservation",
    )

    def __init__(
        self,
        session_id: int,
        stream: trio.abc.HalfCloseableStream,
        peer: str,
        host: str,
        implicit_tls: bool,
    ) -> None:
        self.id = session_id
        self.socket_stream = stream
        self.stream: trio.abc.Stream = stream  # an SSLStream over socket_stream once TLS is on
        self.peer = peer
        self.host = host
        self.implicit_tls = implicit_tls
        self.evicted = False
        self.device_closed = False  # the device chose to close it (a drop fault, a refusal)
        self.linger = True  # half-close and drain after the last reply (see _close_gently)
        self.tls_reservation: Reservation | None = None
        self.started = time.time()
        self.scope = trio.CancelScope()
        self.protocol: Pop3Protocol | None = None
        self.fault_nth = 0  # its number among sessions accepted while faults were set
        self.fault_commands = 0  # command lines seen while faults were set
        self.body_faults: Sequence[Fault] = ()  # fired for the body about to go
        self.body_size = 0  # that body's message octets (what its percentages are of)
        self.after_reply: Sequence[Fault] = ()  # fired for after the reply about to go


def _peer_of(stream: trio.abc.HalfCloseableStream) -> tuple[str, str]:
    if not isinstance(stream, trio.SocketStream):
        return "memory", "memory"  # an in-process stream (tests): no address
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "unknown", "unknown"
    host, port = str(address[0]), address[1]
    return host, host_port(host, port)


def _ack_now(stream: trio.abc.HalfCloseableStream) -> None:
    """Acknowledge what the client sent at once, for when we next wait for it silently.

    After a TLS handshake the server's next move is to read (after STLS it has nothing to
    say; trio even holds TLS 1.3 session tickets until its first write). The kernel then
    delays its ACK of the client's last handshake record by ~40 ms, and a client with Nagle
    on (poplib, fetchmail, mpop: none sets TCP_NODELAY) holds its next command until that
    ACK arrives: every STLS session's first reply took ~42 ms. TCP_QUICKACK sends the
    pending ACK now (Linux; elsewhere this does nothing).
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is None or not isinstance(stream, trio.SocketStream):
        return
    with contextlib.suppress(OSError):  # the peer is already gone: the next read says so
        stream.setsockopt(socket.IPPROTO_TCP, quickack, 1)


# Plain TCP sessions read and write their socket directly, with trio only for the waiting:
# trio's SocketStream tries each call at once and then yields to the scheduler when it
# succeeds (a `cancel_shielded_checkpoint`), and a session's read finds nothing the first time
# (the client waits for the reply before its next command): two scheduler passes and a failed
# recv(2) per command that a session does not need. The session still yields at every read
# (`wait_readable`) and falls back to `send_all` when the socket buffer is full.


def _send_now(stream: trio.SocketStream, data: bytes | bytearray | memoryview) -> int:
    """Write what the socket takes now (0 if its buffer is full), without yielding.

    Raises trio.BrokenResourceError if the peer reset or closed, ClosedResourceError if the
    socket was closed here.
    """
    try:
        return os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        if exc.errno == errno.EBADF:
            raise trio.ClosedResourceError("the session's socket was closed") from exc
        raise trio.BrokenResourceError(f"send failed: {exc.strerror}") from exc


async def _send_socket(stream: trio.SocketStream, data: bytes | bytearray | memoryview) -> None:
    """`send_all` for a session's socket: written now if it takes it all (no scheduler pass),
    the rest through trio's `send_all` (which waits for room). Errors as `_send_now`."""
    sent = _send_now(stream, data)
    if sent < len(data):
        await stream.send_all(memoryview(data)[sent:])


async def _receive(stream: trio.abc.Stream, max_bytes: int = RECEIVE_SIZE) -> bytes | bytearray:
    """At most `max_bytes` octets from the client once it sent some; b"" at end of file.

    Raises trio.BrokenResourceError if the peer reset, ClosedResourceError if the socket was
    closed here (as `receive_some` does).
    """
    if type(stream) is not trio.SocketStream:
        return await stream.receive_some(max_bytes)
    sock = stream.socket
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return os.read(sock.fileno(), max_bytes)
        except BlockingIOError:
            continue  # woken, but another reader or a spurious wake-up: wait again
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("the session's socket was closed") from exc
            raise trio.BrokenResourceError(f"receive failed: {exc.strerror}") from exc


class _DirectTransport(trio.abc.HalfCloseableStream):
    """A session's TCP socket under its TLS layer (trio.SSLStream), read and written directly
    as plain sessions are (`_send_now`, `_receive`): each TLS record costs one system call and
    no scheduler pass of its own."""

    __slots__ = ("socket_stream",)

    def __init__(self, socket_stream: trio.SocketStream) -> None:
        self.socket_stream = socket_stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await _send_socket(self.socket_stream, data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.socket_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await _receive(self.socket_stream, max_bytes or RECEIVE_SIZE)

    async def send_eof(self) -> None:
        await self.socket_stream.send_eof()

    async def aclose(self) -> None:
        await self.socket_stream.aclose()


def _drop(stream: trio.abc.HalfCloseableStream) -> None:
    """Close a connection at once, without a word and without waiting."""
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()
    else:
        trio.lowlevel.spawn_system_task(trio.aclose_forcefully, stream)


class Pop3Service:
    """The device's POP3 service over a Board; one instance per device."""

    def __init__(
        self,
        board: Board | None,
        profile: Callable[[], Profile],
        budget: RamBudget,
        *,
        tls: ssl.SSLContext | None = None,
        worker: StoreWorker | None = None,
        store: Mailstore | None = None,
        tracer: Tracer | None = None,
        faults: FaultPlan | None = None,
        clients: ClientBook | None = None,
    ) -> None:
        """`worker`: the device's store worker, through which every store operation runs (a
        private one if None: then this service is the Board's only user). `store`: serve
        this maildrop instead of `board` (e.g. firmware.pop3.memory in tests): RETR then
        always pulls the body, as there is no image file to copy from. `tracer`: the device's
        protocol trace (firmware/pop3/trace.py); a private one if None. `faults`: the
        device's fault plan (firmware/faults/plan.py); a private, empty one if None.
        `clients`: the device's client report card (firmware/pop3/report.py), told of every
        session, command and answer; a private one if None."""
        self.tracer = tracer if tracer is not None else Tracer()
        self.faults = faults if faults is not None else FaultPlan(log_events=False)
        self.power_cut: Callable[[Fault], None] | None = None
        """The device's power switch, for `power-cut at=after-quit-ok` (None: no device)."""
        self.clients = clients if clients is not None else ClientBook()
        self._board_store = BoardMailstore(board, worker) if board is not None else None
        if store is None:
            if self._board_store is None:
                raise ValueError("Pop3Service needs a board or a store")
            store = self._board_store
        self._store: Mailstore = store
        self._profile = profile
        self._budget = budget
        self._tls = tls
        self._locks = BoxLocks()
        self._guard = LoginGuard(0.0, clock=trio.current_time)
        self.stats = Pop3Stats()
        self._sessions: dict[int, _Session] = {}
        self._admission = Admission(budget, clock=trio.current_time)
        self._refusing = 0
        self._accept_scopes: set[trio.CancelScope] = set()  # one per serve() (POP3, POP3S)
        self._sessions_gone: trio.Event | None = None
        self._serving = 0  # serve() calls running; the image fd lives while any does
        self._image_fd: int | None = None  # read-only, for RETR straight from the image
        self._direct: bool | None = None  # None: not tried yet; False: cannot map the image

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
                tls=s.protocol is not None and s.protocol.tls_active,
            )
            for s in self._sessions.values()
        ]

    def locked_boxes(self) -> dict[str, float]:
        """Boxes locked after too many failed logins -> seconds until each unlocks."""
        return self._guard.lockout.locked_boxes()

    def unlock(self, box: str) -> bool:
        """Lift a box's lock-out (the administrator's way out); True if it was locked."""
        return self._guard.lockout.unlock(box)

    @property
    def tls_available(self) -> bool:
        """True when the device has a certificate: STLS is offered and POP3S can listen."""
        return self._tls is not None

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
        for accept_scope in self._accept_scopes:
            accept_scope.cancel()
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
        self,
        host: str,
        port: int,
        *,
        implicit_tls: bool = False,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on host:port and serve until cancelled (or drained).

        `implicit_tls`: every connection starts with a TLS handshake (POP3S, port 995);
        a service made without a TLS context cannot do that (DeviceError).
        """
        if implicit_tls and self._tls is None:
            raise DeviceError(
                f"cannot serve POP3S on {host_port(host, port)}: the device has no TLS certificate "
                "(dpfw tls selfsign or dpfw tls import)"
            )
        listeners = await trio.open_tcp_listeners(
            port, host=host, backlog=listen_backlog(self._profile().int("pop3.max_sessions"))
        )
        port = listeners[0].socket.getsockname()[1]
        await self.serve_listeners(
            listeners, implicit_tls=implicit_tls, task_status=task_status, started=port
        )

    async def serve_listeners(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.HalfCloseableStream]],
        *,
        implicit_tls: bool = False,
        started: int = 0,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve connections from `listeners` until cancelled (or drained); closes them after.

        Any trio listener of byte streams: TCP listeners (`serve`), or in-process ones in
        tests (trio.testing memory streams). `started` is what `task_status.started` gets
        (the bound port, for `serve`).
        """
        if implicit_tls and self._tls is None:
            raise DeviceError("cannot serve POP3S: the device has no TLS certificate")
        accept_scope = trio.CancelScope()
        self._accept_scopes.add(accept_scope)
        self._serving += 1
        try:
            async with trio.open_nursery() as sessions:
                with accept_scope:
                    async with trio.open_nursery() as accepters:
                        for listener in listeners:
                            accepters.start_soon(
                                self._accept_loop, listener, sessions, implicit_tls
                            )
                        task_status.started(started)
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
        finally:
            self._accept_scopes.discard(accept_scope)
            self._serving -= 1
            if not self._serving:
                self._close_image()
            for listener in listeners:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(listener)

    async def _accept_loop(
        self,
        listener: trio.abc.Listener[trio.abc.HalfCloseableStream],
        sessions: trio.Nursery,
        implicit_tls: bool,
    ) -> None:
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
                self._admit(stream, sessions, implicit_tls)
            except Exception:
                log.exception("POP3 could not admit a connection; closing it")
                _drop(stream)

    def _admit(
        self, stream: trio.abc.HalfCloseableStream, sessions: trio.Nursery, implicit_tls: bool
    ) -> None:
        """Apply the admission policy's decision: start a session for `stream` (after
        evicting a pre-login one, if so decided), or refuse it at once with -ERR [SYS/TEMP]."""
        profile = self._profile()
        host, peer = _peer_of(stream)
        decision = self._admission.decide(
            host,
            max_sessions=profile.int("pop3.max_sessions"),
            per_client=profile.int("pop3.max_sessions_per_client"),
        )
        if isinstance(decision, Refuse):
            self.stats.sessions_refused += 1
            refusals = self.stats.refusals
            refusals[decision.limit] = refusals.get(decision.limit, 0) + 1
            log_event("limit", host, limit=decision.limit)
            self.clients.refused(host, decision.code)
            refusal = syntax.format_status(b"-ERR", decision.text, decision.code)
            log.info("POP3 refused %s: %s", peer, refusal.decode().strip())
            if self._refusing >= MAX_REFUSING:
                _drop(stream)  # refusals are already busy: drop without a word
                return
            self._refusing += 1
            sessions.start_soon(self._refuse, stream, refusal)
            return
        if decision.evict is not None:
            victim = self._sessions[decision.evict]
            victim.evicted = True
            victim.scope.cancel()
            self.stats.evictions += 1
            log_event("evicted", victim.host, session=victim.id, reason="all-sessions-taken")
            log.info("POP3 session %d (%s) evicted to admit %s", victim.id, victim.peer, host)
        session = _Session(decision.session_id, stream, peer, host, implicit_tls)
        self._sessions[session.id] = session
        self.stats.sessions_total += 1
        sessions.start_soon(self._run, session, decision.reservation)

    async def _refuse(self, stream: trio.abc.HalfCloseableStream, refusal: bytes) -> None:
        """Say why, in plain text even on the POP3S port: no handshake for a refused client."""
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
            tls_active=False,
            tls_available=self._tls is not None,
            peer=session.host,
            guard=self._guard,
        )
        session.protocol = protocol
        self.clients.opened(
            session.id,
            session.host,
            tls=session.implicit_tls,
            stls=self._tls is not None and not session.implicit_tls,
            login_delay=self._profile().int("pop3.login_delay_s"),
        )
        closed_by_protocol = False
        ended = "client"  # who ended the session, for the report card
        try:
            with session.scope:
                closed_by_protocol = await self._converse(session, protocol)
            if session.scope.cancelled_caught:
                idle = not session.evicted and session.scope.deadline <= trio.current_time()
                if idle:
                    self.stats.idle_logouts += 1
                    if protocol.box is None:
                        log_event("preauth-timeout", session.host, session=session.id)
                why = "idle logout" if idle else "evicted" if session.evicted else "stopped"
                ended = "idle" if idle else "device"
                log.info("POP3 session %d (%s) ended: %s", session.id, session.peer, why)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away: nothing is committed
        except DeviceError as exc:  # the image failed in the middle of a reply: one line
            log.warning("POP3 session %d (%s) ended: %s", session.id, session.peer, exc)
        except Exception:
            ended = "device"
            log.exception(
                "POP3 session %d (%s, box %s, %s) failed",
                session.id,
                session.peer,
                protocol.box,
                protocol.state.value,
            )
        finally:
            if closed_by_protocol or session.device_closed:
                # after QUIT (the book saw it), a limit, a drop fault or a refusal closed it
                ended = "device"
            self.clients.closed(session.id, ended)
            protocol.end()
            reservation.release()
            if session.tls_reservation is not None:
                session.tls_reservation.release()
            del self._sessions[session.id]
            self._admission.closed(session.id)
            if not self._sessions and self._sessions_gone is not None:
                self._sessions_gone.set()
            if closed_by_protocol and session.linger:
                await self._close_gently(session)
            if session.stream is session.socket_stream:
                _drop(session.socket_stream)  # plain TCP: close(2) now, no cancelled checkpoint
            else:
                await trio.aclose_forcefully(session.stream)

    def _idle_limit(self, protocol: Pop3Protocol) -> float:
        key = "pop3.preauth_timeout_s" if protocol.box is None else "pop3.idle_timeout_s"
        return float(self._profile().int(key))

    async def _start_tls(
        self, session: _Session, protocol: Pop3Protocol, conn: ServerConnection | None, how: str
    ) -> bool:
        """Wrap the session's socket in TLS and handshake under a deadline; False on failure.

        `conn`: the library connection to tell (`tls_started`) after STLS; None for POP3S.
        """
        assert self._tls is not None
        try:
            session.tls_reservation = self._budget.reserve(TLS_SESSION_RAM, "POP3 TLS session")
        except MemoryFullError:
            log_event("limit", session.host, limit="memory", via=how, session=session.id)
            return False
        context = self._tls
        if self.faults.active:
            faulty = self._tls_faults(session, protocol, how, context)
            if faulty is None:
                return False  # tls-fail: the handshake is refused
            context = faulty
        transport = session.socket_stream
        if type(transport) is trio.SocketStream:
            transport = _DirectTransport(transport)
        ssl_stream = trio.SSLStream(transport, context, server_side=True)
        reason = "handshake-timeout"
        with trio.move_on_after(TLS_HANDSHAKE_S):
            try:
                await ssl_stream.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                cause = exc.__cause__
                reason = "handshake-failed"
                detail = getattr(cause, "reason", None) or type(cause or exc).__name__
                log_event(
                    "tls-fail",
                    session.host,
                    via=how,
                    reason=reason,
                    detail=str(detail),
                    session=session.id,
                )
                self.stats.tls_failures += 1
                self.clients.tls_failed(session.id)
                return False
            session.stream = ssl_stream
            protocol.tls_active = True
            self.clients.tls(session.id)
            if conn is not None:
                conn.tls_started()
            self.stats.tls_sessions += 1
            _ack_now(session.socket_stream)
            return True
        log_event("tls-fail", session.host, via=how, reason=reason, session=session.id)
        self.stats.tls_failures += 1
        self.clients.tls_failed(session.id)
        return False

    def _plaintext_after_stls(self, session: _Session) -> None:
        # Plaintext sent behind STLS would run inside TLS: the injection of CVE-2011-0411
        # (RFC 7457 §2.2). The library refuses it; never execute it, end the connection.
        session.device_closed = True
        log_event(
            "tls-fail",
            session.host,
            via="stls",
            reason="plaintext-after-stls",
            session=session.id,
        )
        self.stats.tls_failures += 1

    async def _converse(self, session: _Session, protocol: Pop3Protocol) -> bool:
        """Serve commands until EOF (False) or a reply that closes the session (True).

        Bytes from the socket go to the library's ServerConnection; each client event it gives
        goes to `protocol.answer`, and the answer goes back through `conn.send`. Replies to
        pipelined commands are joined into one send while the library has more commands
        buffered (up to SEND_COALESCE octets).
        """
        self._keep_alive(session, protocol)
        accept_faults = self._accept_faults(session) if self.faults.active else None
        if session.implicit_tls and not await self._start_tls(session, protocol, None, "pop3s"):
            return False
        conn = ServerConnection(
            tls_active=protocol.tls_active,
            sasl_line_limit=SASL_LINE_LIMIT,
            max_discard=MAX_DISCARD,
        )
        stream = session.stream
        tracer = self.tracer
        exchange = self.clients.exchange
        fresh = False  # a command arrived in a read made after the last reply was written
        greeting = protocol.greeting()
        if tracer.active:
            tracer.server(session.id, session.peer, greeting)
        out = conn.send(greeting)
        if accept_faults and not await self._greeting_faults(session, accept_faults, out):
            return False  # drop-after-greeting
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError:
                # A line that never ends (the only error a session in AUTHORIZATION,
                # TRANSACTION or SASL can raise here): the device's last word, then close.
                last = protocol.endless_line()
                if tracer.active:
                    tracer.server(session.id, session.peer, last)
                await self._write(stream, out + syntax.format_status(b"-ERR", last.text, None))
                return True
            if event is NEED_DATA:
                if out:
                    await self._write(stream, out)
                    out = b""
                data = await _receive(stream)
                conn.receive_data(data)  # b"" at EOF: ConnectionClosed next
                fresh = True
                continue
            if isinstance(event, ConnectionClosed):
                if out:
                    await self._write(stream, out)
                return False  # EOF: the client left without QUIT
            if not isinstance(event, Command | BadCommand | SaslResponse):
                # PAUSED or TlsStart: never, as every event is answered at once and STLS is
                # handled right after its +OK.
                raise AssertionError(f"unexpected {event!r} from the POP3 library")
            if tracer.active:
                tracer.client(session.id, session.peer, event)
            started = trio.current_time()
            if self.faults.active:
                answer = await self._answer_with_faults(session, protocol, event)
            else:
                answer = await protocol.answer(event)
            if tracer.active:
                tracer.server(session.id, session.peer, answer.first)
            exchange(session.id, event, answer.first, not fresh, protocol.box)
            fresh = False
            if answer.delay > 0:
                if out:
                    await self._write(stream, out)
                    out = b""
                await trio.sleep(answer.delay)
            if answer.body is not None:
                if session.body_faults:
                    if not await self._send_faulty_body(session, protocol, conn, answer, out):
                        return False  # retr-break: the connection is dropped mid-body
                else:
                    await self._send_body(session, protocol, conn, answer, out)
                out = b""
                if answer.stored is not None:
                    self.stats.note_retr(trio.current_time() - started)
            else:
                try:
                    out += conn.send(answer.first)
                except RemoteProtocolError:  # +OK to STLS with commands buffered behind it
                    if out:
                        await self._write(stream, out)
                    self._plaintext_after_stls(session)
                    return False
            if session.after_reply:
                await self._write(stream, out)
                out = b""
                if not self._after_reply_faults(session, answer):
                    return False  # drop-after-reply
            if answer.close:
                conn.send(ConnectionClosed())
                await self._write(stream, out)
                # The client ended it with QUIT and sent nothing after it: no reply of ours
                # can meet its data, so a plain TCP session closes at once (no drain).
                session.linger = (
                    stream is not session.socket_stream
                    or not isinstance(event, Command)
                    or event.keyword != "QUIT"
                    or bool(conn.trailing_data[0])
                )
                return True
            if protocol.box is not None:
                self._admission.logged_in(session.id)  # never evicted
            if answer.starttls:
                await self._write(stream, out)
                out = b""
                try:
                    start = conn.next_event()
                except RemoteProtocolError:
                    self._plaintext_after_stls(session)
                    return False
                assert isinstance(start, TlsStart)
                if not await self._start_tls(session, protocol, conn, "stls"):
                    return False
                stream = session.stream
            elif len(out) >= SEND_COALESCE:
                await self._write(stream, out)
                out = b""
            self._keep_alive(session, protocol)

    def _keep_alive(self, session: _Session, protocol: Pop3Protocol) -> None:
        """The client was active now: its idle logout is `_idle_limit` from now (+ slack)."""
        scope = session.scope
        at = trio.current_time() + self._idle_limit(protocol)
        if not at <= scope.deadline <= at + IDLE_SLACK_S:
            scope.deadline = at + IDLE_SLACK_S

    # -- faults (firmware/faults, docs/faults.md): asked only while `self.faults.active` ----

    def _where(
        self,
        session: _Session,
        protocol: Pop3Protocol | None,
        command: str | None = None,
        message: int | None = None,
    ) -> Where:
        box = None if protocol is None else protocol.box or protocol.user_name
        return Where(
            session.id,
            session.host,
            box,
            command,
            session.fault_nth,
            session.fault_commands,
            message,
        )

    def _accept_faults(self, session: _Session) -> list[Fault]:
        """A session was accepted: number it; apply `bandwidth` now; return the faults for
        the greeting (`delay at=greeting`, `drop-after-greeting`)."""
        session.fault_nth = self.faults.session_opened()
        fired = self.faults.fire("accept", self._where(session, None))
        for fault in fired:
            if fault.action == "bandwidth":
                session.socket_stream = session.stream = faultwire.ShapedStream(
                    session.socket_stream,
                    fault.params["bytes_per_s"],
                    fault.params["latency_ms"] / 1000,
                )
        return [f for f in fired if f.action != "bandwidth"]

    async def _greeting_faults(self, session: _Session, fired: list[Fault], out: bytes) -> bool:
        """Wait before the greeting (`delay`), send it; False to drop the connection now."""
        for fault in fired:
            if fault.action == "delay":
                await trio.sleep(fault.params["seconds"])
        if any(f.action == "drop-after-greeting" for f in fired):
            session.device_closed = True
            await self._write(session.stream, out)
            return False
        return True

    async def _answer_with_faults(
        self, session: _Session, protocol: Pop3Protocol, event: Command | BadCommand | SaslResponse
    ) -> Answer:
        """`protocol.answer(event)` with the faults that fire at this command applied: a
        reply replaced (`reply-error`, `unreadable`) or delayed, a login's snapshot thinned
        (`vanish`), faults noted for the body (`retr-break`, ...) and for after the reply."""
        faults = self.faults
        keyword: str | None = None
        message: int | None = None
        fired: list[Fault] = []
        if type(event) is Command:
            keyword = event.keyword
            session.fault_commands += 1
            if keyword in ("RETR", "TOP") and event.numbers:
                message = event.numbers[0]
            fired = faults.fire("command", self._where(session, protocol, keyword, message))
        answer: Answer | None = None
        delay = 0.0
        after: list[Fault] = []
        for fault in fired:
            if fault.action == "reply-error" and answer is None:
                answer = faultwire.reply_error(fault, keyword or "")
            elif fault.action == "unreadable" and answer is None and protocol.box is not None:
                answer = faultwire.unreadable(protocol, message or 0)
            elif fault.action == "delay":
                delay += fault.params["seconds"]
            elif fault.action in ("drop-after-reply", "power-cut"):
                after.append(fault)
        if after:
            session.after_reply = after
        if answer is None:
            was_in = protocol.box is not None
            answer = await protocol.answer(event)
            if not was_in and protocol.box is not None:
                fired = faults.fire("login", self._where(session, protocol, keyword))
                if fired or faults.hidden.get(protocol.box):
                    answer = faultwire.vanish(faults, fired, protocol, answer)
            elif answer.body is not None and keyword in ("RETR", "TOP") and message:
                where = self._where(session, protocol, keyword, message)
                session.body_faults = faults.fire("body", where)
                session.body_size = protocol.sizes[message - 1]
        if delay:
            answer = Answer(
                answer.first,
                answer.body,
                answer.close,
                answer.delay + delay,
                answer.starttls,
                answer.stored,
                answer.guard,
            )
        return answer

    async def _send_faulty_body(
        self,
        session: _Session,
        protocol: Pop3Protocol,
        conn: ServerConnection,
        answer: Answer,
        pending: bytes,
    ) -> bool:
        """A RETR/TOP body with body faults; False when the connection must be dropped."""
        fired, session.body_faults = session.body_faults, ()
        session.scope.deadline = math.inf  # a stall is the fault, not an idle client
        stream = session.stream

        async def write(data: bytes) -> None:
            await self._write(stream, data)

        keep = await faultwire.send_body(write, conn, answer, pending, fired, session.body_size)
        self._keep_alive(session, protocol)
        if not keep:
            session.device_closed = True  # retr-break: the device cut it, not the client
        return keep

    def _after_reply_faults(self, session: _Session, answer: Answer) -> bool:
        """After the reply went out: False to drop the connection (`drop-after-reply`);
        `power-cut at=after-quit-ok` cuts the device's power once QUIT's +OK is sent."""
        fired, session.after_reply = session.after_reply, ()
        keep = True
        for fault in fired:
            if fault.action == "drop-after-reply":
                keep = False
                session.device_closed = True
            elif fault.action == "power-cut" and answer.ok and self.power_cut is not None:
                self.power_cut(fault)
        return keep

    def _tls_faults(
        self, session: _Session, protocol: Pop3Protocol, how: str, context: ssl.SSLContext
    ) -> ssl.SSLContext | None:
        """The context to handshake with: None to refuse the handshake (`tls-fail`), or one
        with an expired or wrong-name certificate (`tls-fail cert=...`)."""
        command = "STLS" if how == "stls" else None
        for fault in self.faults.fire("tls", self._where(session, protocol, command)):
            if fault.params["cert"] == "abort":
                log_event("tls-fail", session.host, via=how, reason="fault", session=session.id)
                self.stats.tls_failures += 1
                return None
            context = faultwire.bad_certificate(fault, self._profile().str("identity.hostname"))
        return context

    async def _write(self, stream: trio.abc.Stream, data: bytes) -> None:
        """Send reply octets on a session's stream, counted for /metrics."""
        if type(stream) is trio.SocketStream:
            await _send_socket(stream, data)
        else:
            await stream.send_all(data)
        self.stats.bytes_sent += len(data)

    def _image(self) -> int | None:
        """The image file, read-only, if RETR can copy from it directly (opened once)."""
        if self._board_store is None or self._store is not self._board_store:
            return None
        if self._direct is None:
            try:
                fd = os.open(self._board_store.image_path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                log.warning("POP3: RETR reads through the store: cannot open the image: %s", exc)
                self._direct = False
                return None
            self._direct = can_map(fd)
            if self._direct:
                self._image_fd = fd
            else:
                os.close(fd)
                log.info("POP3: RETR reads through the store: the image cannot be mapped")
        return self._image_fd

    def _close_image(self) -> None:
        if self._image_fd is not None:
            fd, self._image_fd = self._image_fd, None
            os.close(fd)
        self._direct = None

    async def _send_body(
        self,
        session: _Session,
        protocol: Pop3Protocol,
        conn: ServerConnection,
        answer: Answer,
        pending: bytes,
    ) -> None:
        """Send a multi-line answer after `pending` (earlier replies not yet sent); the body
        is pulled from the store chunk by chunk as the peer reads.

        The library writes the `+OK` line and the terminator. A raw body (listings) goes
        through it as `Data` (it stuffs). A stored message (RETR, TOP) is already in wire form,
        stuffed by the store at delivery: its chunks are written as they are and the library is
        told their last octets (`body_sent_elsewhere`), as for RETR on a plain TCP connection,
        which sends what the store has read ahead and then copies the rest straight from the
        image file (firmware/pop3/direct.py). Checking every stored chunk for a terminating line
        again (`Data(wire=True)`) would cost ~25 us per 50 KB for what the store guarantees;
        the tests drive stored bodies through that check (tests/pop3/driver.py).
        """
        stream = session.stream
        body = answer.body
        assert body is not None
        guard = answer.guard
        wire = body.wire
        tail = b""
        sent = 0  # body octets as sent (stuffed), for the trace
        try:
            pending += conn.send(answer.first)
            if (
                answer.stored is not None
                and stream is session.socket_stream
                and isinstance(stream, trio.SocketStream)
            ):
                first = body.take_first()
                # A full first chunk: more follows (a shorter one was the whole message).
                if len(first) >= STREAM_CHUNK and (image_fd := self._image()) is not None:
                    conn.body_sent_elsewhere(first[-3:])
                    await self._send_direct(
                        session, protocol, conn, answer.stored, image_fd, pending + first, first
                    )
                    octets = answer.first.text.partition(" ")[0]  # "N octets": its size
                    if octets.isdigit():  # what direct.py copied, near enough for /metrics
                        self.stats.bytes_sent += max(0, int(octets) - len(first))
                    if self.tracer.active:  # the message's size, as its +OK line gives it
                        size = int(octets) if octets.isdigit() else len(first)
                        self.tracer.body(session.id, session.peer, size)
                    return
                sent += len(first)
                if first:
                    pending += first if wire else conn.send(Data(first))
                    tail = first
            while True:
                if guard is None:
                    chunk = next(body, None)
                else:
                    async with guard():  # a short read of the store, under its lock
                        chunk = next(body, None)
                if chunk is None:
                    break
                if wire:
                    tail = chunk if len(chunk) > 2 else tail[-2:] + chunk
                else:
                    chunk = conn.send(Data(chunk))
                sent += len(chunk)
                if len(pending) < SEND_COALESCE or len(chunk) < SEND_COALESCE:
                    pending += chunk
                    if len(pending) < SEND_COALESCE or (wire and len(chunk) < STREAM_CHUNK):
                        # A short stored chunk is mostly the message's last (the store reads
                        # STREAM_CHUNK at a time): held, it goes out with the terminator.
                        continue
                    chunk = b""
                await self._write(stream, pending)
                self._keep_alive(session, protocol)
                pending = chunk
            if wire and tail:
                conn.body_sent_elsewhere(tail[-3:])
            end = conn.send(_END)
            if self.tracer.active:  # a CRLF the library added before the "." line counts
                self.tracer.body(session.id, session.peer, sent + len(end) - 3)
            await self._write(stream, pending + end)
        except DeviceError as exc:
            # The store failed after +OK went out: the reply cannot be completed, so end the
            # session (commits nothing) rather than send a truncated message.
            log.error("POP3 session %d: message read failed mid-stream: %s", session.id, exc)
            raise trio.BrokenResourceError("message read failed mid-stream") from exc
        finally:
            body.close()

    async def _send_direct(
        self,
        session: _Session,
        protocol: Pop3Protocol,
        conn: ServerConnection,
        stored: tuple[str, str],
        image_fd: int,
        pending: bytes,
        first: bytes,
    ) -> None:
        """RETR: what is pending (the +OK and the chunk read ahead), the rest from the image,
        the terminator."""
        box, uid = stored
        stream = session.socket_stream
        store = self._board_store
        assert isinstance(stream, trio.SocketStream) and store is not None
        await self._write(stream, pending)

        def progress() -> None:
            self._keep_alive(session, protocol)

        progress()
        tail = await send_from_image(
            stream.socket,
            image_fd,
            lambda at: store.wire_extents(box, uid, at),
            store.reading,
            len(first),
            first[-2:],
            progress,
        )
        conn.body_sent_elsewhere(tail)
        await self._write(stream, conn.send(_END))

    async def _close_gently(self, session: _Session) -> None:
        """Half-close and drain briefly, so a last reply is not lost to a TCP reset.

        For every close the device decides (a limit, too many failures, an endless line), for
        a QUIT with more bytes behind it and for TLS (close_notify); a plain-TCP QUIT with
        nothing after it closes at once (`_Session.linger`): nothing of the client's is left
        for a reset to meet.

        Runs after the session's slot, lock and RAM are given back, so a client that is slow
        to close does not hold up admission. At most CLOSE_DRAIN_BYTES are read, so a peer
        that floods (an endless line) is not read for the whole second. TLS cannot half-close
        (SSLStream has no send_eof): there we send close_notify and close; a peer that closes
        without one is a normal disconnect.
        """
        stream = session.stream
        with trio.move_on_after(CLOSE_DRAIN_S):
            try:
                if stream is not session.socket_stream:
                    await stream.aclose()
                    return
                await session.socket_stream.send_eof()
                drained = 0
                while drained <= CLOSE_DRAIN_BYTES:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        break
                    drained += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
