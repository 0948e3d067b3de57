"""The API port is reserved again right after a crash, and still refused while another holds it."""

from __future__ import annotations

import socket

import pytest

from pacsvault.daemon.errors import ConfigError
from pacsvault.daemon.processes import ports


def _time_wait_on_a_port() -> int:
    """A port whose listener is gone and whose one connection this side closed first (TIME_WAIT
    here), as after a kill -9 of a daemon that had clients."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's servers do
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()  # the server side closes first: its end of the connection goes to TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    return port


def test_a_port_with_connections_in_time_wait_is_reserved() -> None:
    port = _time_wait_on_a_port()
    reserved, got = ports.reserve(f"127.0.0.1:{port}")
    try:
        assert got == port
    finally:
        reserved.close()


def test_a_port_another_program_listens_on_is_refused() -> None:
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.bind(("127.0.0.1", 0))
    other.listen()
    try:
        with pytest.raises(ConfigError, match="cannot bind"):
            ports.reserve(f"127.0.0.1:{other.getsockname()[1]}")
    finally:
        other.close()


def test_a_second_reservation_of_the_same_port_is_refused() -> None:
    first, port = ports.reserve("127.0.0.1:0")
    try:
        with pytest.raises(ConfigError, match="cannot bind"):
            ports.reserve(f"127.0.0.1:{port}")
    finally:
        first.close()
