"""An object store that is gone, stuck or misconfigured: clear errors, in time, never a traceback.

The deadline bounds are the issue's own requirement ("UNAVAILABLE ... within
the caller's deadline"); the margin covers scheduling on a busy 2-core host.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pacsvault.daemon.digest import compute
from pacsvault.daemon.errors import ConfigError, Unavailable
from pacsvault.daemon.storage.blob_access import read_all
from pacsvault.daemon.storage.s3 import S3BlobAccess
from pacsvault.daemon.storage.s3_client import S3Settings, deadline
from tests.ceph_cluster import CephCluster
from tests.s3_support import PROFILE, new_bucket, s3_access, settings, use_credentials_file

MARGIN_S = 0.5


@pytest.fixture
def gateway(ceph: CephCluster) -> Iterator[CephCluster]:
    """The cluster, with its gateway running again after the test whatever the test did to it."""
    yield ceph
    if "rgw" in ceph.pids():
        ceph.resume_gateway()
    ceph.start_gateway()


def _timed(call: Callable[[], Any]) -> tuple[BaseException, float]:
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        call()
    return caught.value, time.monotonic() - started


def test_a_stopped_gateway_is_unavailable_within_the_deadline_then_serves_again(
        gateway: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = s3_access(gateway, monkeypatch, timeout_s=3.0)
    data = os.urandom(20_000)
    digest = compute(data)
    s3.put(digest, data)
    gateway.stop_gateway()
    error, took = _timed(lambda: s3.open(digest))
    assert took <= 3.0 + MARGIN_S
    assert "test-archive" in str(error) and gateway.endpoint in str(error) and "attempt" in str(error)
    _, took = _timed(lambda: s3.put(compute(b"new"), b"new"))
    assert took <= 3.0 + MARGIN_S
    gateway.start_gateway()
    assert read_all(s3.open(digest)) == data
    s3.put(compute(b"new"), b"new")
    assert s3.contains(compute(b"new"))


def test_a_stuck_gateway_is_unavailable_within_the_callers_deadline(
        gateway: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # SIGSTOP: the kernel still accepts connections, nothing answers; only timeouts can tell.
    s3 = s3_access(gateway, monkeypatch, timeout_s=4.0, read_timeout_s=3.0)
    data = os.urandom(200_000)
    digest = compute(data)
    s3.put(digest, data)
    gateway.pause_gateway()
    error, took = _timed(lambda: s3.open(digest))
    assert took <= 4.0 + MARGIN_S and "test-archive" in str(error)
    # A caller with less time left than one attempt's socket timeouts is answered at its deadline.
    with deadline(1.0):
        error, took = _timed(lambda: s3.contains(digest))
    assert took <= 1.0 + MARGIN_S and "left" in str(error)
    gateway.resume_gateway()
    assert read_all(s3.open(digest)) == data


def test_check_reports_versioning_and_object_lock(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = s3_access(ceph, monkeypatch).check()
    assert (plain.versioning, plain.object_lock) == ("", False) and plain.latency_s < 5
    locked = s3_access(ceph, monkeypatch, object_lock=True).check()
    assert (locked.versioning, locked.object_lock) == ("Enabled", True)


def _with_credentials(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch, access_key: str, secret: str) -> S3BlobAccess:
    path = use_credentials_file(ceph, monkeypatch)
    path.write_text(f"[{PROFILE}]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret}\n")
    return S3BlobAccess(settings(ceph, new_bucket(ceph)))


def test_a_wrong_secret_is_a_clear_error_at_start_and_later(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ceph.admin is not None
    s3 = _with_credentials(ceph, monkeypatch, ceph.admin.access_key, "not-the-secret")
    with pytest.raises(ConfigError, match="refused the secret key .* check the S3 credentials"):
        s3.check()
    with pytest.raises(Unavailable, match="check the S3 credentials"):
        s3.put(compute(b"x"), b"x")
    with pytest.raises(Unavailable, match="refused our secret key"):
        s3.open(compute(b"x"))


def test_an_unknown_access_key_is_a_clear_error(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = _with_credentials(ceph, monkeypatch, "AKIANOSUCHUSER000000", "whatever")
    with pytest.raises(ConfigError, match="does not know the access key"):
        s3.check()


def test_missing_credentials_or_profile_are_config_errors(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    use_credentials_file(ceph, monkeypatch)
    empty = ceph.root / "no-credentials"
    empty.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    with pytest.raises(ConfigError, match="no S3 credentials found: set AWS_ACCESS_KEY_ID"):
        S3BlobAccess(settings(ceph, "any-bucket", profile=None))
    with pytest.raises(ConfigError, match="profile"):
        S3BlobAccess(settings(ceph, "any-bucket", profile="no-such-profile"))
    # The environment is the first link of the chain.
    assert ceph.admin is not None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ceph.admin.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ceph.admin.secret_key)
    assert S3BlobAccess(settings(ceph, new_bucket(ceph), profile=None)).check().versioning == ""


def test_a_missing_bucket_is_a_clear_error(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    use_credentials_file(ceph, monkeypatch)
    s3 = S3BlobAccess(settings(ceph, "pv-no-such-bucket"))
    with pytest.raises(ConfigError, match="bucket 'pv-no-such-bucket' does not exist; create it"):
        s3.check()
    with pytest.raises(Unavailable, match="bucket 'pv-no-such-bucket' does not exist"):
        s3.put(compute(b"x"), b"x")


def test_tls_is_verified_against_the_given_ca_or_refused(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    use_credentials_file(ceph, monkeypatch)
    bucket = new_bucket(ceph)
    trusted = S3BlobAccess(settings(ceph, bucket, endpoint=ceph.tls_endpoint, ca_file=str(ceph.ca_file)))
    assert trusted.check().versioning == ""
    trusted.put(compute(b"over tls"), b"over tls")
    assert read_all(trusted.open(compute(b"over tls"))) == b"over tls"
    # The system's CAs do not know the test CA: refused, with what to do about it.
    unknown = S3BlobAccess(settings(ceph, bucket, endpoint=ceph.tls_endpoint))
    with pytest.raises(ConfigError, match="TLS verification of https://127.0.0.1:.* failed .*give its CA in ca_file"):
        unknown.check()
    with pytest.raises(Unavailable, match="TLS verification"):
        unknown.open(compute(b"over tls"))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("endpoint", "objects.example:443", "must be an http:// or https:// URL"),
    ("part_size", 1 << 20, "at least 5 MiB"),
    ("timeout_s", 0.0, "timeouts must be positive"),
])
def test_settings_are_checked_with_the_field_named(field: str, value: object, message: str) -> None:
    fields: dict[str, object] = {"endpoint": "https://objects.example", "bucket": "b", field: value}
    with pytest.raises(ConfigError, match=message):
        S3Settings(**fields)  # type: ignore[arg-type]
