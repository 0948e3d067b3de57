"""Syslog over TLS (RFC 5424 messages, RFC 5425 transport): the ATNA wire.

Each audit message is one RFC 5424 message: PRI 85 (facility 10 security /
authorization, severity 5 notice, as IHE ITI TF-2 3.20 asks), APP-NAME
``pacsvault``, MSGID ``IHE+RFC-3881``, no structured data, and the XML as MSG
behind a UTF-8 BOM. On the TLS stream each is framed by octet counting
(``LEN SP MSG``, RFC 5425 section 4.3). The repository's certificate is
verified against the configured CA and the dialled host name or address; a
client certificate is presented when one is configured.

Syslog has no application-level acknowledgement, so :meth:`SyslogTlsSender.send`
returns only once the repository's TCP stack has acknowledged every byte
(the socket's send queue is empty): bytes still in our kernel when a
connection dies are never counted as delivered.
"""

from __future__ import annotations

import datetime
import fcntl
import socket
import ssl
import struct
import termios
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SyslogTlsSender", "format_message", "frame", "tls_context"]

PRI = 10 * 8 + 5
APP_NAME = "pacsvault"
MSGID = "IHE+RFC-3881"
BOM = "\ufeff".encode()


def format_message(msg: bytes, *, timestamp: float, hostname: str, procid: str = "-") -> bytes:
    """One RFC 5424 SYSLOG-MSG carrying ``msg`` (UTF-8) as MSG."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"
    header = f"<{PRI}>1 {stamp} {_field(hostname, 255)} {APP_NAME} {_field(procid, 128)} {MSGID} -"
    return header.encode("ascii") + b" " + BOM + msg


def frame(message: bytes) -> bytes:
    """RFC 5425 octet-counting: the length in decimal, a space, the message."""
    return str(len(message)).encode("ascii") + b" " + message


def tls_context(ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2+ client context: the repository verified against ``ca_file``, our certificate if given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=str(ca_file))
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    return context


class SyslogTlsSender:
    """One TLS connection to one audit record repository, opened on first use and after a failure."""

    def __init__(self, address: str, context: ssl.SSLContext, *, timeout_s: float = 10.0) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self._context, self._timeout = context, timeout_s
        self._socket: ssl.SSLSocket | None = None

    def send(self, messages: Sequence[bytes]) -> None:
        """Sends framed ``messages`` in order; returns once the peer acknowledged them. OSError otherwise."""
        if not messages:
            return
        try:
            connection = self._connect()
            connection.sendall(b"".join(frame(m) for m in messages))
            self._wait_acknowledged(connection)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._socket is None:
            return
        connection, self._socket = self._socket, None
        try:
            connection.settimeout(1.0)
            connection.unwrap()  # close_notify, so the repository sees an orderly end
        except (OSError, ValueError):
            pass  # a connection already broken has nothing left to close politely
        finally:
            connection.close()

    def _connect(self) -> ssl.SSLSocket:
        if self._socket is not None:
            try:
                _check_open(self._socket)  # a repository restarted while we were idle
            except OSError:
                self.close()
        if self._socket is None:
            raw = socket.create_connection((self.host, self.port), timeout=self._timeout)
            try:
                self._socket = self._context.wrap_socket(raw, server_hostname=self.host)
            except BaseException:
                raw.close()
                raise
        return self._socket

    def _wait_acknowledged(self, connection: ssl.SSLSocket) -> None:
        deadline = time.monotonic() + self._timeout
        while _unacknowledged(connection) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"audit repository {self.host}:{self.port} acknowledged nothing "
                                   f"for {self._timeout:.0f}s")
            time.sleep(0.005)
        # A repository that has gone away since answers the next write with a reset;
        # a peek notices a close that already arrived, before more is counted as sent.
        _check_open(connection)


def _unacknowledged(connection: socket.socket) -> int:
    """Bytes in the socket's send queue: not yet sent or not yet acknowledged (Linux SIOCOUTQ)."""
    raw = fcntl.ioctl(connection.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", raw)[0])


def _check_open(connection: ssl.SSLSocket) -> None:
    blocking = connection.gettimeout()
    try:
        connection.settimeout(0.0)
        data = connection.recv(1)
    except (ssl.SSLWantReadError, BlockingIOError):
        return  # nothing to read: the connection is open
    finally:
        connection.settimeout(blocking)
    if not data:
        raise ConnectionResetError("the audit repository closed the connection")


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, or the nil value."""
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"
