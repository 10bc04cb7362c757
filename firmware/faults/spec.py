"""One fault: a trigger plus an action, parsed from a JSON object or a TOML table.

    {"action": "retr-break", "box": "alice", "after_percent": 50, "times": 1}

Every mistake is one `FaultSpecError` line naming the key and why (unknown action, unknown
key, wrong type, out of range). The same objects, as `[[fault]]` tables with a top-level
`seed`, form a scenario file (`parse_scenario`). The table ACTIONS below is the one list of
actions, the point of the session each is decided at, and the keys each takes.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from firmware.errors import DeviceError

Point = Literal["accept", "tls", "command", "login", "body", "device", "delivery", "scan"]
"""Where a fault is decided. accept: a session was accepted (before the greeting); tls: a
TLS handshake is about to start; command: a command line arrived (before it runs); login: a
login succeeded; body: a RETR/TOP body is about to go; device: the moment the fault is set
(power-cut at=now); delivery: a message (a scan's too) is about to be stored; scan: a scan
job is about to start."""

REPLY_CODES: Final = ("SYS/TEMP", "SYS/PERM", "IN-USE", "LOGIN-DELAY", "AUTH")
"""Response codes `reply-error` may answer with (RFC 2449 §8, RFC 3206)."""

MAX_SECONDS: Final = 3600.0


class FaultSpecError(DeviceError):
    """A fault object or scenario file that cannot be used: one line naming what and why
    (`lines`: one per mistake, for a scenario file with several)."""

    def __init__(self, message: str, lines: Sequence[str] = ()) -> None:
        self.lines = list(lines) or [message]
        super().__init__(message)

    @classmethod
    def of_lines(cls, lines: Sequence[str]) -> FaultSpecError:
        """Every mistake at once; the command line prints `dpfw: ` before each line."""
        return cls("\ndpfw: ".join(lines), lines)


@dataclass(frozen=True, slots=True)
class Key:
    """One key a fault object may hold: its type, range or choices, default."""

    kind: Literal["str", "int", "float", "choice"]
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    default: Any = None
    help: str = ""

    def check(self, name: str, value: Any, where: str) -> Any:
        """`value` converted and checked; FaultSpecError naming `where` and `name` if wrong."""
        if self.kind == "str" or self.kind == "choice":
            if not isinstance(value, str) or not value:
                raise FaultSpecError(f"{where}: {name} must be a non-empty string, not {value!r}")
            if self.kind == "choice":
                folded = value.upper() if name in ("code", "command") else value
                if folded not in self.choices:
                    raise FaultSpecError(
                        f"{where}: {name} {value!r} is not one of {', '.join(self.choices)}"
                    )
                return folded
            if name == "command":
                return value.upper()
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            what = "an integer" if self.kind == "int" else "a number"
            raise FaultSpecError(f"{where}: {name} must be {what}, not {value!r}")
        if self.kind == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    raise FaultSpecError(f"{where}: {name} must be an integer, not {value!r}")
                value = int(value)
        else:
            try:
                value = float(value)
            except OverflowError:  # a JSON integer beyond a float's range
                value = math.inf
            if not math.isfinite(value):
                raise FaultSpecError(f"{where}: {name} must be a finite number, not {value!r}")
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            raise FaultSpecError(f"{where}: {name} {value!r} is out of range {self._range()}")
        return value

    def _range(self) -> str:
        """`low..high` as people read it: whole bounds as integers (`1..1000000000`, not
        `1e+09`), fractions as short decimals."""
        low = "-inf" if self.low is None else _bound(self.low)
        high = "inf" if self.high is None else _bound(self.high)
        return f"{low}..{high}"


def _bound(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}" if abs(value) >= 1e-4 else repr(value)


def _seconds(help: str, default: float | None = None) -> Key:
    return Key("float", 0.0, MAX_SECONDS, default=default, help=help)


TRIGGERS: Final[dict[str, Key]] = {
    "box": Key("str", help="only sessions logged in to (or naming with USER) this box"),
    "client": Key("str", help="only sessions from this client address (e.g. 127.0.0.1)"),
    "command": Key("str", help="only this POP3 command keyword (RETR, PASS, QUIT, ...)"),
    "nth_session": Key("int", 1, 1e9, help="only the Nth session accepted after the fault"),
    "nth_command": Key("int", 1, 1e9, help="only the Nth command line of a session"),
    "after_s": _seconds("armed only this many seconds after the fault was added"),
    "probability": Key("float", 0.0, 1.0, help="fire with this probability (the plan's seed)"),
    "times": Key("int", 1, 1e9, help="fire at most this many times (default: until cleared)"),
}


@dataclass(frozen=True, slots=True)
class Action:
    """One action: where it is decided, what it does, the keys it takes beyond TRIGGERS."""

    point: Point
    help: str
    keys: dict[str, Key] = field(default_factory=dict)
    commands: tuple[str, ...] = ()  # the commands it can fire at (empty: any)


ACTIONS: Final[dict[str, Action]] = {
    "retr-break": Action(
        "body",
        "close the connection after part of a RETR/TOP body",
        {
            "after_percent": Key("float", 0.0, 100.0, help="percent of the body sent first"),
            "after_octets": Key("int", 0, 1e12, help="octets of the body sent first"),
        },
        ("RETR", "TOP"),
    ),
    "stall-before-end": Action(
        "body",
        "send the whole body, then wait before the final '.' line",
        {"seconds": _seconds("how long to stall", 10.0)},
        ("RETR", "TOP"),
    ),
    "flip-byte": Action(
        "body",
        "invert one body octet on the wire (the stored copy stays intact)",
        {"at_percent": Key("float", 0.0, 100.0, default=50.0, help="where in the body")},
        ("RETR", "TOP"),
    ),
    "reply-error": Action(
        "command",
        "answer -ERR [CODE] instead of running the command",
        {
            "code": Key("choice", choices=REPLY_CODES, default="SYS/TEMP", help="response code"),
            "text": Key("str", default="fault injected", help="the reply's text"),
        },
    ),
    "drop-after-greeting": Action("accept", "close the connection right after the greeting"),
    "drop-after-reply": Action(
        "command", "close the connection right after the reply to a command (e.g. PASS)"
    ),
    "delay": Action(
        "command",
        "wait before the greeting or before a reply",
        {
            "seconds": _seconds("how long to wait", 1.0),
            "at": Key("choice", choices=("reply", "greeting"), default="reply"),
        },
    ),
    "bandwidth": Action(
        "accept",
        "limit a session's send rate and add latency to each of its writes",
        {
            "bytes_per_s": Key("int", 1, 1e12, default=8192, help="octets per second"),
            "latency_ms": Key("float", 0.0, MAX_SECONDS * 1000, default=0.0),
        },
    ),
    "vanish": Action(
        "login",
        "hide message N from this box's later sessions, as if another client deleted it",
        {"message": Key("int", 1, 1e9, default=1, help="the message number at the login")},
    ),
    "tls-fail": Action(
        "tls",
        "fail the TLS handshake, or present an expired or wrong-name certificate",
        {"cert": Key("choice", choices=("abort", "expired", "wrong-name"), default="abort")},
    ),
    "unreadable": Action(
        "command",
        "message N answers the store's CRC-error -ERR [SYS/PERM] (nothing is damaged)",
        {"message": Key("int", 1, 1e9, default=1, help="the message number")},
        ("RETR", "TOP"),
    ),
    "power-cut": Action(
        "device",
        "stop the device without shutdown, then boot again from its image",
        {"at": Key("choice", choices=("now", "after-quit-ok", "mid-scan-store"), default="now")},
    ),
    "flash-full": Action("delivery", "refuse the next deliveries as the full flash would"),
    "memory-full": Action("scan", "refuse the next scans as the full RAM budget would"),
}


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One checked fault. `params`: the action's keys with defaults filled; `triggers`: the
    trigger keys given (absent ones match everything)."""

    action: str
    params: dict[str, Any]
    triggers: dict[str, Any]

    @property
    def point(self) -> Point:
        """Where the fault is decided (power-cut after-quit-ok: at a command)."""
        if self.action == "power-cut":
            at = self.params["at"]
            return "command" if at == "after-quit-ok" else "delivery" if at != "now" else "device"
        if self.action == "delay" and self.params["at"] == "greeting":
            return "accept"
        return ACTIONS[self.action].point

    def to_json(self) -> dict[str, Any]:
        """The object this spec was parsed from, defaults filled in (parses back the same)."""
        return {"action": self.action, **self.triggers, **self.params}


def parse_fault(obj: Any, where: str = "fault") -> FaultSpec:
    """Check one fault object (a JSON object or a TOML table) -> FaultSpec.

    FaultSpecError with one line, prefixed by `where`: not an object, missing or unknown
    action, unknown key, wrong type, out of range, keys that contradict each other.
    """
    if not isinstance(obj, Mapping):
        raise FaultSpecError(f"{where}: a fault must be an object, not {type(obj).__name__}")
    name = obj.get("action")
    if name is None:
        raise FaultSpecError(f"{where}: no action (one of {', '.join(ACTIONS)})")
    if not isinstance(name, str) or name not in ACTIONS:
        raise FaultSpecError(f"{where}: unknown action {name!r} (one of {', '.join(ACTIONS)})")
    action = ACTIONS[name]
    where = f"{where} {name}"
    params: dict[str, Any] = {}
    triggers: dict[str, Any] = {}
    for key, value in obj.items():
        if key == "action":
            continue
        if key in action.keys:
            params[key] = action.keys[key].check(key, value, where)
        elif key in TRIGGERS:
            triggers[key] = TRIGGERS[key].check(key, value, where)
        else:
            known = ", ".join([*action.keys, *TRIGGERS])
            raise FaultSpecError(f"{where}: unknown key {key!r} (known: {known})")
    for key, spec in action.keys.items():
        if key not in params and spec.default is not None:
            params[key] = spec.default
    if name == "retr-break":
        if "after_percent" in params and "after_octets" in params:
            raise FaultSpecError(f"{where}: give after_percent or after_octets, not both")
        if not params:
            params["after_percent"] = 50.0
    command = triggers.get("command")
    if action.commands and command is not None and command not in action.commands:
        raise FaultSpecError(
            f"{where}: command {command} cannot carry this fault "
            f"(only {', '.join(action.commands)})"
        )
    if name == "power-cut":
        at = params["at"]
        if at == "after-quit-ok":
            if command not in (None, "QUIT"):
                raise FaultSpecError(f"{where}: at after-quit-ok fires at QUIT, not {command}")
            triggers["command"] = "QUIT"
        elif any(k in triggers for k in ("box", "client", "command", "nth_command")):
            raise FaultSpecError(f"{where}: at {at} takes no session trigger (box, client, ...)")
        # at now is decided once, when added (or after_s later): times 1, so it is spent
        # after it fires and leaves the live set and dpfw_faults_active.
        if at == "now" and triggers.setdefault("times", 1) != 1:
            raise FaultSpecError(f"{where}: at now fires once (times 1), not {triggers['times']}")
    fault = FaultSpec(name, params, triggers)
    if fault.point == "accept":
        never = [k for k in ("box", "command", "nth_command") if k in triggers]
        if never:
            raise FaultSpecError(
                f"{where}: {never[0]} can never match: this fault is decided when a connection "
                "arrives, before any command (use client or nth_session)"
            )
    return fault


@dataclass(frozen=True, slots=True)
class Scenario:
    """A scenario file: the plan's seed and its faults, in file order."""

    seed: int | None
    faults: tuple[FaultSpec, ...]


def parse_scenario(text: str, name: str = "scenario") -> Scenario:
    """Parse a scenario file's TOML: `seed = N` and `[[fault]]` tables (each as `parse_fault`).

    FaultSpecError naming the file (`name`), the fault's position and the mistake: every
    mistake in the file, one line each (`lines`), not only the first.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FaultSpecError(f"{name}: not TOML: {exc}") from None
    lines: list[str] = []
    for key in data:
        if key not in ("seed", "fault"):
            lines.append(f"{name}: unknown top-level key {key!r} (seed, fault)")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        lines.append(f"{name}: seed must be an integer, not {seed!r}")
    tables = data.get("fault", [])
    if not isinstance(tables, list):
        lines.append(f"{name}: fault must be [[fault]] tables")
        tables = []
    faults = []
    for n, table in enumerate(tables, start=1):
        try:
            faults.append(parse_fault(table, f"{name}: fault {n}"))
        except FaultSpecError as exc:
            lines.extend(exc.lines)
    if lines:
        raise FaultSpecError.of_lines(lines)
    return Scenario(seed, tuple(faults))


def parse_words(action: str, words: list[str], where: str = "fault add") -> FaultSpec:
    """A fault from the console's words: ACTION and `key=value` pairs, each value read as its
    key's type (`fault add retr-break box=alice after_percent=50 times=1`)."""
    obj: dict[str, Any] = {"action": action}
    if action not in ACTIONS:
        return parse_fault(obj, where)  # names the actions there are
    keys = {**TRIGGERS, **ACTIONS[action].keys}
    at = f"{where} {action}"
    for word in words:
        key, eq, text = word.partition("=")
        key = key.replace("-", "_")
        if not eq or not key:
            raise FaultSpecError(f"{at}: {word!r} is not key=value (e.g. box=alice)")
        kind = keys[key].kind if key in keys else "str"
        value: Any = text
        if kind in ("int", "float"):
            try:
                value = int(text) if kind == "int" else float(text)
            except ValueError:
                what = "an integer" if kind == "int" else "a number"
                raise FaultSpecError(f"{at}: {key} must be {what}, not {text!r}") from None
        if key in obj:
            raise FaultSpecError(f"{at}: {key} is given twice")
        obj[key] = value
    return parse_fault(obj, where)
