"""`dpfw run --trace FILE` (the trace as JSON lines) and `dpfw trace replay FILE --to HOST:PORT`.

A trace file has one `TraceRecord` (firmware/pop3/trace.py) per line as a JSON object:
`{"session": 3, "peer": "127.0.0.1:40112", "time": 1764467000.5, "direction": "c->s",
"line": "RETR 1"}`. Replay takes one session's client lines, sends them to a device and
compares each reply with the recorded one: the status (+OK, -ERR, + for a SASL challenge),
the response code, with `--text` the whole first line, and a multi-line body's octet count.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import trio

from firmware.cli.run import parse_address
from firmware.errors import DeviceError
from firmware.pop3.trace import REDACTED, TraceRecord, body_octets
from firmware.text import file_problem, host_port

if TYPE_CHECKING:
    from firmware.device.device import Device

log = logging.getLogger("dpfw.trace")

REPLY_TIMEOUT_S = 30.0


def register(sub: Any) -> None:
    p = sub.add_parser("trace", help="replay a recorded POP3 protocol trace")
    tsub = p.add_subparsers(dest="trace_command", required=True, metavar="COMMAND")
    r = tsub.add_parser(
        "replay",
        help="replay one traced session's commands against a device; report differing replies",
    )
    r.add_argument("file", type=Path, metavar="FILE", help="a `dpfw run --trace` file")
    r.add_argument("--to", type=parse_address, required=True, metavar="HOST:PORT")
    r.add_argument("--session", type=int, metavar="ID", help="the session (default: the first)")
    r.add_argument(
        "--password",
        action="append",
        default=[],
        metavar="BOX=PW",
        help="the password the trace redacted, for PASS, APOP and AUTH PLAIN",
    )
    r.add_argument("--text", action="store_true", help="compare the whole reply line too")
    r.set_defaults(func=cmd_replay)


# -- dpfw run --trace FILE -----------------------------------------------------------------


async def write_trace(device: Device, *, out: IO[str]) -> None:
    """A device service: every trace record as one JSON line on `out`, flushed per batch.

    The writes run on a worker thread, never on the event loop: a slow disk, a full one or a
    pipe nobody reads stalls only this writer. Records that arrive meanwhile wait in the
    subscription (firmware/pop3/trace.py, SUBSCRIBER_BUFFER) and are written together next;
    beyond that buffer they are dropped and counted (`Tracer.dropped`), so POP3 never waits.
    A write that fails (ENOSPC, EPIPE) is logged once, its records are lost, and the writer
    tries again with the next batch. At shutdown a write still blocked is abandoned.
    """
    failing = False
    with device.trace.subscribe() as records:
        async for record in records:
            batch = [record]
            while True:
                try:
                    batch.append(records.receive_nowait())
                except trio.WouldBlock:
                    break
            text = "".join(json.dumps(r.to_json()) + "\n" for r in batch)
            error = await trio.to_thread.run_sync(_write, out, text, abandon_on_cancel=True)
            if error is not None and not failing:
                log.error("--trace: %s; trace records are lost until a write succeeds", error)
            elif error is None and failing:
                log.info("--trace: writing again")
            failing = error is not None


def _write(out: IO[str], text: str) -> str | None:
    """Write and flush `text` (on a worker thread); None, or why it failed."""
    try:
        out.write(text)
        out.flush()
    except (OSError, ValueError) as exc:  # ValueError: the file was closed
        return file_problem(getattr(out, "name", "the trace file"), exc, "write")
    return None


# -- dpfw trace replay ---------------------------------------------------------------------


@dataclass
class Exchange:
    """One recorded client line and the server lines that followed it."""

    command: str
    replies: list[str] = field(default_factory=list)


def read_trace(path: Path) -> list[TraceRecord]:
    """The records of a trace file; DeviceError naming the file and line when one is bad."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise DeviceError(file_problem(str(path), exc)) from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(TraceRecord.from_json(json.loads(line)))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise DeviceError(f"{path}:{number}: not a trace record: {exc}") from None
    return records


def session_exchanges(
    records: list[TraceRecord], session: int | None
) -> tuple[int, list[str], list[Exchange]]:
    """(session id, the greeting's lines, the exchanges) of `session` (default the first)."""
    if not records:
        raise DeviceError("the trace has no records")
    chosen = records[0].session if session is None else session
    mine = [r for r in records if r.session == chosen]
    if not mine:
        raise DeviceError(f"the trace has no session {chosen}")
    greeting: list[str] = []
    exchanges: list[Exchange] = []
    for record in mine:
        if record.direction == "c->s":
            exchanges.append(Exchange(record.line))
        elif exchanges:
            exchanges[-1].replies.append(record.line)
        else:
            greeting.append(record.line)
    return chosen, greeting, exchanges


def _multiline(command: str, status: str) -> bool:
    """Whether the server's +OK to `command` starts a multi-line reply (RFC 1939, 2449)."""
    if status != "+OK":
        return False
    words = command.split()
    keyword = words[0].upper() if words else ""
    return keyword in ("RETR", "TOP", "CAPA") or (
        keyword in ("LIST", "UIDL", "AUTH") and len(words) == 1
    )


def _status(line: str) -> tuple[str, str | None]:
    """('+OK' | '-ERR' | '+' | other, response code or None) of a reply line."""
    word, _, rest = line.partition(" ")
    code = rest[1:].partition("]")[0] if rest.startswith("[") and "]" in rest else None
    return word, code


class _Peer:
    """A plain line-at-a-time POP3 client over a socket."""

    def __init__(self, address: tuple[str, int]) -> None:
        try:
            self.sock = socket.create_connection(address, timeout=REPLY_TIMEOUT_S)
        except OSError as exc:
            raise DeviceError(f"cannot connect to {host_port(*address)}: {exc}") from None
        self.buf = b""

    def line(self) -> str:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                rest, self.buf = self.buf, b""
                return rest.decode("utf-8", "surrogateescape")
            self.buf += data
        raw, _, self.buf = self.buf.partition(b"\r\n")
        return raw.decode("utf-8", "surrogateescape")

    def body(self) -> int:
        """Read a multi-line body; its octets as sent (stuffed), without the "." line."""
        while True:
            at = (b"\r\n" + self.buf).find(b"\r\n.\r\n")
            if at >= 0:
                self.buf = self.buf[at + 3 :]
                return at
            data = self.sock.recv(65536)
            if not data:
                raise DeviceError("the device closed the connection inside a multi-line reply")
            self.buf += data

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8", "surrogateescape") + b"\r\n")


def _passwords(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        box, sep, password = pair.partition("=")
        if not sep or not box:
            raise DeviceError(f"--password {pair!r} is not BOX=PW")
        out[box] = password
    return out


class _Unredactor:
    """Puts the secrets back into redacted client lines from --password."""

    def __init__(self, passwords: dict[str, str]) -> None:
        self.passwords = passwords
        self.box: str | None = None  # the last USER, APOP or AUTH box
        self.banner = ""

    def _password(self, what: str, box: str | None) -> str:
        if box is not None and box in self.passwords:
            return self.passwords[box]
        if box is None and len(self.passwords) == 1:
            return next(iter(self.passwords.values()))
        name = box or "BOX"
        raise DeviceError(f"{what} was redacted in the trace: give --password {name}=PW")

    def line(self, recorded: str) -> str:
        words = recorded.split(" ")
        keyword = words[0].upper()
        if keyword == "USER" and len(words) > 1:
            self.box = words[1]
        if REDACTED not in words:
            return recorded
        if keyword == "PASS":
            return f"PASS {self._password('PASS', self.box)}"
        if keyword == "APOP" and len(words) == 3:
            self.box = words[1]
            start, end = self.banner.find("<"), self.banner.rfind(">")
            if start < 0 or end < start:
                raise DeviceError("APOP cannot be replayed: the device's greeting has no stamp")
            stamp = self.banner[start : end + 1] + self._password("APOP", words[1])
            return f"APOP {words[1]} {hashlib.md5(stamp.encode()).hexdigest()}"
        if keyword == "AUTH" and len(words) == 3 and words[1].upper() == "PLAIN":
            return f"AUTH PLAIN {self._plain()}"
        if recorded == REDACTED and self.sasl_plain:
            return self._plain()
        raise DeviceError(f"{recorded!r} was redacted and cannot be replayed")

    sasl_plain = False

    def _plain(self) -> str:
        password = self._password("AUTH PLAIN", None)
        box = next(b for b, p in self.passwords.items() if p == password)
        return base64.b64encode(f"\0{box}\0{password}".encode()).decode()


def replay(
    exchanges: list[Exchange],
    greeting: list[str],
    to: tuple[str, int],
    passwords: dict[str, str],
    text: bool,
) -> list[str]:
    """Replay; one line per reply that differs (empty when all agree)."""
    peer = _Peer(to)
    unredact = _Unredactor(passwords)
    differences: list[str] = []

    def compare(where: str, recorded: list[str], line: str, octets: int | None) -> None:
        want = recorded[0] if recorded else "(no reply)"
        got = line or "(connection closed)"
        same = _status(want) == _status(got) and (not text or want == got)
        if not same:
            differences.append(f"{where}: recorded {want!r}, replayed {got!r}")
            return
        want_octets = body_octets(recorded[1]) if len(recorded) > 1 else None
        if want_octets != octets:
            differences.append(
                f"{where}: recorded a body of {want_octets} octets, replayed {octets}"
            )

    try:
        banner = peer.line()
        unredact.banner = banner
        compare("greeting", greeting, banner, None)
        for number, exchange in enumerate(exchanges, 1):
            line = unredact.line(exchange.command)
            peer.send(line)
            reply = peer.line()
            words = exchange.command.upper().split()
            challenged = reply == "+" or reply.startswith("+ ")
            unredact.sasl_plain = challenged and (words == ["AUTH", "PLAIN"] or unredact.sasl_plain)
            octets = peer.body() if _multiline(exchange.command, _status(reply)[0]) else None
            compare(f"command {number} {exchange.command!r}", exchange.replies, reply, octets)
            if not reply:
                break
    except OSError as exc:
        differences.append(f"the connection failed: {exc}")
    finally:
        peer.sock.close()
    return differences


def cmd_replay(args: argparse.Namespace) -> int:
    passwords = _passwords(args.password)
    chosen, greeting, exchanges = session_exchanges(read_trace(args.file), args.session)
    differences = replay(exchanges, greeting, args.to, passwords, args.text)
    where = host_port(*args.to)
    for difference in differences:
        print(f"session {chosen}, {difference}")
    if differences:
        print(f"{len(differences)} of {len(exchanges) + 1} replies differ at {where}")
        return 1
    print(f"session {chosen}: all {len(exchanges) + 1} replies agree at {where}")
    return 0


def open_trace_file(path: Path) -> IO[str]:
    """Open `dpfw run --trace FILE` for appending; DeviceError naming it on failure."""
    try:
        return open(path, "a", encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise DeviceError(f"--trace {file_problem(str(path), exc, 'write')}") from None
