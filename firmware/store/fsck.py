"""fsck: re-read every record of the log and verify its CRC against the index.

Read-only on flash; it marks a stored message whose payload no longer checks out as corrupt in
the index, so later reads refuse it (CorruptRecordError) rather than send damaged mail.
"""

from __future__ import annotations

from firmware.errors import CorruptRecordError
from firmware.store.index import BoxNames, Index
from firmware.store.info import FsckReport, Problem
from firmware.store.log import KIND_MESSAGE, KIND_TRAY, Log, kind_name
from firmware.store.pace import give_way


def fsck(the_log: Log, index: Index, box_names: BoxNames) -> FsckReport:
    """Check each record from head to tail; torn tails found at boot are reported again.

    Problems: "corrupt" (an unreadable header, a stored message or delete record failing its
    CRC; tray records count as stored messages), "stale" (a record no longer in use fails
    its CRC: compaction reclaims it).
    """
    checked = 0
    problems = [p for p in index.problems if p.what == "torn"]
    for ext in index.extents:
        give_way()  # two preads a record: a console fsck must not starve the event loop
        try:
            header = the_log.header_at(ext.position)
        except CorruptRecordError as exc:
            problems.append(Problem(ext.position, ext.length, "corrupt", str(exc)))
            continue
        checked += 1
        if the_log.verify(header):
            continue
        stored = header.kind in (KIND_MESSAGE, KIND_TRAY)
        msg = index.msgs.get(header.seq) if stored else None
        if msg is not None and msg.header.position == header.position:
            msg.ok = False
            problems.append(index.corrupt_problem(header, box_names))
        elif stored:
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
