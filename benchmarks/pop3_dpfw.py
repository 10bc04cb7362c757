"""The dpfw side of `tools/bench pop3`: a board image with the corpus, served by `dpfw run`.

The image is built through the store's Python API (one process, instead of a thousand
`dpfw box add` runs); the device then boots from it exactly as a user would run it, in its own
process, with this run's limits raised by `--set` (nothing of that is stored in the image except
the box count the image must be allowed to hold).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from benchmarks.pop3_corpus import Corpus
from benchmarks.pop3_procs import ServerProcess, wait_for_greeting
from firmware.device.boards import create_board

MODEL = "DP-3530"
ADMIN_PASSWORD = "bench-admin-pw"
MIB = 1024 * 1024


def run_settings(max_sessions: int) -> list[str]:
    """The `--set` values of the benchmark run: bounds raised, plain USER/PASS, no fail delay."""
    return [
        f"pop3.max_sessions={max_sessions}",
        f"pop3.max_sessions_per_client={max_sessions}",  # every client is 127.0.0.1
        "pop3.plaintext_auth=always",
        "pop3.auth_failure_delay_s=0",
        "memory.image_ram_mib=1024",
    ]


def image_size(corpus: Corpus) -> int:
    """Room for the corpus twice over (the log needs slack to compact), at least 256 MiB."""
    payload = sum(len(a.message) * corpus.copies(a) for a in corpus.accounts)
    return max(256 * MIB, (2 * payload + 64 * MIB) // MIB * MIB)


def build_image(path: Path, corpus: Corpus, tls: tuple[str, str] | None = None) -> None:
    """Create the board image and deliver every account's message (each delivery is durable).

    `tls` = (certificate PEM, key PEM) replaces the image's own self-signed certificate, so
    dpfw and the other servers of the run present the same certificate in STLS.
    """
    from firmware.config.profile import factory
    from firmware.security.tls import settings_for

    profile = factory(MODEL).with_value("mailbox.max_boxes", str(len(corpus.accounts) + 16))
    board = create_board(path, profile, ADMIN_PASSWORD, size=image_size(corpus))
    try:
        if tls is not None:
            board.set_settings(settings_for(*tls))
        for account in corpus.accounts:
            board.add_box(account.name, account.password)
            for _ in range(corpus.copies(account)):
                board.deliver(account.name, account.message)
    finally:
        board.close()


def start_dpfw(
    workdir: Path,
    corpus: Corpus,
    port: int,
    max_sessions: int,
    tls: tuple[str, str] | None = None,
    http_port: int | None = None,
    pop3s_port: int = 0,
) -> ServerProcess:
    """Build the image under `workdir`, boot `dpfw run` on it, wait for its greeting.

    `http_port`: also serve the HTTP API there (the fetch-and-delete test's scan feed
    delivers through it). `pop3s_port` (0: none): also listen for implicit TLS there
    (`dpfw run --pop3s`), with the image's certificate (`tls` when given)."""
    base = workdir / "dpfw"
    base.mkdir(parents=True, exist_ok=True)
    image = base / "board.img"
    build_image(image, corpus, tls)
    log = base / "dpfw.log"
    command = [sys.executable, "-m", "firmware", "run", str(image)]
    command += ["--pop3", f"127.0.0.1:{port}", "--console", "none"]
    if http_port is not None:
        command += ["--http", f"127.0.0.1:{http_port}"]
    if pop3s_port:
        command += ["--pop3s", f"127.0.0.1:{pop3s_port}"]
    for setting in run_settings(max_sessions):
        command += ["--set", setting]
    out = log.open("wb")
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        start_new_session=True,
    )
    server = ServerProcess("dpfw", proc, log, stop_signal=signal.SIGTERM)
    try:
        wait_for_greeting("127.0.0.1", port, proc, timeout_s=60.0)
    except BaseException:
        server.stop()
        raise
    return server
