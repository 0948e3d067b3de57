"""The checks of an object-store tier's keys (``backend = "s3"``); every error names its key.

An s3 tier is one bucket (and optional key prefix) of an S3 object store
standing where a disk would: one volume, with no directories. It holds the
sealed blobs as stored, so it needs encryption at rest. It comes after every
local tier: new data and promotions land on local disks, and the object store
takes what the mover demotes (or, only when no local tier has room, new data).
S3 reports no capacity, so ``s3_quota_bytes`` stands for it (the watermarks
and the reserve are fractions and bytes of it).

Credentials come from the standard AWS chain (the daemon's environment,
``AWS_SHARED_CREDENTIALS_FILE``, an optional ``s3_profile``), never from this
file.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pacsvault.daemon.errors import ConfigError

if TYPE_CHECKING:
    from pacsvault.daemon.config import Config, TierConfig

# S3's bucket naming rules (path-style addressing also takes dots).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^([A-Za-z0-9!_.*'()-]+/)*$")
_S3_KEYS = ("s3_endpoint", "s3_bucket", "s3_prefix", "s3_profile", "s3_ca_file", "s3_quota_bytes")


def check_object_tiers(config: Config) -> None:
    """Checks every s3 tier's keys, that local tiers carry none, and that s3 tiers come last."""
    locations: set[tuple[str, str, str]] = set()
    for i, tier in enumerate(config.tiers):
        if not tier.is_object_store:
            _check_local(i, tier)
            if any(t.is_object_store for t in config.tiers[:i]):
                raise ConfigError(f"tiers[{i}]: local tier {tier.name!r} comes after an s3 tier; object-store "
                                  "tiers come after every local tier")
            continue
        if i == 0:
            raise ConfigError(f"tiers[0].backend: the first tier takes new data and promotions; it must be a "
                              f"local tier, with tier {tier.name!r} (s3) after it")
        _check_s3(config, i, tier)
        location = (tier.s3_endpoint.rstrip("/"), tier.s3_bucket, tier.s3_prefix)
        if location in locations:
            raise ConfigError(f"tiers[{i}]: bucket {tier.s3_bucket!r} with prefix {tier.s3_prefix!r} is used twice")
        locations.add(location)


def _check_local(i: int, tier: TierConfig) -> None:
    for key in _S3_KEYS:
        if getattr(tier, key):
            raise ConfigError(f"tiers[{i}].{key}: only an s3 tier takes s3_ keys (set backend = \"s3\")")
    if tier.volume_class == "object":
        raise ConfigError(f"tiers[{i}].volume_class: \"object\" is the class of an s3 tier")


def _check_s3(config: Config, i: int, tier: TierConfig) -> None:
    where = f"tiers[{i}]"
    if tier.volumes:
        raise ConfigError(f"{where}.volumes: an s3 tier has no volumes (its bucket is its one volume)")
    if tier.volume_class != "object":
        raise ConfigError(f"{where}.volume_class: an s3 tier's class is \"object\" (or leave it out)")
    if not config.encryption.enabled:
        raise ConfigError(f"{where}.backend: an object-store tier holds only sealed blobs, never plain DICOM; "
                          "it needs encryption.enabled = true")
    if not tier.s3_endpoint.startswith(("https://", "http://")) or len(tier.s3_endpoint.split("://", 1)[1]) < 1:
        raise ConfigError(f"{where}.s3_endpoint: {tier.s3_endpoint!r} must be an https:// (or http://) URL")
    if not _BUCKET.match(tier.s3_bucket):
        raise ConfigError(f"{where}.s3_bucket: {tier.s3_bucket!r} is not a bucket name (3-63 lower-case letters, "
                          "digits, '.' or '-')")
    if not _PREFIX.match(tier.s3_prefix) or ".." in tier.s3_prefix.split("/"):
        raise ConfigError(f"{where}.s3_prefix: {tier.s3_prefix!r} must be empty or folders ending in '/', "
                          "e.g. \"site-a/\"")
    if tier.s3_quota_bytes <= 0:
        raise ConfigError(f"{where}.s3_quota_bytes: an s3 tier needs a quota, the bytes this appliance may keep "
                          "in the bucket (S3 reports no capacity; the watermarks are fractions of it)")
    if tier.reserve_bytes >= tier.s3_quota_bytes:
        raise ConfigError(f"{where}.reserve_bytes must be below s3_quota_bytes")
    for key in ("s3_timeout_s", "s3_connect_timeout_s", "s3_read_timeout_s"):
        if getattr(tier, key) <= 0:
            raise ConfigError(f"{where}.{key} must be positive")
    if tier.s3_max_connections < 1:
        raise ConfigError(f"{where}.s3_max_connections must be at least 1")
    if tier.s3_ca_file and not config.resolve(tier.s3_ca_file).is_file():
        raise ConfigError(f"{where}.s3_ca_file: {config.resolve(tier.s3_ca_file)} is not a readable file")
