"""The daemon's configuration: one TOML file, validated at start.

Every key has a default, so no file at all is a working configuration (the
embedded default: loopback only, index and tiers under ``./pacsvault-data``).
``pacsvault.example.toml`` beside this module lists every key with its default
and a test keeps the two in step. Errors name the offending key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsvault.daemon.errors import ConfigError

EXAMPLE_CONFIG = Path(__file__).with_name("pacsvault.example.toml")


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    max_workers: int = 32
    shutdown_grace_s: float = 30.0
    # Chunks are at most 1 MiB; the margin covers the message envelope.
    max_message_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class IndexConfig:
    path: str = "index"
    map_size_bytes: int = 16 * 1024**3
    max_batch: int = 256


@dataclass(frozen=True)
class StorageConfig:
    compression_level: int = 3
    frame_size_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class LimitsConfig:
    max_instance_bytes: int = 1024**3
    default_page_size: int = 100
    max_page_size: int = 1000


@dataclass(frozen=True)
class TierConfig:
    name: str
    paths: tuple[str, ...]
    reserve_bytes: int = 256 * 1024 * 1024


DEFAULT_TIERS = (
    TierConfig(name="hot", paths=("tiers/hot",)),
    TierConfig(name="capacity", paths=("tiers/capacity",)),
)


@dataclass(frozen=True)
class Config:
    data_dir: str = "pacsvault-data"
    server: ServerConfig = field(default_factory=ServerConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    tiers: tuple[TierConfig, ...] = DEFAULT_TIERS

    def resolve(self, path: str) -> Path:
        """A configured path; relative ones live under the data dir."""
        return (Path(self.data_dir) / path).resolve()

    def with_overrides(self, *, listen: str | None = None, data_dir: str | None = None) -> Config:
        new = self
        if listen is not None:
            new = dataclasses.replace(new, server=dataclasses.replace(new.server, listen=listen))
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
    config = _build(Config, raw, "")
    validate(config)
    return config


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown key {_key(where, unknown[0])} (known keys: {', '.join(sorted(names))})")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            values[f.name] = _convert(hints[f.name], raw[f.name], _key(where, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key {_key(where, f.name)}")
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return tuple(_convert(item_type, item, f"{key}[{i}]") for i, item in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and not isinstance(hint, types.GenericAlias):
        if isinstance(value, bool) and hint is not bool or not isinstance(value, hint):
            raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def validate(config: Config) -> None:
    """Checks values, not just types; each error names its key."""
    _check_listen(config.server.listen)
    _positive("server.max_workers", config.server.max_workers)
    _positive("server.max_message_bytes", config.server.max_message_bytes)
    if config.server.max_message_bytes < 2 * 1024 * 1024:
        raise ConfigError("server.max_message_bytes must be at least 2097152 (chunks are 1 MiB)")
    if config.server.shutdown_grace_s < 0:
        raise ConfigError("server.shutdown_grace_s must not be negative")
    if config.index.map_size_bytes < 1024 * 1024:
        raise ConfigError("index.map_size_bytes must be at least 1048576")
    _positive("index.max_batch", config.index.max_batch)
    if not 1 <= config.storage.compression_level <= 19:
        raise ConfigError("storage.compression_level must be between 1 and 19")
    if not 4096 <= config.storage.frame_size_bytes <= 64 * 1024 * 1024:
        raise ConfigError("storage.frame_size_bytes must be between 4096 and 67108864")
    _positive("limits.max_instance_bytes", config.limits.max_instance_bytes)
    _positive("limits.default_page_size", config.limits.default_page_size)
    if config.limits.max_page_size < config.limits.default_page_size:
        raise ConfigError("limits.max_page_size must be at least limits.default_page_size")
    _check_tiers(config.tiers)


def _check_tiers(tiers: tuple[TierConfig, ...]) -> None:
    if not tiers:
        raise ConfigError("tiers: at least one tier is needed")
    seen_names: set[str] = set()
    seen_paths: set[str] = set()
    for i, tier in enumerate(tiers):
        if not tier.name or not tier.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"tiers[{i}].name: {tier.name!r} must be letters, digits, '-' or '_'")
        if tier.name in seen_names:
            raise ConfigError(f"tiers[{i}].name: tier {tier.name!r} is declared twice")
        seen_names.add(tier.name)
        if not tier.paths:
            raise ConfigError(f"tiers[{i}].paths: tier {tier.name!r} needs at least one path")
        for j, path in enumerate(tier.paths):
            if not path:
                raise ConfigError(f"tiers[{i}].paths[{j}]: empty path")
            if path in seen_paths:
                raise ConfigError(f"tiers[{i}].paths[{j}]: {path!r} is used twice")
            seen_paths.add(path)
        if tier.reserve_bytes < 0:
            raise ConfigError(f"tiers[{i}].reserve_bytes must not be negative")


def _check_listen(listen: str) -> None:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"server.listen: {listen!r} is not HOST:PORT")
    bare = host.strip("[]")
    if bare != "localhost":
        try:
            ipaddress.ip_address(bare)
        except ValueError as exc:
            raise ConfigError(f"server.listen: {host!r} is not an IP address or localhost") from exc


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be positive, got {value}")


def listen_is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    return host == "localhost" or ipaddress.ip_address(host).is_loopback
