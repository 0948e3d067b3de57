"""find, metadata, health, tiers, restore, reseed, --version and usage against a real daemon:
exit codes, output, numbers as numbers, the tier, reading order."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from tests.client.cli_support import ROOT, numbered_series, run_cli_on_terminal, sop_of
from tests.conftest import Daemon, run_cli

STUDY = f"{ROOT}.8"


@pytest.fixture
def numbered_study(daemon: Daemon) -> list[str]:
    """SOP UIDs in reading order: series 1 (3 instances) then series 2 (12), by InstanceNumber."""
    instances = numbered_series(8, 2, 12, PatientID="ORDER-1") + numbered_series(8, 1, 3, PatientID="ORDER-1")
    with daemon.client() as client:
        assert all(client.store(data).status == "stored" for _, data in instances)
    return [sop_of(d) for _, d in sorted(instances, key=lambda i: (sop_of(i[1]).split(".")[-2], i[0]))]


def test_find_instances_shows_the_tier_in_reading_order(daemon: Daemon, numbered_study: list[str]) -> None:
    text = run_cli(daemon.target, "find", "--level", "instance", "--study-uid", STUDY)
    assert text.returncode == 0, text.stderr
    header, *rows = text.stdout.splitlines()
    assert header.split("\t") == ["PatientID", "Modality", "SeriesNumber", "InstanceNumber", "Tier", "SOPInstanceUID"]
    cells = [row.split("\t") for row in rows]
    assert [c[5] for c in cells] == numbered_study
    assert [(c[2], c[3]) for c in cells] == [("1", str(n)) for n in range(1, 4)] + [("2", str(n)) for n in range(1, 13)]
    assert {c[4] for c in cells} == {"hot"}
    as_json = run_cli(daemon.target, "find", "--level", "instance", "--study-uid", STUDY, "--json")
    objects = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [o["SOPInstanceUID"] for o in objects] == numbered_study
    assert [o["InstanceNumber"] for o in objects] == [*range(1, 4), *range(1, 13)]  # numbers, not text
    assert {o["SeriesNumber"] for o in objects} == {1, 2} and {o["Tier"] for o in objects} == {"hot"}
    listed = run_cli(daemon.target, "find", "--level", "series", "--json").stdout.splitlines()
    series = [json.loads(line) for line in listed]
    assert sorted(s["NumberOfSeriesRelatedInstances"] for s in series) == [3, 12]


def test_find_prints_nothing_before_an_error(daemon: Daemon, numbered_study: list[str]) -> None:
    bad = run_cli(daemon.target, "find", "--study-date", "2024-13-99")
    assert (bad.returncode, bad.stdout) == (6, "")  # rejected input, and no header
    assert bad.stderr.startswith("pacsvault: rejected: ") and bad.stderr.endswith("(INVALID_ARGUMENT)\n")
    assert bad.stderr.count("\n") == 1
    nothing = run_cli(daemon.target, "find", "--patient-id", "NOBODY")
    assert (nothing.returncode, nothing.stdout, nothing.stderr) == (0, "", "")


def test_metadata_carries_each_instance_tier_as_a_private_element(daemon: Daemon, numbered_study: list[str]) -> None:
    result = run_cli(daemon.target, "metadata", STUDY)
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert [o["00080018"]["Value"][0] for o in model] == numbered_study  # reading order
    for obj in model:
        # CT_small.dcm (GE) already uses block 10 of group 0009: the tier takes the next free one.
        assert obj["00090010"] == {"vr": "LO", "Value": ["GEMS_IDEN_01"]}
        [block] = [k[6:] for k, v in obj.items() if k.startswith("000900") and v.get("Value") == ["PACSVAULT"]]
        assert block == "11" and obj["00091101"] == {"vr": "LO", "Value": ["hot"]}
        dataset = pydicom.Dataset.from_json(obj)  # still DICOM JSON any reader takes
        assert dataset.private_block(0x0009, "PACSVAULT")[0x01].value == "hot"
        assert dataset.SOPInstanceUID == obj["00080018"]["Value"][0]
    with daemon.client() as client:
        items = client.study_metadata_items(STUDY)
    assert [(i.sop_instance_uid, i.tier) for i in items] == [(u, "hot") for u in numbered_study]
    unknown = run_cli(daemon.target, "metadata", "1.2.3.404")
    assert (unknown.returncode, unknown.stdout) == (3, "")


def test_json_counts_are_numbers(daemon: Daemon, numbered_study: list[str]) -> None:
    health = json.loads(run_cli(daemon.target, "health", "--json").stdout)
    index = health["index"]
    assert index["instances"] == 15 and index["studies"] == 1 and index["patients"] == 1
    assert all(isinstance(index[k], int) for k in ("stored_bytes", "map_size_bytes", "map_used_bytes", "blobs"))
    assert all(isinstance(v["capacity_bytes"], int) and isinstance(v["free_bytes"], int) for v in health["volumes"])
    volumes = [json.loads(line) for line in run_cli(daemon.target, "tiers", "--json").stdout.splitlines()]
    assert sum(v["blobs"] for v in volumes) == 15 and all(isinstance(v["used_bytes"], int) for v in volumes)
    keys = json.loads(run_cli(daemon.target, "keys", "status", "--json").stdout)
    assert isinstance(keys["blobs_checked"], int)
    created = json.loads(run_cli(daemon.target, "share", "create", "--study-uid", STUDY, "--max-uses", "3",
                                 "--json").stdout)
    assert created["max_uses"] == 3 and isinstance(created["uses"], int)


def test_version_and_usage_errors(daemon: Daemon) -> None:
    version = run_cli(daemon.target, "--version")
    assert (version.returncode, version.stdout) == (0, "pacsvault 0.1.0\n")
    for argv in (["get"], ["no-such-command"], ["find", "--level", "bogus"], ["get-study", "1.2.3"],
                 ["audit", "query", "--since", "yesterday"], ["--timeout", "soon", "health"]):
        usage = run_cli(daemon.target, *argv)
        assert usage.returncode == 2, argv
        assert usage.stderr.startswith("usage: pacsvault") and "Traceback" not in usage.stderr


NO_PEER = ("pacsvault: replication is not enabled on this appliance ([replication] enabled = false in its config), "
           "so it has no peer to {}\n")


def test_restore_and_reseed_without_replication_say_so(daemon: Daemon) -> None:
    restore = run_cli(daemon.target, "restore", "--from-peer")
    assert (restore.returncode, restore.stdout, restore.stderr) == (6, "", NO_PEER.format("restore from"))
    reseed = run_cli(daemon.target, "replication", "reseed")
    assert (reseed.returncode, reseed.stdout, reseed.stderr) == (6, "", NO_PEER.format("send to"))


@pytest.mark.slow
def test_drain_follows_the_volume_until_it_is_drained(
        daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "pv.toml"
    tiers = "".join(f'[[tiers]]\nname = "{name}"\nvolumes = ["{tmp_path / name}"]\nreserve_bytes = 0\n'
                    for name in ("hot", "capacity"))
    config.write_text("[tiering]\nmover_interval_s = 0.2\naccess_flush_interval_s = 0.2\n" + tiers)
    daemon = daemon_factory(config=config)
    with daemon.client() as client:
        assert all(client.store(data).status == "stored" for _, data in numbered_series(9, 1, 10))
    seen = run_cli_on_terminal(daemon.target, "tiers", "drain", str(tmp_path / "hot"))
    assert seen.returncode == 0, seen.terminal
    assert seen.stdout.splitlines() == [
        f"volume {tmp_path / 'hot'} is draining: 10 blobs ({seen.stdout.split('(')[1].split(')')[0]}) to move",
        f"volume {tmp_path / 'hot'}: drained"]
    assert "drain" in seen.terminal and "10/10" in seen.terminal, seen.terminal
    again = run_cli(daemon.target, "tiers", "drain", str(tmp_path / "hot"))  # not a terminal: returns at once
    assert again.returncode == 0 and "follow it with `pacsvault tiers`" in again.stdout
