"""POP3 protocol library benchmark (not a test): a client and a server object in memory.

Run: `.venv/bin/python -m benchmarks.pop3lib [--sessions N] [--mib N] [--rounds N]`.
No sockets: what is measured is the library's own cost per session and per octet, the floor
under any adapter built on it.
- sessions/s: greeting, USER, PASS, STAT, UIDL (10 messages), LIST, RETR of a 2 KB message,
  DELE, QUIT, both roles doing all their work (events counted on both sides);
- pipelined commands/s: 1,000 `NOOP`s in one receive_data, each answered `+OK`;
- RETR MB/s: a message of --mib MiB in 64 KiB chunks, raw (the server stuffs) and in wire
  form (passed through), server side alone and server + client (the client un-stuffs).
Each figure is the best of --rounds rounds (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from firmware.pop3.connection import ClientConnection, ServerConnection
from firmware.pop3.events import (
    NEED_DATA,
    PAUSED,
    Command,
    Data,
    MultilineEnd,
    MultilineStart,
    Reply,
)

CHUNK = 65536
LINE = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.\r\n"
DOT_LINE = b".a line that needs stuffing\r\n"

_GREETING = Reply(True, "DP-6030 POP3 service ready <1.2@dp6030>")
_UIDL = b"".join(b"%d uid-%08d\r\n" % (i, i) for i in range(1, 11))
_LIST = b"".join(b"%d 2048\r\n" % i for i in range(1, 11))
_MESSAGE = (b"Subject: bench\r\n\r\n" + LINE * 26 + DOT_LINE)[:2048]
_SCRIPT = (
    Command("USER", ("scan01",)),
    Command("PASS", ("secret",)),
    Command("STAT"),
    Command("UIDL"),
    Command("LIST"),
    Command("RETR", numbers=(1,)),
    Command("DELE", numbers=(1,)),
    Command("QUIT"),
)
_ONE = {
    "USER": Reply(True),
    "PASS": Reply(True, "scan01 has 10 messages (20480 octets)"),
    "STAT": Reply(True, "10 20480"),
    "DELE": Reply(True, "message 1 deleted"),
    "QUIT": Reply(True, "signing off"),
    "NOOP": Reply(True),
}
_BODIES = {"UIDL": _UIDL, "LIST": _LIST, "RETR": _MESSAGE}
_START = MultilineStart()
_END = MultilineEnd()


def one_session() -> int:
    """One whole session, command by command; returns the events both sides handled."""
    server, client = ServerConnection(), ClientConnection()
    client.receive_data(server.send(_GREETING))
    client.next_event()
    events = 2
    for command in _SCRIPT:
        server.receive_data(client.send(command))
        received = server.next_event()
        assert isinstance(received, Command)
        body = _BODIES.get(received.keyword)
        if body is None:
            wire = server.send(_ONE[received.keyword])
            events += 2
        else:
            wire = server.send(_START) + server.send(Data(body, wire=True)) + server.send(_END)
            events += 4
        client.receive_data(wire)
        while True:
            event = client.next_event()
            if event is NEED_DATA or event is PAUSED:
                break
            events += 1
    return events


_CLIENT_LINES = [
    b"USER scan01\r\n",
    b"PASS secret\r\n",
    b"STAT\r\n",
    b"UIDL\r\n",
    b"LIST\r\n",
    b"RETR 1\r\n",
    b"DELE 1\r\n",
    b"QUIT\r\n",
]


def server_session() -> int:
    """The server role alone over the same session (what the device pays); returns octets."""
    server = ServerConnection()
    sent = len(server.send(_GREETING))
    for line in _CLIENT_LINES:
        server.receive_data(line)
        received = server.next_event()
        assert isinstance(received, Command)
        body = _BODIES.get(received.keyword)
        if body is None:
            sent += len(server.send(_ONE[received.keyword]))
        else:
            sent += len(server.send(_START) + server.send(Data(body, wire=True)))
            sent += len(server.send(_END))
    return sent


def pipelined(count: int) -> int:
    server = ServerConnection()
    server.send(_GREETING)
    server.receive_data(b"USER a\r\nPASS b\r\n" + b"NOOP\r\n" * count)
    for _ in range(2):
        server.next_event()
        server.send(_ONE["USER"])
    ok = _ONE["NOOP"]
    out = []
    for _ in range(count):
        server.next_event()
        out.append(server.send(ok))
    client = ClientConnection()
    client.receive_data(b"+OK\r\n")
    client.next_event()
    client.send(Command("USER", ("a",)))
    client.send(Command("PASS", ("b",)))
    client.receive_data(b"+OK\r\n+OK\r\n")
    client.next_event()
    client.next_event()
    for _ in range(count):
        client.send(Command("NOOP"))
    client.receive_data(b"".join(out))
    for _ in range(count):
        client.next_event()
    return count


def retr(chunks: list[bytes], *, wire: bool, with_client: bool) -> int:
    server = ServerConnection()
    client = ClientConnection()
    client.receive_data(server.send(_GREETING))
    client.next_event()
    for command in _SCRIPT[:2]:
        server.receive_data(client.send(command))
        server.next_event()
        client.receive_data(server.send(Reply(True)))
        client.next_event()
    server.receive_data(client.send(Command("RETR", numbers=(1,))))
    server.next_event()
    got = 0
    client.receive_data(server.send(_START))
    client.next_event()
    for chunk in chunks:
        out = server.send(Data(chunk, wire=wire))
        if with_client:
            client.receive_data(out)
            while True:
                event = client.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, Data):
                    got += len(event.data)
    server.send(_END)
    return got


def best(rounds: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20000)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    events = one_session()
    seconds = best(args.rounds, lambda: [one_session() for _ in range(args.sessions)])
    rate = args.sessions / seconds
    print(f"sessions/s (9 commands each, both roles): {rate:,.0f}")
    print(f"events/s (both roles, {events} per session): {rate * events:,.0f}")

    seconds = best(args.rounds, lambda: [server_session() for _ in range(args.sessions)])
    print(f"sessions/s (server role alone): {args.sessions / seconds:,.0f}")

    seconds = best(args.rounds, lambda: [pipelined(1000) for _ in range(20)])
    print(f"pipelined NOOP commands/s (both roles): {20_000 / seconds:,.0f}")

    raw = (LINE * 15 + DOT_LINE) * (args.mib * (1 << 20) // (16 * len(LINE)))
    raw_chunks = [raw[i : i + CHUNK] for i in range(0, len(raw), CHUNK)]
    stuffed = raw.replace(b"\n.", b"\n..")
    wire_chunks = [stuffed[i : i + CHUNK] for i in range(0, len(stuffed), CHUNK)]
    mb = len(raw) / 1e6
    for label, chunks, wire in (("raw", raw_chunks, False), ("wire", wire_chunks, True)):
        alone = best(args.rounds, lambda: retr(chunks, wire=wire, with_client=False))  # noqa: B023
        both = best(args.rounds, lambda: retr(chunks, wire=wire, with_client=True))  # noqa: B023
        assert retr(chunks, wire=wire, with_client=True) == len(raw)
        print(
            f"RETR {label:4} {mb:.0f} MB: server {mb / alone:,.0f} MB/s; "
            f"server + client {mb / both:,.0f} MB/s"
        )


if __name__ == "__main__":
    main()
