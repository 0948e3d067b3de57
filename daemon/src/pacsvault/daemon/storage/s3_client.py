"""The S3 client of an object-store layer: settings, credentials, and calls bounded by a deadline.

Every call to the store goes through ``S3Calls.call``: it retries what a
retry can fix (connection refused or reset, a timeout, a 5xx, SlowDown) with
backoff until the deadline (the store's timeout, or a caller's tighter one),
gives an attempt up at the deadline, and then answers ``Unavailable`` naming
the store. What a retry cannot fix
(a missing object, refused credentials, a missing bucket) comes back at once
as the ``botocore`` error, for the layer to translate.

Credentials come from the standard AWS chain (environment, shared
credentials and config files, an optional profile, SSO, a credential
process), less its two network look-ups: an appliance is not an EC2 instance
or a container, and probing 169.254.169.254 would only delay start-up.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    SSLError,
)

from pacsvault.daemon.errors import ConfigError, PacsvaultError, Unavailable
from pacsvault.daemon.storage.s3_stats import CallStats

log = logging.getLogger(__name__)
T = TypeVar("T")

# S3 error codes a retry may cure: the store is busy or restarting, or a transfer was damaged.
_TRANSIENT_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed",
    "BadDigest", "OperationAborted", "Throttling", "ThrottlingException",
})
_NETWORK_PROVIDERS = ("container-role", "iam-role")
# A retry is not started with less time than this left: it could not even connect.
_SHORTEST_ATTEMPT_S = 0.05
_MIN_PART = 5 << 20


@dataclass(frozen=True)
class S3Settings:
    """Where the store is and how long it may take; every field has a safe default but the first two."""

    endpoint: str
    bucket: str
    name: str = ""  # in messages, e.g. the tier's name; defaults to s3://bucket
    key_prefix: str = "blobs/"
    # Where objects found bad are moved, with their reason (never silently deleted).
    quarantine_prefix: str = "quarantine/"
    region: str = "us-east-1"
    profile: str | None = None
    ca_file: str | None = None  # TLS is always verified: against this CA bundle, else the system's
    # One operation, retries included, answers within timeout_s; one attempt within
    # connect_timeout_s + read_timeout_s (the socket waits), so slow or gone is known in time.
    timeout_s: float = 30.0
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 10.0
    max_connections: int = 16
    # Blobs above the threshold go in parts (S3 wants at least 5 MiB for every part but the last).
    multipart_threshold: int = 64 << 20
    part_size: int = 16 << 20
    # What open() fetches with its first request: a blob's header and first frame (1 MiB at the
    # default frame size), which every read from its start needs, so a blob up to that size is one
    # GET. A read that goes on past what a reader holds fetches readahead_bytes more (a stream):
    # the memory one open reader may hold.
    head_bytes: int = (1 << 20) + (64 << 10)
    readahead_bytes: int = 8 << 20
    # S3 has no capacity: a configured quota stands for it (0: none).
    quota_bytes: int = 0

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"s3 endpoint {self.endpoint!r} must be an http:// or https:// URL")
        if not self.bucket:
            raise ConfigError("s3 bucket must be given")
        if self.part_size < _MIN_PART or self.multipart_threshold < self.part_size:
            raise ConfigError(f"s3 part_size must be at least {_MIN_PART >> 20} MiB (S3's smallest part) "
                              "and multipart_threshold at least part_size")
        if min(self.timeout_s, self.connect_timeout_s, self.read_timeout_s) <= 0 or self.max_connections < 1:
            raise ConfigError("s3 timeouts must be positive and max_connections at least 1")
        if self.head_bytes < 1 or self.readahead_bytes < 0 or self.quota_bytes < 0:
            raise ConfigError("s3 head_bytes must be positive, readahead_bytes and quota_bytes not negative")

    @property
    def label(self) -> str:
        return self.name or f"s3://{self.bucket}"

    @property
    def attempt_s(self) -> float:
        return self.connect_timeout_s + self.read_timeout_s


def make_client(settings: S3Settings) -> Any:
    """A boto3 S3 client for ``settings``; ConfigError when no credentials can be found."""
    try:
        core = botocore.session.Session(profile=settings.profile)
        resolver = core.get_component("credential_provider")
        for provider in _NETWORK_PROVIDERS:
            resolver.remove(provider)
        session = boto3.Session(botocore_session=core)
        if session.get_credentials() is None:
            where = f"profile {settings.profile!r} of " if settings.profile else ""
            raise ConfigError(
                f"object store {settings.label}: no S3 credentials found: set AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY, or give them in {where}the shared credentials file "
                "(AWS_SHARED_CREDENTIALS_FILE, default ~/.aws/credentials)")
    except (ProfileNotFound, PartialCredentialsError, NoCredentialsError) as exc:
        raise ConfigError(f"object store {settings.label}: {exc}") from exc
    config = Config(
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        retries={"total_max_attempts": 1, "mode": "standard"},  # S3Calls retries, against the deadline
        max_pool_connections=settings.max_connections,
        # Checksums only where the API requires them: Ceph 16 knows none but Content-MD5,
        # which every upload here sends and the store checks.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # On-prem endpoints have no wildcard DNS for virtual-hosted buckets. The payload is
        # not hashed for the signature: the signed Content-MD5 header protects it already.
        s3={"addressing_style": "path", "payload_signing_enabled": False},
    )
    verify: bool | str = settings.ca_file if settings.ca_file else True
    return session.client("s3", endpoint_url=settings.endpoint, region_name=settings.region,
                          verify=verify, config=config)


_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("s3_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bounds every store call made inside the block by ``seconds`` from now (e.g. a gRPC call's
    time remaining); the tightest of this, an enclosing block's and the store's own timeout wins."""
    end = time.monotonic() + max(0.0, seconds)
    enclosing = _deadline.get()
    token = _deadline.set(end if enclosing is None else min(end, enclosing))
    try:
        yield
    finally:
        _deadline.reset(token)


class S3Calls:
    """Runs store calls with bounded retries; the one place that knows about time.

    The client's socket timeouts bound one attempt. When less time than that
    is left (a caller's short deadline, or the last retry) the attempt runs
    on a helper thread and is given up at the deadline: its socket times out
    later on its own, and its answer, if any, is dropped.
    """

    def __init__(self, client: Any, settings: S3Settings, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.settings = settings
        self._clock, self._sleep = clock, sleep
        self._bounded_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # How the store answered lately (health shows it).
        self.stats = CallStats()

    def call(self, what: str, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it succeeds or fails for good; Unavailable once time is up."""
        started = time.monotonic()
        error = ""
        try:
            return self._retried(what, attempt)
        except ClientError as exc:
            if http_status(exc) in (401, 403) or http_status(exc) >= 500:
                error = describe(exc)
            raise
        except (PacsvaultError, BotoCoreError) as exc:
            error = str(exc)
            raise
        finally:
            self.stats.record(time.monotonic() - started, error)

    def _retried(self, what: str, attempt: Callable[[], T]) -> T:
        started = self._clock()
        end = started + self.settings.timeout_s
        outer = _deadline.get()
        if outer is not None:
            end = min(end, outer)
        delay, tries = 0.05, 0
        while True:
            tries += 1
            try:
                return self._attempt(attempt, end - self._clock())
            except ClientError as exc:
                if not is_transient(exc):
                    raise
                last: Exception = exc
            except (BotoConnectionError, HTTPClientError, IncompleteReadError, _GaveUp) as exc:
                if isinstance(exc, SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise Unavailable(f"object store {self.settings.label}: TLS verification of "
                                      f"{self.settings.endpoint} failed ({exc}); give its CA in ca_file") from exc
                last = exc
            except BotoCoreError as exc:  # anything else botocore refuses (e.g. credentials that expired)
                raise Unavailable(f"object store {self.settings.label}: {what} failed: {exc}") from exc
            if end - self._clock() < delay + _SHORTEST_ATTEMPT_S:
                raise Unavailable(
                    f"object store {self.settings.label} ({self.settings.endpoint}) did not answer {what} "
                    f"after {tries} attempt(s) in {self._clock() - started:.1f}s: {describe(last)}") from last
            log.debug("object store %s: %s failed (%s); retrying in %.2fs", self.settings.label, what,
                      describe(last), delay)
            self._sleep(delay)
            delay = min(delay * 2, 1.0)

    def _attempt(self, attempt: Callable[[], T], budget: float) -> T:
        if budget >= self.settings.attempt_s:
            return attempt()  # the socket timeouts end it in time
        future = self._pool().submit(contextvars.copy_context().run, attempt)
        try:
            return future.result(timeout=max(0.0, budget))
        except FutureTimeout:
            raise _GaveUp(f"no answer within the {budget:.2f}s left") from None

    def _pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._bounded_pool is None:
                self._bounded_pool = ThreadPoolExecutor(self.settings.max_connections, "s3-deadline")
            return self._bounded_pool


class _GaveUp(Exception):
    """An attempt outlived the time left for it."""


def translate(exc: ClientError, settings: S3Settings, what: str) -> PacsvaultError:
    """A store's refusal as the daemon's error, in words an operator can act on."""
    code, where = error_code(exc), f"object store {settings.label} ({settings.endpoint})"
    if code == "NoSuchBucket":
        return Unavailable(f"{where}: bucket {settings.bucket!r} does not exist")
    if code == "InvalidAccessKeyId":
        return Unavailable(f"{where} does not know our access key; check the S3 credentials")
    if code == "SignatureDoesNotMatch":
        return Unavailable(f"{where} refused our secret key for the access key; check the S3 credentials")
    if code == "403":  # a HEAD's refusal has no body to say why
        return Unavailable(f"{where} refused {what} (HTTP 403): check the S3 credentials and the user's "
                           f"permissions on bucket {settings.bucket!r}")
    if code == "AccessDenied" or http_status(exc) == 403:
        return Unavailable(f"{where} denied {what}: the S3 user lacks a permission on bucket {settings.bucket!r}"
                           f" ({describe(exc)})")
    return Unavailable(f"{where}: {what} failed: {describe(exc)}")


def is_transient(exc: ClientError) -> bool:
    code = error_code(exc)
    return code in _TRANSIENT_CODES or http_status(exc) >= 500


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def describe(exc: BaseException) -> str:
    """An error in one line: the S3 code and message, or botocore's sentence."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        message = error.get("Message") or ""
        return f"{error.get('Code') or http_status(exc)} {message}".strip()
    if isinstance(exc, (BotoCoreError, _GaveUp)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
