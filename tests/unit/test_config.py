"""The config loader: defaults, the example file, and errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pacsvault.daemon import config
from pacsvault.daemon.errors import ConfigError


def test_example_file_lists_every_option_with_its_default() -> None:
    raw = tomllib.loads(config.EXAMPLE_CONFIG.read_text())
    assert config.from_dict(raw) == config.Config()
    # Every section and key of the schema appears in the example.
    for section in ("server", "index", "storage", "limits", "tiering", "health", "metrics", "replication", "security",
                    "audit", "encryption", "dicom"):
        fields = set(getattr(config.Config(), section).__dataclass_fields__)
        assert set(raw[section]) == fields, section
    # The local tiers and the commented object-store tier list every tier key between them.
    s3_tier = example_object_tier()
    assert set(config.TierConfig.__dataclass_fields__) == set(raw["tiers"][0]) | set(s3_tier)
    assert s3_tier["backend"] == "s3" and all(k.startswith("s3_") for k in set(s3_tier) - set(raw["tiers"][0]))
    # The list sections' entries, shown as comments, name every field of their tables.
    text = config.EXAMPLE_CONFIG.read_text()
    for table, cls in (("dicom.calling_aes", config.CallingAeConfig),
                       ("dicom.destinations", config.DicomDestinationConfig)):
        block = text.split(f"#   [[{table}]]\n", 1)[1].split("\n" + table.split(".")[1], 1)[0]
        shown = {line.removeprefix("#").split("=")[0].strip() for line in block.splitlines()}
        assert shown == set(cls.__dataclass_fields__), table


def example_object_tier() -> dict:
    """The example's commented [[tiers]] block for an s3 tier, uncommented and parsed."""
    text = config.EXAMPLE_CONFIG.read_text()
    block = text[text.index('# [[tiers]]\n# name = "archive"'):]
    lines = [line[2:] for line in block.splitlines() if line.startswith("# ") and not line.startswith("# # ")]
    return tomllib.loads("\n".join(lines))["tiers"][0]


def test_the_example_object_tier_is_valid_after_the_local_tiers(tmp_path: Path) -> None:
    raw = tomllib.loads(config.EXAMPLE_CONFIG.read_text())
    raw["tiers"].append(example_object_tier())
    loaded = config.from_dict(raw)
    archive = loaded.tiers[2]
    assert archive.is_object_store and archive.volume_class == "object" and archive.volumes == ()
    assert config.from_dict({"tiers": [{"name": "hot", "volumes": ["a"]}]}).tiers[0].volume_class == "hdd"


def test_the_keyring_defaults_to_beside_the_data_dir_and_never_inside_it(tmp_path: Path) -> None:
    beside = config.Config(data_dir=str(tmp_path / "data"))
    assert beside.key_file_path() == tmp_path / "data-keys" / "keyring.json"
    with pytest.raises(ConfigError, match="encryption.key_file .* is inside data_dir"):
        config.from_dict({"data_dir": str(tmp_path / "data"),
                          "encryption": {"key_file": str(tmp_path / "data" / "keys" / "ring.json")}})


def test_no_file_is_the_embedded_default() -> None:
    default = config.load(None)
    assert default.server.listen == "127.0.0.1:50051"
    assert [t.name for t in default.tiers] == ["hot", "capacity"]


HOT = {"name": "hot", "volumes": ["a"]}
S3_TIER = {"name": "archive", "backend": "s3", "s3_endpoint": "https://s3.example", "s3_bucket": "pv-a", "s3_quota_bytes": 1 << 40}


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"server": {"listen": "127.0.0.1:50051", "lisen": 1}}, "server.lisen"),
        ({"bogus": 1}, "bogus"),
        ({"server": {"max_workers": "8"}}, "server.max_workers"),
        ({"server": {"max_workers": True}}, "server.max_workers"),
        ({"server": {"listen": "nohost"}}, "server.listen"),
        ({"server": {"listen": "example.com:1"}}, "server.listen"),
        ({"index": {"map_size_bytes": 10}}, "index.map_size_bytes"),
        ({"storage": {"compression_level": 30}}, "storage.compression_level"),
        ({"tiers": []}, "tiers"),
        ({"tiers": [{"name": "hot"}]}, "tiers[0].volumes"),
        ({"tiers": [{"name": "hot", "volumes": ["a"]}, {"name": "hot", "volumes": ["b"]}]}, "tiers[1].name"),
        ({"tiers": [{"name": "a b", "volumes": ["a"]}]}, "tiers[0].name"),
        ({"tiers": [{"name": "hot", "volumes": ["a", "a"]}]}, "tiers[0].volumes[1]"),
        ({"tiers": [{"name": "hot", "volumes": ["a"], "volume_class": "tape"}]}, "tiers[0].volume_class"),
        ({"tiers": [{"name": "hot", "volumes": ["a"], "low_watermark": 0.9, "high_watermark": 0.8}]}, "tiers[0]"),
        ({"tiering": {"age_basis": "birthday"}}, "tiering.age_basis"),
        ({"tiers": [{"name": "hot", "volumes": ["a"], "backend": "tape"}]}, "tiers[0].backend"),
        ({"tiers": [S3_TIER]}, "tiers[0].backend"),
        ({"tiers": [HOT, {**S3_TIER, "volumes": ["b"]}]}, "tiers[1].volumes"),
        ({"tiers": [HOT, {**S3_TIER, "s3_endpoint": "s3.example"}]}, "tiers[1].s3_endpoint"),
        ({"tiers": [HOT, {**S3_TIER, "s3_bucket": "Bad_Bucket"}]}, "tiers[1].s3_bucket"),
        ({"tiers": [HOT, {**S3_TIER, "s3_prefix": "/abs"}]}, "tiers[1].s3_prefix"),
        ({"tiers": [HOT, {**S3_TIER, "s3_prefix": "a/../b/"}]}, "tiers[1].s3_prefix"),
        ({"tiers": [HOT, {**S3_TIER, "s3_quota_bytes": 0}]}, "tiers[1].s3_quota_bytes"),
        ({"tiers": [HOT, {**S3_TIER, "s3_timeout_s": 0}]}, "tiers[1].s3_timeout_s"),
        ({"tiers": [HOT, {**S3_TIER, "s3_ca_file": "/nonexistent/ca.pem"}]}, "tiers[1].s3_ca_file"),
        ({"tiers": [HOT, {**S3_TIER, "volume_class": "hdd"}]}, "tiers[1].volume_class"),
        ({"tiers": [HOT, S3_TIER, {"name": "cap", "volumes": ["c"]}]}, "tiers[2]"),
        ({"tiers": [HOT, S3_TIER], "encryption": {"enabled": False}}, "tiers[1].backend"),
        ({"tiers": [{**HOT, "s3_bucket": "pv-a"}]}, "tiers[0].s3_bucket"),
        ({"limits": {"default_page_size": 10, "max_page_size": 5}}, "limits.max_page_size"),
    ],
)
def test_errors_name_the_offending_key(raw: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        config.from_dict(raw)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("server = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)


def test_overrides_and_relative_paths(tmp_path: Path) -> None:
    cfg = config.Config().with_overrides(listen="127.0.0.1:0", data_dir=str(tmp_path))
    assert cfg.server.listen == "127.0.0.1:0"
    assert cfg.resolve("tiers/hot") == tmp_path / "tiers" / "hot"
    assert cfg.resolve("/abs/dir") == Path("/abs/dir")


def test_loopback_detection() -> None:
    assert config.listen_is_loopback("127.0.0.1:1")
    assert config.listen_is_loopback("[::1]:1")
    assert config.listen_is_loopback("localhost:1")
    assert not config.listen_is_loopback("0.0.0.0:1")
    assert not config.listen_is_loopback("10.1.2.3:1")


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"dicom": {"listen": "0.0.0.0:11112"}}, "dicom.listen"),
        ({"dicom": {"ae_title": "A" * 17}}, "dicom.ae_title"),
        ({"dicom": {"ae_title": "BACK\\SLASH"}}, "dicom.ae_title"),
        ({"dicom": {"calling_aes": [{"ae_title": "CT", "identity": "spiffe://pacsvault/client/ct"}]}},
         "dicom.calling_aes[0].identity"),
        ({"dicom": {"destinations": [{"name": "WS", "host": "192.0.2.7", "port": 104}]}}, "dicom.destinations[0]"),
        ({"dicom": {"destinations": [{"name": "WS", "host": "127.0.0.1", "port": 0}]}}, "dicom.destinations[0].port"),
        ({"dicom": {"destinations": [{"name": "WS", "host": "127.0.0.1", "port": 104},
                                     {"name": "WS", "host": "127.0.0.1", "port": 105}]}}, "dicom.destinations[1].name"),
        ({"dicom": {"commit_after_replication": True}}, "dicom.commit_after_replication"),
        ({"dicom": {"idle_timeout_s": 0}}, "dicom.idle_timeout_s"),
        ({"dicom": {"max_pdu_bytes": 1000}}, "dicom.max_pdu_bytes"),
    ],
)
def test_dicom_errors_name_the_key(raw: dict, named: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        config.from_dict(raw)


def test_the_dicom_door_may_be_off_and_then_listen_anywhere() -> None:
    off = config.from_dict({"dicom": {"enabled": False, "listen": "0.0.0.0:104"}})
    assert not off.dicom.enabled
    assert config.Config().with_overrides(dicom_listen="127.0.0.1:0").dicom.listen == "127.0.0.1:0"
