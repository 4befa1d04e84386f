"""A TCP forwarder on loopback that can cut a client off from a server (a network partition)
and counts what it refused, so a test waits on the client having tried (an event), not on
time. Protocol-blind: it serves PostgreSQL as well as anything else.

``with TcpCut(port) as cut:`` listens on ``cut.port`` and forwards to ``127.0.0.1:port``;
``cut.cut()`` closes every open connection and refuses new ones (counted in ``refused``)
until ``cut.restore()``.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["TcpCut"]


class TcpCut:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.listener = socket.create_server((host, 0))
        self.port: int = self.listener.getsockname()[1]
        self.refused = 0  #: connections refused while cut
        self._cut = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> TcpCut:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self._close_all()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
        self._close_all()

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                refuse = self._cut
                self.refused += refuse
            if refuse:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
