"""The open board image as the device sees it: profile, boxes, credentials, settings, messages.

`Board` keeps an in-memory index rebuilt at boot by replaying the log (firmware.store.log);
configuration lives in NVRAM (firmware.flash.nvram), written whole and atomically. Every change
is durable before the method returns. The board is used from one thread.
"""

from __future__ import annotations

import io
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import BinaryIO

from firmware.config.profile import Profile
from firmware.errors import BoxError, CorruptRecordError, DeviceError, QuotaError, StorageFullError
from firmware.flash import nvram as nv
from firmware.flash.image import Geometry, Image
from firmware.flash.layout import RECORD_HEADER_SIZE, align
from firmware.security.credentials import Credentials, make_credentials, verify_password
from firmware.store.log import (
    CHUNK,
    KIND_DELETE,
    KIND_MESSAGE,
    Header,
    Log,
    TornTail,
    encode_delete,
    kind_name,
)
from firmware.store.wire import WireEncoder, take_lines
from firmware.text import plural

log = logging.getLogger(__name__)

MiB = 1 << 20
BOX_NAME_MAX = 40
MIN_RECORD = align(RECORD_HEADER_SIZE)  # the smallest record the log can hold


def check_box_name(name: str) -> None:
    """Box names: 1-40 printable ASCII characters, no spaces; case-sensitive."""
    if not 1 <= len(name) <= BOX_NAME_MAX or any(not 0x21 <= ord(c) <= 0x7E for c in name):
        raise BoxError(
            f"box name {name!r} is not allowed; expected 1-{BOX_NAME_MAX} printable ASCII "
            "characters without spaces"
        )


@dataclass(frozen=True)
class BoxInfo:
    name: str
    messages: int
    bytes: int  # sum of POP3 sizes
    has_legacy_secret: bool
    box_id: int
    corrupt: int = 0  # messages whose record fails its CRC


@dataclass(frozen=True)
class MessageInfo:
    uid: str
    size: int  # POP3 octets: CRLF line ends, no stuffing dots
    arrived: float  # Unix time
    seq: int = 0
    corrupt: bool = False  # reading it raises CorruptRecordError


@dataclass(frozen=True)
class Usage:
    total: int  # bytes in the data area
    used: int  # bytes between log head and tail
    free: int
    reclaimable: int  # used bytes that compaction would give back
    live: int  # bytes of the records of stored messages


@dataclass(frozen=True)
class CompactReport:
    records_moved: int
    bytes_moved: int
    bytes_reclaimed: int
    seconds: float


@dataclass(frozen=True)
class Problem:
    """A record that does not check out."""

    position: int
    length: int
    what: str  # "corrupt" (data affected), "torn" (discarded tail), "stale" (unused, harmless)
    detail: str
    box: str | None = None
    uid: str | None = None


@dataclass(frozen=True)
class FsckReport:
    records_checked: int
    problems: list[Problem]

    @property
    def clean(self) -> bool:
        """No record in use fails its CRC (torn tails and stale copies are harmless)."""
        return all(p.what != "corrupt" for p in self.problems)


@dataclass
class _Msg:
    header: Header
    ok: bool
    # The payload CRC passed when this record was last read whole. Later reads check only
    # the header, so RETR reads a message once, not twice (see docs/storage.md).
    read_verified: bool = False


@dataclass
class _Extent:
    """A stretch of the log from head to tail, in order: a record, or an unreadable span."""

    position: int
    length: int
    seq: int  # message seq, or -1 (delete record, unreadable span)


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """The limits the store enforces: a small value, not a profile.

    A running device gives the store the limits of its *running* profile (so a `--set
    mailbox.quota_mib=...` for one run is enforced); an image opened offline uses the saved
    profile's (`Board.limits` until something else is set).
    """

    max_boxes: int  # mailbox.max_boxes
    max_messages: int  # mailbox.max_messages, per box
    quota_mib: int  # mailbox.quota_mib, per box
    compact_threshold_pct: int  # storage.compact_threshold_pct


def limits_of(profile: Profile) -> StoreLimits:
    """The store's limits as `profile` sets them."""
    return StoreLimits(
        max_boxes=profile.int("mailbox.max_boxes"),
        max_messages=profile.int("mailbox.max_messages"),
        quota_mib=profile.int("mailbox.quota_mib"),
        compact_threshold_pct=profile.int("storage.compact_threshold_pct"),
    )


@dataclass
class _BoxState:
    seqs: dict[int, None] = field(default_factory=dict)  # arrival order
    bytes: int = 0


def _no_pause() -> None:
    pass


class Board:
    """One open board image: the device's whole persistent state."""

    def __init__(self, image: Image, state: nv.Nvram) -> None:
        self._image = image
        self._state = state
        self._log = Log(image, state.log_head)
        self._msgs: dict[int, _Msg] = {}
        self._boxes: dict[int, _BoxState] = {}
        self._extents: deque[_Extent] = deque()
        self._live_bytes = 0
        self._next_seq = state.seq_floor
        self._problems: list[Problem] = []
        self._uid_tag = image.geometry.image_id[:4].hex()
        self.between_steps: Callable[[], None] = _no_pause
        """Called between the steps of a long operation (each compaction segment), with the
        board consistent: the store worker lets waiting readers in (firmware/store/worker.py)."""
        self._limits: StoreLimits | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: Path, profile: Profile, admin_password: str, *, size: int | None = None
    ) -> Board:
        """A new image: superblock, NVRAM with the profile and admin password, empty log."""
        path = Path(path)
        if size is None:
            size = profile.int("storage.flash_mib") * MiB
        # Every device leaves the factory with its own certificate, as real copiers do.
        from firmware.security.tls import device_certificate_settings  # cryptography: slow import

        certificate = device_certificate_settings(profile.str("identity.hostname"))
        settings = {k: v for k, v in certificate.items() if v is not None}
        state = nv.Nvram(profile=profile, admin=make_credentials(admin_password), settings=settings)
        image = Image.create(path, size, nv.encode(state))
        board = cls(image, state)
        board._replay(repair=True)
        return board

    @classmethod
    def open(cls, path: Path, *, repair: bool = True) -> Board:
        """Open, lock, check and replay an image.

        With `repair=False` (inspect, fsck) a torn tail is reported but left on flash; it is
        harmless either way, since the next append overwrites it.
        """
        path = Path(path)
        image, data = Image.open(path)
        try:
            board = cls(image, nv.decode(data, str(path)))
            board._replay(repair=repair)
        except BaseException:
            image.close()
            raise
        return board

    def close(self) -> None:
        self._image.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._image.path

    @property
    def image(self) -> Image:
        """The image file underneath (tests observe its writes through `image.trace`)."""
        return self._image

    @property
    def geometry(self) -> Geometry:
        return self._image.geometry

    @property
    def nvram_slots(self) -> tuple[int | None, int | None]:
        """The NVRAM sequence number in each slot (None: no valid generation)."""
        a, b = self._image.nvram_slots
        return a, b

    def _replay(self, *, repair: bool) -> None:
        started = time.monotonic()
        box_ids = {rec.box_id for rec in self._state.boxes.values()}
        self._boxes = {box_id: _BoxState() for box_id in box_ids}
        deleted: set[int] = set()
        max_seq = self._state.seq_floor - 1
        lost_seqs = 0  # how many records unreadable spans could have held: never reuse their seqs
        records, torn = self._log.replay()
        for item in records:
            header = item.header
            if header is None:
                self._extents.append(_Extent(item.position, item.length, -1))
                self._problems.append(
                    Problem(item.position, item.length, "corrupt", "unreadable record header")
                )
                lost_seqs += item.length // MIN_RECORD + 1
                continue
            max_seq = max(max_seq, header.seq)
            if header.kind == KIND_DELETE:
                self._extents.append(_Extent(item.position, item.length, -1))
                if not item.payload_ok:
                    self._problems.append(
                        Problem(item.position, item.length, "corrupt", "delete record fails CRC")
                    )
                for seq in item.deleted:
                    deleted.add(seq)
                    self._drop(seq)
                continue
            self._extents.append(_Extent(item.position, item.length, header.seq))
            if header.seq in deleted or header.box_id not in box_ids:
                continue
            previous = self._msgs.get(header.seq)
            if previous is None:
                self._index(header, item.payload_ok)
            elif item.payload_ok or not previous.ok:
                # A relocated copy: the later one wins, unless it is an interrupted copy of a
                # good record (compaction crashed before it synced; the original is intact).
                self._live_bytes += header.total - previous.header.total
                previous.header = header
                previous.ok = item.payload_ok
            else:
                self._problems.append(
                    Problem(
                        item.position,
                        item.length,
                        "stale",
                        "interrupted copy of a message whose original is intact",
                    )
                )
        for state in self._boxes.values():
            state.seqs = dict.fromkeys(sorted(state.seqs))
        for msg in self._msgs.values():
            if not msg.ok:
                h = msg.header
                self._problems.append(
                    Problem(
                        h.position,
                        h.total,
                        "corrupt",
                        "message payload fails CRC",
                        self._box_name(h.box_id),
                        self._uid(h.seq),
                    )
                )
        if torn is not None:
            lost_seqs += torn.length // MIN_RECORD + 1  # a flipped last header looks torn too
        self._next_seq = max_seq + 1 + lost_seqs
        for p in self._problems:
            log.warning(
                "%s: %s record at log offset %d (%d bytes): %s",
                self.path,
                p.what,
                p.position,
                p.length,
                p.detail,
            )
        if torn is not None:
            self._report_torn(torn, repair)
        log.debug(
            "%s: replayed %s in %.3f s",
            self.path,
            plural(len(records), "record"),
            time.monotonic() - started,
        )

    def _report_torn(self, torn: TornTail, repair: bool) -> None:
        log.warning(
            "%s: discarded a torn tail of %d bytes at log offset %d (an unacknowledged write)",
            self.path,
            torn.length,
            torn.position,
        )
        self._problems.append(
            Problem(torn.position, torn.length, "torn", "discarded unacknowledged tail")
        )
        if repair:
            self._log.erase_torn(torn)

    def _index(self, header: Header, ok: bool) -> None:
        self._msgs[header.seq] = _Msg(header, ok)
        box = self._boxes[header.box_id]
        box.seqs[header.seq] = None
        box.bytes += header.pop3_size
        self._live_bytes += header.total

    def _drop(self, seq: int) -> None:
        msg = self._msgs.pop(seq, None)
        if msg is None:
            return
        box = self._boxes.get(msg.header.box_id)
        if box is not None:
            box.seqs.pop(seq, None)
            box.bytes -= msg.header.pop3_size
        self._live_bytes -= msg.header.total

    # -- NVRAM: profile, admin, settings -------------------------------------------------------

    @property
    def profile(self) -> Profile:
        return self._state.profile

    def _commit(self, state: nv.Nvram) -> None:
        self._image.write_nvram(nv.encode(state))
        self._state = state

    @property
    def limits(self) -> StoreLimits:
        """The limits in force: set by the running device, else the saved profile's."""
        return self._limits if self._limits is not None else limits_of(self.profile)

    @limits.setter
    def limits(self, limits: StoreLimits | None) -> None:
        self._limits = limits

    def set_profile(self, profile: Profile) -> None:
        """Make `profile` the active profile (atomic NVRAM update)."""
        self._commit(self._state.evolve(profile=profile))

    def check_admin_password(self, password: str) -> bool:
        return verify_password(self._state.admin, password)

    def set_admin_password(self, password: str) -> None:
        if not password:
            raise DeviceError("the admin password must not be empty")
        self._commit(self._state.evolve(admin=make_credentials(password)))

    def settings(self) -> Mapping[str, str]:
        """Free key/value settings kept in NVRAM (e.g. TLS certificate and key PEM)."""
        return MappingProxyType(dict(self._state.settings))

    def set_setting(self, key: str, value: str | None) -> None:
        """Set (or with None remove) one setting."""
        self.set_settings({key: value})

    def set_settings(self, changes: Mapping[str, str | None]) -> None:
        """Set or remove (None) several settings in one atomic NVRAM update.

        A certificate and its key must change together: a power cut between two updates
        would leave a pair that does not match.
        """
        settings = dict(self._state.settings)
        for key, value in changes.items():
            if not key or len(key) > 200 or not key.isprintable():
                raise DeviceError(
                    f"setting name {key!r} is not allowed (1-200 printable characters)"
                )
            if value is None:
                settings.pop(key, None)
            else:
                settings[key] = value
        if settings != self._state.settings:
            self._commit(self._state.evolve(settings=settings))

    # -- boxes ---------------------------------------------------------------------------------

    def _box_name(self, box_id: int) -> str | None:
        for name, rec in self._state.boxes.items():
            if rec.box_id == box_id:
                return name
        return None

    def _box(self, name: str) -> tuple[nv.BoxRecord, _BoxState]:
        rec = self._state.boxes.get(name)
        if rec is None:
            raise BoxError(f"no box named {name!r}")
        return rec, self._boxes[rec.box_id]

    def box_names(self) -> list[str]:
        """The names of all boxes, sorted."""
        return sorted(self._state.boxes)

    def boxes(self) -> list[BoxInfo]:
        out = []
        for name, rec in sorted(self._state.boxes.items()):
            state = self._boxes[rec.box_id]
            out.append(
                BoxInfo(
                    name=name,
                    messages=len(state.seqs),
                    bytes=state.bytes,
                    has_legacy_secret=rec.credentials.legacy_secret is not None,
                    box_id=rec.box_id,
                    corrupt=sum(1 for s in state.seqs if not self._msgs[s].ok),
                )
            )
        return out

    def add_box(self, name: str, password: str, *, legacy: bool = False) -> None:
        check_box_name(name)
        if name in self._state.boxes:
            raise BoxError(f"box {name!r} already exists")
        limit = self.limits.max_boxes
        if len(self._state.boxes) >= limit:
            raise QuotaError(
                f"cannot add box {name!r}: the profile allows {plural(limit, 'box')} "
                "(mailbox.max_boxes) and all are in use"
            )
        if not password:
            raise DeviceError(f"the password of box {name!r} must not be empty")
        box_id = self._state.next_box_id
        boxes = dict(self._state.boxes)
        boxes[name] = nv.BoxRecord(box_id, make_credentials(password, legacy=legacy))
        self._commit(self._state.evolve(boxes=boxes, next_box_id=box_id + 1))
        self._boxes[box_id] = _BoxState()

    def delete_box(self, name: str, *, purge: bool = False) -> None:
        """Remove a box; refused while it holds messages unless `purge`."""
        rec, state = self._box(name)
        if state.seqs:
            if not purge:
                raise BoxError(
                    f"box {name!r} holds {plural(len(state.seqs), 'message')}; "
                    f"delete {'it' if len(state.seqs) == 1 else 'them'} first "
                    "or purge the box"
                )
            self._delete_seqs(list(state.seqs), rec.box_id)
        boxes = dict(self._state.boxes)
        del boxes[name]
        self._commit(self._state.evolve(boxes=boxes))
        del self._boxes[rec.box_id]

    def set_box_password(self, name: str, password: str, *, legacy: bool = False) -> None:
        rec, _ = self._box(name)
        if not password:
            raise DeviceError(f"the password of box {name!r} must not be empty")
        boxes = dict(self._state.boxes)
        boxes[name] = nv.BoxRecord(rec.box_id, make_credentials(password, legacy=legacy))
        self._commit(self._state.evolve(boxes=boxes))

    def box_credentials(self, name: str) -> Credentials | None:
        rec = self._state.boxes.get(name)
        return None if rec is None else rec.credentials

    # -- messages ------------------------------------------------------------------------------

    def _uid(self, seq: int) -> str:
        return f"{self._uid_tag}.{seq}"

    def _seq_of(self, box: str, uid: str) -> int:
        _, state = self._box(box)
        tag, _, number = uid.partition(".")
        if tag == self._uid_tag and number.isdigit():
            seq = int(number)
            if seq in state.seqs:
                return seq
        raise BoxError(f"box {box!r} holds no message with uid {uid!r}")

    def _info(self, msg: _Msg) -> MessageInfo:
        h = msg.header
        return MessageInfo(self._uid(h.seq), h.pop3_size, h.arrived, h.seq, not msg.ok)

    def messages(self, box: str) -> list[MessageInfo]:
        """The box's messages in arrival order."""
        _, state = self._box(box)
        return [self._info(self._msgs[seq]) for seq in state.seqs]

    def message(self, box: str, uid: str) -> MessageInfo:
        return self._info(self._msgs[self._seq_of(box, uid)])

    def deliver(self, box: str, message: bytes | bytearray | memoryview | BinaryIO) -> MessageInfo:
        """Store one message (durable on return); see docs/storage.md for the wire form.

        Bytes and seekable files are measured first, so compaction can make exactly the room
        needed; a stream that cannot seek (a pipe) is encoded straight into the log in one pass.
        """
        rec, state = self._box(box)
        limits = self.limits
        max_messages = limits.max_messages
        if len(state.seqs) >= max_messages:
            raise QuotaError(
                f"box {box!r} is full: it holds {plural(len(state.seqs), 'message')}, "
                f"the profile allows {max_messages} (mailbox.max_messages)"
            )
        quota_left = limits.quota_mib * MiB - state.bytes
        template = Header(0, KIND_MESSAGE, self._next_seq, 0, 0, rec.box_id, time.time())
        if isinstance(message, bytes | bytearray | memoryview) or _seekable(message):
            written = self._deliver_measured(box, message, quota_left, template)
        else:
            written = self._deliver_stream(box, message, quota_left, template)
        self._next_seq += 1
        self._extents.append(_Extent(written.position, written.total, written.seq))
        self._index(written, True)
        self._auto_compact()
        return self._info(self._msgs[written.seq])

    def _over_quota(self, box: str, new: int, quota_left: int) -> QuotaError:
        quota = self.limits.quota_mib
        return QuotaError(
            f"box {box!r} is over quota: {quota * MiB - quota_left} bytes stored + {new} bytes "
            f"new exceed {quota} MiB (mailbox.quota_mib)"
        )

    def _deliver_measured(
        self,
        box: str,
        message: bytes | bytearray | memoryview | BinaryIO,
        quota_left: int,
        template: Header,
    ) -> Header:
        source = _Source(message)
        measured = source.measure()
        if measured.pop3_size > quota_left:
            raise self._over_quota(box, measured.pop3_size, quota_left)
        header = replace(
            template,
            payload_len=measured.wire_size,
            pop3_size=measured.pop3_size,
            header_len=measured.header_len,
        )
        self._make_room(header.total + self._reserve(), "message")
        try:
            return self._log.append(header, source.wire_chunks())
        except ValueError as exc:
            raise DeviceError(f"the message changed while it was stored: {exc}") from None

    def _deliver_stream(
        self, box: str, stream: BinaryIO, quota_left: int, template: Header
    ) -> Header:
        enc = WireEncoder()

        def wire_chunks() -> Iterator[bytes]:
            while chunk := stream.read(CHUNK):
                out = enc.feed(bytes(chunk))
                if enc.pop3_size > quota_left:
                    raise self._over_quota(box, enc.pop3_size, quota_left)
                if out:
                    yield out
            out = enc.finish()
            if enc.pop3_size > quota_left:
                raise self._over_quota(box, enc.pop3_size, quota_left)
            if out:
                yield out

        def complete(length: int) -> Header:
            assert enc.header_len is not None and length == enc.wire_size
            return replace(
                template, payload_len=length, pop3_size=enc.pop3_size, header_len=enc.header_len
            )

        self._auto_compact()  # the size is unknown: start with the room the policy keeps free
        room = self._log.free - self._reserve()
        return self._log.append_unsized(wire_chunks(), room, complete)

    def read_wire(self, box: str, uid: str, chunk_size: int = 65536) -> Iterator[bytes]:
        """The stored wire bytes (dot-stuffed, CRLF, without ".\\r\\n"), in chunks.

        The CRC is checked before the iterator is returned, so a corrupt record raises
        CorruptRecordError here, before anything was sent.
        """
        seq = self._seq_of(box, uid)
        header = self._verified(box, uid, seq)
        return self._stream(seq, 0, header.payload_len, chunk_size)

    def read_top(self, box: str, uid: str, lines: int, chunk_size: int = 65536) -> Iterator[bytes]:
        """Headers, the blank line and the first `lines` body lines, wire form, in chunks."""
        seq = self._seq_of(box, uid)
        header = self._verified(box, uid, seq)
        head = self._stream(seq, 0, header.header_len, chunk_size)
        body = take_lines(
            self._stream(seq, header.header_len, header.payload_len, chunk_size), lines
        )
        return _chain(head, body)

    def wire_extents(
        self, box: str, uid: str, start: int = 0, end: int | None = None, *, check: bool = True
    ) -> list[tuple[int, int]]:
        """Where wire bytes [start, end) of a message lie in the image file, right now.

        (file offset, length) pieces in order: one, or two where the record wraps around the
        end of the ring. Checked as `read_wire` checks (CorruptRecordError, BoxError). Valid
        only until the next change to the board: a compaction may move the record, so a
        reader that yields in between must ask again (as `read_wire` does per chunk). Lets
        the POP3 server copy a message straight from the image file to a socket.

        `check=False` skips re-reading the record header from flash (~20 us): for the lookups
        that follow a checked read of the same message, as `read_wire`'s later chunks do.
        A removed message still raises BoxError, one known to be corrupt CorruptRecordError.
        """
        seq = self._seq_of(box, uid)
        if check:
            header = self._verified(box, uid, seq)
        else:
            msg = self._msgs[seq]
            if not msg.ok:
                raise CorruptRecordError(
                    f"message {uid} in box {box!r}: its record at log offset "
                    f"{msg.header.position} fails its CRC"
                )
            header = msg.header
        stop = header.payload_len if end is None else end
        if not 0 <= start <= stop <= header.payload_len:
            raise ValueError(
                f"wire range [{start}, {stop}) is outside message {uid} "
                f"({header.payload_len} wire bytes)"
            )
        geometry = self.geometry
        capacity = geometry.capacity
        logical = header.position + RECORD_HEADER_SIZE + start
        length = stop - start
        pieces: list[tuple[int, int]] = []
        while length > 0:
            at = logical % capacity
            n = min(length, capacity - at)
            pieces.append((geometry.data_offset + at, n))
            logical += n
            length -= n
        return pieces

    def _verified(self, box: str, uid: str, seq: int) -> Header:
        msg = self._msgs[seq]
        if msg.ok:
            try:
                on_flash = self._log.header_at(msg.header.position)
            except CorruptRecordError:
                on_flash = None
            if on_flash != msg.header:
                msg.ok = False
            elif not msg.read_verified:
                msg.ok = msg.read_verified = self._log.verify(msg.header)
        if not msg.ok:
            raise CorruptRecordError(
                f"message {uid} in box {box!r}: its record at log offset "
                f"{msg.header.position} fails its CRC"
            )
        return msg.header

    def _stream(self, seq: int, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
        # Look the record up again for every chunk: compaction may move it between chunks.
        chunk_size = max(1, min(chunk_size, CHUNK))
        at = start
        while at < end:
            msg = self._msgs.get(seq)
            if msg is None:
                raise BoxError(f"message {self._uid(seq)} was removed while being read")
            n = min(chunk_size, end - at)
            yield self._image.read(msg.header.position + RECORD_HEADER_SIZE + at, n)
            at += n

    def delete(self, box: str, uids: Collection[str]) -> None:
        """Remove messages in one atomic, durable record (one POP3 session's QUIT)."""
        rec, _ = self._box(box)
        seqs = sorted({self._seq_of(box, uid) for uid in uids})
        if not seqs:
            return
        self._delete_seqs(seqs, rec.box_id)
        self._auto_compact()

    def _delete_seqs(self, seqs: list[int], box_id: int) -> None:
        payload = encode_delete(seqs)
        header = Header(
            0, KIND_DELETE, self._next_seq, len(payload), 0, box_id=box_id, arrived=time.time()
        )
        self._make_room(header.total, "deletion")
        written = self._log.append(header, [payload])
        self._next_seq += 1
        self._extents.append(_Extent(written.position, written.total, -1))
        for seq in seqs:
            self._drop(seq)

    # -- space -----------------------------------------------------------------------------------

    def usage(self) -> Usage:
        used = self._log.used
        return Usage(
            total=self._log.capacity,
            used=used,
            free=self._log.free,
            reclaimable=used - self._live_bytes,
            live=self._live_bytes,
        )

    def _reserve(self) -> int:
        """Room kept back from messages so that deletions can always be recorded."""
        return align(min(64 * 1024, max(4096, self._log.capacity // 64)))

    def _make_room(self, needed: int, what: str) -> None:
        if self._log.free >= needed:
            return
        reclaimable = self._log.used - self._live_bytes
        if reclaimable > 0 and self._log.free + reclaimable >= needed:
            self._compact(target_free=needed)
        if self._log.free < needed:
            raise StorageFullError(
                f"storage full: the {what} needs {needed} bytes, {self._log.free} are free "
                f"of {self._log.capacity} ({self._log.used - self._live_bytes} reclaimable); "
                "nothing was stored"
            )

    def _auto_compact(self) -> None:
        """Compact when free space falls below storage.compact_threshold_pct."""
        capacity = self._log.capacity
        threshold = capacity * self.limits.compact_threshold_pct // 100
        reclaimable = self._log.used - self._live_bytes
        if self._log.free < threshold and reclaimable >= min(
            self.geometry.block_size, capacity // 100
        ):
            self._compact(target_free=threshold)

    def compact(self) -> CompactReport:
        """Copy live records forward and erase everything before them, block by block."""
        return self._compact(target_free=None)

    def _compact(self, target_free: int | None) -> CompactReport:
        started = time.monotonic()
        used_before = self._log.used
        moved_records = moved_bytes = 0
        stop = self._log.tail
        # Segments of several erase blocks: fewer NVRAM commits, same crash safety.
        block = max(self.geometry.block_size, min(4 * MiB, self._log.capacity // 16))
        while self._extents and self._log.head < stop:
            if target_free is not None and self._log.free >= target_free:
                break
            # One segment: whole records from the head covering at least one erase block.
            head = self._log.head
            count = 0
            end = head
            live: list[Header] = []
            live_bytes = 0
            for ext in self._extents:
                if ext.position >= stop or (count and end - head >= block):
                    break
                msg = self._msgs.get(ext.seq) if ext.seq >= 0 else None
                if msg is not None and msg.header.position == ext.position:
                    if live_bytes + ext.length > self._log.free:
                        break  # no room to copy this one forward (yet)
                    live.append(msg.header)
                    live_bytes += ext.length
                count += 1
                end = ext.position + ext.length
            if not count:
                break  # stalled: the record at the head is live and larger than free space
            moved: list[Header] = []
            for h in live:
                moved.append(self._log.relocate(h))
            if moved:
                self._image.sync()  # copies are durable before the head moves past originals
            self._commit(self._state.evolve(log_head=end, seq_floor=self._next_seq))
            self._log.head = end
            for _ in range(count):
                self._extents.popleft()
            for h in moved:
                self._msgs[h.seq].header = h
                self._extents.append(_Extent(h.position, h.total, h.seq))
            self._image.erase(head, end - head)
            moved_records += len(moved)
            moved_bytes += sum(h.total for h in moved)
            self.between_steps()
        self._problems = [p for p in self._problems if p.position >= self._log.head]
        return CompactReport(
            records_moved=moved_records,
            bytes_moved=moved_bytes,
            bytes_reclaimed=used_before - self._log.used,
            seconds=time.monotonic() - started,
        )

    # -- checking --------------------------------------------------------------------------------

    def problems(self) -> list[Problem]:
        """Corrupt and torn records found since the image was opened."""
        return list(self._problems)

    def fsck(self) -> FsckReport:
        """Re-read every record in the log and verify its CRC."""
        checked = 0
        problems = [p for p in self._problems if p.what == "torn"]
        for ext in self._extents:
            try:
                header = self._log.header_at(ext.position)
            except CorruptRecordError as exc:
                problems.append(Problem(ext.position, ext.length, "corrupt", str(exc)))
                continue
            checked += 1
            if self._log.verify(header):
                continue
            msg = self._msgs.get(header.seq) if header.kind == KIND_MESSAGE else None
            if msg is not None and msg.header.position == header.position:
                msg.ok = False
                problems.append(
                    Problem(
                        ext.position,
                        header.total,
                        "corrupt",
                        "message payload fails CRC",
                        self._box_name(header.box_id),
                        self._uid(header.seq),
                    )
                )
            elif header.kind == KIND_MESSAGE:
                problems.append(
                    Problem(
                        ext.position,
                        header.total,
                        "stale",
                        "a record no longer in use fails its CRC (reclaimed by compaction)",
                    )
                )
            else:
                problems.append(
                    Problem(
                        ext.position,
                        header.total,
                        "corrupt",
                        f"{kind_name(header.kind)} record payload fails CRC",
                    )
                )
        return FsckReport(checked, problems)


@dataclass(frozen=True)
class _Measured:
    pop3_size: int
    wire_size: int
    header_len: int


class _Source:
    """A message given as bytes or a seekable file: measured in one pass, stored in a second."""

    def __init__(self, message: bytes | bytearray | memoryview | BinaryIO) -> None:
        self._bytes: bytes | None = None
        self._file: BinaryIO | None = None
        self._start = 0
        if isinstance(message, bytes | bytearray | memoryview):
            self._bytes = bytes(message)
        else:
            self._file = message
            self._start = message.tell()
        self._measured: _Measured | None = None

    def _raw_chunks(self) -> Iterator[bytes]:
        if self._bytes is not None:
            for at in range(0, len(self._bytes), CHUNK):
                yield self._bytes[at : at + CHUNK]
            return
        assert self._file is not None
        self._file.seek(self._start)
        while chunk := self._file.read(CHUNK):
            yield bytes(chunk)

    def measure(self) -> _Measured:
        enc = WireEncoder()
        for chunk in self._raw_chunks():
            enc.feed(chunk)
        enc.finish()
        assert enc.header_len is not None
        self._measured = _Measured(enc.pop3_size, enc.wire_size, enc.header_len)
        return self._measured

    def wire_chunks(self) -> Iterator[bytes]:
        enc = WireEncoder()
        for chunk in self._raw_chunks():
            out = enc.feed(chunk)
            if out:
                yield out
        tail = enc.finish()
        if tail:
            yield tail
        if self._measured != _Measured(enc.pop3_size, enc.wire_size, enc.header_len or 0):
            raise ValueError("second pass differs from the first")


def _seekable(f: BinaryIO) -> bool:
    try:
        return bool(f.seekable()) and isinstance(f.tell(), int)
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def _chain(*parts: Iterator[bytes]) -> Iterator[bytes]:
    for part in parts:
        yield from part
