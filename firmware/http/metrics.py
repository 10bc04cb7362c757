"""`GET /metrics`: the device in the Prometheus text format (prometheus-client).

Device figures are read when scraped (a collector over the running Device: POP3 counters,
sessions, RAM budget, flash use, scans, the admin lock-out); the API's own figures (admin
logins, requests, deliveries) are prometheus-client counters in the API's own registry, so
two devices in one process never share a series.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from firmware.errors import DeviceError
from firmware.pop3.protocol import RETR_BUCKETS_S

if TYPE_CHECKING:
    from firmware.device.device import Device

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Pop3Stats fields that are counters of events, with their help text.
_POP3_COUNTERS = {
    "sessions_total": "POP3 sessions accepted",
    "sessions_refused": "POP3 connections refused (sessions, per-client or memory limit)",
    "messages_retrieved": "messages sent by RETR",
    "messages_deleted": "messages deleted by committed sessions",
    "commits_failed": "UPDATE-state commits that failed",
    "idle_logouts": "sessions closed for idling",
    "tls_sessions": "TLS handshakes completed (STLS and POP3S)",
    "tls_failures": "TLS handshakes failed or refused",
    "evictions": "pre-login connections closed to make room",
}


class DeviceCollector(Collector):
    """Reads the running device at each scrape; while it reboots, only `dpfw_up 0`."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def collect(self) -> Iterator[Metric]:
        device = self.device
        try:
            board = device.board
            profile = device.profile
        except DeviceError:
            yield GaugeMetricFamily("dpfw_up", "1 while the device serves", value=0)
            return
        yield GaugeMetricFamily("dpfw_up", "1 while the device serves", value=1)
        info = GaugeMetricFamily(
            "dpfw_device", "the model and firmware in force", labels=["model", "firmware"]
        )
        info.add_metric([profile.model, profile.str("identity.firmware_version")], 1)
        yield info
        budget = device.budget
        yield GaugeMetricFamily("dpfw_ram_budget_bytes", "image RAM budget", value=budget.total)
        yield GaugeMetricFamily("dpfw_ram_used_bytes", "image RAM reserved now", value=budget.used)
        usage = board.usage()
        yield GaugeMetricFamily("dpfw_flash_bytes", "flash message area", value=usage.total)
        yield GaugeMetricFamily("dpfw_flash_used_bytes", "flash in use", value=usage.used)
        yield GaugeMetricFamily(
            "dpfw_flash_reclaimable_bytes",
            "flash held by deleted messages until compaction",
            value=usage.reclaimable,
        )
        scans = CounterMetricFamily("dpfw_scans", "scan jobs", labels=["result"])
        scans.add_metric(["done"], device.scans_done)
        scans.add_metric(["failed"], device.scans_failed)
        yield scans
        lockout = device.admin_lockout
        yield GaugeMetricFamily(
            "dpfw_admin_failures", "wrong admin passwords in a row", value=lockout.failures
        )
        faults = CounterMetricFamily(
            "dpfw_faults_fired", "injected faults that fired, by action", labels=["action"]
        )
        for action, count in sorted(device.faults.fired_by_action.items()):
            faults.add_metric([action], count)
        yield faults
        yield GaugeMetricFamily(
            "dpfw_faults_active", "faults set that can still fire", value=_live(device)
        )
        yield CounterMetricFamily(
            "dpfw_power_cuts", "power cuts (fault injected) since start", value=device.power_cuts
        )
        pop3 = device.pop3
        if pop3 is None:
            return
        sessions = pop3.sessions()
        yield GaugeMetricFamily("dpfw_pop3_sessions", "open POP3 sessions", value=len(sessions))
        yield GaugeMetricFamily(
            "dpfw_pop3_sessions_max", "pop3.max_sessions", value=profile.int("pop3.max_sessions")
        )
        yield GaugeMetricFamily(
            "dpfw_pop3_locked_boxes",
            "boxes locked after failed logins",
            value=len(pop3.locked_boxes()),
        )
        stats = pop3.stats
        logins = CounterMetricFamily(
            "dpfw_logins",
            "logins by service, method and result",
            labels=["service", "method", "result"],
        )
        for (method, ok), count in sorted(stats.logins_by_method.items()):
            logins.add_metric(["pop3", method, "ok" if ok else "failed"], count)
        yield logins
        commands = CounterMetricFamily(
            "dpfw_pop3_commands", "POP3 commands by keyword", labels=["keyword"]
        )
        for keyword, count in sorted(stats.commands.items()):
            commands.add_metric([keyword], count)
        yield commands
        refusals = CounterMetricFamily(
            "dpfw_pop3_refusals", "POP3 connections refused, by limit", labels=["reason"]
        )
        for reason, count in sorted(stats.refusals.items()):
            refusals.add_metric([reason], count)
        yield refusals
        yield CounterMetricFamily(
            "dpfw_pop3_sent_bytes", "POP3 reply octets sent", value=stats.bytes_sent
        )
        retr = HistogramMetricFamily(
            "dpfw_pop3_retr_seconds", "RETR latency: command in to last octet out"
        )
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(RETR_BUCKETS_S, stats.retr_buckets, strict=True):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", stats.retr_count))
        retr.add_metric([], buckets, stats.retr_seconds)
        yield retr
        names = {f.name for f in fields(stats)}
        for name, doc in _POP3_COUNTERS.items():
            if name in names:
                yield CounterMetricFamily(f"dpfw_pop3_{name}", doc, value=getattr(stats, name))


def _live(device: Device) -> int:
    return sum(1 for fault in device.faults.faults() if fault.live)


class ApiMetrics:
    """The API's own counters, in one registry with the device collector."""

    def __init__(self, device: Device) -> None:
        # No `_created` series: a scrape shows counts, not when each counter began.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(DeviceCollector(device))
        self.admin_logins = Counter(
            "dpfw_http_admin_logins",
            "HTTP Basic admin logins by result",
            ["result"],
            registry=self.registry,
        )
        self.requests = Counter(
            "dpfw_http_requests",
            "API requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "dpfw_http_deliveries", "messages delivered through the API", registry=self.registry
        )
        self.delivery_seconds = Histogram(
            "dpfw_http_delivery_seconds",
            "time to store one API delivery durably (after the body arrived)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )

    def login(self, ok: bool) -> None:
        self.admin_logins.labels("ok" if ok else "failed").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
