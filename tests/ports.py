"""Ports for the servers a test names in a configuration before they start.

A port bind(("127.0.0.1", 0)) hands out lies in the kernel's ephemeral range: between the test
closing it and the server binding it, any outgoing connection on the machine (a gRPC channel,
Ceph's daemons, a peer dialling a site not listening yet) may take it as its source port, and
the server then fails to bind. The ports chosen here lie below that range, where only an
explicit bind takes one; none is handed out twice in a session (a stopped server's connections
linger in TIME_WAIT).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000
_handed: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nothing holds now, outside the ephemeral range when the machine has room for that."""
    low = _ephemeral_low()
    if low - _LOWEST < 1_000:
        return _any_port()  # the ephemeral range starts too low to leave a range of our own
    for _ in range(200):
        port = random.randrange(_LOWEST, low)
        if port not in _handed and _bindable(port):
            _handed.add(port)
            return port
    return _any_port()


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    # No SO_REUSEADDR: a port with connections in TIME_WAIT is passed over too.
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _handed.add(port)
    return port
