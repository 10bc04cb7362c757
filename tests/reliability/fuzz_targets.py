"""Fuzz targets: each takes one byte string and either returns or raises `Finding`.

The same functions serve the hypothesis tests (test_fuzz.py), the corpus replay (every file
under tests/reliability/corpus/<target>/) and the optional atheris runs (`python -m
tests.reliability.fuzz_targets TARGET`, see docs/reliability.md). The rule they check: any
input gives a defined reply or a defined error (DeviceError and its kinds), never another
exception, and what is kept or sent stays bounded.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import trio

from firmware.config.budget import RamBudget
from firmware.config.profile import factory, parse_toml
from firmware.console.shell import ConsoleShell, PowerAction, ScanAction
from firmware.device.boards import create_board, open_board, saved_profile
from firmware.errors import DeviceError
from firmware.flash import nvram
from firmware.flash.layout import RECORD_HEADER_SIZE
from firmware.ops.context import OpsContext
from firmware.pop3 import syntax
from firmware.pop3.events import MultilineStart, Reply, SaslContinuation
from firmware.pop3.locks import BoxLocks
from firmware.pop3.mailbox import BoardMailstore
from firmware.pop3.protocol import SASL_LINE_LIMIT, Pop3Protocol, State
from firmware.pop3.syntax import MAX_COMMAND_LINE
from firmware.store.board import Board
from firmware.store.log import decode_delete, parse_header, parse_header_interpreted
from tests.pop3.driver import Driver

CORPUS = Path(__file__).parent / "corpus"
ADMIN = "admin-pw"
MAX_REPLY_HEAD = 512
MAX_CONSOLE_OUTPUT_PER_BYTE = 8192  # a byte of input never makes more than a screenful or two


class Finding(AssertionError):
    """The target broke its rule for this input."""


class _Template:
    """One small image with two boxes, copied fresh for every input (inputs must not see
    each other's deletions)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dpfw-fuzz-"))
        atexit.register(shutil.rmtree, self.dir, True)
        self.path = self.dir / "template.img"
        profile = factory("DP-3530").with_value("pop3.plaintext_auth", "always")
        with create_board(self.path, profile, ADMIN, size=1 << 20) as board:
            board.add_box("alice", "alice-pw", legacy=True)
            board.add_box("bob", "bob-pw")
            board.deliver("alice", b"Subject: one\r\n\r\nhello\r\n.dot line\r\n")
            board.deliver("alice", b"Subject: two\n\nbare LF body\n" + b"x" * 3000)
            board.deliver("bob", b"no header separator at all")
        self.count = 0

    def fresh(self) -> Board:
        self.count += 1
        path = self.dir / f"input-{self.count % 4}.img"
        shutil.copyfile(self.path, path)
        return open_board(path)


_template: _Template | None = None


def _board() -> Board:
    global _template
    if _template is None:
        _template = _Template()
    return _template.fresh()


# ----- POP3: framing + protocol core ----------------------------------------------------------


def pop3_stream(data: bytes) -> None:
    """A client's byte stream into the POP3 protocol library and the device's session core."""
    with _board() as board:
        protocol = Pop3Protocol(
            BoardMailstore(board),
            lambda: saved_profile(board),
            BoxLocks(),
            RamBudget(1 << 24),
            session_id=1,
            clock=lambda: 1000.0,
        )
        wire = Driver(protocol)
        _check_head(wire.greeting)
        for chunk in _split(data):  # uneven chunks: line ends fall everywhere
            seen = len(wire.answers)
            try:
                out = trio.run(wire.feed, chunk)
            except DeviceError:
                raise Finding("a DeviceError escaped the protocol core") from None
            held = len(wire.conn.trailing_data[0])
            if held > max(SASL_LINE_LIMIT, MAX_COMMAND_LINE) + len(chunk):
                raise Finding(f"the connection holds {held} octets")
            for answer in wire.answers[seen:]:
                _check_head(_head(answer.first))
            if out and not out.startswith((b"+OK", b"-ERR", b"+ ")):
                raise Finding(f"reply is neither +OK, -ERR nor a continuation: {out[:80]!r}")
            if len(out) > 1 << 20:
                raise Finding(f"{len(out)} reply octets from a 1 MiB image")
            if wire.closed or wire.tls_due or protocol.state is State.CLOSED:
                break
        protocol.end()


def _head(first: Reply | MultilineStart | SaslContinuation) -> bytes:
    """The status line the library writes for an answer's first event."""
    if isinstance(first, SaslContinuation):
        return b"+ " + first.text.encode() + b"\r\n"
    prefix = b"+OK" if isinstance(first, MultilineStart) or first.ok else b"-ERR"
    return syntax.format_status(prefix, first.text, first.code)


def _split(data: bytes) -> list[bytes]:
    out, i, step = [], 0, 1
    while i < len(data):
        out.append(data[i : i + step])
        i += step
        step = step * 7 % 61 + 1
    return out


def _check_head(head: bytes) -> None:
    if len(head) > MAX_REPLY_HEAD or not head.endswith(b"\r\n") or b"\n" in head[:-1]:
        raise Finding(f"malformed reply line {head[:80]!r}")
    if not (head.startswith((b"+OK", b"-ERR", b"+ "))):
        raise Finding(f"reply is neither +OK, -ERR nor a continuation: {head[:80]!r}")


# ----- the console shell ----------------------------------------------------------------------


def console_stream(data: bytes) -> None:
    """Bytes typed at the console after a good login (and before one, at the start)."""
    with _board() as board:
        # The operations on the board offline (no POP3 listener, no reboot): every command
        # runs the same code as on a running device.
        shell = ConsoleShell(OpsContext.offline(board), clock=lambda: 1000.0)
        shell.connect()
        out = shell.feed(ADMIN.encode() + b"\r")
        if b"logged in" not in out:
            raise Finding(f"login failed: {out!r}")
        for chunk in _split(data):
            out = shell.feed(chunk)
            while (action := shell.take_action()) is not None:
                if isinstance(action, ScanAction):
                    out += shell.finish_action("scan skipped (fuzz)")
                elif isinstance(action, PowerAction):
                    out += shell.power_done(action.what)
                    out += shell.feed(ADMIN.encode() + b"\r")
                else:  # a StoreAction (fsck, compact): the port runs it on the store worker
                    out += shell.finish_action("store operation skipped (fuzz)")
            if b"internal error" in out:
                raise Finding(f"console internal error: {out[-300:]!r}")
            if len(out) > MAX_CONSOLE_OUTPUT_PER_BYTE * max(1, len(chunk)):
                raise Finding(f"{len(out)} bytes of output for {len(chunk)} typed")
            if shell.buffered > 4096 + 256:
                raise Finding(f"console holds {shell.buffered} bytes of input")


# ----- the profile loader ---------------------------------------------------------------------


def profile_text(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        profile = parse_toml(text, "fuzz")
    except DeviceError:
        return
    if profile.model not in text:
        raise Finding("a profile validated without naming its model")


# ----- record parsers -------------------------------------------------------------------------


def record_header(data: bytes) -> None:
    """The boot path's fast header parser and the interpreted one agree, and neither raises."""
    position = int.from_bytes(data[-8:], "big") if len(data) >= RECORD_HEADER_SIZE + 8 else 0
    raw = data[:RECORD_HEADER_SIZE] if len(data) >= RECORD_HEADER_SIZE else data
    room = 1 << 30
    fast = parse_header(raw, position, room)
    slow = parse_header_interpreted(raw, position, room)
    if fast != slow:
        raise Finding(f"header parsers disagree: {fast} vs {slow}")


def delete_payload(data: bytes) -> None:
    try:
        seqs = decode_delete(data)
    except DeviceError:
        return
    if len(seqs) > len(data) // 4:
        raise Finding(f"{len(seqs)} sequence numbers from {len(data)} bytes")


def nvram_state(data: bytes) -> None:
    try:
        nvram.decode(data, "fuzz")
    except DeviceError:
        return


def image_patch(data: bytes) -> None:
    """Bytes written over a valid image (first 4 bytes: the offset): opening it gives a Board
    or a DeviceError; an opened one can be checked and read, message by message, with at worst
    a CorruptRecordError. Covers the superblock, both NVRAM slots and the record log."""
    if len(data) < 4:
        return
    board = _board()
    path = board.path
    size = board.geometry.image_size
    board.close()
    offset = int.from_bytes(data[:4], "big") % size
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data[4 : 4 + size - offset])
    try:
        opened = open_board(path, repair=False)
    except DeviceError:
        return
    with opened:
        opened.fsck()
        opened.usage()
        for box in opened.box_names():
            for msg in opened.messages(box):
                try:
                    wire = b"".join(opened.read_wire(box, msg.uid))
                except DeviceError:
                    continue
                if len(wire) > size:
                    raise Finding(f"{box}/{msg.uid}: {len(wire)} bytes read from a smaller image")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "pop3": pop3_stream,
    "console": console_stream,
    "profile": profile_text,
    "record-header": record_header,
    "delete-payload": delete_payload,
    "nvram": nvram_state,
    "image": image_patch,
}


def save(name: str, data: bytes) -> Path:
    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / hashlib.sha256(data).hexdigest()[:16]
    if not path.exists():
        path.write_bytes(data)
    return path


def atheris_main() -> None:  # pragma: no cover - optional deep runs, outside CI
    """`python -m tests.reliability.fuzz_targets TARGET [atheris/libFuzzer options]`."""
    atheris = importlib.import_module("atheris")  # optional; installed outside the venv

    name = sys.argv.pop(1)
    target = TARGETS[name]

    def one(data: bytes) -> None:
        try:
            target(data)
        except Finding:
            save(name, data)
            raise

    atheris.instrument_all()  # coverage feedback for everything imported (firmware included)
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    atheris_main()
