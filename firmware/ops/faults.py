"""Fault injection from the console, the API and `dpfw run --faults`: add, list, clear.

Each operation works on the running device's `FaultPlan` (firmware/faults/plan.py) and
returns a frozen dataclass (plain JSON through `dataclasses.asdict`). docs/faults.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firmware.errors import DeviceError
from firmware.faults.plan import Fault, FaultPlan
from firmware.faults.spec import FaultSpec, Scenario, parse_fault, parse_words
from firmware.ops.context import OpsContext


@dataclass(frozen=True)
class FaultInfo:
    """One fault: `spec` is its object (defaults filled), `fired` how often it fired,
    `remaining` how often it still may (None: until cleared), `live` whether it can fire."""

    id: int
    action: str
    spec: dict[str, Any]
    fired: int
    remaining: int | None
    live: bool


@dataclass(frozen=True)
class FaultList:
    faults: list[FaultInfo]  # by id
    seed: int | None  # the plan's seed (None: random)
    fired: dict[str, int]  # firings by action since the device started


@dataclass(frozen=True)
class FaultsCleared:
    ids: list[int]  # the faults removed


def fault_plan(ctx: OpsContext, what: str = "fault") -> FaultPlan:
    """The running device's plan; DeviceError when the board is open offline."""
    if ctx.device is None:
        raise DeviceError(f"{what}: faults are set on a running device (dpfw run)")
    return ctx.device.faults


def info(fault: Fault) -> FaultInfo:
    return FaultInfo(
        fault.id,
        fault.action,
        fault.spec.to_json(),
        fault.fired,
        fault.remaining,
        fault.live,
    )


def add_spec(ctx: OpsContext, spec: FaultSpec) -> FaultInfo:
    """Set one checked fault; a `power-cut` at `now` cuts the power at once."""
    device = ctx.device
    fault_plan(ctx, "fault add")
    assert device is not None
    return info(device.add_fault(spec))


def add_fault(ctx: OpsContext, obj: Mapping[str, Any]) -> FaultInfo:
    """Set the fault a JSON object describes (FaultSpecError naming any mistake)."""
    fault_plan(ctx, "fault add")
    return add_spec(ctx, parse_fault(obj))


def add_fault_words(ctx: OpsContext, action: str, words: list[str]) -> FaultInfo:
    """Set a fault from the console's `ACTION key=value ...`."""
    fault_plan(ctx, "fault add")
    return add_spec(ctx, parse_words(action, words))


def list_faults(ctx: OpsContext) -> FaultList:
    plan = fault_plan(ctx, "fault list")
    return FaultList([info(f) for f in plan.faults()], plan.seed, dict(plan.fired_by_action))


def parse_fault_id(text: str, what: str = "fault clear") -> int:
    try:
        return int(text)
    except ValueError:
        raise DeviceError(f"{what}: {text!r} is not a fault id (see `fault list`)") from None


def clear_faults(ctx: OpsContext, fault_id: int | None = None) -> FaultsCleared:
    """Remove one fault, or all of them (None)."""
    plan = fault_plan(ctx, "fault clear")
    return FaultsCleared([f.id for f in plan.clear(fault_id)])


def load_scenario(ctx: OpsContext, scenario: Scenario) -> list[FaultInfo]:
    """Set a scenario file's faults in file order, after seeding the plan with its seed (a
    run with the same seed and the same client behaviour fires the same faults)."""
    plan = fault_plan(ctx, "--faults")
    plan.reseed(scenario.seed)
    return [add_spec(ctx, spec) for spec in scenario.faults]
