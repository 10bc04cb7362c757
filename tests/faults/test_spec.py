"""Fault objects and scenario files: every mistake is one line naming the key and why."""

from __future__ import annotations

import json

import pytest

from firmware.faults.spec import (
    ACTIONS,
    FaultSpecError,
    parse_fault,
    parse_scenario,
    parse_words,
)


def test_the_contract_object_parses_with_defaults() -> None:
    spec = parse_fault({"action": "retr-break", "box": "alice", "after_percent": 50, "times": 1})
    assert spec.action == "retr-break" and spec.point == "body"
    assert spec.params == {"after_percent": 50.0}
    assert spec.triggers == {"box": "alice", "times": 1}
    assert parse_fault(spec.to_json()) == spec  # what the API lists parses back the same
    assert parse_fault({"action": "retr-break"}).params == {"after_percent": 50.0}
    assert parse_fault({"action": "reply-error", "code": "in-use"}).params["code"] == "IN-USE"
    assert parse_fault({"action": "delay", "at": "greeting"}).point == "accept"
    assert parse_fault({"action": "power-cut", "at": "after-quit-ok"}).triggers == {
        "command": "QUIT"
    }
    assert parse_fault({"action": "power-cut"}).point == "device"
    assert parse_fault({"action": "power-cut", "at": "mid-scan-store"}).point == "delivery"


def test_every_contract_action_name_exists() -> None:
    for name in (
        "retr-break",
        "stall-before-end",
        "reply-error",
        "drop-after-greeting",
        "delay",
        "bandwidth",
        "vanish",
        "tls-fail",
        "power-cut",
        "flash-full",
        "memory-full",
        "unreadable",
    ):
        assert name in ACTIONS
        parse_fault({"action": name})  # every action works with its defaults


@pytest.mark.parametrize(
    ("obj", "line"),
    [
        ([], "fault: a fault must be an object, not list"),
        ({}, "fault: no action (one of retr-break,"),
        ({"action": "explode"}, "fault: unknown action 'explode' (one of retr-break,"),
        ({"action": "delay", "secs": 1}, "fault delay: unknown key 'secs' (known: seconds, at,"),
        ({"action": "delay", "seconds": "1"}, "fault delay: seconds must be a number, not '1'"),
        ({"action": "delay", "seconds": True}, "fault delay: seconds must be a number, not True"),
        ({"action": "delay", "seconds": -1}, "fault delay: seconds -1.0 is out of range 0..3600"),
        ({"action": "delay", "times": 0}, "fault delay: times 0 is out of range 1..1000000000"),
        ({"action": "delay", "times": 1.5}, "fault delay: times must be an integer, not 1.5"),
        ({"action": "delay", "probability": 2}, "fault delay: probability 2.0 is out of range"),
        ({"action": "delay", "box": ""}, "fault delay: box must be a non-empty string, not ''"),
        ({"action": "reply-error", "code": "NOPE"}, "fault reply-error: code 'NOPE' is not one"),
        (
            {"action": "retr-break", "after_percent": 10, "after_octets": 5},
            "fault retr-break: give after_percent or after_octets, not both",
        ),
        (
            {"action": "retr-break", "command": "LIST"},
            "fault retr-break: command LIST cannot carry this fault (only RETR, TOP)",
        ),
        (
            {"action": "power-cut", "at": "after-quit-ok", "command": "RETR"},
            "fault power-cut: at after-quit-ok fires at QUIT, not RETR",
        ),
        (
            {"action": "bandwidth", "box": "alice"},
            "fault bandwidth: box can never match: this fault is decided when a connection",
        ),
        (
            {"action": "delay", "at": "greeting", "command": "USER"},
            "fault delay: command can never match",
        ),
        (
            {"action": "power-cut", "box": "alice"},
            "fault power-cut: at now takes no session trigger",
        ),
    ],
)
def test_mistakes_are_one_clear_line(obj: object, line: str) -> None:
    with pytest.raises(FaultSpecError) as caught:
        parse_fault(obj)
    text = str(caught.value)
    assert text.startswith(line) and "\n" not in text


def test_console_words_take_each_key_type() -> None:
    spec = parse_words("retr-break", ["box=42", "after-percent=12.5", "times=2"])
    assert spec.triggers == {"box": "42", "times": 2} and spec.params == {"after_percent": 12.5}
    with pytest.raises(FaultSpecError, match=r"^fault add retr-break: times must be an integ"):
        parse_words("retr-break", ["times=x"])
    with pytest.raises(FaultSpecError, match=r"^fault add retr-break: 'box' is not key=value"):
        parse_words("retr-break", ["box"])
    with pytest.raises(FaultSpecError, match=r"^fault add: unknown action 'nope'"):
        parse_words("nope", [])


def test_scenario_file() -> None:
    text = """
seed = 7

[[fault]]
action = "retr-break"
box = "alice"
after_percent = 50
times = 1

[[fault]]
action = "reply-error"
command = "PASS"
code = "LOGIN-DELAY"
probability = 0.5
"""
    scenario = parse_scenario(text, "lab.toml")
    assert scenario.seed == 7
    assert [f.action for f in scenario.faults] == ["retr-break", "reply-error"]
    # The same objects as JSON give the same faults (one schema for API and file).
    assert parse_fault(json.loads(json.dumps(scenario.faults[0].to_json()))) == scenario.faults[0]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("seed = ", "lab.toml: not TOML: "),
        ("seed = 'x'", "lab.toml: seed must be an integer, not 'x'"),
        ("speed = 1", "lab.toml: unknown top-level key 'speed' (seed, fault)"),
        ("fault = 1", "lab.toml: fault must be [[fault]] tables"),
        ("[[fault]]\naction = 'delay'\n[[fault]]\nx = 1", "lab.toml: fault 2: no action"),
        (
            "[[fault]]\naction = 'delay'\nseconds = 1e9",
            "lab.toml: fault 1 delay: seconds 1000000000.0 is out of range 0..3600",
        ),
    ],
)
def test_scenario_mistakes(text: str, line: str) -> None:
    with pytest.raises(FaultSpecError) as caught:
        parse_scenario(text, "lab.toml")
    assert str(caught.value).startswith(line) and "\n" not in str(caught.value)


def test_a_scenario_file_reports_every_mistake_not_only_the_first() -> None:
    text = 'seed = "x"\nextra = 1\n[[fault]]\naction = "boom"\n[[fault]]\naction = "delay"\n'
    text += '[[fault]]\naction = "delay"\ntimes = 0\n'
    with pytest.raises(FaultSpecError) as caught:
        parse_scenario(text, "lab.toml")
    assert caught.value.lines == [
        "lab.toml: unknown top-level key 'extra' (seed, fault)",
        "lab.toml: seed must be an integer, not 'x'",
        "lab.toml: fault 1: unknown action 'boom' (one of " + ", ".join(ACTIONS) + ")",
        "lab.toml: fault 3 delay: times 0 is out of range 1..1000000000",
    ]
    assert str(caught.value).count("\ndpfw: ") == 3  # one `dpfw:` line each on the CLI
