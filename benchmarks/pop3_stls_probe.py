"""Time the first reply after an STLS handshake: `python -m benchmarks.pop3_stls_probe HOST:PORT`.

Per connection: greeting, `STLS`, the TLS handshake (blocking `ssl`, as poplib does), then the
time from sending `CAPA` to the end of its reply, and the time of a second `CAPA` right after.
The client's socket keeps Nagle's algorithm on unless `--nodelay` (poplib, fetchmail and most
mail clients never set TCP_NODELAY), so a server that leaves the client's last handshake
segment unacknowledged shows as a delayed-ACK timeout (~40 ms on Linux) on the first reply.
Also `--pop3s` (implicit TLS: handshake first, then the greeting and CAPA) for comparison.

`--session BOX:PASSWORD --pop3s-address HOST:PORT` times whole sessions instead, alternating
between the two ports: connect, greeting, STLS and handshake (or the handshake and greeting on
the POP3S port), USER, PASS, STAT, QUIT, until the server closes; it prints the median of each
and their ratio (issue 16: a full STLS session within 1.5x of a POP3S session).
"""

from __future__ import annotations

import argparse
import socket
import ssl
import statistics
import time
from collections.abc import Sequence


def _read_reply(sock: socket.socket | ssl.SSLSocket, multi: bool) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server after {data[:80]!r}")
        data += chunk
        if not data.startswith(b"+OK"):
            if b"\r\n" in data:
                raise ConnectionError(f"server said {data[:120]!r}")
            continue
        if (multi and data.endswith(b"\r\n.\r\n")) or (not multi and data.endswith(b"\r\n")):
            return data


def probe_once(
    host: str, port: int, nodelay: bool, pop3s: bool, tls12: bool = False
) -> tuple[float, float, str]:
    """(ms to the first CAPA reply after the handshake, ms to a second one, TLS version)."""
    context = ssl.create_default_context()
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the benchmark's self-signed certificate
    raw = socket.create_connection((host, port), timeout=10)
    if nodelay:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if pop3s:
            sock = context.wrap_socket(raw, server_hostname=host)
            _read_reply(sock, multi=False)
        else:
            _read_reply(raw, multi=False)
            raw.sendall(b"STLS\r\n")
            _read_reply(raw, multi=False)
            sock = context.wrap_socket(raw, server_hostname=host)
        t0 = time.perf_counter()
        sock.sendall(b"CAPA\r\n")
        _read_reply(sock, multi=True)
        t1 = time.perf_counter()
        sock.sendall(b"CAPA\r\n")
        _read_reply(sock, multi=True)
        t2 = time.perf_counter()
        version = sock.version() or "?"
        sock.sendall(b"QUIT\r\n")
        _read_reply(sock, multi=False)
        return (t1 - t0) * 1000, (t2 - t1) * 1000, version
    finally:
        raw.close()


def session_once(
    host: str, port: int, pop3s: bool, box: str, password: str, nodelay: bool = False
) -> float:
    """Ms for one whole session, from connect to the server's close, over STLS or POP3S."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    t0 = time.perf_counter()
    raw = socket.create_connection((host, port), timeout=10)
    if nodelay:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if pop3s:
            sock = context.wrap_socket(raw, server_hostname=host)
            _read_reply(sock, multi=False)
        else:
            _read_reply(raw, multi=False)
            raw.sendall(b"STLS\r\n")
            _read_reply(raw, multi=False)
            sock = context.wrap_socket(raw, server_hostname=host)
        for line in (f"USER {box}", f"PASS {password}", "STAT", "QUIT"):
            sock.sendall(line.encode() + b"\r\n")
            _read_reply(sock, multi=False)
        try:
            while sock.recv(4096):
                pass
        except (ssl.SSLError, OSError):
            pass  # a close without close_notify is still the end
        return (time.perf_counter() - t0) * 1000
    finally:
        raw.close()


def sessions(args: argparse.Namespace) -> int:
    box, _, password = args.session.partition(":")
    stls_host, _, stls_port = args.address.rpartition(":")
    tls_host, _, tls_port = args.pop3s_address.rpartition(":")
    stls: list[float] = []
    implicit: list[float] = []
    for _ in range(args.n):
        stls.append(session_once(stls_host, int(stls_port), False, box, password, args.nodelay))
        implicit.append(session_once(tls_host, int(tls_port), True, box, password, args.nodelay))
    a, b = statistics.median(stls), statistics.median(implicit)
    print(
        f"whole sessions (USER PASS STAT QUIT), client "
        f"{'TCP_NODELAY' if args.nodelay else 'Nagle on'}, {args.n} each, alternating: "
        f"STLS p50 {a:.2f} ms (p90 "
        f"{sorted(stls)[int(0.9 * len(stls))]:.2f}), POP3S p50 {b:.2f} ms (p90 "
        f"{sorted(implicit)[int(0.9 * len(implicit))]:.2f}); STLS/POP3S {a / b:.2f}x"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pop3_stls_probe", description=__doc__)
    p.add_argument("address", help="HOST:PORT of a POP3 server offering STLS")
    p.add_argument("-n", type=int, default=20, help="connections (default 20)")
    p.add_argument("--nodelay", action="store_true", help="set TCP_NODELAY on the client")
    p.add_argument("--pop3s", action="store_true", help="implicit TLS instead of STLS")
    p.add_argument("--tls12", action="store_true", help="offer TLS 1.2 at most (not 1.3)")
    p.add_argument("--session", metavar="BOX:PASSWORD", help="time whole sessions (see above)")
    p.add_argument("--pop3s-address", metavar="HOST:PORT", help="the POP3S port, with --session")
    args = p.parse_args(argv)
    if args.session:
        if not args.pop3s_address:
            p.error("--session needs --pop3s-address")
        return sessions(args)
    host, _, port = args.address.rpartition(":")
    first: list[float] = []
    second: list[float] = []
    version = "?"
    for _ in range(args.n):
        a, b, version = probe_once(
            host or "127.0.0.1", int(port), args.nodelay, args.pop3s, args.tls12
        )
        first.append(a)
        second.append(b)
    print(
        f"{args.address} {'POP3S' if args.pop3s else 'STLS'} {version} client "
        f"{'TCP_NODELAY' if args.nodelay else 'Nagle on'}: first CAPA after the handshake "
        f"median {statistics.median(first):.2f} ms (min {min(first):.2f}, max {max(first):.2f}); "
        f"second CAPA median {statistics.median(second):.2f} ms; {args.n} connections"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
