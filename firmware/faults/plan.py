"""The fault plan: the active faults of one device, trigger matching, fire counts, the seed.

The POP3 service and the device ask the plan at a few points (docs/faults.md): a session was
accepted, a TLS handshake starts, a command arrived, a login succeeded, a body is about to
go, a delivery or a scan is about to be stored. Each question is `fire(point, where)`; the
answer is the faults that fire there (usually none). `active` is false while no fault can
fire, so a device without faults pays one attribute check per point.

Repeatable: the plan's `random.Random(seed)` is drawn only for a fault with a `probability`
and only once every other trigger matched, so the same seed and the same sequence of events
fire the same faults. Every firing becomes a `FaultEvent`, handed to each subscriber
(`subscribe`): the fault log (firmware/faults/log.py), the report card's grader.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware.errors import DeviceError
from firmware.faults.log import log_fired
from firmware.faults.spec import ACTIONS, FaultSpec, Point

log = logging.getLogger(__name__)

SCAN = "SCAN"
"""`Where.command` of a delivery that stores a scan (DELIVER: any other delivery)."""
DELIVER = "DELIVER"


@dataclass(frozen=True, slots=True)
class Where:
    """The event a point reports. `box`: the box logged in to, or the USER name before a
    login (None if neither); `command`: the command keyword (None before any);
    `nth_session`: the session's number among those accepted while faults were set (0: it
    began before); `nth_command`: its command lines so far, this one included."""

    session: int | None = None
    peer: str | None = None
    box: str | None = None
    command: str | None = None
    nth_session: int = 0
    nth_command: int = 0
    message: int | None = None  # RETR/TOP's message number


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One firing: which fault, what it did, to which session. `time`: epoch seconds."""

    fault: int
    action: str
    time: float
    session: int | None = None
    peer: str | None = None
    box: str | None = None
    command: str | None = None
    code: str | None = None
    """reply-error's response code ("SYS/TEMP", "IN-USE", ...); None for other actions."""
    cert: str | None = None
    """tls-fail's bad certificate ("expired", "wrong-name"); None for abort and other
    actions (the report card grades these as certificate faults)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "action": self.action,
            "time": self.time,
            "session": self.session,
            "peer": self.peer,
            "box": self.box,
            "command": self.command,
            "code": self.code,
            "cert": self.cert,
        }


class Fault:
    """One active fault: its id, its spec, how often it fired, how often it still may."""

    __slots__ = ("added", "fired", "id", "kept", "remaining", "session_base", "spec")

    def __init__(self, fault_id: int, spec: FaultSpec, added: float, session_base: int) -> None:
        self.id = fault_id
        self.spec = spec
        self.added = added  # the plan's clock (monotonic seconds)
        self.session_base = session_base
        self.fired = 0
        self.remaining: int | None = spec.triggers.get("times")
        self.kept: object = None
        """What the adapter made for this fault once (tls-fail: its SSLContext)."""

    @property
    def live(self) -> bool:
        """True while the fault may still fire (its `times` are not used up)."""
        return self.remaining is None or self.remaining > 0

    @property
    def action(self) -> str:
        return self.spec.action

    @property
    def params(self) -> dict[str, Any]:
        return self.spec.params


class FaultPlan:
    """One device's faults. `seed`: the random generator's seed (None: from the OS);
    `clock`: monotonic seconds, for `after_s`; `wall`: epoch seconds, for the records."""

    def __init__(
        self,
        seed: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        log_events: bool = True,
    ) -> None:
        self.active = False
        self.seed = seed
        self._random = random.Random(seed)
        self._clock = clock
        self._wall = wall
        self._faults: dict[int, Fault] = {}
        self._next_id = 1
        self._sessions = 0
        self._subscribers: list[Callable[[FaultEvent], None]] = []
        if log_events:
            self._subscribers.append(log_fired)
        self.fired_by_action: dict[str, int] = {}
        """Firings by action since the device started, for /metrics."""
        self.events: list[FaultEvent] = []
        """Every firing, oldest first (at most MAX_EVENTS kept)."""
        self.hidden: dict[str, set[str]] = {}
        """box -> uids that `vanish` hid from later sessions (while the fault is set)."""
        self.on_change: Callable[[], None] | None = None
        """Called after every add or clear (the device arms its device actions)."""

    MAX_EVENTS = 10000

    # -- the operator's side ---------------------------------------------------------------

    def reseed(self, seed: int | None) -> None:
        """Start the random sequence again from `seed` (a scenario file's)."""
        self.seed = seed
        self._random = random.Random(seed)

    def add(self, spec: FaultSpec) -> Fault:
        """Make `spec` active; its id is the plan's next (ids are never reused)."""
        fault = Fault(self._next_id, spec, self._clock(), self._sessions)
        self._next_id += 1
        self._faults[fault.id] = fault
        self._update()
        if self.on_change is not None:
            self.on_change()
        return fault

    def faults(self) -> list[Fault]:
        """Every fault set (spent ones too, until cleared), by id."""
        return list(self._faults.values())

    def get(self, fault_id: int) -> Fault:
        try:
            return self._faults[fault_id]
        except KeyError:
            raise DeviceError(f"fault {fault_id}: no such fault (see `fault list`)") from None

    def clear(self, fault_id: int | None = None) -> list[Fault]:
        """Remove one fault (DeviceError if there is none with that id) or every fault."""
        if fault_id is None:
            gone = list(self._faults.values())
            self._faults.clear()
        else:
            gone = [self.get(fault_id)]
            del self._faults[fault_id]
        if not any(f.action == "vanish" for f in self._faults.values()):
            self.hidden.clear()  # the messages come back
        self._update()
        if self.on_change is not None:
            self.on_change()
        return gone

    def subscribe(self, callback: Callable[[FaultEvent], None]) -> Callable[[], None]:
        """Call `callback(event)` for every firing from now on; returns the unsubscribe.

        The callback runs inside the service's event loop: it must not block. An exception
        from it is logged and does not stop the fault or the session."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def hide(self, box: str, uid: str) -> None:
        """A `vanish` fault hid `uid` from `box`'s later sessions (until it is cleared)."""
        self.hidden.setdefault(box, set()).add(uid)
        self.active = True

    def _update(self) -> None:
        # Hidden messages stay hidden after their vanish fault is spent, until it is cleared.
        self.active = any(f.live for f in self._faults.values()) or any(self.hidden.values())

    # -- the service's side ----------------------------------------------------------------

    def session_opened(self) -> int:
        """A session was accepted while the plan is active: its number (1, 2, ...)."""
        self._sessions += 1
        return self._sessions

    def fire(self, point: Point, where: Where, actions: tuple[str, ...] = ()) -> list[Fault]:
        """The live faults decided at `point` whose triggers match `where` (and, when given,
        whose action is one of `actions`), in id order; each one's firing is counted, its
        `times` used and a FaultEvent sent to the subscribers."""
        fired: list[Fault] = []
        now = self._clock()
        for fault in list(self._faults.values()):
            spec = fault.spec
            if not fault.live or spec.point != point:
                continue
            if actions and spec.action not in actions:
                continue
            if not self._matches(fault, where, now):
                continue
            probability = spec.triggers.get("probability")
            if probability is not None and self._random.random() >= probability:
                continue
            self._fired(fault, where)
            fired.append(fault)
        return fired

    def _matches(self, fault: Fault, where: Where, now: float) -> bool:
        spec = fault.spec
        commands = ACTIONS[spec.action].commands
        if commands and where.command not in commands:
            return False
        if spec.action == "unreadable" and where.message != spec.params["message"]:
            return False
        if spec.point == "delivery" and spec.action == "power-cut" and where.command != SCAN:
            return False  # mid-scan-store: only a scan's delivery
        triggers = spec.triggers
        for key, want in triggers.items():
            if key == "box":
                if where.box != want:
                    return False
            elif key == "client":
                if where.peer != want:
                    return False
            elif key == "command":
                if where.command != want:
                    return False
            elif key == "nth_session":
                if where.nth_session - fault.session_base != want:
                    return False
            elif key == "nth_command":
                if where.nth_command != want:
                    return False
            elif key == "after_s" and now - fault.added < want:
                return False
        return True

    def _fired(self, fault: Fault, where: Where) -> None:
        fault.fired += 1
        if fault.remaining is not None:
            fault.remaining -= 1
        action = fault.action
        self.fired_by_action[action] = self.fired_by_action.get(action, 0) + 1
        code = fault.params.get("code") if action == "reply-error" else None
        cert = fault.params.get("cert") if action == "tls-fail" else None
        event = FaultEvent(
            fault.id,
            action,
            self._wall(),
            where.session,
            where.peer,
            where.box,
            where.command,
            code if isinstance(code, str) else None,
            cert if isinstance(cert, str) and cert != "abort" else None,
        )
        self.events.append(event)
        if len(self.events) > self.MAX_EVENTS:
            del self.events[: len(self.events) - self.MAX_EVENTS]
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("fault subscriber %r failed on %s", callback, event)
        if not fault.live:
            self._update()
