"""The daemon's configuration: one TOML file, validated at start.

Every key has a default, so no file at all is a working configuration (the
embedded default: loopback only, index and tiers under ``./pacsvault-data``).
``pacsvault.example.toml`` beside this module lists every key with its default
and a test keeps the two in step. Errors name the offending key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pacsvault.daemon.errors import ConfigError

EXAMPLE_CONFIG = Path(__file__).with_name("pacsvault.example.toml")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    # A second listener, plaintext and on loopback only, beside a TLS listen: the appliance's own
    # tools (the CLI, health checks) use it without certificates, with security.loopback_roles.
    # Empty: none.
    local_listen: str = ""
    # Serving processes, all on the same port: 0 means one per core the daemon may run on.
    workers: int = 0
    # Threads of each serving process (calls in flight at once, per process).
    max_workers: int = 32
    shutdown_grace_s: float = 30.0
    # Chunks are at most 1 MiB; the margin covers the message envelope.
    max_message_bytes: int = 4 * 1024 * 1024
    # Access-log lines a second, per serving process (service/access_log.py); 0: none.
    access_log_per_s: float = 100.0


@dataclass(frozen=True)
class IndexConfig:
    path: str = "index"
    map_size_bytes: int = 16 * 1024**3
    max_batch: int = 256
    # Kept free for deletes, purges and repairs: stores are refused (RESOURCE_EXHAUSTED) once
    # only this part of the map is left, so a full index is never a dead end.
    reserve_percent: float = 5.0
    # At start, walk every page of the index once (seconds for millions of instances): a damaged
    # index is refused with the command that rebuilds it, instead of failing calls later.
    verify_on_start: bool = True


@dataclass(frozen=True)
class StorageConfig:
    # zstd level 1: half the CPU of level 3 for 4-6% less saved (measured: bench/README.md).
    compression_level: int = 1
    frame_size_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class LimitsConfig:
    max_instance_bytes: int = 1024**3
    default_page_size: int = 100
    max_page_size: int = 1000
    # Streams (uploads, retrievals, watches) one principal may have open at once in one
    # serving process: below server.max_workers, so no caller can take all its threads.
    max_streams_per_principal: int = 16
    # An upload that sends nothing for this long is ended (DEADLINE_EXCEEDED), its thread freed.
    upload_idle_timeout_s: float = 30.0
    # No call runs longer, whatever deadline the caller set (WatchHealth and RestoreFromPeer excepted).
    max_call_s: float = 3600.0


VOLUME_CLASSES = ("nvme", "ssd", "hdd", "raid", "object")
AGE_BASES = ("ingest", "study_date", "access")
TIER_BACKENDS = ("local", "s3")


@dataclass(frozen=True)
class TierConfig:
    name: str
    # Directories (mount points) of a local tier; an s3 tier has none: its bucket is its one volume.
    volumes: tuple[str, ...] = ()
    # What the volumes are; reported, and used to explain placement. Empty: "hdd" for
    # a local tier, "object" for an s3 tier.
    volume_class: str = ""
    # Fractions of each volume's filesystem (of s3_quota_bytes for an s3 tier). Past high,
    # no new data lands on the volume and the mover demotes its coldest studies until below low.
    high_watermark: float = 0.85
    low_watermark: float = 0.70
    reserve_bytes: int = 256 * 1024 * 1024
    # "local": directories on this appliance's disks. "s3": one bucket of an object store
    # (S3 API: Ceph RGW, StorageGRID, ECS, MinIO, AWS), after every local tier. See
    # config_object_tiers for the s3_ keys, which only an s3 tier takes.
    backend: str = "local"
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_region: str = "us-east-1"
    s3_profile: str = ""
    s3_ca_file: str = ""
    s3_quota_bytes: int = 0
    s3_timeout_s: float = 30.0
    s3_connect_timeout_s: float = 2.0
    s3_read_timeout_s: float = 10.0
    s3_max_connections: int = 16

    def __post_init__(self) -> None:
        if not self.volume_class:
            object.__setattr__(self, "volume_class", "object" if self.backend == "s3" else "hdd")

    @property
    def is_object_store(self) -> bool:
        return self.backend == "s3"


DEFAULT_TIERS = (
    TierConfig(name="hot", volumes=("tiers/hot",), volume_class="nvme"),
    TierConfig(name="capacity", volumes=("tiers/capacity",), volume_class="hdd"),
)


@dataclass(frozen=True)
class TieringConfig:
    mover_enabled: bool = True
    mover_interval_s: float = 30.0
    mover_max_bytes_per_s: int = 100 * 1024 * 1024
    # 0: demote only by watermark. Otherwise studies older than this are
    # demoted whatever the watermark, judged by age_basis.
    demote_after_days: int = 0
    age_basis: str = "ingest"
    promote_on_access: bool = True
    access_flush_interval_s: float = 10.0


@dataclass(frozen=True)
class HealthConfig:
    # SMART / NVMe / md poll of every disk; smartctl runs with --nocheck=standby.
    poll_interval_s: float = 300.0
    # Capacity check of every volume (statvfs only, cheap); also drives grpc.health.v1.
    capacity_interval_s: float = 10.0
    # The poller's memory of last values per disk, kept across restarts.
    state_file: str = "health/poller-state.json"
    smartctl_timeout_s: float = 60.0
    nvme_timeout_s: float = 30.0
    # "": the daemon runs smartctl and nvme-cli itself (it needs the rights to).
    # A folder: it reads their results there, left by `pacsvaultd --collect-hardware`.
    collector_dir: str = ""
    capacity_warning_percent: float = 80.0
    max_watchers: int = 8
    watch_queue_size: int = 256


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    # With the [security] TLS files: HTTPS on any address, for a client certificate naming a
    # principal with the monitor or admin role. Without: plain HTTP, loopback only.
    listen: str = "127.0.0.1:9464"


@dataclass(frozen=True)
class WebConfig:
    # DICOMweb (PS3.18: QIDO-RS, WADO-RS, STOW-RS) under base_path, and the share page under /share/.
    enabled: bool = True
    # HOST:PORT; off loopback it speaks HTTPS only, with the API's TLS files and client-CA rule.
    listen: str = "127.0.0.1:8080"
    base_path: str = "/dicom-web"
    # How people reach it (the links `share create` prints), e.g. "https://pacs.hospital.example:8443".
    # Empty: from listen (the machine's name when listening on every address).
    public_url: str = ""
    # A STOW-RS request is held whole until every part has arrived, so a cut-off
    # upload stores nothing; larger requests get 413.
    max_request_bytes: int = 512 * 1024 * 1024


@dataclass(frozen=True)
class ReplicationConfig:
    enabled: bool = False
    # This appliance's name and its peer's: each certificate carries its
    # name as a SAN URI (spiffe://pacsvault/appliance/<name>).
    appliance_name: str = ""
    peer_name: str = ""
    # Where the peer's peer listener answers.
    peer_address: str = ""
    # This appliance's peer listener: always mutual TLS.
    listen: str = "127.0.0.1:50052"
    # PEM files; relative paths are under data_dir.
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    data_shards: int = 4
    parity_shards: int = 2
    max_bytes_per_s: int = 100 * 1024 * 1024
    sender_interval_s: float = 1.0
    max_backoff_s: float = 60.0
    rpo_warning_s: float = 300.0
    scrub_interval_s: float = 3600.0
    scrub_max_bytes_per_s: int = 20 * 1024 * 1024
    # The peer is asked a cheap question this often, each with this deadline: a peer that
    # accepts connections but answers nothing (frozen) shows as "stalled" within seconds,
    # though the sender's own calls may wait much longer. The answer also lists the
    # replicas the peer cannot rebuild, which this appliance then sends again.
    probe_interval_s: float = 2.0
    probe_timeout_s: float = 3.0


RETENTION_BASES = ("ingest", "study_date")


@dataclass(frozen=True)
class RetentionConfig:
    # No study younger than this may be deleted (FAILED_PRECONDITION); 0: no minimum.
    min_days: int = 0
    # What "younger" counts from: when the study was first stored, or its StudyDate.
    basis: str = "ingest"
    # A delete moves the study (series, instance) to the trash for this long: invisible, still
    # replicated, restorable with `pacsvault undelete`; only then are its blobs crypto-shredded
    # and the peer told. 0: at once.
    soft_delete_days: float = 7.0
    # How often the back office purges what is past its time in the trash.
    purge_interval_s: float = 300.0


@dataclass(frozen=True)
class ScrubConfig:
    # The local scrub: every blob on every tier read back, each frame authenticated and the whole
    # checked against its digest, in the back office, resumable across restarts.
    enabled: bool = True
    # Bytes read a second at most (its cost to ingest stays within 10% at the default, bench/).
    max_bytes_per_s: int = 16 * 1024 * 1024
    # A new pass starts this long after the previous one started (at once if that one took longer).
    interval_s: float = 7 * 86400.0


@dataclass(frozen=True)
class IntegrityConfig:
    # `pacsvault check --repair` deletes orphan blobs and temp files only when older than this,
    # and never while a store could still commit them (it takes the blob's lock first).
    orphan_grace_s: float = 3600.0


@dataclass(frozen=True)
class AuditRepositoryConfig:
    # An IHE ATNA audit record repository: syslog over TLS (RFC 5425).
    name: str
    # HOST:PORT; the repository's certificate must name HOST and chain to ca_file.
    address: str
    ca_file: str
    # Our client certificate and key, for repositories that ask for one.
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class AuditConfig:
    # Record every access to patient data; calls that cannot be recorded are refused.
    # Off needs security.insecure_no_audit.
    enabled: bool = True
    # The trail, relative to data_dir; sealed when [encryption] is on. keys_dir holds
    # its keys only with encryption off (otherwise they derive from the keyring).
    path: str = "audit/trail.jsonl"
    keys_dir: str = "audit/keys"
    # Reads wait until their record is on stable storage, not only written to the trail
    # file (flushed within 50 ms): closes the window a power cut could cost, at the
    # price of a disk flush on every read. Changes always wait for stable storage.
    flush_before_read: bool = False
    # A signed checkpoint (also sent to the peer as a witness) every N records or T seconds.
    checkpoint_every: int = 1000
    checkpoint_interval_s: float = 60.0
    # Every record is also sent, as a DICOM audit message, to each of these (IHE ATNA).
    repositories: tuple[AuditRepositoryConfig, ...] = ()
    # Seconds between export passes when idle; while a repository is away the wait
    # doubles up to export_max_backoff_s. Nothing is lost meanwhile: the trail is the spool.
    export_interval_s: float = 1.0
    export_max_backoff_s: float = 60.0


@dataclass(frozen=True)
class EncryptionConfig:
    # Encrypt blobs, the index values that carry PHI and the audit store (AES-256-GCM).
    # Fixed when the data dir is first used: the daemon refuses a later change.
    # Off needs security.insecure_no_encryption.
    enabled: bool = True
    # The keyring: key-encryption keys and the root of the derived keys. Keep it
    # off the data disks (the daemon refuses a path inside data_dir). Empty means
    # "<data_dir>-keys/keyring.json", beside the data dir. Mode 0600, daemon's user.
    key_file: str = ""
    # Make the keyring at first start when it does not exist.
    create_key_file: bool = True
    # KMS / HSM hook: a shell command printing the keyring JSON (see
    # pacsvault.daemon.crypto.keyring); used instead of key_file when set.
    key_command: str = ""
    # Zero a blob's wrapped data key before deleting its last copy, so the
    # ciphertext cannot be read again even with the keyring (crypto-shredding).
    shred_on_delete: bool = True


@dataclass(frozen=True)
class PrincipalConfig:
    # The certificate's SAN URI: spiffe://pacsvault/client/<name> (or appliance/<name>).
    identity: str
    roles: tuple[str, ...]


ALL_CLIENT_ROLES = ("ingest", "reader", "admin", "security-admin", "auditor", "monitor")


@dataclass(frozen=True)
class SecurityConfig:
    # PEM files of the client API's TLS certificate and key, and of the CA
    # that signs client certificates. Set, the API speaks TLS 1.2+ and
    # requires a client certificate; unset, it may only listen on loopback.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    client_ca_file: str = ""
    # Roles of a plaintext caller on the loopback listener: a newcomer with no
    # certificates can use everything on their own machine.
    loopback_roles: tuple[str, ...] = ALL_CLIENT_ROLES
    # Certificate identities and the roles they hold; anyone else is refused.
    principals: tuple[PrincipalConfig, ...] = ()
    # Connections older than this are closed (after in-flight calls finish), so
    # every client re-handshakes against renewed certificates in bounded time.
    max_connection_age_s: float = 600.0
    # Who may break the glass (identities, or "local:loopback"), and what it grants.
    break_glass_principals: tuple[str, ...] = ()
    break_glass_roles: tuple[str, ...] = ("reader",)
    # The longest a bearer token may live (30 days; more needs insecure_long_token_ttl).
    max_token_ttl_s: float = 30 * 86400.0
    # The idle timeout of a token created without one (0, none, needs insecure_no_token_idle_timeout).
    token_idle_timeout_s: float = 3600.0
    # Acknowledgements of settings that weaken a protection (security.production_guard): each is
    # refused without its key, and reported by health as a warning while in force.
    insecure_no_encryption: bool = False
    insecure_no_audit: bool = False
    insecure_long_token_ttl: bool = False
    insecure_no_token_idle_timeout: bool = False
    # DeleteStudy only asks; another admin approves (ApproveStudyDeletion) within a day.
    delete_requires_second_admin: bool = False

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)


@dataclass(frozen=True)
class CallingAeConfig:
    # A modality's or viewer's AE title and the principal (an identity of security.principals,
    # whose roles it gets) it acts as. Off loopback the title is accepted only together with
    # that principal's client certificate.
    ae_title: str
    identity: str


@dataclass(frozen=True)
class DicomDestinationConfig:
    # An AE pacsvault connects to: C-MOVE's Move Destination, and where a Storage Commitment
    # report goes when the requesting association has closed (the calling AE's title).
    name: str
    host: str
    port: int
    # DICOM TLS (PS3.15 B.1) with this appliance's certificate (security.tls_cert_file), the
    # destination's checked against security.client_ca_file. Required off loopback.
    tls: bool = False


@dataclass(frozen=True)
class DicomConfig:
    # The DIMSE door: C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET, Storage Commitment.
    enabled: bool = True
    listen: str = "127.0.0.1:11112"
    ae_title: str = "PACSVAULT"
    calling_aes: tuple[CallingAeConfig, ...] = ()
    destinations: tuple[DicomDestinationConfig, ...] = ()
    # An association with no traffic for this long is aborted (and a connection that
    # never completes its TLS handshake or association request is closed).
    idle_timeout_s: float = 60.0
    # Associations each serving process accepts at once; more are rejected (transient).
    max_associations: int = 16
    # Largest PDU we receive (the sender cuts datasets into PDUs of at most this size).
    max_pdu_bytes: int = 1024 * 1024
    # Storage Commitment: report an instance committed only once the peer appliance holds
    # it too (needs replication.enabled); a reference still not replicated after
    # commitment_timeout_s is reported failed, so the modality keeps its copy.
    commit_after_replication: bool = False
    commitment_timeout_s: float = 3600.0


@dataclass(frozen=True)
class Config:
    data_dir: str = "pacsvault-data"
    server: ServerConfig = field(default_factory=ServerConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    tiering: TieringConfig = field(default_factory=TieringConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    dicom: DicomConfig = field(default_factory=DicomConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    scrub: ScrubConfig = field(default_factory=ScrubConfig)
    integrity: IntegrityConfig = field(default_factory=IntegrityConfig)
    tiers: tuple[TierConfig, ...] = DEFAULT_TIERS

    def resolve(self, path: str) -> Path:
        """A configured path; relative ones live under the data dir."""
        return (Path(self.data_dir) / path).resolve()

    def key_file_path(self) -> Path:
        """The keyring file: configured, or beside the data dir (never inside it)."""
        if self.encryption.key_file:
            return Path(self.encryption.key_file).resolve()
        data = Path(self.data_dir).resolve()
        return data.parent / f"{data.name}-keys" / "keyring.json"

    def with_overrides(self, *, listen: str | None = None, data_dir: str | None = None,
                       metrics_listen: str | None = None, workers: int | None = None,
                       web_listen: str | None = None, dicom_listen: str | None = None) -> Config:
        new = self
        if web_listen is not None:
            new = dataclasses.replace(new, web=dataclasses.replace(new.web, listen=web_listen))
        if dicom_listen is not None:
            new = dataclasses.replace(new, dicom=dataclasses.replace(new.dicom, listen=dicom_listen))
        if listen is not None:
            new = dataclasses.replace(new, server=dataclasses.replace(new.server, listen=listen))
        if workers is not None:
            new = dataclasses.replace(new, server=dataclasses.replace(new.server, workers=workers))
        if metrics_listen is not None:
            new = dataclasses.replace(new, metrics=dataclasses.replace(new.metrics, listen=metrics_listen))
        if data_dir is not None:
            new = dataclasses.replace(new, data_dir=data_dir)
        validate(new)
        return new


def load(path: Path | None) -> Config:
    """Reads and validates ``path``; None gives the embedded default."""
    if path is None:
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return from_dict(raw)


def from_dict(raw: dict[str, Any]) -> Config:
    """Builds and validates a config; ConfigError lists every problem found, each naming its key."""
    problems: list[str] = []
    try:
        config = _build(Config, raw, "", problems)
    except _Recorded:
        raise _error(problems) from None
    # A value that could not be read takes its default, so the checks still judge everything else.
    _raise_if_any(problems + _validation_problems(config))
    return config


def to_dict(config: Config) -> dict[str, Any]:
    """The config as ``from_dict`` reads it (how the supervisor hands it to its children)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def serving_processes(config: Config) -> int:
    """How many serving processes ``server.workers`` asks for."""
    return config.server.workers or len(os.sched_getaffinity(0))


class _Recorded(Exception):
    """A table or list could not be built; why is already among the problems."""


def _build(cls: type, raw: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(raw, dict):
        problems.append(f"{where or 'config'}: expected a table")
        raise _Recorded
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for name in sorted(set(raw) - names):
        problems.append(f"unknown key {_key(where, name)} (known keys: {', '.join(sorted(names))})")
    values, complete = {}, True
    for f in dataclasses.fields(cls):
        key = _key(where, f.name)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name not in raw:
            if required:
                problems.append(f"missing key {key}")
                complete = False
            continue
        try:
            values[f.name] = _convert(hints[f.name], raw[f.name], key, problems)
        except ConfigError as exc:
            problems.append(str(exc))
            complete = complete and not required
        except _Recorded:
            complete = complete and not required
    if not complete:
        raise _Recorded
    return cls(**values)


def _convert(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        items, failed = [], False
        for i, item in enumerate(value):
            try:
                items.append(_convert(item_type, item, f"{key}[{i}]", problems))
            except ConfigError as exc:
                problems.append(str(exc))
                failed = True
            except _Recorded:
                failed = True
        if failed:
            raise _Recorded  # the whole list keeps its default
        return tuple(items)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, problems)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and not isinstance(hint, types.GenericAlias):
        if isinstance(value, bool) and hint is not bool or not isinstance(value, hint):
            raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def validate(config: Config) -> None:
    """Checks values, not just types; ConfigError lists every problem, each naming its key."""
    _raise_if_any(_validation_problems(config))


Problems = Iterator[str]


def _validation_problems(config: Config) -> list[str]:
    """Every check's problems, in the order of the example file."""
    checks: list[Callable[[Config], Problems]] = [
        _check_server, _check_index_storage_limits, lambda c: _check_tiers(c.tiers),
        lambda c: _check_tiering(c.tiering), _check_replication, _check_security, _check_audit,
        _check_audit_repositories, _check_encryption, lambda c: _check_health(c.health), _check_metrics,
        _check_web, _check_dicom, _check_call_limits, _check_object_tiers, _check_lifecycle,
    ]
    found: list[str] = []
    for check in checks:
        try:
            found.extend(check(config))
        except ConfigError as exc:  # a check that stops at its first problem
            found.extend(exc.problems)
    return found


def _raise_if_any(problems: list[str]) -> None:
    if problems:
        raise _error(problems)


def _error(problems: list[str]) -> ConfigError:
    unique = list(dict.fromkeys(problems))
    if len(unique) == 1:
        return ConfigError(unique[0])
    return ConfigError(f"{len(unique)} problems: " + "; ".join(unique), tuple(unique))


def _check_server(config: Config) -> Problems:
    server = config.server
    yield from _listen_problems(server.listen)
    if server.local_listen:
        yield from _listen_problems(server.local_listen, "server.local_listen")
        if _is_off_loopback(server.local_listen):
            yield f"server.local_listen {server.local_listen!r} must be a loopback address (it speaks plaintext)"
        if server.local_listen == server.listen:
            yield "server.local_listen must differ from server.listen"
    if not 0 <= server.workers <= 1024:
        yield "server.workers must be between 0 (one per core) and 1024"
    yield from _positive("server.max_workers", server.max_workers)
    if server.max_message_bytes < 2 * 1024 * 1024:
        yield "server.max_message_bytes must be at least 2097152 (chunks are 1 MiB)"
    if server.shutdown_grace_s < 0:
        yield "server.shutdown_grace_s must not be negative"
    if server.access_log_per_s < 0:
        yield "server.access_log_per_s must not be negative (0 turns the access log off)"


def _check_index_storage_limits(config: Config) -> Problems:
    if config.index.map_size_bytes < 1024 * 1024:
        yield "index.map_size_bytes must be at least 1048576"
    yield from _positive("index.max_batch", config.index.max_batch)
    if not 0 <= config.index.reserve_percent <= 50:
        yield "index.reserve_percent must be between 0 and 50"
    if not 1 <= config.storage.compression_level <= 19:
        yield "storage.compression_level must be between 1 and 19"
    if not 4096 <= config.storage.frame_size_bytes <= 64 * 1024 * 1024:
        yield "storage.frame_size_bytes must be between 4096 and 67108864"
    yield from _positive("limits.max_instance_bytes", config.limits.max_instance_bytes)
    yield from _positive("limits.default_page_size", config.limits.default_page_size)
    if config.limits.max_page_size < config.limits.default_page_size:
        yield "limits.max_page_size must be at least limits.default_page_size"


def _check_audit(config: Config) -> Problems:
    yield from _positive("audit.checkpoint_every", config.audit.checkpoint_every)
    if config.audit.checkpoint_interval_s <= 0:
        yield "audit.checkpoint_interval_s must be positive"


def _check_metrics(config: Config) -> Problems:
    metrics = config.metrics
    yield from _listen_problems(metrics.listen, "metrics.listen")
    if metrics.enabled and not config.security.tls and _is_off_loopback(metrics.listen):
        yield (f"metrics.listen {metrics.listen!r} is off loopback: set security.tls_cert_file, "
               "security.tls_key_file and security.client_ca_file (HTTPS with client certificates), or keep it "
               "on loopback for a local agent")


def _check_web(config: Config) -> Problems:
    web = config.web
    yield from _listen_problems(web.listen, "web.listen")
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", web.base_path) or web.base_path.startswith("/share"):
        yield f"web.base_path: {web.base_path!r} must be a path like /dicom-web (not under /share)"
    if web.public_url and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", web.public_url):
        yield f"web.public_url: {web.public_url!r} must be an http:// or https:// URL"
    yield from _positive("web.max_request_bytes", web.max_request_bytes)
    if web.enabled and not config.security.tls and _is_off_loopback(web.listen):
        yield (f"web.listen {web.listen!r} is off loopback: set security.tls_cert_file, "
               "security.tls_key_file and security.client_ca_file (HTTPS with client certificates, as the API)")


def _check_dicom(config: Config) -> Problems:
    dicom = config.dicom
    yield from _listen_problems(dicom.listen, "dicom.listen")
    if dicom.enabled and not config.security.tls and _is_off_loopback(dicom.listen):
        yield (f"dicom.listen {dicom.listen!r} is off loopback: set security.tls_cert_file, "
               "security.tls_key_file and security.client_ca_file (DICOM TLS, PS3.15 B.1; patient "
               "data never crosses a network in clear text)")
    check_ae_title("dicom.ae_title", dicom.ae_title)
    identities = {p.identity for p in config.security.principals}
    seen: set[str] = set()
    for i, calling in enumerate(dicom.calling_aes):
        where = f"dicom.calling_aes[{i}]"
        check_ae_title(f"{where}.ae_title", calling.ae_title)
        if calling.ae_title in seen:
            yield f"{where}.ae_title: {calling.ae_title!r} is listed twice"
        seen.add(calling.ae_title)
        if calling.identity not in identities:
            yield (f"{where}.identity: {calling.identity!r} is not in security.principals, so it "
                              "holds no roles")
    _check_destinations(config)
    for key in ("idle_timeout_s", "commitment_timeout_s"):
        if getattr(dicom, key) <= 0:
            yield f"dicom.{key} must be positive"
    if not 1 <= dicom.max_associations <= 1024:
        yield "dicom.max_associations must be between 1 and 1024"
    if not 16 * 1024 <= dicom.max_pdu_bytes <= 64 * 1024 * 1024:
        yield "dicom.max_pdu_bytes must be between 16384 and 67108864"
    if dicom.commit_after_replication and not config.replication.enabled:
        yield ("dicom.commit_after_replication needs replication.enabled: without a peer nothing "
               "would ever be committed")


def _check_destinations(config: Config) -> None:
    names: set[str] = set()
    for i, destination in enumerate(config.dicom.destinations):
        where = f"dicom.destinations[{i}]"
        check_ae_title(f"{where}.name", destination.name)
        if destination.name in names:
            raise ConfigError(f"{where}.name: {destination.name!r} is listed twice")
        names.add(destination.name)
        if not _host_port(f"{destination.host}:{destination.port}"):
            raise ConfigError(f"{where}.host: {destination.host!r} is not a host name or address")
        if not 1 <= destination.port <= 65535:
            raise ConfigError(f"{where}.port must be between 1 and 65535")
        if destination.tls and not config.security.tls:
            raise ConfigError(f"{where}.tls needs security.tls_cert_file, tls_key_file and client_ca_file")
        if not destination.tls and not _host_is_loopback(destination.host):
            raise ConfigError(f"{where}: {destination.host} is off loopback: set tls = true (patient data never "
                              "crosses a network in clear text)")


def check_ae_title(key: str, value: str) -> None:
    """An AE title (PS3.5 AE): 1-16 printable ASCII characters, no backslash, not only spaces."""
    if not value.strip() or len(value) > 16 or any(not 0x20 <= ord(c) <= 0x7E or c == "\\" for c in value):
        raise ConfigError(f"{key}: {value!r} is not an AE title (1-16 printable ASCII characters, no backslash)")


def _host_is_loopback(host: str) -> bool:
    bare = host.strip("[]")
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _check_call_limits(config: Config) -> Problems:
    limits = config.limits
    if not 1 <= limits.max_streams_per_principal < config.server.max_workers:
        yield (f"limits.max_streams_per_principal must be at least 1 and below server.max_workers "
               f"({config.server.max_workers}), so that one caller never holds every thread")
    for key in ("upload_idle_timeout_s", "max_call_s"):
        if getattr(limits, key) <= 0:
            yield f"limits.{key} must be positive"


def _check_encryption(config: Config) -> Problems:
    if not config.encryption.enabled or config.encryption.key_command:
        return
    key_file = config.key_file_path()
    data = Path(config.data_dir).resolve()
    if key_file == data or data in key_file.parents:
        yield (f"encryption.key_file {key_file} is inside data_dir {data}: whoever takes the "
               "data disks would take the key with them; keep it elsewhere")


def _check_audit_repositories(config: Config) -> Problems:
    audit = config.audit
    for key in ("export_interval_s", "export_max_backoff_s"):
        if getattr(audit, key) <= 0:
            yield f"audit.{key} must be positive"
    names: set[str] = set()
    for i, repo in enumerate(audit.repositories):
        where = f"audit.repositories[{i}]"
        if not _NAME_PATTERN.match(repo.name) or repo.name in names:
            yield f"{where}.name: {repo.name!r} must be unique, letters, digits, - or _"
        names.add(repo.name)
        yield from _address_problems(f"{where}.address", repo.address, allow_names=True)
        if bool(repo.cert_file) != bool(repo.key_file):
            yield f"{where}: cert_file and key_file go together"
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(repo, key)
            if (value or key == "ca_file") and not config.resolve(value).is_file():
                yield f"{where}.{key}: {config.resolve(value)} is not a readable file"


def _check_lifecycle(config: Config) -> Problems:
    retention = config.retention
    if retention.min_days < 0:
        yield "retention.min_days must not be negative"
    if retention.basis not in RETENTION_BASES:
        yield f"retention.basis must be one of {', '.join(RETENTION_BASES)}, got {retention.basis!r}"
    if retention.soft_delete_days < 0:
        yield "retention.soft_delete_days must not be negative"
    if retention.purge_interval_s <= 0:
        yield "retention.purge_interval_s must be positive"
    yield from _positive("scrub.max_bytes_per_s", config.scrub.max_bytes_per_s)
    if config.scrub.interval_s <= 0:
        yield "scrub.interval_s must be positive"
    if config.integrity.orphan_grace_s < 0:
        yield "integrity.orphan_grace_s must not be negative"


def _check_health(health: HealthConfig) -> Problems:
    for key in ("poll_interval_s", "capacity_interval_s", "smartctl_timeout_s", "nvme_timeout_s"):
        if getattr(health, key) <= 0:
            yield f"health.{key} must be positive"
    if not health.state_file:
        yield "health.state_file: empty path"
    if not 0 < health.capacity_warning_percent <= 100:
        yield "health.capacity_warning_percent must be above 0 and at most 100"
    yield from _positive("health.max_watchers", health.max_watchers)
    yield from _positive("health.watch_queue_size", health.watch_queue_size)


def _check_security(config: Config) -> Problems:
    sec = config.security
    files = {"tls_cert_file": sec.tls_cert_file, "tls_key_file": sec.tls_key_file,
             "client_ca_file": sec.client_ca_file}
    if any(files.values()):
        for key, value in files.items():
            if not value:
                yield f"security.{key} is required with the other TLS files"
            elif not config.resolve(value).is_file():
                yield f"security.{key}: {config.resolve(value)} is not a readable file"
    elif _is_off_loopback(config.server.listen):
        yield (f"server.listen {config.server.listen!r} is off loopback: set security.tls_cert_file, "
               "security.tls_key_file and security.client_ca_file (patient data never crosses a network "
               "in clear text)")
    if sec.max_connection_age_s < 10:
        yield "security.max_connection_age_s must be at least 10"
    from pacsvault.daemon.security import production_guard
    from pacsvault.daemon.security.access_table import parse_roles

    production_guard.check(config)  # raises at its first problem

    roles = [(sec.loopback_roles, "security.loopback_roles"), (sec.break_glass_roles, "security.break_glass_roles")]
    for i, principal in enumerate(sec.principals):
        if not principal.identity.startswith("spiffe://pacsvault/"):
            yield f"security.principals[{i}].identity must be a spiffe://pacsvault/... URI"
        roles.append((principal.roles, f"security.principals[{i}].roles"))
    for names, key in roles:
        try:
            parse_roles(names, key)
        except ValueError as exc:
            yield str(exc)


def _check_replication(config: Config) -> Problems:
    r = config.replication
    if not r.enabled:
        return
    for key in ("appliance_name", "peer_name", "peer_address", "ca_file", "cert_file", "key_file"):
        if not getattr(r, key):
            yield f"replication.{key} is required when replication.enabled is true"
        elif key.endswith("_file") and not config.resolve(getattr(r, key)).is_file():
            yield f"replication.{key}: {config.resolve(getattr(r, key))} is not a readable file"
    if r.appliance_name and r.appliance_name == r.peer_name:
        yield "replication.peer_name must differ from replication.appliance_name"
    yield from _address_problems("replication.listen", r.listen)
    if r.peer_address:
        yield from _address_problems("replication.peer_address", r.peer_address, allow_names=True)
    if r.data_shards < 1 or r.parity_shards < 1 or r.data_shards + r.parity_shards > 32:
        yield "replication.data_shards and parity_shards must be >= 1, at most 32 together"
    for key in ("max_bytes_per_s", "scrub_max_bytes_per_s"):
        yield from _positive(f"replication.{key}", getattr(r, key))
    for key in ("sender_interval_s", "max_backoff_s", "rpo_warning_s", "scrub_interval_s", "probe_interval_s",
                "probe_timeout_s"):
        if getattr(r, key) <= 0:
            yield f"replication.{key} must be positive"


def _address_problems(key: str, value: str, allow_names: bool = False) -> Problems:
    if allow_names:
        if not _host_port(value):
            yield f"{key}: {value!r} is not HOST:PORT"
    else:
        yield from _listen_problems(value, key)


def _check_tiering(tiering: TieringConfig) -> Problems:
    if tiering.mover_interval_s <= 0:
        yield "tiering.mover_interval_s must be positive"
    yield from _positive("tiering.mover_max_bytes_per_s", tiering.mover_max_bytes_per_s)
    if tiering.demote_after_days < 0:
        yield "tiering.demote_after_days must not be negative"
    if tiering.age_basis not in AGE_BASES:
        yield f"tiering.age_basis must be one of {', '.join(AGE_BASES)}, got {tiering.age_basis!r}"
    if tiering.access_flush_interval_s <= 0:
        yield "tiering.access_flush_interval_s must be positive"


def _check_tiers(tiers: tuple[TierConfig, ...]) -> Problems:
    if not tiers:
        yield "tiers: at least one tier is needed"
    seen_names: set[str] = set()
    seen_paths: set[str] = set()
    for i, tier in enumerate(tiers):
        if not tier.name or not tier.name.replace("-", "").replace("_", "").isalnum():
            yield f"tiers[{i}].name: {tier.name!r} must be letters, digits, '-' or '_'"
        if tier.name in seen_names:
            yield f"tiers[{i}].name: tier {tier.name!r} is declared twice"
        seen_names.add(tier.name)
        if tier.backend not in TIER_BACKENDS:
            yield f"tiers[{i}].backend must be one of {', '.join(TIER_BACKENDS)}, got {tier.backend!r}"
        if not tier.volumes and not tier.is_object_store:
            yield f"tiers[{i}].volumes: tier {tier.name!r} needs at least one volume"
        for j, path in enumerate(tier.volumes):
            if not path:
                yield f"tiers[{i}].volumes[{j}]: empty path"
            elif path in seen_paths:
                yield f"tiers[{i}].volumes[{j}]: {path!r} is used twice"
            seen_paths.add(path)
        if tier.volume_class not in VOLUME_CLASSES:
            yield f"tiers[{i}].volume_class must be one of {', '.join(VOLUME_CLASSES)}"
        if not 0 < tier.low_watermark <= tier.high_watermark <= 1:
            yield f"tiers[{i}]: need 0 < low_watermark <= high_watermark <= 1"
        if tier.reserve_bytes < 0:
            yield f"tiers[{i}].reserve_bytes must not be negative"


def _check_object_tiers(config: Config) -> Problems:
    from pacsvault.daemon.config_object_tiers import check_object_tiers

    check_object_tiers(config)  # raises at its first problem
    yield from ()


def _host_port(value: str) -> str:
    """The HOST of HOST:PORT, or "" when ``value`` is not that."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return ""
    return host


def _listen_problems(listen: str, key: str = "server.listen") -> Problems:
    host = _host_port(listen)
    if not host:
        yield f"{key}: {listen!r} is not HOST:PORT"
        return
    bare = host.strip("[]")
    if bare != "localhost":
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            yield f"{key}: {host!r} is not an IP address or localhost"


def _positive(key: str, value: int) -> Problems:
    if value <= 0:
        yield f"{key} must be positive, got {value}"


def _is_off_loopback(listen: str) -> bool:
    """Whether a listen address that may be malformed (reported elsewhere) is a valid one off loopback."""
    try:
        return not listen_is_loopback(listen)
    except ValueError:
        return False


def listen_is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    return host == "localhost" or ipaddress.ip_address(host).is_loopback
