"""The appliance's keys: where they live, how they are made, rotated and derived.

A keyring holds two kinds of secret:

* key-encryption keys (KEKs), numbered versions, one of them active. They
  wrap the per-blob data keys; rotating adds a version and re-wraps, and
  older versions stay readable until nothing refers to them.
* a root secret, never rotated, from which the long-lived keys are derived
  with HKDF: the key of blob addresses (keyed digests, so that whoever holds
  the disks cannot confirm that a known file is stored), of index values, of
  index lookup tags, and of the audit store. Rotating these would mean
  re-encrypting everything; the KEKs are what rotate.

The keyring lives outside the data disks: a JSON file readable only by the
daemon's user (refused otherwise, like ssh refuses a loose private key), or
the output of a command, which is the hook for a hospital KMS or HSM: the
command fetches or unwraps the keyring there and prints it; the daemon keeps
it in memory only.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pacsvault.daemon.errors import ConfigError, FailedPrecondition
from pacsvault.daemon.storage import durable

KEY_BYTES = 32
FORMAT = 1

# What each derived key is for; the label is the HKDF info, so keys for
# different purposes are independent even though they share the root.
ADDRESS = b"pacsvault/v1/blob-address"
INDEX_VALUES = b"pacsvault/v1/index-values"
INDEX_TAGS = b"pacsvault/v1/index-tags"
AUDIT_STORE = b"pacsvault/v1/audit-store"
AUDIT_CHAIN = b"pacsvault/v1/audit-chain"


@dataclass(frozen=True)
class Keyring:
    root: bytes
    keks: dict[int, bytes]
    active: int
    # Where it came from, for messages: a path or "command".
    source: str = ""

    def kek(self, version: int) -> bytes:
        try:
            return self.keks[version]
        except KeyError:
            raise KeyError(f"key-encryption key version {version} is not in the keyring ({self.source})") from None

    def derive(self, label: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=label).derive(self.root)

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT,
            "root": _b64(self.root),
            "active": self.active,
            "keks": {str(v): {"key": _b64(k)} for v, k in sorted(self.keks.items())},
        }, indent=2) + "\n"

    @classmethod
    def generate(cls, source: str = "") -> Keyring:
        return cls(os.urandom(KEY_BYTES), {1: os.urandom(KEY_BYTES)}, 1, source)

    def with_new_kek(self) -> Keyring:
        version = max(self.keks) + 1
        return Keyring(self.root, {**self.keks, version: os.urandom(KEY_BYTES)}, version, self.source)

    def without_kek(self, version: int) -> Keyring:
        if version == self.active:
            raise ValueError(f"key-encryption key version {version} is the active one; rotate first")
        return Keyring(self.root, {v: k for v, k in self.keks.items() if v != version}, self.active, self.source)


def parse(text: str, source: str) -> Keyring:
    try:
        raw = json.loads(text)
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
        keks = {int(v): _unb64(entry["key"]) for v, entry in raw["keks"].items()}
        ring = Keyring(_unb64(raw["root"]), keks, int(raw["active"]), source)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"keyring {source} is not readable: {exc}") from exc
    if len(ring.root) != KEY_BYTES or any(len(k) != KEY_BYTES for k in keks.values()):
        raise ConfigError(f"keyring {source}: every key must be {KEY_BYTES} bytes")
    if ring.active not in keks:
        raise ConfigError(f"keyring {source}: active version {ring.active} has no key")
    return ring


def load_file(path: Path, *, create: bool) -> Keyring:
    """Reads the keyring file, making it (0600) at first start when ``create``."""
    if not path.exists():
        if not create:
            raise ConfigError(f"encryption.key_file {path} does not exist (and encryption.create_key_file is off)")
        ring = Keyring.generate(str(path))
        write_file(path, ring)
        return ring
    _check_private(path)
    return parse(path.read_text(encoding="utf-8"), str(path))


def write_file(path: Path, ring: Keyring) -> None:
    """Replaces the keyring file atomically and durably; readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    durable.write_new(tmp, ring.to_json().encode(), mode=0o600)
    os.replace(tmp, path)
    durable.fsync_dir(path.parent)


def load_command(command: str) -> Keyring:
    """Runs the KMS hook; its standard output is the keyring JSON."""
    try:
        done = subprocess.run(command, shell=True, capture_output=True, timeout=60, check=False)  # noqa: S602
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(f"encryption.key_command did not answer within 60 s: {command}") from exc
    if done.returncode != 0:
        raise ConfigError(f"encryption.key_command exited {done.returncode}: "
                          f"{done.stderr.decode(errors='replace').strip()[:300]}")
    return parse(done.stdout.decode(errors="replace"), "encryption.key_command")


def _check_private(path: Path) -> None:
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"keyring {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                          f"chmod 600 it, since it unlocks every study")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"keyring {path} belongs to uid {info.st_uid}, not to the daemon's user ({os.geteuid()})")


class KeyringHolder:
    """The live keyring; rotation swaps it, readers take a consistent snapshot."""

    def __init__(self, ring: Keyring, path: Path | None) -> None:
        self._ring = ring
        self._path = path
        self._lock = threading.Lock()

    @property
    def current(self) -> Keyring:
        return self._ring

    def reload(self) -> Keyring:
        """Reads the keyring file again: another process of the daemon rotated it."""
        with self._lock:
            if self._path is not None:
                ring = load_file(self._path, create=False)
                if ring.active >= self._ring.active:
                    self._ring = ring
            return self._ring

    def rotate(self) -> Keyring:
        """Adds a KEK version and makes it active, durably, before anything is wrapped with it."""
        with self._lock:
            if self._path is None:
                raise FailedPrecondition("the keyring comes from encryption.key_command; rotate it in the KMS "
                                         "and restart the daemon")
            ring = self._ring.with_new_kek()
            write_file(self._path, ring)
            self._ring = ring
            return ring

    def retire(self, version: int) -> Keyring:
        with self._lock:
            if self._path is None:
                raise FailedPrecondition("the keyring comes from encryption.key_command; retire keys in the KMS")
            ring = self._ring.without_kek(version)
            write_file(self._path, ring)
            self._ring = ring
            return ring


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
