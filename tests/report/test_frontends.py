"""The report card from the console (`clients`), the API (/api/v1/clients) and the web page,
each over a running device that a real client (poplib) used."""

from __future__ import annotations

import poplib

import httpx
import trio
import trio.testing

from firmware.device.device import Device
from tests.console.conftest import BOX_PASSWORD, Term
from tests.http.conftest import BOXES, Lab
from tests.http.test_web import login

API = "/api/v1"


def careful_session(port: int, password: str) -> None:
    """CAPA, UIDL before RETR, leaves the mail and ends with QUIT (no TLS: warn or fail)."""
    pop = poplib.POP3("127.0.0.1", port, timeout=15)
    pop.capa()
    pop.user("alice")
    pop.pass_(password)
    pop.uidl()
    pop.retr(1)
    pop.quit()


def dropping_session(port: int, password: str) -> None:
    """Marks a message deleted and goes away without QUIT."""
    pop = poplib.POP3("127.0.0.1", port, timeout=15)
    pop.user("alice")
    pop.pass_(password)
    pop.dele(1)
    pop.close()


async def test_console_clients_lists_and_details_a_client(
    live_device: Device, live_term: Term
) -> None:
    assert live_term.run("clients") == "no POP3 client has connected yet\n"
    live_device.board.deliver("alice", b"Subject: x\r\n\r\nbody\r\n")
    port = live_device.pop3_addresses[0][1]
    await trio.to_thread.run_sync(dropping_session, port, BOX_PASSWORD)
    await trio.testing.wait_all_tasks_blocked()
    summary = live_term.run("clients").splitlines()
    assert summary[0] == "1 client:"
    assert summary[2].split()[:3] == ["127.0.0.1", "1", "FAIL"]
    assert "quit FAIL" in summary[2]
    detail = live_term.run("clients 127.0.0.1")
    assert "FAIL  ended with QUIT: dropped 1 session with deletions pending" in detail
    assert "[RFC 1939 sec. 6]" in detail
    assert "session 1 box alice: USER PASS DELE [dropped]" in detail
    assert BOX_PASSWORD not in detail
    assert live_term.run("clients 10.1.2.3") == (
        "error: clients: no client 10.1.2.3 has connected (see `clients`)\n"
    )
    assert "clients [ADDRESS]" in live_term.run("help")


def test_console_clients_offline_reads_the_saved_report(offline_term: Term) -> None:
    out = offline_term.run("clients")
    assert out.startswith("error: ") and "no client report yet" in out


def test_api_and_web_page_show_the_report_card(lab: Lab) -> None:
    careful_session(lab.pop3_port, BOXES["alice"])
    got = lab.api.get(f"{API}/clients")
    assert got.status_code == 200
    data = got.json()
    assert data["live"] is True
    (card,) = data["clients"]
    assert card["address"] == "127.0.0.1"
    items = {i["name"]: i for i in card["items"]}
    assert items["capa"]["verdict"] == "pass"
    assert items["uidl"]["verdict"] == "pass"
    assert items["quit"]["verdict"] == "pass"
    assert items["tls"]["verdict"] == "fail"  # the demo image offers STLS; poplib did not use it
    assert items["quit"]["rfc"] == "RFC 1939 sec. 6"
    one = lab.api.get(f"{API}/clients/127.0.0.1")
    assert one.status_code == 200 and one.json()["items"] == card["items"]
    missing = lab.api.get(f"{API}/clients/10.9.9.9")
    assert missing.status_code == 404 and "no client 10.9.9.9" in missing.json()["message"]
    assert httpx.get(f"{lab.base}{API}/clients", timeout=10).status_code == 401
    paths = httpx.get(f"{lab.base}{API}/openapi.json", timeout=10).json()["paths"]
    assert {f"{API}/clients", f"{API}/clients/{{address}}"} <= set(paths)
    web = login(lab)
    try:
        page = web.get("/").text
    finally:
        web.close()
    assert "<h2>Clients (1)</h2>" in page
    assert "<summary>127.0.0.1: fail, 1 sessions: " in page
    assert 'used UIDL to avoid re-downloading</td><td class="v-pass">pass' in page
