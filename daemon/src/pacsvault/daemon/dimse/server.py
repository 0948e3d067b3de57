"""The association server of one serving process, on the DICOM port all of them share.

Built like the API's server: the supervisor reserved the port, this process
binds beside the others with SO_REUSEPORT and the kernel spreads
connections over them. With ``security.tls_cert_file`` set every connection
is DICOM TLS (PS3.15 B.1): TLS 1.2+, a client certificate from
``security.client_ca_file`` required; the handshake runs in the
connection's own thread under ``dicom.idle_timeout_s`` (pynetdicom would do
it in the accepting thread, where one silent client would hold up every
other), and certificate files changed on disk are used from the next
handshake on. pynetdicom's per-PDU log handlers are off: they cost more
CPU than storing a small instance.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import (
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    AE,
    _config,
    evt,
)
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from pacsvault.daemon.config import Config
from pacsvault.daemon.errors import ConfigError

log = logging.getLogger(__name__)
# Explicit VR Little Endian first: when one presentation context offers several transfer
# syntaxes the acceptor's order decides, and explicit VR is what senders hold most often.
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
TRANSFER_SYNTAXES = [_EXPLICIT_LE, *(ts for ts in ALL_TRANSFER_SYNTAXES if ts != _EXPLICIT_LE)]
_QUERY_RETRIEVE = (PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelMove,
                   PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelFind,
                   StudyRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelGet)
_IMPLEMENTATION_VERSION = "PACSVAULT_1"


def configure_pynetdicom() -> None:
    """Process-wide pynetdicom settings the door relies on (see retrieve.py for the chunked send)."""
    _config.LOG_HANDLER_LEVEL = "none"
    _config.STORE_SEND_CHUNKED_DATASET = True
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def add_supported_contexts(ae: Any) -> None:
    """What the door accepts: verification, every storage SOP class (either role: a C-GET's requestor
    is the storage SCP), query/retrieve in both models, storage commitment."""
    ae.add_supported_context(Verification)
    for storage in AllStoragePresentationContexts:
        # add_supported_context keeps the roles (the supported_contexts setter would drop them).
        ae.add_supported_context(storage.abstract_syntax, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    for uid in _QUERY_RETRIEVE:
        ae.add_supported_context(uid, TRANSFER_SYNTAXES[:4])
    ae.add_supported_context(StorageCommitmentPushModel, TRANSFER_SYNTAXES[:4])


def prefer_the_requestors_order(event: Any) -> None:
    """EVT_REQUESTED: where one presentation context offers several transfer syntaxes, accept the
    one the requestor lists first (pynetdicom would take the acceptor's first).

    A C-GET requestor (getscu) offers, per storage SOP class, its preferred syntax and then the
    uncompressed ones; stored JPEG 2000 can only go back in JPEG 2000, so its preference must win.
    """
    assoc = event.assoc
    wanted: dict[str, list[str]] = {}
    for proposed in assoc.requestor.primitive.presentation_context_definition_list:
        wanted.setdefault(proposed.abstract_syntax, list(proposed.transfer_syntax))
    contexts = []
    for context in assoc.acceptor.supported_contexts:
        first = wanted.get(context.abstract_syntax)
        if first:
            ours = list(context.transfer_syntax)
            context.transfer_syntax = [ts for ts in first if ts in ours] + [ts for ts in ours if ts not in first]
        contexts.append(context)
    assoc.acceptor.supported_contexts = contexts


class TlsFiles:
    """TLS contexts from the [security] files, made again when the files change."""

    def __init__(self, key: Path, cert: Path, ca: Path) -> None:
        self._paths = (key, cert, ca)
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[int, int], ...] = ()
        self._server: ssl.SSLContext | None = None
        self._client: ssl.SSLContext | None = None

    def server(self) -> ssl.SSLContext:
        self._refresh()
        assert self._server is not None
        return self._server

    def client(self) -> ssl.SSLContext:
        """For associations pacsvault opens (C-MOVE destinations, commitment reports)."""
        self._refresh()
        assert self._client is not None
        return self._client

    def _refresh(self) -> None:
        with self._lock:
            try:
                stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in self._paths)
            except OSError:
                if self._server is None:
                    raise
                return  # mid-renewal: keep the previous files
            if stamp == self._stamp:
                return
            key, cert, ca = self._paths
            made = []
            for purpose in (ssl.Purpose.CLIENT_AUTH, ssl.Purpose.SERVER_AUTH):
                context = ssl.create_default_context(purpose, cafile=str(ca))
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                context.load_cert_chain(str(cert), str(key))
                context.verify_mode = ssl.CERT_REQUIRED
                made.append(context)
            self._server, self._client = made
            self._stamp = stamp


class _Handler(RequestHandler):
    """Finishes the TLS handshake in the connection's thread, under the idle timeout."""

    def setup(self) -> None:
        sock = self.request
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(self.server.handshake_timeout_s)  # type: ignore[attr-defined]
            sock.do_handshake()
            sock.settimeout(None)


class SharedPortServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, bound with SO_REUSEPORT beside the daemon's other serving processes."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, tls: TlsFiles | None = None, handshake_timeout_s: float = 60.0,
                 **kwargs: Any) -> None:
        self.tls, self.handshake_timeout_s = tls, handshake_timeout_s
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        client, address = self.socket.accept()
        if self.tls is not None:
            client = self.tls.server().wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def shutdown(self) -> None:
        """Stops accepting and closes the listening socket (this server is not in ``ae._servers``)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        log.warning("DICOM connection from %s dropped: %s: %s", client_address, type(exc).__name__, exc)


@dataclass
class DimseServed:
    server: SharedPortServer
    port: int
    thread: threading.Thread

    def shutdown(self, grace_s: float) -> None:
        """No new associations; those under way get ``grace_s`` to finish, then are aborted."""
        self.server.shutdown()
        deadline = time.monotonic() + grace_s
        for assoc in self.server.active_associations:
            assoc.join(max(0.0, deadline - time.monotonic()))
            if assoc.is_alive():
                assoc.abort()


def serve(config: Config, port: int, handlers: list[tuple[Any, Callable[..., Any]]],
          tls: TlsFiles | None) -> DimseServed:
    """Binds the door on ``port`` (shared) and starts accepting."""
    configure_pynetdicom()
    dicom = config.dicom
    ae = AE(ae_title=dicom.ae_title)
    ae.implementation_version_name = _IMPLEMENTATION_VERSION
    ae.maximum_pdu_size = dicom.max_pdu_bytes
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = dicom.idle_timeout_s
    ae.maximum_associations = dicom.max_associations
    add_supported_contexts(ae)
    host = dicom.listen.rpartition(":")[0].strip("[]")
    address = ("127.0.0.1" if host == "localhost" else host, port)
    try:
        server = ae.make_server(address, evt_handlers=handlers, server_class=SharedPortServer,
                                request_handler=_Handler, tls=tls, handshake_timeout_s=dicom.idle_timeout_s)
    except OSError as exc:
        raise ConfigError(f"dicom.listen: cannot bind {host}:{port}: {exc.strerror}") from exc
    # The acceptor looks for a shutdown request between polls: socketserver's 0.5 s made every
    # stop (and a worker's restart) wait up to that long; ten looks a second cost nothing.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="dicom-acceptor",
                              daemon=True)
    thread.start()
    return DimseServed(server, int(server.server_address[1]), thread)


def tls_files(config: Config) -> TlsFiles | None:
    sec = config.security
    if not sec.tls:
        return None
    files = TlsFiles(*(config.resolve(p) for p in (sec.tls_key_file, sec.tls_cert_file, sec.client_ca_file)))
    files.server()  # unreadable files fail the start, not the first connection
    return files


def evt_handlers(connections: Any, guard: Any, store: Any, find: Any, retrieve: Any,
                 commitment: Any) -> list[tuple[Any, Any]]:
    return [(evt.EVT_CONN_OPEN, connections.on_conn_open), (evt.EVT_PDU_RECV, connections.on_pdu_recv),
            (evt.EVT_REQUESTED, prefer_the_requestors_order), (evt.EVT_REQUESTED, guard.on_requested),
            (evt.EVT_C_ECHO, store.on_echo),
            (evt.EVT_C_STORE, store.on_store), (evt.EVT_C_FIND, find.on_find), (evt.EVT_C_GET, retrieve.on_get),
            (evt.EVT_C_MOVE, retrieve.on_move), (evt.EVT_N_ACTION, commitment.on_action)]
