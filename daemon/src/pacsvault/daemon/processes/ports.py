"""Reserving the client API's port for the daemon's serving processes.

The supervisor binds the address first without SO_REUSEPORT, so it fails if
anything else (another pacsvaultd included) holds the port, and only then
turns SO_REUSEPORT on. The socket is never listened on: it only keeps the
port the daemon's; the serving processes bind beside it with SO_REUSEPORT
and the kernel spreads incoming connections over them. Linux lets only
sockets of the same user join, and no other program gets past the first bind.
"""

from __future__ import annotations

import socket

from pacsvault.daemon.errors import ConfigError


def reserve(listen: str, key: str = "server.listen") -> tuple[socket.socket, int]:
    """Reserves ``listen`` (HOST:PORT, port 0 picks one); returns the socket to keep open and the port."""
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]")
    bind_host = "127.0.0.1" if host == "localhost" else host
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    reserved = socket.socket(family, socket.SOCK_STREAM)
    # A daemon restarted right after a crash (kill -9) finds its old connections in TIME_WAIT on the
    # port for a minute; SO_REUSEADDR lets the bind past those, while a socket another program
    # listens on, or another pacsvaultd's reservation (SO_REUSEPORT only), still refuses it.
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        reserved.bind((bind_host, int(port_text)))
    except OSError as exc:
        reserved.close()
        raise ConfigError(f"{key}: cannot bind {listen}: {exc.strerror} (is another program on that port?)") from exc
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)  # so a second reservation is refused
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return reserved, int(reserved.getsockname()[1])


def with_port(listen: str, port: int) -> str:
    return f"{listen.rpartition(':')[0]}:{port}"
