"""A TCP proxy on 127.0.0.1 that injects one network fault between a POP3 client and server.

A real relay of real sockets (threads), so the faults are what a client meets on a network:
- `cut_retr=(n, after)`: on the n-th RETR, forward `after` octets of the answer, then close
  both sides (the server dropped the connection mid-RETR);
- `on_dele`: called when the client's first DELE arrives, which is not forwarded (the test
  power-cuts the device there: the fax is stored, the server never heard DELE).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class FaultProxy:
    def __init__(
        self,
        target_port: int,
        *,
        cut_retr: tuple[int, int] | None = None,
        on_dele: Callable[[], None] | None = None,
    ) -> None:
        self.target_port = target_port
        self.cut_retr = cut_retr
        self.on_dele = on_dele
        self.retrs = 0
        self.cuts = 0
        self.deles_seen = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            state = {"budget": -1}  # octets of server data still allowed (-1: unlimited)
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict[str, int]) -> None:
        buf = b""
        with contextlib.suppress(OSError):
            while not self.deles_seen and (data := client.recv(65536)):
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    word = line.split(b" ", 1)[0].upper()
                    if word == b"DELE" and self.on_dele is not None:
                        self.deles_seen += 1
                        self.on_dele()
                        break  # the dead device's socket closes: relay that to the server
                    if word == b"RETR":
                        self.retrs += 1
                        if self.cut_retr is not None and self.retrs == self.cut_retr[0]:
                            state["budget"] = self.cut_retr[1]
                    server.sendall(line + b"\n")
        _close(client, server)

    def _down(self, server: socket.socket, client: socket.socket, state: dict[str, int]) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if state["budget"] >= 0:
                    data = data[: state["budget"]]
                    state["budget"] -= len(data)
                    client.sendall(data)
                    if state["budget"] <= 0:
                        self.cuts += 1
                        break
                    continue
                client.sendall(data)
        _close(client, server)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()
