"""The open board image as the device sees it: boxes, credentials, settings, messages.

`Board` is a thin facade over one open image (firmware.flash.image); each job has its module:

- firmware.store.index: the in-memory index, rebuilt at boot by replaying the log;
- firmware.store.space: usage, making room and compaction;
- firmware.store.fsck: re-reading every record against its CRC;
- firmware.store.delivery (with .source): writing a message within its box's quota;
- firmware.store.reader: reading a message, checked, in chunks or as file extents;
- firmware.store.log and firmware.store.wire: records and the wire form on flash;
- firmware.store.info: the values handed out (BoxInfo, Usage, Problem, StoreLimits, ...).

The facade keeps the NVRAM side (boxes, credentials, settings, the profile text) and the
order of each operation: check limits, write, index, compact.

Configuration lives in NVRAM (firmware.flash.nvram), written whole and atomically; the profile
is kept as its TOML text, which the store does not read (firmware.device.boards turns it into
a Profile). The store enforces a `StoreLimits` value set by whoever opened it. Every change is
durable before the method returns. The board is used from one thread.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import BinaryIO

from firmware.errors import BoxError, DeviceError, QuotaError
from firmware.flash import nvram as nv
from firmware.flash.image import Geometry, Image
from firmware.security.credentials import Credentials, make_credentials, verify_password
from firmware.store import checkpoint as _checkpoint
from firmware.store import tray as _tray
from firmware.store.delivery import write_measured, write_stream
from firmware.store.fsck import fsck as check_log
from firmware.store.index import BoxState, Extent, Index, replay
from firmware.store.info import (
    BOX_NAME_MAX,
    MIN_RECORD,
    BoxInfo,
    CompactReport,
    FsckReport,
    Listing,
    MessageInfo,
    MiB,
    Problem,
    StoreLimits,
    Usage,
    check_box_name,
)
from firmware.store.log import KIND_DELETE, KIND_MESSAGE, Header, Log, encode_delete
from firmware.store.pace import give_way
from firmware.store.reader import Reader
from firmware.store.source import seekable
from firmware.store.space import Space
from firmware.text import plural

log = logging.getLogger(__name__)

__all__ = [
    "BOX_NAME_MAX",
    "MIN_RECORD",
    "Board",
    "BoxInfo",
    "CompactReport",
    "FsckReport",
    "Listing",
    "MessageInfo",
    "MiB",
    "Problem",
    "StoreLimits",
    "Usage",
    "check_box_name",
]


def _record(creds: Credentials) -> nv.CredentialRecord:
    return nv.CredentialRecord(
        creds.salt, creds.iterations, creds.stored_key, creds.server_key, creds.legacy_secret
    )


def _credentials(rec: nv.CredentialRecord) -> Credentials:
    return Credentials(rec.salt, rec.iterations, rec.stored_key, rec.server_key, rec.legacy_secret)


def _no_pause() -> None:
    pass


class Board:
    """One open board image: the device's whole persistent state."""

    def __init__(self, image: Image, state: nv.Nvram) -> None:
        self._image = image
        self._state = state
        self._log = Log(image, state.log_head)
        self._index = Index(image.geometry.image_id[:4].hex(), state.seq_floor)
        self._limits: StoreLimits | None = None
        self._writable = True  # False when opened with repair=False (inspect, fsck)
        self._closed = False
        self.between_steps: Callable[[], None] = _no_pause
        self.before_deliver: Callable[[str], None] | None = None
        """Called with the box before each delivery is stored; what it raises refuses the
        delivery (the device's flash-full and power-cut faults, docs/faults.md)."""
        """Called between the steps of a long operation (each compaction segment), with the
        board consistent: the store worker lets waiting readers in (firmware/store/worker.py)."""
        self._space = Space(
            self._log,
            image,
            self._index,
            self._move_anchor,
            lambda: self.limits,
            lambda: self.between_steps(),
        )
        self._reader = Reader(self._log, image, self._index)

    # -- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        profile_toml: str,
        admin_password: str,
        *,
        size: int,
        settings: Mapping[str, str] | None = None,
    ) -> Board:
        """A new image of `size` bytes: superblock, NVRAM, empty log.

        NVRAM holds `profile_toml` as given (the store does not read it), the admin password's
        credentials and `settings` (a new device's certificate: the caller makes it, see
        firmware.device.boards.create_board). ImageError if the file cannot be made.
        """
        if not isinstance(profile_toml, str):
            raise TypeError(
                "Board.create takes the profile as TOML text; "
                "firmware.device.boards.create_board takes a Profile"
            )
        path = Path(path)
        state = nv.Nvram(
            profile_toml=profile_toml,
            admin=_record(make_credentials(admin_password)),
            settings=dict(settings or {}),
        )
        image = Image.create(path, size, nv.encode(state))
        board = cls(image, state)
        board._replay(repair=True)
        return board

    @classmethod
    def open(cls, path: Path, *, repair: bool = True) -> Board:
        """Open, lock, check and replay an image.

        With `repair=False` (inspect, fsck) a torn tail is reported but left on flash; it is
        harmless either way, since the next append overwrites it. The store's limits are unset
        until the opener sets `limits` (firmware.device.boards.open_board does).
        """
        path = Path(path)
        image, data = Image.open(path)
        try:
            board = cls(image, nv.decode(data, str(path)))
            board._writable = repair
            board._replay(repair=repair)
        except BaseException:
            image.close()
            raise
        return board

    def close(self) -> None:
        """Write an index checkpoint if one is due (firmware/store/checkpoint.py), then release
        the image. A checkpoint that cannot be written is logged and skipped: the next boot
        walks the log instead."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._writable:
                self.checkpoint()
        finally:
            self._image.close()

    def abandon(self) -> None:
        """Let go of the image as a process that dies would: no checkpoint, no write of any
        kind (the device's power cut, firmware/device/device.py)."""
        if not self._closed:
            self._closed = True
            self._image.close()

    def checkpoint(self, *, force: bool = False) -> bool:
        """Save the index to flash so the next boot walks only the log after it.

        Done when the store holds at least MIN_MESSAGES messages, knows of no problem, and
        the log after the checkpoint in force holds at least MIN_TAIL records (and 2 % of
        the messages), so a `dpfw` command that changes one message does not rewrite it;
        `force` skips the size rules. Two durable steps: the
        record (fsync), then the NVRAM pointer (atomic). True if one was written.
        """
        index = self._index
        due = force or len(index.msgs) >= _checkpoint.MIN_MESSAGES
        current = self._state.checkpoint
        if not due or index.problems or index.bad:
            return False
        if current is not None and not force:
            ext = index.extents
            since = len(ext._pos) - bisect_right(ext._pos, current)  # records after it
            if since < max(_checkpoint.MIN_TAIL, len(index.msgs) // 50):
                return False  # its tail is still short to walk: keep the one in force
        try:
            room = self._log.free - self._space.reserve()
            written = _checkpoint.write(self._log, index, self._log.head, room)
            self._commit(self._state.evolve(checkpoint=written.position))
        except DeviceError as exc:
            log.warning("%s: no index checkpoint written: %s", self.path, exc)
            return False
        return True

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
        # repair=True is a boot: headers and the payloads boot needs are checked, from the
        # index checkpoint when there is a good one; repair=False (inspect, fsck) walks the
        # whole log and checks every payload as well (docs/storage.md, "Boot").
        box_ids = {rec.box_id for rec in self._state.boxes.values()} | {_tray.TRAY_BOX_ID}
        index = None
        if repair and self._state.checkpoint is not None:
            index = _checkpoint.replay_from(
                self._log,
                self._state.checkpoint,
                self._state.log_head,
                box_ids,
                self._state.seq_floor,
                self._index.uid_tag,
                self._box_name,
                path=self.path,
            )
        if index is None:
            index = replay(
                self._log,
                box_ids,
                self._state.seq_floor,
                self._index.uid_tag,
                self._box_name,
                path=self.path,
                repair=repair,
            )
        self._index = index
        self._space.index = self._reader.index = self._index

    # -- NVRAM: profile text, admin, settings ----------------------------------------------------

    def _commit(self, state: nv.Nvram) -> None:
        self._image.write_nvram(nv.encode(state))
        self._state = state

    def _move_anchor(self, log_head: int, seq_floor: int) -> None:
        # The checkpoint was made at the old head: a boot must not use it any more.
        self._commit(self._state.evolve(log_head=log_head, seq_floor=seq_floor, checkpoint=None))

    @property
    def profile_toml(self) -> str:
        """The saved profile as NVRAM keeps it (TOML text; firmware.config reads it)."""
        return self._state.profile_toml

    def set_profile_toml(self, text: str) -> None:
        """Save a profile's TOML text as the active profile (atomic NVRAM update)."""
        self._commit(self._state.evolve(profile_toml=text))

    def refit_profile_toml(self, text: str) -> None:
        """Replace the profile text in memory only; the next NVRAM update writes it.

        For a profile fitted to this firmware's schema at open (firmware.device.boards): the
        image is not written just for that (an `inspect` writes nothing), but the fitted text
        rides along with the next change, as it always has.
        """
        self._state = self._state.evolve(profile_toml=text)

    @property
    def limits(self) -> StoreLimits:
        """The limits in force; DeviceError until the opener set them."""
        if self._limits is None:
            raise DeviceError(
                f"{self.path}: the store's limits are not set "
                "(open images through firmware.device.boards.open_board)"
            )
        return self._limits

    @limits.setter
    def limits(self, limits: StoreLimits | None) -> None:
        self._limits = limits

    def check_admin_password(self, password: str) -> bool:
        return verify_password(self._state.admin, password)

    def set_admin_password(self, password: str) -> None:
        if not password:
            raise DeviceError("the admin password must not be empty")
        self._commit(self._state.evolve(admin=_record(make_credentials(password))))

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

    def _box(self, name: str) -> tuple[nv.BoxRecord, BoxState]:
        rec = self._state.boxes.get(name)
        if rec is None:
            raise BoxError(f"no box named {name!r}")
        return rec, self._index.boxes[rec.box_id]

    def box_names(self) -> list[str]:
        """The names of all boxes, sorted."""
        return sorted(self._state.boxes)

    def boxes(self) -> list[BoxInfo]:
        out = []
        for name, rec in sorted(self._state.boxes.items()):
            state = self._index.boxes[rec.box_id]
            out.append(
                BoxInfo(
                    name=name,
                    messages=len(state.seqs),
                    bytes=state.bytes,
                    has_legacy_secret=rec.credentials.legacy_secret is not None,
                    box_id=rec.box_id,
                    corrupt=self._index.corrupt_in(state),
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
        boxes[name] = nv.BoxRecord(box_id, _record(make_credentials(password, legacy=legacy)))
        self._commit(self._state.evolve(boxes=boxes, next_box_id=box_id + 1))
        self._index.boxes[box_id] = BoxState()

    def delete_box(self, name: str, *, purge: bool = False) -> None:
        """Remove a box; refused while it holds messages unless `purge`."""
        rec, state = self._box(name)
        if state.seqs:
            if not purge:
                raise BoxError(
                    f"box {name!r} holds {plural(len(state.seqs), 'message')}; "
                    f"delete {'it' if len(state.seqs) == 1 else 'them'} first "
                    "or delete the box together with them (purge)"
                )
            self._delete_seqs(list(state.seqs), rec.box_id)
        boxes = dict(self._state.boxes)
        del boxes[name]
        self._commit(self._state.evolve(boxes=boxes))
        del self._index.boxes[rec.box_id]

    def set_box_password(self, name: str, password: str, *, legacy: bool = False) -> None:
        rec, _ = self._box(name)
        if not password:
            raise DeviceError(f"the password of box {name!r} must not be empty")
        boxes = dict(self._state.boxes)
        boxes[name] = nv.BoxRecord(rec.box_id, _record(make_credentials(password, legacy=legacy)))
        self._commit(self._state.evolve(boxes=boxes))

    def room_left(self, name: str) -> int:
        """POP3 octets box `name` may still take under mailbox.quota_mib (negative if over);
        BoxError if there is no such box. A hint for work that would end in a delivery (a
        scan job refuses early): `deliver` checks the quota itself."""
        _, state = self._box(name)
        return self.limits.quota_mib * MiB - state.bytes

    def box_credentials(self, name: str) -> Credentials | None:
        rec = self._state.boxes.get(name)
        return None if rec is None else _credentials(rec.credentials)

    # -- messages ------------------------------------------------------------------------------

    def _uid(self, seq: int) -> str:
        return self._index.uid(seq)

    def _seq_of(self, box: str, uid: str) -> int:
        return self._seqs_of(box, (uid,))[0]

    def _seqs_of(self, box: str, uids: Iterable[str]) -> list[int]:
        """The seqs of a box's messages by uid (BoxError naming the first unknown one)."""
        _, state = self._box(box)
        tag = self._index.uid_tag
        seqs = state.seqs
        found: list[int] = []
        for uid in uids:
            give_way()  # a QUIT may name 10,000 messages
            prefix, _, number = uid.partition(".")
            if prefix == tag and number.isascii() and number.isdigit():
                seq = int(number)
                if seq in seqs:
                    found.append(seq)
                    continue
            raise BoxError(f"box {box!r} holds no message with uid {uid!r}")
        return found

    def messages(self, box: str) -> list[MessageInfo]:
        """The box's messages in arrival order."""
        _, state = self._box(box)
        info = self._index.info
        return [info(seq) for seq in state.seqs]

    def listing(self, box: str) -> Listing:
        """The box's messages in arrival order, as a compact snapshot (a POP3 maildrop).

        A `Sequence` of (uid, size, seq) items made on demand from two arrays copied at the
        call (16 bytes a message, microseconds for 100,000 messages); `uids` and `sizes` give
        the columns without making an item per message. BoxError if there is no such box.
        """
        _, state = self._box(box)
        seqs, sizes = state.seqs.snapshot()
        return Listing(self._index.uid_tag, seqs, sizes)

    def iter_messages(self, box: str) -> Iterator[MessageInfo]:
        """The box's messages in arrival order, one `MessageInfo` at a time (bounded memory:
        a snapshot of the seqs, 8 bytes a message); messages removed meanwhile are skipped."""
        _, state = self._box(box)
        seqs, _ = state.seqs.snapshot()
        for seq in seqs:
            if seq in self._index.msgs:
                yield self._index.info(seq)

    def message(self, box: str, uid: str) -> MessageInfo:
        return self._index.info(self._seq_of(box, uid))

    def deliver(self, box: str, message: bytes | bytearray | memoryview | BinaryIO) -> MessageInfo:
        """Store one message (durable on return); see docs/storage.md for the wire form.

        Bytes and seekable files are measured first, so compaction can make exactly the room
        needed; a stream that cannot seek (a pipe) is encoded straight into the log in one pass.
        """
        if self.before_deliver is not None:
            self.before_deliver(box)
        rec, state = self._box(box)
        limits = self.limits
        max_messages = limits.max_messages
        if len(state.seqs) >= max_messages:
            raise QuotaError(
                f"box {box!r} is full: it holds {plural(len(state.seqs), 'message')}, "
                f"the profile allows {max_messages} (mailbox.max_messages)"
            )
        quota_left = limits.quota_mib * MiB - state.bytes
        template = Header(0, KIND_MESSAGE, self._index.next_seq, 0, 0, rec.box_id, time.time())
        if isinstance(message, bytes | bytearray | memoryview) or seekable(message):
            write = write_measured
        else:
            write = write_stream  # type: ignore[assignment]  # a BinaryIO that cannot seek
        written = write(
            self._log, self._space, box, message, quota_left, limits.quota_mib, template
        )
        self._index.next_seq += 1
        self._index.extents.append(Extent(written.position, written.total, written.seq))
        self._index.add(written, True)
        self._auto_compact()
        return self._index.info(written.seq)

    def read_wire(self, box: str, uid: str, chunk_size: int = 65536) -> Iterator[bytes]:
        """The stored wire bytes (dot-stuffed, CRLF, without ".\\r\\n"), in chunks.

        The CRC is checked before the iterator is returned, so a corrupt record raises
        CorruptRecordError here, before anything was sent.
        """
        return self._reader.wire(box, uid, self._seq_of(box, uid), chunk_size)

    def read_top(self, box: str, uid: str, lines: int, chunk_size: int = 65536) -> Iterator[bytes]:
        """Headers, the blank line and the first `lines` body lines, wire form, in chunks."""
        return self._reader.top(box, uid, self._seq_of(box, uid), lines, chunk_size)

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
        return self._reader.extents(box, uid, seq, start, end, check=check)

    def delete(self, box: str, uids: Collection[str]) -> None:
        """Remove messages in one atomic, durable record (one POP3 session's QUIT)."""
        rec, _ = self._box(box)
        seqs = sorted(set(self._seqs_of(box, uids)))
        if not seqs:
            return
        self._delete_seqs(seqs, rec.box_id)
        self._auto_compact()

    def delete_many(
        self, requests: Sequence[tuple[str, Collection[str]]]
    ) -> list[DeviceError | None]:
        """Several sessions' deletions in one atomic, durable record: a group commit.

        `requests` are (box, uids) pairs, e.g. the QUITs of concurrent POP3 sessions; the
        result has one entry per request: None if its messages are removed, or the error that
        refused it alone (an unknown box or uid: BoxError), in which case it removed nothing.
        The accepted ones share one delete record and one fsync (replay drops a record's
        sequence numbers whatever their box), so each is as atomic and as durable as by
        `delete`. If that record cannot be written, this raises and removes nothing at all.
        """
        results: list[DeviceError | None] = []
        seqs: set[int] = set()
        box_id: int | None = None
        for box, uids in requests:
            try:
                rec, _ = self._box(box)
                mine = set(self._seqs_of(box, uids))
            except DeviceError as exc:
                results.append(exc)
                continue
            results.append(None)
            if mine:
                seqs |= mine
                box_id = rec.box_id if box_id is None else box_id
        if seqs and box_id is not None:
            self._delete_seqs(sorted(seqs), box_id)
            self._auto_compact()
        return results

    def _delete_seqs(self, seqs: list[int], box_id: int) -> None:
        payload = encode_delete(seqs)
        seq = self._index.next_seq
        header = Header(0, KIND_DELETE, seq, len(payload), 0, box_id=box_id, arrived=time.time())
        self._make_room(header.total, "deletion")
        written = self._log.append(header, [payload])
        self._index.next_seq += 1
        self._index.extents.append(Extent(written.position, written.total, -1))
        self._index.drop_many(seqs)

    # -- the output tray (Internet Fax, firmware.store.tray) --------------------------------------

    def tray(self) -> list[_tray.TrayEntry]:
        """The tray's documents, oldest first (from the index: no flash read)."""
        return _tray.entries(self._index)

    def tray_print(self, meta: Mapping[str, object], document: bytes) -> _tray.TrayEntry:
        """Store one tray document, durable (fsync) before it returns; StorageFullError if not."""
        payload, meta_len = _tray.encode(dict(meta), document)
        written = _tray.write(self._log, self._space, self._index, payload, meta_len)
        self._auto_compact()
        return next(e for e in self.tray() if e.seq == written.seq)

    def tray_read(self, seq: int) -> tuple[dict[str, object], bytes]:
        """A tray document's description and bytes, CRC-checked (CorruptRecordError)."""
        return _tray.read(self._log, self._index, seq)

    def tray_clear(self) -> int:
        """Remove every tray document in one atomic record; how many were removed."""
        seqs = [e.seq for e in self.tray()]
        if seqs:
            self._delete_seqs(seqs, _tray.TRAY_BOX_ID)
            self._auto_compact()
        return len(seqs)

    # -- space -----------------------------------------------------------------------------------

    def usage(self) -> Usage:
        return self._space.usage()

    def _reserve(self) -> int:
        return self._space.reserve()

    def _make_room(self, needed: int, what: str) -> None:
        self._space.make_room(needed, what)

    def _auto_compact(self) -> None:
        """Compact after a committed operation when free space is low (space.py).

        The operation is durable by now, so a compaction that fails (an I/O error, the disk
        under the image full) must not be reported as the operation's failure: a QUIT was
        answered "-ERR no messages removed" although its deletions were committed, and an
        acknowledged-as-failed delivery was stored. It is logged; the next operation (or the
        console's `compact`) tries again, and compaction is crash-safe at every step.
        """
        try:
            self._space.auto_compact()
        except DeviceError as exc:
            log.warning("automatic compaction stopped: %s", exc)

    def compact(self) -> CompactReport:
        """Copy live records forward and erase everything before them, block by block."""
        return self._space.compact(target_free=None)

    # -- checking --------------------------------------------------------------------------------

    def problems(self) -> list[Problem]:
        """Corrupt and torn records found since the image was opened."""
        return list(self._index.problems)

    def fsck(self) -> FsckReport:
        """Re-read every record in the log and verify its CRC."""
        return check_log(self._log, self._index, self._box_name)
