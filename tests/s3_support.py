"""Test support for the object-store layer: buckets, credentials and a plain client on the test Ceph."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from pacsvault.daemon.storage.s3 import S3BlobAccess
from pacsvault.daemon.storage.s3_client import S3Settings
from tests.ceph_cluster import CephCluster

PROFILE = "pacsvault-test"
_buckets = itertools.count()


def plain_client(ceph: CephCluster, **config: Any) -> Any:
    """A boto3 client with the admin user's keys, for making buckets and for changes behind our back."""
    assert ceph.admin is not None
    return boto3.client("s3", endpoint_url=ceph.endpoint, region_name="us-east-1",
                        aws_access_key_id=ceph.admin.access_key, aws_secret_access_key=ceph.admin.secret_key,
                        config=Config(request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required",
                                      s3={"addressing_style": "path"}, **config))


def new_bucket(ceph: CephCluster, *, object_lock: bool = False) -> str:
    name = f"pv-test-{os.getpid()}-{next(_buckets)}"
    plain_client(ceph).create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
    return name


def use_credentials_file(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points the AWS chain at a shared credentials file with the test profile, and nothing else."""
    assert ceph.admin is not None
    path = ceph.root / "aws-credentials"
    path.write_text(f"[{PROFILE}]\naws_access_key_id = {ceph.admin.access_key}\n"
                    f"aws_secret_access_key = {ceph.admin.secret_key}\n")
    path.chmod(0o600)
    empty = ceph.root / "aws-config"
    empty.write_text("")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    return path


def settings(ceph: CephCluster, bucket: str, **overrides: Any) -> S3Settings:
    """Small parts and short timeouts, so multipart and deadlines are quick to exercise."""
    fields: dict[str, Any] = {"profile": PROFILE, "name": "test-archive", "multipart_threshold": 6 << 20,
                              "part_size": 5 << 20, "timeout_s": 10.0, "connect_timeout_s": 1.0,
                              "read_timeout_s": 2.0}
    fields.update(overrides)
    return S3Settings(fields.pop("endpoint", ceph.endpoint), bucket, **fields)


def s3_access(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch, *, object_lock: bool = False,
              **overrides: Any) -> S3BlobAccess:
    use_credentials_file(ceph, monkeypatch)
    return S3BlobAccess(settings(ceph, new_bucket(ceph, object_lock=object_lock), **overrides))


def s3_tier(ceph: CephCluster, bucket: str, name: str = "archive", **overrides: Any) -> dict[str, Any]:
    """A [[tiers]] entry for an object-store tier on the test Ceph: quick timeouts, a 1 GiB quota."""
    tier: dict[str, Any] = {"name": name, "backend": "s3", "s3_endpoint": ceph.endpoint, "s3_bucket": bucket,
                            "s3_profile": PROFILE, "s3_quota_bytes": 1 << 30, "reserve_bytes": 0,
                            "high_watermark": 0.95, "low_watermark": 0.9, "s3_timeout_s": 5.0,
                            "s3_connect_timeout_s": 1.0, "s3_read_timeout_s": 3.0}
    tier.update(overrides)
    return tier


def s3_credentials_env(ceph: CephCluster, **overrides: str) -> dict[str, str]:
    """The AWS chain's environment variables for a daemon subprocess: the admin user's keys, nothing else."""
    assert ceph.admin is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": ceph.admin.access_key, "AWS_SECRET_ACCESS_KEY": ceph.admin.secret_key,
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
    env.update(overrides)
    return env
