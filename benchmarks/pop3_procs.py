"""Server processes under test: start/stop by process group, and honest memory and CPU figures.

Each server is started in a session of its own, so its process group holds every process it
forks (Dovecot's master, log, config, anvil, auth, login and one pop3 process per session; dpfw's
one process). Memory is summed over that whole group from /proc: RSS (what the issue asks for;
it counts shared pages once per process) and PSS (shared pages divided among their users).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_base(span: int) -> int:
    """A port P with P .. P+span-1 all free on 127.0.0.1 right now (a fleet's ports);
    RuntimeError if 500 random tries find none."""
    for _ in range(500):
        base = random.randrange(20000, 60000 - span)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + span):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {span} free ports in a row on 127.0.0.1")


def wait_for_greeting(
    host: str,
    port: int,
    proc: subprocess.Popen[bytes],
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Poll until the server answers `+OK` on a fresh connection, or fail after `timeout_s`.

    `tls`: the port is implicit TLS (POP3S): the greeting is read after the handshake.
    Raises RuntimeError (the process exited, or no greeting in time)."""
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before serving")
        try:
            with contextlib.ExitStack() as stack:
                s = stack.enter_context(socket.create_connection((host, port), timeout=2.0))
                if tls is not None:
                    s = stack.enter_context(tls.wrap_socket(s, server_hostname=host))
                greeting = s.recv(512)
                if greeting.startswith(b"+OK"):
                    s.sendall(b"QUIT\r\n")
                    with contextlib.suppress(OSError):
                        s.recv(512)
                    return
                last = f"greeting {greeting[:80]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"no POP3 greeting on {host}:{port} within {timeout_s:.0f} s ({last})")


@dataclass
class Usage:
    """Memory and CPU of one process group at one instant."""

    processes: int
    rss: int  # bytes, summed over processes
    pss: int  # bytes, summed over processes
    cpu_s: float  # user+system seconds of live processes and their reaped children


def _group_pids(pgid: int) -> list[int]:
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # fields[0] is state; pgrp is the 5th field of stat
            pids.append(int(entry))
    return pids


def group_usage(pgid: int, with_pss: bool = True) -> Usage:
    """Sum memory and CPU over every live process in the group `pgid`."""
    rss = pss = 0
    cpu_ticks = 0
    count = 0
    for pid in _group_pids(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            # after "pid (comm) ": state=0 ... utime=11 stime=12 cutime=13 cstime=14 ... rss=21
            cpu_ticks += sum(int(f) for f in fields[11:15])
            rss += int(fields[21]) * _PAGE
            if with_pss:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
            count += 1
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return Usage(count, rss, pss, cpu_ticks / _TICK)


class ServerProcess:
    """A started server: its Popen, its log file, and how to stop it."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        log: Path,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self._stop_signal = stop_signal

    @property
    def pgid(self) -> int:
        return self.proc.pid

    def usage(self, with_pss: bool = True) -> Usage:
        return group_usage(self.pgid, with_pss)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Signal the whole group, wait a bounded time, then kill what is left."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, self._stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)  # stragglers of the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5.0)


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all CPUs, /proc/stat), to spot other load."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def listen_drops() -> int:
    """Connection attempts the kernel dropped because a listen backlog was full (machine-wide).

    Each drop costs the client a SYN retransmission (1 s at first), so a server whose backlog is
    smaller than the burst of connects shows it as a long tail in sessions/s.
    """
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenDrops", 0))
    return 0
