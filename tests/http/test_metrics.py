"""GET /metrics: the Prometheus text format, read back with prometheus-client's parser."""

from __future__ import annotations

import contextlib
import poplib

from prometheus_client.parser import text_string_to_metric_families

from tests.http.conftest import BOXES, Lab


def scrape(lab: Lab) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    got = lab.api.get("/metrics")
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(got.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_follow_pop3_logins_commands_bytes_retr_and_refusals(lab: Lab) -> None:
    before = scrape(lab)
    assert before[("dpfw_up", ())] == 1
    assert before[("dpfw_ram_budget_bytes", ())] > 0
    assert before[("dpfw_flash_bytes", ())] > before[("dpfw_flash_used_bytes", ())] > 0
    client = poplib.POP3("127.0.0.1", lab.pop3_port, timeout=15)
    client.user("alice")
    with contextlib.suppress(poplib.error_proto):
        client.pass_("wrong")
    client.quit()
    client = poplib.POP3("127.0.0.1", lab.pop3_port, timeout=15)
    client.user("alice")
    client.pass_(BOXES["alice"])
    during = scrape(lab)
    assert during[("dpfw_pop3_sessions", ())] == 1
    _, _lines, octets = client.retr(1)
    client.quit()
    assert lab.api.patch("/api/v1/profile", json={"pop3.max_sessions": 1}).status_code == 200
    held = poplib.POP3("127.0.0.1", lab.pop3_port, timeout=15)
    try:
        refused = poplib.POP3("127.0.0.1", lab.pop3_port, timeout=15)
        refused.close()
    except poplib.error_proto:
        pass
    held.quit()
    after = scrape(lab)
    login = "dpfw_logins_total"
    assert after[(login, (("method", "PASS"), ("result", "ok"), ("service", "pop3")))] == 1
    assert after[(login, (("method", "PASS"), ("result", "failed"), ("service", "pop3")))] == 1
    assert after[("dpfw_pop3_commands_total", (("keyword", "RETR"),))] == 1
    assert after[("dpfw_pop3_commands_total", (("keyword", "USER"),))] == 2
    assert after[("dpfw_pop3_retr_seconds_count", ())] == 1
    assert after[("dpfw_pop3_retr_seconds_bucket", (("le", "+Inf"),))] == 1
    assert after[("dpfw_pop3_refusals_total", (("reason", "sessions"),))] == 1
    sent = after[("dpfw_pop3_sent_bytes_total", ())]
    assert sent >= octets  # the RETR body, greetings and replies
    assert after[("dpfw_http_admin_logins_total", (("result", "ok"),))] >= 3
    assert after[("dpfw_scans_total", (("result", "done"),))] == 0


def test_metrics_need_the_admin(lab: Lab) -> None:
    with lab.client(None) as anonymous:
        assert anonymous.get("/metrics").status_code == 401
