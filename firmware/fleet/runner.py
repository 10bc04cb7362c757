"""N devices in one process: one trio loop, one nursery, one `Device` per plan.

Each device keeps what is its own (board image and its lock, RAM budget, POP3 service and
listeners, store worker thread, admin lock-out, log ring, trace); what is per process is
shared by construction (the interpreter, imported modules, the trio loop, the TLS library).
The composition root (firmware.cli.fleet) gives each device its services (console, HTTP API),
so this module imports no front-end.

Signals belong to the fleet: SIGTERM or SIGINT asks every device to shut down (each drains its
POP3 sessions, then closes its image), and the fleet returns once all have. A device that
fails before the fleet is ready fails the whole start (one line, nothing left running); one
that fails later is logged and stays down while the others serve.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from firmware.device.device import Device, RunOptions, Service
from firmware.errors import DeviceError
from firmware.fleet.plan import DevicePlan

log = logging.getLogger("dpfw.fleet")

READY_TIMEOUT_S = 120.0


@dataclass
class Member:
    """One device of a running fleet."""

    plan: DevicePlan
    device: Device
    console: str | None = None  # the pty path, once the console has opened it
    up: bool = True  # False once its device has stopped


ServicesFor = Callable[[Member], Sequence[Service]]


def options_for(fleet_dir: Path, plan: DevicePlan) -> RunOptions:
    """How the fleet runs device `plan` (its image, listeners, run-only settings, feeder).
    `plan.faults` becomes one of the device's services (firmware/cli/fleet.py, `_services`)."""
    return RunOptions(
        image=fleet_dir / Path(*plan.image.parts),
        overrides=dict(plan.settings),
        pop3=plan.pop3,
        pop3s=plan.pop3s,
        scan_feed_per_min=plan.scan_feed_per_min,
        watch_signals=False,
    )


async def run_fleet(
    fleet_dir: Path,
    plans: Sequence[DevicePlan],
    services_for: ServicesFor,
    on_ready: Callable[[Sequence[Member]], None],
    *,
    ready_timeout: float = READY_TIMEOUT_S,
    signalled: Callable[[], bool] = lambda: False,
) -> int:
    """Run every planned device until SIGTERM/SIGINT; 0 once all have stopped cleanly.

    The signal receiver is installed before any device exists; `signalled()` says whether a
    signal came before that (the caller's handler noted it while trio started): then the
    fleet stops at once. A first signal stops every device cleanly (drain, close), even one
    still booting; a second one stops them now (open sessions end uncommitted).

    `on_ready(members)` is called once every device serves POP3, its HTTP API accepts
    connections and its console pty exists (for `fleet status`). A device that cannot boot
    (image in use, port taken) raises out of here as `dpfw run` would; the others stop first.
    """
    members: list[Member] = []
    for plan in plans:
        member = Member(plan, Device(options_for(fleet_dir, plan)))
        member.device.services = tuple(services_for(member))
        members.append(member)
    ready = False
    async with trio.open_nursery() as nursery:
        running = trio.CapacityLimiter(len(members))  # borrowed while a device runs

        async def run_one(member: Member) -> None:
            async with running:
                try:
                    await member.device.run()
                except BaseException as exc:
                    member.up = False
                    if not ready and isinstance(exc, DeviceError | BaseExceptionGroup):
                        leaf = _only_device_error(exc)
                        if leaf is not None:  # name the device: 100 of them log together
                            raise DeviceError(f"{member.plan.name}: {leaf}") from None
                    if not ready or not isinstance(exc, Exception):
                        raise
                    log.exception("%s stopped with an error; the others go on", member.plan.name)
                member.up = False

        starting = trio.CancelScope()  # a signal while the fleet starts ends the wait
        await nursery.start(_watch_signals, members, starting, nursery.cancel_scope, signalled)
        for member in members:
            nursery.start_soon(run_one, member)
        with starting:
            with trio.move_on_after(ready_timeout) as waited:
                for member in members:
                    await _wait_ready(member)
            if waited.cancelled_caught:
                late = [m.plan.name for m in members if not m.device.pop3_addresses]
                raise DeviceError(
                    f"the fleet was not ready after {ready_timeout:.0f} s "
                    f"(not serving: {', '.join(late[:5]) or 'HTTP or console'})"
                )
            ready = True
            log.info("fleet ready: %d devices", len(members))
            on_ready(members)
        while running.borrowed_tokens:  # until every device has stopped
            await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    return 0


def _only_device_error(exc: BaseException) -> DeviceError | None:
    """The DeviceError `exc` is or that a (nested) group holds alone; else None."""
    if isinstance(exc, DeviceError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _only_device_error(exc.exceptions[0])
    return None


async def _watch_signals(
    members: Sequence[Member],
    starting: trio.CancelScope,
    fleet: trio.CancelScope,
    signalled: Callable[[], bool],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """SIGINT/SIGTERM: the first stops every device cleanly, the second at once. Started
    (the receiver in place) before any device runs; a signal noted before it counts."""

    def shut_down(why: str) -> None:
        log.info("%s: shutting the fleet down", why)
        starting.cancel()  # a device that stops before it booted will never be ready
        for member in members:
            member.device.request_shutdown()  # kept by a device that has not booted yet

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        seen = 0
        if signalled():
            seen = 1
            shut_down("signal while the fleet was starting")
        async for signum in signals:
            seen += 1
            name = signal.Signals(signum).name
            if seen == 1:
                shut_down(f"signal {name}")
            else:
                log.warning("signal %s again: stopping every device now", name)
                fleet.cancel()


async def _wait_ready(member: Member) -> None:
    while not member.device.pop3_addresses:  # set once it serves POP3 (this boot)
        await trio.sleep(0.02)
    plan = member.plan
    if plan.http is not None:
        host, port = plan.http
        while True:
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError:
                await trio.sleep(0.02)
                continue
            await stream.aclose()
            break
    if plan.console == "pty":
        while member.console is None:
            await trio.sleep(0.02)
