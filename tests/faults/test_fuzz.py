"""Fuzz the fault-scenario parsers (firmware/faults/spec.py) with Hypothesis: any JSON value,
TOML text or console words gives a FaultSpec or one FaultSpecError line, never another
exception; every accepted fault round-trips through `to_json`."""

from __future__ import annotations

import json
from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.faults.spec import (
    ACTIONS,
    TRIGGERS,
    FaultSpec,
    FaultSpecError,
    parse_fault,
    parse_scenario,
    parse_words,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = sorted({*TRIGGERS, *(k for a in ACTIONS.values() for k in a.keys), "action", "nope"})
CHOICES = sorted({c for a in ACTIONS.values() for k in a.keys.values() for c in k.choices})
# Scalars a JSON body or a TOML table can hold, weighted towards the ones the keys take.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),  # JSON has no integer bound
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from([*ACTIONS, *CHOICES, "RETR", "retr", "QUIT", "PASS", "NOOP", "127.0.0.1"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FAULT_OBJECTS = st.dictionaries(
    st.sampled_from(KEYS) | st.text(max_size=6), SCALARS | JSON, max_size=6
).map(lambda d: d)
LIKELY = st.builds(
    lambda action, extra: {"action": action, **extra},
    st.sampled_from(sorted(ACTIONS)),
    st.dictionaries(st.sampled_from(KEYS[:-1]), SCALARS, max_size=4),
)


def _one_line(exc: FaultSpecError) -> None:
    """One line per mistake (a scenario file reports all of its mistakes at once)."""
    assert exc.lines and "Traceback" not in str(exc)
    for line in exc.lines:
        assert line and "\n" not in line


def _round_trips(spec: FaultSpec) -> None:
    again = parse_fault(spec.to_json())
    assert again == spec
    # What the API answers goes through JSON and back.
    assert parse_fault(json.loads(json.dumps(spec.to_json()))) == spec


@FUZZ
@given(st.one_of(JSON, FAULT_OBJECTS, LIKELY))
def test_any_json_value_is_a_fault_or_one_line(obj: Any) -> None:
    try:
        spec = parse_fault(obj)
    except FaultSpecError as exc:
        _one_line(exc)
    else:
        _round_trips(spec)


TOML_VALUES = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.sampled_from([*ACTIONS, *CHOICES, "RETR", "QUIT"]),
    st.lists(st.integers(0, 9), max_size=2),
)
TABLES = st.dictionaries(st.sampled_from(KEYS), TOML_VALUES, max_size=5)


@FUZZ
@given(
    st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=4), st.booleans()),
    st.one_of(st.lists(TABLES, max_size=4), TABLES, st.integers()),
    st.dictionaries(st.sampled_from(["extra", "faults", "Seed"]), TOML_VALUES, max_size=1),
)
def test_any_scenario_document_is_a_scenario_or_one_line(
    seed: Any, faults: Any, extra: dict[str, Any]
) -> None:
    doc: dict[str, Any] = dict(extra)
    if seed is not None:
        doc["seed"] = seed
    doc["fault"] = faults
    try:
        scenario = parse_scenario(tomli_w.dumps(doc), "f.toml")
    except FaultSpecError as exc:
        _one_line(exc)
        assert all(line.startswith("f.toml: ") for line in exc.lines)
    else:
        assert scenario.seed == seed
        for spec in scenario.faults:
            _round_trips(spec)


@FUZZ
@given(st.text(max_size=200))
def test_any_text_is_a_scenario_or_one_line(text: str) -> None:
    try:
        parse_scenario(text, "f.toml")
    except FaultSpecError as exc:
        _one_line(exc)


WORDS = st.lists(
    st.one_of(
        st.text(max_size=12),
        st.builds(
            lambda k, v: f"{k}={v}",
            st.sampled_from([*KEYS, "after-percent", ""]),
            st.one_of(
                st.text(max_size=8),
                st.integers().map(str),
                st.floats().map(repr),
                st.sampled_from(["1e400", "-0", "nan", "inf", "0x10", "1_000", " 5"]),
            ),
        ),
    ),
    max_size=5,
)


@FUZZ
@given(st.sampled_from([*ACTIONS, "boom", ""]) | st.text(max_size=8), WORDS)
def test_any_console_words_are_a_fault_or_one_line(action: str, words: list[str]) -> None:
    try:
        spec = parse_words(action, words)
    except FaultSpecError as exc:
        _one_line(exc)
    else:
        _round_trips(spec)


def test_an_integer_too_large_for_a_float_is_refused_in_one_line() -> None:
    """Found by the fuzzer: a JSON integer beyond a float's range was an OverflowError."""
    for key, action in (
        ("seconds", "delay"),
        ("after_percent", "retr-break"),
        ("probability", "vanish"),
    ):
        try:
            parse_fault({"action": action, key: 10**400})
        except FaultSpecError as exc:
            assert f"{key} must be a finite number" in str(exc)
        else:
            raise AssertionError(f"{key}=10**400 accepted")
