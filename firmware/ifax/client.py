"""A POP3 client over trio: the library's client role (firmware.pop3.connection) on a socket.

The adapter is the loop of docs/pop3-library.md: `send(Command)` -> socket, socket ->
`receive_data`, `next_event` until a whole reply. It adds what a good client needs: a
deadline on every network step, the three TLS modes (none; STLS, RFC 2595; POP3S, RFC 8314
§3.3) with certificate and host-name verification, and the three login methods (USER/PASS and
APOP, RFC 1939 §7; SASL SCRAM-SHA-256, RFC 5802/7677, or else PLAIN, RFC 4616, in RFC 5034's
AUTH, only as CAPA's SASL line offers them). An
`-ERR` becomes `Pop3Error` with its RFC 2449/3206 response code (`IN-USE`, `LOGIN-DELAY`,
`SYS/TEMP`, `SYS/PERM`, `AUTH`), which the poller turns into its back-off.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from firmware.errors import DeviceError
from firmware.pop3.connection import ClientConnection
from firmware.pop3.events import (
    NEED_DATA,
    PAUSED,
    Command,
    Data,
    Event,
    MultilineEnd,
    MultilineStart,
    Reply,
    SaslContinuation,
    SaslResponse,
    TlsStart,
)
from firmware.pop3.syntax import parse_capabilities
from firmware.pop3.wire_errors import LocalProtocolError, RemoteProtocolError
from firmware.security.saslprep import saslprep

TLS_MODES = ("none", "stls", "pop3s")
AUTH_METHODS = ("user", "apop", "sasl")


class Pop3Error(DeviceError):
    """The server said -ERR (`code`: the response code without brackets, or None) or broke
    the protocol, or the network failed (`code` None, `network` True)."""

    def __init__(self, text: str, code: str | None = None, *, network: bool = False) -> None:
        super().__init__(text)
        self.code = code
        self.network = network


@dataclass(frozen=True)
class ServerConfig:
    """Where and how to log in: host, port, TLS mode, user, password, method, timeout (s)."""

    host: str
    port: int
    tls: str = "none"
    user: str = ""
    password: str = ""
    auth: str = "user"
    timeout_s: float = 30.0
    ca_file: str = ""

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def client_context(ca_file: str = "") -> ssl.SSLContext:
    """A verifying TLS client context: `ca_file` (PEM) or the system's CAs; TLS 1.2 up."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise DeviceError(f"ifax.ca_file {ca_file!r} cannot be used: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class Pop3Client:
    """One logged-in (or logging-in) POP3 session; open it with `session(...)`."""

    def __init__(self, stream: trio.abc.Stream, config: ServerConfig, tls: bool) -> None:
        self.stream = stream
        self.config = config
        self.conn = ClientConnection(tls_active=tls)
        self.capabilities: dict[str, tuple[str, ...]] = {}
        self.greeting = ""

    # -- the adapter loop ------------------------------------------------------------------

    async def _next(self) -> Event:
        while True:
            try:
                event = self.conn.next_event()
            except RemoteProtocolError as exc:
                raise Pop3Error(f"{self.config.host}: protocol error: {exc}") from None
            if event is NEED_DATA:
                with trio.move_on_after(self.config.timeout_s) as scope:
                    data = await self.stream.receive_some(65536)
                if scope.cancelled_caught:
                    raise Pop3Error(
                        f"{self.config.host}: no answer within {self.config.timeout_s:g} s",
                        network=True,
                    )
                self.conn.receive_data(data)
                continue
            if event is PAUSED:
                raise Pop3Error(f"{self.config.host}: unexpected pause")
            assert isinstance(event, Event)
            return event

    async def _send(self, event: Event) -> None:
        try:
            data = self.conn.send(event)
        except LocalProtocolError as exc:
            raise Pop3Error(f"client error: {exc}") from None
        with trio.move_on_after(self.config.timeout_s) as scope:
            await self.stream.send_all(data)
        if scope.cancelled_caught:
            raise Pop3Error(f"{self.config.host}: send timed out", network=True)

    async def command(self, command: Command) -> Reply | SaslContinuation:
        """A single-line command's reply; Pop3Error on -ERR."""
        await self._send(command)
        event = await self._next()
        if isinstance(event, Reply) and not event.ok:
            raise Pop3Error(f"{command.keyword}: -ERR {event.text}".rstrip(), event.code)
        if not isinstance(event, Reply | SaslContinuation):
            raise Pop3Error(f"{command.keyword}: unexpected {type(event).__name__}")
        return event

    async def listing(self, command: Command, limit: int | None = None) -> bytes:
        """A multi-line reply's body (un-stuffed); Pop3Error on -ERR or past `limit` bytes."""
        await self._send(command)
        event = await self._next()
        if isinstance(event, Reply):
            raise Pop3Error(f"{command.keyword}: -ERR {event.text}".rstrip(), event.code)
        if not isinstance(event, MultilineStart):
            raise Pop3Error(f"{command.keyword}: unexpected {type(event).__name__}")
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._next()
            if isinstance(event, MultilineEnd):
                return b"".join(parts)
            if isinstance(event, Data):
                size += len(event.data)
                if limit is not None and size > limit:
                    raise Pop3Error(f"{command.keyword}: more than {limit} bytes")
                parts.append(event.data)

    # -- the session -----------------------------------------------------------------------

    async def _greet(self) -> None:
        event = await self._next()
        if not isinstance(event, Reply):
            raise Pop3Error(f"{self.config.host}: no greeting")
        if not event.ok:
            raise Pop3Error(f"greeting: -ERR {event.text}".rstrip(), event.code)
        self.greeting = event.text

    async def capa(self) -> dict[str, tuple[str, ...]]:
        try:
            self.capabilities = parse_capabilities(await self.listing(Command("CAPA")))
        except Pop3Error as exc:
            if exc.network:
                raise
            self.capabilities = {}  # RFC 1939 servers without CAPA
        return self.capabilities

    async def starttls(self, context: ssl.SSLContext) -> None:
        """STLS (RFC 2595 §4): refused if not offered; handshake verifies the host name."""
        if "STLS" not in self.capabilities:
            raise Pop3Error(f"{self.config.host} does not offer STLS (ifax.tls = stls)")
        await self.command(Command("STLS"))
        event = await self._next()
        if not isinstance(event, TlsStart):
            raise Pop3Error(f"STLS: unexpected {type(event).__name__}")
        tls = trio.SSLStream(self.stream, context, server_hostname=self.config.host)
        await _handshake(tls, self.config)
        self.stream = tls
        self.conn.tls_started()
        await self.capa()  # RFC 2595 §4: forget what was learnt before TLS

    async def login(self) -> None:
        """USER/PASS, APOP or SASL PLAIN as `config.auth` says; Pop3Error (code AUTH...)."""
        cfg = self.config
        if cfg.auth == "apop":
            stamp = self.conn.apop_timestamp
            if stamp is None:
                raise Pop3Error(f"{cfg.host} offers no APOP (no timestamp in its greeting)")
            digest = hashlib.md5((stamp + cfg.password).encode("utf-8")).hexdigest()
            await self.command(Command("APOP", (cfg.user, digest)))
        elif cfg.auth == "sasl":
            offered = {m.upper() for m in self.capabilities.get("SASL", ())}
            if "SCRAM-SHA-256" in offered:
                await self._scram()
                return
            if "PLAIN" not in offered:
                raise Pop3Error(
                    f"{cfg.host} offers neither SASL SCRAM-SHA-256 nor PLAIN "
                    f"(CAPA SASL: {' '.join(sorted(offered)) or 'none'})"
                )
            token = base64.b64encode(f"\0{cfg.user}\0{cfg.password}".encode()).decode("ascii")
            reply = await self.command(Command("AUTH", ("PLAIN", token)))
            if isinstance(reply, SaslContinuation):
                await self._send(SaslResponse("*"))
                raise Pop3Error("AUTH PLAIN: the server asked for more")
        else:
            await self.command(Command("USER", (cfg.user,)))
            await self.command(Command("PASS", (cfg.password,)))

    async def _scram(self) -> None:
        """AUTH SCRAM-SHA-256 (RFC 5802, RFC 7677) in POP3's SASL exchange (RFC 5034 §4).

        The server's signature is checked: a server that does not know the password (a
        man in the middle) is refused even if it says +OK.
        """
        cfg = self.config
        try:
            password = saslprep(cfg.password).encode("utf-8")
        except ValueError as exc:
            raise Pop3Error(f"ifax.password cannot be used with SCRAM: {exc}") from None
        user = saslprep(cfg.user).replace("=", "=3D").replace(",", "=2C")
        nonce = base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        first_bare = f"n={user},r={nonce}"
        reply = await self.command(Command("AUTH", ("SCRAM-SHA-256", _b64(f"n,,{first_bare}"))))
        server_first = _sasl_text(reply)
        fields = dict(item.split("=", 1) for item in server_first.split(",") if "=" in item)
        try:
            salt = base64.b64decode(fields["s"], validate=True)
            iterations = int(fields["i"])
            combined = fields["r"]
        except (KeyError, ValueError) as exc:
            await self._cancel()
            raise Pop3Error(f"SCRAM: bad server-first message ({exc})") from None
        if not combined.startswith(nonce) or not 1 <= iterations <= 1_000_000:
            await self._cancel()
            raise Pop3Error("SCRAM: the server's nonce or iteration count is not acceptable")
        salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={combined}"
        message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(stored_key, message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        await self._send(SaslResponse(_b64(f"{without_proof},p={_b64(proof)}")))
        event = await self._next()
        if isinstance(event, Reply):
            if not event.ok:
                raise Pop3Error(f"AUTH: -ERR {event.text}".rstrip(), event.code)
            raise Pop3Error("SCRAM: +OK without the server's signature")
        if not isinstance(event, SaslContinuation):
            raise Pop3Error(f"SCRAM: unexpected {type(event).__name__}")
        server_final = _sasl_text(event)
        if server_final.startswith("e="):  # RFC 5802 §7 server-error: the server's -ERR follows
            await self._send(SaslResponse(""))
            answer = await self._next()
            code = answer.code if isinstance(answer, Reply) else None
            raise Pop3Error(f"AUTH SCRAM-SHA-256 refused: {server_final[2:]}", code or "AUTH")
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        expected = "v=" + _b64(hmac.digest(server_key, message, "sha256"))
        if server_final != expected:
            await self._cancel()
            raise Pop3Error("SCRAM: the server's signature is wrong; not logged in")
        await self._send(SaslResponse(""))
        event = await self._next()
        if not isinstance(event, Reply) or not event.ok:
            text = event.text if isinstance(event, Reply) else type(event).__name__
            raise Pop3Error(f"AUTH: -ERR {text}", getattr(event, "code", None))

    async def _cancel(self) -> None:
        with contextlib.suppress(Pop3Error):
            await self._send(SaslResponse("*"))
            await self._next()

    async def uidl(self) -> dict[int, str]:
        """Message number -> unique id (RFC 1939 §7)."""
        out: dict[int, str] = {}
        for line in (await self.listing(Command("UIDL"))).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                out[int(parts[0])] = parts[1].decode("ascii", "replace")
        return out

    async def list_sizes(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for line in (await self.listing(Command("LIST"))).splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                out[int(parts[0])] = int(parts[1])
        return out

    async def retr(self, number: int, limit: int) -> bytes:
        return await self.listing(Command("RETR", numbers=(number,)), limit)

    async def dele(self, number: int) -> None:
        await self.command(Command("DELE", numbers=(number,)))

    async def quit(self) -> None:
        """QUIT: the server commits the DELEs (RFC 1939 §6) only on its +OK."""
        await self.command(Command("QUIT"))


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode("utf-8") if isinstance(data, str) else data).decode()


def _sasl_text(reply: Reply | SaslContinuation) -> str:
    if not isinstance(reply, SaslContinuation):
        raise Pop3Error("AUTH: +OK before the SASL exchange ended")
    try:
        return base64.b64decode(reply.text, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise Pop3Error("AUTH: the server's challenge is not base64 UTF-8") from None


async def _handshake(tls: trio.SSLStream[trio.abc.Stream], config: ServerConfig) -> None:
    with trio.move_on_after(config.timeout_s) as scope:
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            cause = exc.__cause__ or exc
            raise Pop3Error(f"{config.host}: TLS handshake failed: {cause}", network=True) from None
    if scope.cancelled_caught:
        raise Pop3Error(f"{config.host}: TLS handshake timed out", network=True)


@asynccontextmanager
async def session(
    config: ServerConfig, context: ssl.SSLContext | None = None
) -> AsyncIterator[Pop3Client]:
    """Connect, greet, CAPA, TLS as configured, log in; close the socket on the way out.

    Pop3Error for every network or protocol failure (one line naming the host and why).
    """
    if config.tls != "none" and context is None:
        context = client_context(config.ca_file)
    try:
        with trio.move_on_after(config.timeout_s) as scope:
            stream: trio.abc.Stream = await trio.open_tcp_stream(config.host, config.port)
        if scope.cancelled_caught:
            raise Pop3Error(f"{config.name}: connect timed out", network=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise Pop3Error(
            f"{config.host}:{config.port}: cannot connect: {reason}", network=True
        ) from None
    try:
        if config.tls == "pop3s":
            assert context is not None
            tls = trio.SSLStream(stream, context, server_hostname=config.host)
            await _handshake(tls, config)
            stream = tls
        client = Pop3Client(stream, config, tls=config.tls == "pop3s")
        try:
            await client._greet()
            await client.capa()
            if config.tls == "stls":
                assert context is not None
                await client.starttls(context)
            await client.login()
            yield client
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise Pop3Error(f"{config.host}: connection lost: {exc}", network=True) from None
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await stream.aclose()


__all__ = ["AUTH_METHODS", "TLS_MODES", "Pop3Client", "Pop3Error", "ServerConfig", "session"]
