"""Odd, old, partial and garbage input: tolerated, never an exception.

The nvme-cli and mdadm inputs below are small synthetic documents written
for these tests (the real captures of those tools in the shared sample set
are GPL/LGPL or unlicensed and were not copied); their field names follow
the documented formats.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pacsvault.hardware import (
    Verdict,
    assess_mdadm_detail,
    assess_mdadm_examine,
    assess_nvmecli_smart_log,
    assess_smartctl,
    assess_text,
    decode_critical_warning,
    parse_mdstat,
    worst,
)
from pacsvault.hardware.assess import FileFormat


def _load(fixtures: Path, name: str) -> dict:
    return json.loads((fixtures / "smartctl" / name).read_text())


def test_unknown_keys_and_types_are_ignored(fixtures: Path) -> None:
    data = _load(fixtures, "smartctl_ata_seagate_ST3500418AS_realloc304_passed.json")
    data["future_section"] = {"anything": [1, 2, 3]}
    data["temperature"] = "hot"
    data["ata_smart_attributes"]["table"].append({"id": "not-a-number", "raw": None})
    data["ata_smart_attributes"]["table"].append({"id": 240, "name": "Vendor", "raw": {"value": True}})
    assessment = assess_smartctl(data)
    assert assessment.verdict is Verdict.FAILING
    assert assessment.metrics["ata.5"] == 304


@pytest.mark.parametrize("section", ["smart_status", "ata_smart_attributes", "device", "smartctl",
                                     "json_format_version", "ata_smart_error_log"])
def test_each_section_may_be_missing(fixtures: Path, section: str) -> None:
    data = _load(fixtures, "smartctl_ata_hp_MB0500EBNCR_reported_uncorrect1.json")
    del data[section]
    assessment = assess_smartctl(data)
    # 187 drives the verdict; without the table only the (passed) overall
    # status is left, which is what a `smartctl -H` capture looks like.
    expected = Verdict.HEALTHY if section == "ata_smart_attributes" else Verdict.FAILING
    assert assessment.verdict is expected


@pytest.mark.parametrize("version", [[0, 1], [1, 0], [2, 0], None])
def test_json_format_versions_are_accepted(fixtures: Path, version: list[int] | None) -> None:
    data = _load(fixtures, "smartctl_scsi_seagate_ST373453LC_healthy.json")
    if version is None:
        del data["json_format_version"]
    else:
        data["json_format_version"] = version
    assessment = assess_smartctl(data)
    assert assessment.verdict is Verdict.HEALTHY
    notes = [r for r in assessment.reasons if r.attribute == "json_format_version"]
    assert bool(notes) == (version != [1, 0])


@pytest.mark.parametrize("text", ["", "   ", "{", "[1, 2]", "null", '{"hello": "world"}', "\x00\x01binary",
                                  "Personalities : [raid1]\nmd0 : active raid1 garbage[[[\n      nonsense\n"])
def test_garbage_gives_unknown_with_reason_not_exception(text: str) -> None:
    fmt, assessments = assess_text(text, name="capture.txt")
    if fmt is FileFormat.MDSTAT:
        # A recognisable header with unparseable members is still an array
        # we know nothing about: no members, no counts, so not "failed".
        assert all(a.verdict is not Verdict.FAILED for a in assessments)
        return
    assert fmt is FileFormat.UNKNOWN
    [assessment] = assessments
    assert assessment.verdict is Verdict.UNKNOWN
    assert assessment.reasons and assessment.reasons[0].rule
    assert assessment.device == "capture.txt"


def test_unreadable_file_is_unknown(tmp_path: Path) -> None:
    from pacsvault.hardware import assess_file

    [assessment] = assess_file(tmp_path / "does-not-exist.json")
    assert assessment.verdict is Verdict.UNKNOWN
    assert "cannot read" in assessment.reasons[0].rule


def test_standby_is_unknown_not_failure() -> None:
    data = {"json_format_version": [1, 0],
            "smartctl": {"exit_status": 2, "messages": [
                {"string": "Device is in STANDBY mode, exit(2)", "severity": "info"}]},
            "device": {"name": "/dev/sdb", "type": "sat", "protocol": "ATA"}}
    assessment = assess_smartctl(data)
    assert assessment.verdict is Verdict.UNKNOWN
    assert assessment.reasons[0].attribute == "standby"


def test_virtio_unable_to_detect_type_is_unsupported() -> None:
    # What smartctl 7.3 prints for /dev/vda on this very machine.
    data = {"json_format_version": [1, 0], "smartctl": {
        "argv": ["smartctl", "--json", "-x", "/dev/vda"], "exit_status": 1,
        "messages": [{"string": "/dev/vda: Unable to detect device type", "severity": "error"}]}}
    assessment = assess_smartctl(data)
    assert assessment.verdict is Verdict.UNSUPPORTED
    assert assessment.device == "/dev/vda"
    assert not assessment.verdict.is_failure


def test_verdict_order_and_worst() -> None:
    assert worst([Verdict.HEALTHY, Verdict.UNSUPPORTED]) is Verdict.UNSUPPORTED
    assert worst([Verdict.UNKNOWN, Verdict.WARNING]) is Verdict.WARNING
    assert worst([Verdict.FAILED, Verdict.FAILING, Verdict.UNKNOWN]) is Verdict.FAILED
    assert worst([]) is Verdict.HEALTHY
    assert not Verdict.UNSUPPORTED.is_failure and Verdict.FAILING.is_failure


# --- NVMe (synthetic nvme-cli documents; see module docstring) -------------------------

NVMECLI_211 = {
    "critical_warning": {"value": 0, "available_spare": 0, "temp_threshold": 0, "reliability_degraded": 0,
                         "ro": 0, "vmbu_failed": 0, "pmr_ro": 0},
    "temperature": 318, "avail_spare": 100, "spare_thresh": 10, "percent_used": 12,
    "media_errors": 0, "num_err_log_entries": 40, "warning_temp_time": 0, "critical_comp_time": 0,
    "power_on_hours": 1000,
}


def _variant(doc: dict, kind: str) -> dict:
    def conv(v: object) -> object:
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return float(v) if kind == "float" else str(v) if kind == "string" else v
    return conv(doc)


@pytest.mark.parametrize("kind", ["int", "float", "string"])
def test_nvmecli_value_type_variants(kind: str) -> None:
    assessment = assess_nvmecli_smart_log(_variant(NVMECLI_211, kind), device="/dev/nvme0")
    assert assessment.verdict is Verdict.HEALTHY
    assert assessment.metrics["temperature_c"] == 45  # 318 K
    assert assessment.metrics["nvme.percentage_used"] == 12


def test_nvmecli_integer_critical_warning_with_bits() -> None:
    doc = dict(NVMECLI_211, critical_warning=0x0A, media_errors=3)
    assessment = assess_nvmecli_smart_log(doc)
    rules = [r.rule for r in assessment.reasons]
    assert assessment.verdict is Verdict.FAILED
    assert any("temperature crossed" in r for r in rules)
    assert any("read-only" in r for r in rules)
    assert any("unrecovered data integrity" in r for r in rules)


def test_critical_warning_bits_in_words() -> None:
    assert decode_critical_warning(0) == []
    assert decode_critical_warning(0x10) == ["volatile memory backup device failed"]
    assert len(decode_critical_warning(0xFF)) == 8


def test_worn_out_not_failing_caveat() -> None:
    worn = dict(NVMECLI_211, critical_warning=0x04, percent_used=100, media_errors=0)
    assessment = assess_nvmecli_smart_log(worn)
    assert assessment.verdict is Verdict.WARNING
    assert any("worn out, not failing" in r.rule for r in assessment.reasons)
    broken = dict(worn, media_errors=5)
    assert assess_nvmecli_smart_log(broken).verdict is Verdict.FAILED


def test_spare_threshold_edge_cases() -> None:
    assert assess_nvmecli_smart_log(dict(NVMECLI_211, avail_spare=5, spare_thresh=10)).verdict is Verdict.FAILED
    assert assess_nvmecli_smart_log(dict(NVMECLI_211, avail_spare=93, spare_thresh=10)).verdict is Verdict.HEALTHY
    # Threshold 0 = not defined (Optane): no comparison, only an empty pool is flagged.
    assert assess_nvmecli_smart_log(dict(NVMECLI_211, avail_spare=100, spare_thresh=0)).verdict is Verdict.HEALTHY
    assert assess_nvmecli_smart_log(dict(NVMECLI_211, avail_spare=0, spare_thresh=0)).verdict is Verdict.WARNING


def test_nvme_list_both_layouts_sniffed() -> None:
    flat = {"Devices": [{"DevicePath": "/dev/nvme0n1", "ModelNumber": "M", "SerialNumber": "S1"}]}
    tree = {"Devices": [{"Subsystems": [{"Controllers": [{"ModelNumber": "M", "SerialNumber": "S2",
                                                          "Namespaces": [{"NameSpace": "nvme1n1"}]}]}]}]}
    for doc, device, serial in ((flat, "/dev/nvme0n1", "S1"), (tree, "/dev/nvme1n1", "S2")):
        fmt, [assessment] = assess_text(json.dumps(doc))
        assert fmt is FileFormat.NVME_LIST
        assert (assessment.device, assessment.serial, assessment.verdict) == (device, serial, Verdict.UNKNOWN)


# --- md (synthetic mdstat/mdadm text; see module docstring) ----------------------------

def test_mdstat_all_members_failed_is_failed() -> None:
    text = ("Personalities : [raid5]\n"
            "md9 : active raid5 sdw1[3](F) sdx1[0](F) sdy1[1](F) sdz1[2](F)\n"
            "      11720780800 blocks super 1.2 level 5, 512k chunk, algorithm 2 [4/0] [____]\n")
    [array] = parse_mdstat(text)
    _, [assessment] = assess_text(text)
    assert array.missing == 4
    assert assessment.verdict is Verdict.FAILED


def test_mdstat_raid1_all_faulty_and_raid0_member_lost() -> None:
    text = ("Personalities : [raid1] [raid0]\n"
            "md1 : active raid1 sda1[0](F) sdb1[1](F)\n      1000 blocks [2/0] [__]\n\n"
            "md2 : active raid0 sdc[0] sdd[1](F)\n      2000 blocks 64k chunks\n\nunused devices: <none>\n")
    _, assessments = assess_text(text)
    assert {a.device: a.verdict for a in assessments} == {"md1": Verdict.FAILED, "md2": Verdict.FAILED}


MDADM_DEGRADED = """/dev/md3:
           Version : 1.2
        Raid Level : raid6
      Raid Devices : 6
     Total Devices : 4
             State : clean, degraded 
    Active Devices : 4
   Working Devices : 4
    Failed Devices : 0
     Spare Devices : 0

    Number   Major   Minor   RaidDevice State
       0       8        1        0      active sync   /dev/sda1
       -       0        0        1      removed
       2       8       33        2      active sync   /dev/sdc1
       -       0        0        3      removed
       4       8       65        4      active sync   /dev/sde1
       5       8       81        5      active sync   /dev/sdf1
"""


def test_mdadm_removed_slots_count_even_with_zero_failed_devices() -> None:
    assessment = assess_mdadm_detail(MDADM_DEGRADED)
    # raid6 with two slots removed: data intact, no redundancy left.
    assert assessment.verdict is Verdict.FAILING
    assert assessment.metrics["md.missing"] == 2


def test_mdadm_rebuilding_reports_progress() -> None:
    text = MDADM_DEGRADED.replace("clean, degraded ", "clean, degraded, recovering").replace(
        "     Spare Devices : 0\n", "     Spare Devices : 1\n\n    Rebuild Status : 37% complete\n")
    assessment = assess_mdadm_detail(text)
    assert assessment.verdict is Verdict.WARNING
    assert assessment.metrics["md.sync_percent"] == 37


def test_mdadm_examine_member_view() -> None:
    text = ("/dev/sdq1:\n          Magic : a92b4efc\n     Raid Level : raid5\n   Raid Devices : 3\n"
            "          State : clean\n   Array State : AA. ('A' == active, '.' == missing, 'R' == replacing)\n")
    fmt, [assessment] = assess_text(text)
    assert fmt is FileFormat.MDADM_EXAMINE
    assert assessment.kind == "md_member" and assessment.device == "sdq1"
    assert assessment.verdict is Verdict.FAILING
    assert assess_mdadm_examine(text.replace("AA.", "AAA")).verdict is Verdict.HEALTHY
