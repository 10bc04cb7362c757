"""No secret in the report card or the fault log: a real `dpfw run` (HTTP API, trace file),
sessions logging in with USER/PASS, APOP, AUTH PLAIN and AUTH SCRAM-SHA-256 that meet
injected faults at the very commands carrying the secrets (PASS, APOP, AUTH) and after the
login; then neither a password (box or admin), nor the APOP digest, nor a SASL line or proof
appears in IMG.clients.json, `dpfw report` (every format), the device's log (fault and auth
lines included), the trace file, GET /api/v1/faults or GET /api/v1/clients."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import poplib
import re
import socket
import urllib.request
from pathlib import Path

import pytest

from benchmarks.pop3_procs import free_base
from tests.reliability.harness import wait_until
from tests.support import ADMIN_PASSWORD, DeviceProcess, create_image, dpfw

BOXES = {"alice": "Alice-secret-pw-7731", "bob": "Bob-secret-pw-5519"}


class Raw:
    """A POP3 connection spoken line by line (for AUTH exchanges poplib lacks)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> str:
        return self.file.readline().decode().rstrip("\r\n")

    def send(self, text: str) -> str:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def scram_login(port: int, user: str, password: str) -> tuple[str, list[str]]:
    """AUTH SCRAM-SHA-256 (RFC 5802 / RFC 7677), written here from the RFC; returns the last
    reply and the secret lines the client sent (client-final with its proof, the proof)."""
    raw = Raw(port)
    try:
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={user},r={nonce}"
        reply = raw.send(
            "AUTH SCRAM-SHA-256 " + base64.b64encode(b"n,," + first_bare.encode()).decode()
        )
        assert reply.startswith("+ "), reply
        server_first = base64.b64decode(reply[2:]).decode()
        fields = dict(item.split("=", 1) for item in server_first.split(","))
        salted = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
        )
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={fields['r']}"
        message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored, message, hashlib.sha256).digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
        final = base64.b64encode(f"{without_proof},p={proof.decode()}".encode()).decode()
        reply = raw.send(final)
        if reply.startswith("+ "):
            reply = raw.send("")
        secrets = [final, proof.decode(), base64.b64encode(salted).decode(), salted.hex()]
        if reply.startswith("+OK"):
            raw.send("QUIT")
        return reply, secrets
    finally:
        raw.close()


def plain_login(port: int, user: str, password: str) -> tuple[str, str]:
    raw = Raw(port)
    try:
        line = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        reply = raw.send(f"AUTH PLAIN {line}")
        if reply.startswith("+OK"):
            try:
                raw.send("STAT")
                raw.send("QUIT")
            except OSError:  # drop-after-reply closed it after the +OK
                pass
        return reply, line
    finally:
        raw.close()


def api(http: int, method: str, path: str, body: object = None) -> object:
    token = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{http}/api/v1{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.loads(response.read())


def test_no_secret_in_report_card_fault_log_or_api_after_faulted_logins(tmp_path: Path) -> None:
    image = create_image(tmp_path / "card.img", size="4MiB")
    for box, password in BOXES.items():
        dpfw("box", "add", str(image), box, "--legacy", "--password", password)
    mail = tmp_path / "one.eml"
    mail.write_bytes(b"From: a@example.test\r\nSubject: one\r\n\r\n" + b"hello there\r\n" * 50)
    dpfw("deliver", str(image), "alice", str(mail))
    trace = tmp_path / "trace.jsonl"
    http = free_base(1)
    device = DeviceProcess(
        image,
        "--http",
        f"127.0.0.1:{http}",
        "--trace",
        str(trace),
        "--set",
        "pop3.plaintext_auth=always",
        "--set",
        "pop3.apop=true",
    )
    secrets = [ADMIN_PASSWORD, *BOXES.values()]
    try:
        port = device.wait_booted()
        assert wait_until(lambda: "HTTP API on" in device.output(), timeout=30), device.output()

        def fault(**spec: object) -> None:
            api(http, "POST", "/faults", {**spec, "times": 1})

        # USER/PASS: the fault answers the PASS line (which holds the password) itself.
        fault(action="reply-error", command="PASS", code="IN-USE")
        pop = poplib.POP3("127.0.0.1", port, timeout=15)
        pop.user("alice")
        with pytest.raises(poplib.error_proto, match="IN-USE"):
            pop.pass_(BOXES["alice"])
        pop.close()
        fault(action="retr-break", box="alice", after_percent=50)
        pop = poplib.POP3("127.0.0.1", port, timeout=15)
        pop.user("alice")
        pop.pass_(BOXES["alice"])
        with pytest.raises((poplib.error_proto, OSError)):  # the body is cut: -ERR EOF
            pop.retr(1)
        pop.close()
        # APOP: the digest is a password equivalent for this greeting.
        fault(action="reply-error", command="APOP", code="SYS/TEMP")
        pop = poplib.POP3("127.0.0.1", port, timeout=15)
        stamp = re.search(rb"<[^>]+>", pop.getwelcome())
        assert stamp is not None
        digest = hashlib.md5(stamp.group(0) + BOXES["bob"].encode()).hexdigest()
        secrets.append(digest)
        with pytest.raises(poplib.error_proto, match="SYS/TEMP"):
            pop.apop("bob", BOXES["bob"])
        pop.close()
        pop = poplib.POP3("127.0.0.1", port, timeout=15)
        pop.apop("bob", BOXES["bob"])
        pop.quit()
        # AUTH PLAIN with an initial response: the command line is the credentials.
        fault(action="drop-after-reply", command="AUTH")
        reply, line = plain_login(port, "alice", BOXES["alice"])
        secrets.append(line)
        reply, line = plain_login(port, "alice", BOXES["alice"])
        assert reply.startswith("+OK"), reply
        # SCRAM: a delayed reply to AUTH, then a clean one.
        fault(action="delay", command="AUTH", seconds=0.1)
        reply, sent = scram_login(port, "bob", BOXES["bob"])
        assert reply.startswith("+OK"), reply
        secrets += sent
        reply, sent = scram_login(port, "bob", BOXES["bob"])
        secrets += sent
        faults = json.dumps(api(http, "GET", "/faults"))
        clients = json.dumps(api(http, "GET", "/clients"))
        assert '"faults_met"' in clients
        fired = json.loads(faults)["fired"]
        assert fired == {
            "reply-error": 2,
            "retr-break": 1,
            "drop-after-reply": 1,
            "delay": 1,
        }, fired
        assert device.stop() == 0
    finally:
        device.kill()
    card = image.with_name(image.name + ".clients.json")
    assert card.exists()
    places = {
        "GET /api/v1/faults": faults,
        "GET /api/v1/clients": clients,
        "IMG.clients.json": card.read_text(),
        "the device's log": device.output(),
        "the trace file": trace.read_text(),
    }
    assert "dpfw.fault" in places["the device's log"]  # the fault lines are there to check
    for fmt in ("text", "md", "junit", "json"):
        places[f"dpfw report --format {fmt}"] = dpfw(
            "report", str(image), "--format", fmt, check=False
        ).stdout
    assert "alice" in places["dpfw report --format text"]
    found = [
        (where, secret)
        for where, text in places.items()
        for secret in secrets
        if secret and secret in text
    ]
    assert not found, found
