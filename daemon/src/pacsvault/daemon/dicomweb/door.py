"""The HTTP listener of one serving process: DICOMweb under ``web.base_path``, the share page under /share/.

Every serving process binds the port the supervisor reserved, with
SO_REUSEPORT, exactly like the gRPC API; the kernel spreads connections over
them. The door runs its own asyncio loop (uvloop) in a thread of the
worker; use-case calls leave the loop for a thread pool (``Guard.run``), so
no read, digest, parse or fsync ever holds the loop up.

aiohttp was chosen by measurement on this 2-core machine (one keep-alive
client, a 1 KiB JSON answer and a 512 KiB streamed one): server CPU per
small request 47 us with uvloop (83 us on asyncio) against 53 us for
starlette + uvicorn (httptools, uvloop), and per streamed 512 KiB answer
240-270 us against 410-450 us; it also brings the multipart reader STOW-RS
needs and TLS with client certificates through the standard ssl module.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from pacsvault.daemon.audit.trail import AuditTrail
from pacsvault.daemon.config import Config, listen_is_loopback
from pacsvault.daemon.dicomweb.find import Find
from pacsvault.daemon.dicomweb.guard import CutOff, Guard, error_response
from pacsvault.daemon.dicomweb.retrieve import Retrieve
from pacsvault.daemon.dicomweb.services import Services
from pacsvault.daemon.dicomweb.share_page import SharePage
from pacsvault.daemon.dicomweb.stow import Stow
from pacsvault.daemon.errors import ConfigError, PacsvaultError
from pacsvault.daemon.index.query import Level
from pacsvault.daemon.ingest import Ingest
from pacsvault.daemon.retrieval import Retrieval
from pacsvault.daemon.search import Search
from pacsvault.daemon.security.credentials import CredentialStore
from pacsvault.daemon.security.principals import PrincipalResolver

log = logging.getLogger("pacsvault.dicomweb")
_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class UseCases:
    search: Search
    retrieval: Retrieval
    ingest: Ingest
    credentials: CredentialStore


def create_app(config: Config, cases: UseCases, resolver: PrincipalResolver, trail: AuditTrail | None,
               executor: ThreadPoolExecutor) -> web.Application:
    guard = Guard(resolver, trail, executor, config.audit.flush_before_read)
    services = Services(guard, cases.search, cases.retrieval, cases.ingest, cases.credentials, config.limits,
                        config.web)
    find, retrieve, stow, share = Find(services), Retrieve(services), Stow(services), SharePage(services)
    # STOW-RS reads its body itself, bounded by web.max_request_bytes; forms are small.
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024)
    base = config.web.base_path
    study, series, instance = "/studies/{study}", "/series/{series}", "/instances/{instance}"
    get = [
        ("/studies", find.handler(Level.STUDY)),
        ("/series", find.handler(Level.SERIES)),
        ("/instances", find.handler(Level.INSTANCE)),
        (study + "/series", find.handler(Level.SERIES)),
        (study + "/instances", find.handler(Level.INSTANCE)),
        (study + series + "/instances", find.handler(Level.INSTANCE)),
        (study, retrieve.instances),
        (study + series, retrieve.instances),
        (study + series + instance, retrieve.instances),
        (study + "/metadata", retrieve.metadata),
        (study + series + "/metadata", retrieve.metadata),
        (study + series + instance + "/metadata", retrieve.metadata),
        (study + series + instance + "/frames/{frames}", retrieve.frames),
        (study + series + instance + "/bulkdata/{number}", retrieve.bulkdata),
    ]
    for path, handler in get:
        app.router.add_get(base + path, handler, allow_head=False)
    app.router.add_post(base + "/studies", stow.store)
    app.router.add_post(base + study, stow.store)
    app.router.add_get("/share/{token}", share.show, allow_head=False)
    app.router.add_post("/share/{token}", share.with_pin)
    app.router.add_post("/share/{token}/download", share.download)
    return app


@web.middleware
async def _errors(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Refusals and errors raised before a handler answered, as HTTP statuses."""
    try:
        return await handler(request)
    except (web.HTTPException, CutOff):
        raise
    except PacsvaultError as exc:
        return error_response(exc)
    except Exception as exc:  # noqa: BLE001 - a bug: an incident id for the caller, the traceback in the log
        return error_response(exc)


def server_ssl_context(config: Config) -> ssl.SSLContext | None:
    """HTTPS with the API's files and rule (TLS 1.2+, a client certificate of the client CA); None on loopback
    without TLS files, which ``config`` already refused anywhere else. Renewed files are taken up
    without a restart, as the API's ``CertificateReloader`` does (``_ReloadingContext``)."""
    sec = config.security
    if not sec.tls:
        return None
    return _ReloadingContext([config.resolve(p) for p in (sec.tls_cert_file, sec.tls_key_file,
                                                           sec.client_ca_file)]).initial


class _ReloadingContext:
    """The newest certificate, key and client CA for each new handshake.

    The listening socket keeps its first context; a handshake's SNI callback
    (called for every client hello, with or without a server name) moves the
    connection to a context built from the files as they are now, when they
    changed since: at most one stat of three files a second. A half-written
    renewal fails to load and the previous files go on serving.
    """

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._stamp = self._stamp_now()
        self._checked = time.monotonic()
        self.current = self._build()
        self.initial = self.current
        self.initial.sni_callback = self._on_hello

    def _stamp_now(self) -> tuple[tuple[int, int], ...]:
        return tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in self._paths)

    def _build(self) -> ssl.SSLContext:
        cert, key, ca = self._paths
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        context.load_verify_locations(cafile=str(ca))
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def _on_hello(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        if time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()
            try:
                stamp = self._stamp_now()
                if stamp != self._stamp:
                    self.current, self._stamp = self._build(), stamp
                    log.info("TLS certificate files changed: new DICOMweb handshakes use them")
            except (OSError, ssl.SSLError, ValueError):
                pass  # mid-renewal: keep serving the previous files
        if self.current is not self.initial:
            connection.context = self.current


class WebDoor:
    """Runs the app on ``host:port`` (SO_REUSEPORT) in a thread of its own; ``stop`` drains it."""

    def __init__(self, config: Config, app: web.Application, port: int, executor: ThreadPoolExecutor) -> None:
        host = config.web.listen.rpartition(":")[0].strip("[]")
        self._host = "127.0.0.1" if host == "localhost" else host
        self._config, self._app, self.port, self._executor = config, app, port, executor
        self._loop = _new_loop()
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=config.server.shutdown_grace_s)
        self._thread = threading.Thread(target=self._loop.run_forever, name="dicomweb", daemon=True)

    def start(self) -> None:
        if not self._config.security.tls and not listen_is_loopback(self._config.web.listen):
            raise ConfigError(f"web.listen {self._config.web.listen!r} is off loopback: set the [security] TLS files")
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(_START_TIMEOUT_S)
        except OSError as exc:
            raise ConfigError(f"web.listen: cannot bind {self._host}:{self.port}: {exc.strerror}") from exc

    async def _start(self) -> None:
        self._loop.set_default_executor(self._executor)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port, reuse_port=True,
                           ssl_context=server_ssl_context(self._config), backlog=256)
        await site.start()

    def stop(self) -> None:
        """No new connections; calls in flight get ``server.shutdown_grace_s``."""
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(
                self._config.server.shutdown_grace_s + 5)
        except Exception:  # noqa: BLE001 - stopping anyway
            log.exception("the DICOMweb listener did not stop cleanly")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._executor.shutdown(wait=False, cancel_futures=True)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # the measured choice; plain asyncio still serves
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def start_web_door(config: Config, cases: UseCases, resolver: PrincipalResolver, trail: AuditTrail | None,
                   port: int) -> WebDoor:
    executor = ThreadPoolExecutor(max_workers=config.server.max_workers, thread_name_prefix="dicomweb")
    door = WebDoor(config, create_app(config, cases, resolver, trail, executor), port, executor)
    door.start()
    return door
