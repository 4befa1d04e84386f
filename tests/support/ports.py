"""Free TCP ports on 127.0.0.1 for test servers (bound, then released: nothing listens on
them until a server takes one)."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together, so none repeats)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    """A free port: one a server may take, or where nothing listens."""
    (port,) = free_ports(1)
    return port
