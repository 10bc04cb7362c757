"""The ceiling of `tools/bench pop3`: a bare trio server answering the benchmark's sessions.

`python -m benchmarks.pop3_ceiling --port P --boxes N --large K [--cert PEM --key PEM]
[--pop3s-port Q]` serves the corpus of `build_corpus(N, K)` from memory: every reply the load
generator can ask for (greeting, USER, PASS, STAT, LIST n, UIDL, RETR n, NOOP, CAPA, STLS,
QUIT) is built once at start, and a session only looks it up and sends it with one
`send_all`. There are no checks (any password logs in), no locks, no store, no limits, no
logging: only what Python and trio cost for the same bytes on the same sockets. dpfw's
sessions/s divided by this server's is the fraction of the achievable that dpfw reaches.

It runs with trio's defaults like dpfw's adapter (`trio.serve_tcp`, `SocketStream` with
TCP_NODELAY, `SSLStream` for STLS, and on `--pop3s-port` for implicit TLS as dpfw's POP3S
listener does it: the handshake on each accepted stream, then the greeting inside TLS), plus
one thing trio does not do: it acknowledges the client's last handshake segment at once after
an STLS handshake (`quick_ack`), without which a client that keeps Nagle's algorithm on waits
~40 ms for its first reply (docs/benchmarks.md, "STLS").
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from benchmarks.pop3_corpus import Corpus, build_corpus
from benchmarks.pop3_procs import ServerProcess, wait_for_greeting

GREETING = b"+OK ceiling POP3 ready\r\n"
CAPA = b"+OK capabilities\r\nUSER\r\nUIDL\r\nTOP\r\nSTLS\r\n.\r\n"
OK = b"+OK\r\n"


class Replies:
    """Every reply of every box, built once: box name -> verb -> bytes."""

    def __init__(self, corpus: Corpus) -> None:
        retr_cache: dict[int, bytes] = {}
        self.boxes: dict[bytes, dict[bytes, bytes]] = {}
        for account in corpus.accounts:
            message = account.message
            retr = retr_cache.get(id(message))
            if retr is None:
                wire = message.replace(b"\r\n.", b"\r\n..")
                if wire.startswith(b"."):
                    wire = b"." + wire
                retr = b"+OK %d octets\r\n" % len(message) + wire + b".\r\n"
                retr_cache[id(message)] = retr
            name = account.name.encode()
            size = len(message)
            self.boxes[name] = {
                b"STAT": b"+OK 1 %d\r\n" % size,
                b"LIST 1": b"+OK 1 %d\r\n" % size,
                b"LIST": b"+OK 1 messages\r\n1 %d\r\n.\r\n" % size,
                b"UIDL": b"+OK\r\n1 " + name + b".1\r\n.\r\n",
                b"RETR 1": retr,
            }


def quick_ack(stream: trio.SocketStream) -> None:
    """Acknowledge now what the peer sent last (Linux TCP_QUICKACK; elsewhere nothing).

    After a TLS 1.3 handshake the server has read the client's Finished and, with STLS, has
    nothing to send (trio holds the session tickets back until the first write), so the
    kernel would delay its ACK by ~40 ms; a client with Nagle's algorithm on (poplib,
    fetchmail) holds its next command until that ACK. See docs/benchmarks.md, "STLS".
    """
    if hasattr(socket, "TCP_QUICKACK"):
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


async def converse(
    stream: trio.SocketStream,
    replies: Replies,
    tls: ssl.SSLContext | None,
    implicit_tls: bool = False,
) -> None:
    """One session: replies from the table; unknown commands get -ERR.

    `implicit_tls` (POP3S, RFC 8314 section 3.3; needs `tls`): the stream is wrapped in an
    `SSLStream` and the handshake done before the greeting, as dpfw's POP3S listener does.
    """
    out: trio.abc.Stream = stream
    box: dict[bytes, bytes] = {}
    buffer = b""
    try:
        if implicit_tls:
            if tls is None:
                raise ValueError("implicit TLS needs a certificate")
            ssl_stream = trio.SSLStream(stream, tls, server_side=True)
            await ssl_stream.do_handshake()
            out = ssl_stream
        await out.send_all(GREETING)
        while True:
            data = await out.receive_some(4096)
            if not data:
                return
            buffer += data
            while (end := buffer.find(b"\r\n")) >= 0:
                line, buffer = buffer[:end], buffer[end + 2 :]
                verb = line[:4].upper()
                if verb == b"QUIT":
                    await out.send_all(OK)
                    return
                if verb == b"USER":
                    box = replies.boxes.get(line[5:], {})
                    reply = OK
                elif verb in (b"PASS", b"NOOP"):
                    reply = OK
                elif verb == b"CAPA":
                    reply = CAPA
                elif verb == b"STLS" and tls is not None and not implicit_tls and out is stream:
                    await out.send_all(b"+OK begin TLS\r\n")
                    out = trio.SSLStream(stream, tls, server_side=True)
                    await out.do_handshake()
                    quick_ack(stream)
                    continue
                else:
                    reply = box.get(line.upper(), b"-ERR no\r\n")
                await out.send_all(reply)
    finally:
        await trio.aclose_forcefully(out)


def start_ceiling(
    workdir: Path,
    corpus: Corpus,
    port: int,
    tls: tuple[Path, Path] | None,
    pop3s_port: int = 0,
) -> ServerProcess:
    """Start this module as a server process for `corpus` and wait for its greeting.

    `tls` = (certificate PEM file, key PEM file) offers STLS; `pop3s_port` (0: none, needs
    `tls`) also listens for implicit TLS there.
    """
    base = workdir / "ceiling"
    base.mkdir(parents=True, exist_ok=True)
    log = base / "ceiling.log"
    command = [sys.executable, "-m", "benchmarks.pop3_ceiling", "--port", str(port)]
    command += ["--boxes", str(len(corpus.session_accounts))]
    command += ["--large", str(len(corpus.large_accounts))]
    if tls is not None:
        command += ["--cert", str(tls[0]), "--key", str(tls[1])]
    if pop3s_port:
        if tls is None:
            raise ValueError("the ceiling's POP3S listener needs a certificate")
        command += ["--pop3s-port", str(pop3s_port)]
    out = log.open("wb")
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
    )
    server = ServerProcess("ceiling", proc, log, stop_signal=signal.SIGTERM)
    try:
        wait_for_greeting("127.0.0.1", port, proc, timeout_s=60.0)
    except BaseException:
        server.stop()
        raise
    return server


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pop3_ceiling", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--boxes", type=int, required=True, help="session boxes of the corpus")
    p.add_argument("--large", type=int, required=True, help="large boxes of the corpus")
    p.add_argument("--cert", help="PEM certificate for STLS (none: STLS gets -ERR)")
    p.add_argument("--key", help="PEM key of --cert")
    p.add_argument(
        "--pop3s-port", type=int, default=0, help="also listen for implicit TLS here (needs --cert)"
    )
    args = p.parse_args(argv)
    if args.pop3s_port and not args.cert:
        p.error("--pop3s-port needs --cert and --key")
    replies = Replies(build_corpus(args.boxes, args.large))
    tls = None
    if args.cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.load_cert_chain(args.cert, args.key)

    async def handler(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await converse(stream, replies, tls)

    async def pop3s_handler(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await converse(stream, replies, tls, implicit_tls=True)

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            if args.pop3s_port:
                # Listening before the plain port answers: the greeting there means both serve.
                listeners = await trio.open_tcp_listeners(args.pop3s_port, host=args.host)
                nursery.start_soon(trio.serve_listeners, pop3s_handler, listeners)
            await trio.serve_tcp(handler, args.port, host=args.host)

    trio.run(serve)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
