"""Every copied capture gets the verdict its documented condition implies.

The expected verdicts come from the "condition shown" column of
tests/fixtures/hwdata/SOURCES.md's origin table and HEALTH_RULES.md; each
row also names a word that must appear in the reasons, so a right verdict
for the wrong reason fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsvault.hardware import Verdict, assess_file
from pacsvault.hardware.assess import FileFormat, assess_file_with_format

H, W, FG, FD, UK, US = (Verdict.HEALTHY, Verdict.WARNING, Verdict.FAILING, Verdict.FAILED,
                        Verdict.UNKNOWN, Verdict.UNSUPPORTED)

# file -> (expected verdict, keyword expected in some reason's attribute/rule/value, or "" for none)
SMARTCTL_CASES: dict[str, tuple[Verdict, str]] = {
    "smartctl_ata_hitachi_HDS721050DLE630_FAILED_realloc1975_pending8_usbjmicron.json": (FD, "at or below threshold now"),
    "smartctl_ata_wdc_WD140EDFZ_healthy.json": (H, ""),
    "smartctl_ata_samsung_860evo_ssd_healthy_xall_full.json": (H, ""),
    "smartctl_ata_samsung_850pro_ssd_healthy.json": (H, ""),
    # 199 CRC errors are a cabling advisory, not a media verdict.
    "smartctl_ata_samsung_840_ssd_udma_crc108_passed.json": (H, "cable"),
    "smartctl_sat_megaraid0_wdc_WD4000FYYX_healthy.json": (H, "Attribute check"),
    "smartctl_sat_megaraid1_wdc_WD4000FYYX_realloc387_passed.json": (FG, "Reallocated_Sector_Ct"),
    "smartctl_sat_seagate_no_smart_status_partial.json": (UK, "no overall health status"),
    "smartctl_scsi_seagate_ST4000NM0043_grown_defects56.json": (W, "grown defects"),
    "smartctl_scsi_seagate_ST1200MM0088_healthy_json_format_v0.1_smartctl6.7.json": (H, "pre-1.0 JSON"),
    "smartctl_scsi_intel_raid1_volume_no_smart.json": (US, "no SMART data"),
    "smartctl_error_open_failed_exit2_windows.json": (UK, "open failed"),
    "smartctl_ata_health_only_jH_passed.json": (H, ""),
    "smartctl_nvme_samsung_970evo_media_errors7.json": (W, "media_errors"),
    "smartctl_nvme_corsair_mp510_healthy_errlog8382.json": (H, ""),
    "smartctl_nvme_samsung_MZWLL3T2HAJQ_FAILED_critical_warning16_vmbu_failed.json": (FD, "volatile memory backup"),
    "smartctl_nvme_intel_P4510_SSDPE2KX020T7_percentage_used75.json": (H, ""),
    "smartctl_nvme_intel_SSDPE2KX010T8_percentage_used73.json": (H, ""),
    "smartctl_nvme_micron_MTFDHAX1T6MCE_percentage_used69.json": (H, ""),
    "smartctl_nvme_intel_P3700_SSDPEDMD800G4_used51_spare93.json": (H, ""),
    "smartctl_nvme_intel_optane_MEMPEK1W032GA_spare_threshold0.json": (H, ""),
    "smartctl_nvme_micron_7450_healthy.json": (H, ""),
    "smartctl_nvme_intel_SSDPE2KX080T8_healthy_new.json": (H, ""),
    "smartctl_ata_seagate_ST3500418AS_realloc304_passed.json": (FG, "reallocated sectors >= 16"),
    "smartctl_ata_seagate_ST3500418AS_realloc1_cmdtimeout1.json": (W, "reallocated sectors raw > 0"),
    "smartctl_ata_hp_MB0500EBNCR_reported_uncorrect1.json": (FG, "Reported_Uncorrect"),
    "smartctl_ata_seagate_ST3200820AS_exit64_errorlog98.json": (H, "error log has entries"),
    "smartctl_ata_hgst_HUS724020ALE640_exit64_crc12.json": (H, "cable"),
    "smartctl_ata_seagate_ST3000NM0033_realloc1_cmd_timeout_packed_raw.json": (W, "Reallocated_Sector_Ct"),
    "smartctl_ata_seagate_exos_x16_healthy_cmd_timeout_packed_raw.json": (H, "Command_Timeout"),
    "smartctl_ata_micron5300_ssd_e2e1_cmdtimeout29_crc24.json": (W, "End-to-End_Error"),
    "smartctl_ata_wdc_RE4_WD2003FYYS_udma_crc3118119_cabling.json": (H, "cable"),
    "smartctl_ata_kingston_KC400_ssd_retired_block1.json": (W, "Retired_Block_Count"),
    "smartctl_ata_kingston_SA400_exit4.json": (H, "SMART or ATA command failed"),
    "smartctl_ata_toshiba_MG09ACA18TE_healthy.json": (H, ""),
    "smartctl_ata_wdc_ultrastar_HC550_healthy.json": (H, ""),
    "smartctl_scsi_seagate_ST373453LC_grown_defects260_uncorrected_errors.json": (W, "uncorrected errors"),
    "smartctl_scsi_seagate_ST373453LC_healthy.json": (H, ""),
    "smartctl_scsi_hitachi_H109060SESUN600G_healthy.json": (H, ""),
}

# file -> {array: (verdict, keyword)}
MDSTAT_CASES: dict[str, dict[str, tuple[Verdict, str]]] = {
    "mdstat_raid5_clean_5of5_bitmap_md_d0.txt": {"md_d0": (H, "")},
    "mdstat_raid5_degraded_4of3_UUU_.txt": {"md0": (FG, "no redundancy left")},
    "mdstat_raid1x3_raid5_10disk_clean.txt": {"md0": (H, ""), "md1": (H, ""), "md2": (H, ""), "md3": (H, "")},
    "mdstat_raid5_degraded_recovery_12pct.txt": {"md127": (W, "12.6%")},
    "mdstat_raid6_7disk_clean_bitmap.txt": {"md0": (H, "")},
    "mdstat_raid1_6way_degraded_failed_member_F.txt": {"md1": (W, "sde1")},
    "mdstat_raid5_inactive.txt": {"md0": (FD, "inactive")},
    "mdstat_raid1_clean_plus_inactive_all_spares.txt": {"md0": (H, ""), "md1": (H, ""), "md2": (FD, "inactive")},
    "mdstat_raid1_raid0_nvme_clean.txt": {"md125": (H, ""), "md126": (H, ""), "md128": (H, ""), "md129": (H, "")},
    "mdstat_inactive_no_personality_with_spare.txt": {"md127": (FD, "inactive")},
    "mdstat_raid0_loop_devices.txt": {"md127": (H, "")},
    "mdstat_raid4_reshape_degraded_UU__.txt": {"md127": (W, "reshape")},
    "mdstat_raid0_two_disks.txt": {"md127": (H, "")},
    "mdstat_raid6_raid1_unindented_block_lines.txt": {"md0": (H, ""), "md1": (H, ""), "md2": (H, ""), "md3": (H, "")},
    "mdstat_raid5_96TB_no_unused_devices_trailer.txt": {"md1": (H, "")},
    "mdstat_raid10_clean_6disk_ohai.txt": {"md0": (H, "")},
    "mdstat_raid10_check_94pct_plus_raid1_telegraf.txt": {"md2": (H, "scrub"), "md1": (H, ""), "md0": (H, "")},
    "mdstat_empty_no_arrays.txt": {},
    "mdstat_composite_procfs_fixture_many_states.txt": {
        "md3": (H, ""), "md127": (H, ""), "md0": (H, ""),
        "md4": (FD, "inactive"),
        "md6": (W, "recovery"),
        "md8": (W, "resync"),
        "md201": (H, "scrub"),
        "md7": (W, "degraded within redundancy"),
        "md9": (W, "faulty"),
        "md10": (H, ""), "md11": (W, "faulty"), "md12": (H, ""), "md126": (H, ""),
        "md219": (H, "container"),
        "md00": (H, ""), "md120": (H, ""), "md101": (H, ""),
        "md42": (W, "reshape"),
    },
}

MDADM_CASES: dict[str, tuple[Verdict, str]] = {
    "mdadm_detail_raid10_clean_6disk_ohai.txt": (H, ""),
}


def _keyword_found(assessment_reasons: list, keyword: str) -> bool:
    text = " | ".join(f"{r.attribute} {r.value} {r.rule}" for r in assessment_reasons)
    return keyword.lower() in text.lower()


def test_table_covers_every_copied_capture(fixtures: Path) -> None:
    listed = set(SMARTCTL_CASES) | set(MDSTAT_CASES) | set(MDADM_CASES)
    scans = {"smartctl_scan_simple.json", "smartctl_scan_megaraid.json", "smartctl_scan_nvme.json"}
    on_disk = {p.name for p in fixtures.glob("*/*") if p.is_file()}
    assert on_disk - listed - scans == set()


@pytest.mark.parametrize("name", sorted(SMARTCTL_CASES))
def test_smartctl_capture_verdict(fixtures: Path, name: str) -> None:
    expected, keyword = SMARTCTL_CASES[name]
    fmt, assessments = assess_file_with_format(fixtures / "smartctl" / name)
    assert fmt is FileFormat.SMARTCTL
    assert len(assessments) == 1
    assessment = assessments[0]
    assert assessment.verdict is expected, [r.to_json_dict() for r in assessment.reasons]
    if keyword:
        assert _keyword_found(assessment.reasons, keyword)
    if expected is Verdict.HEALTHY:
        assert not [r for r in assessment.reasons if r.verdict is not Verdict.HEALTHY]


@pytest.mark.parametrize("name", sorted(MDSTAT_CASES))
def test_mdstat_capture_verdicts(fixtures: Path, name: str) -> None:
    fmt, assessments = assess_file_with_format(fixtures / "mdstat" / name)
    assert fmt is FileFormat.MDSTAT
    by_array = {a.device: a for a in assessments}
    assert set(by_array) == set(MDSTAT_CASES[name])
    for array, (expected, keyword) in MDSTAT_CASES[name].items():
        assert by_array[array].verdict is expected, (array, [r.to_json_dict() for r in by_array[array].reasons])
        if keyword:
            assert _keyword_found(by_array[array].reasons, keyword), array


@pytest.mark.parametrize("name", sorted(MDADM_CASES))
def test_mdadm_capture_verdict(fixtures: Path, name: str) -> None:
    expected, _ = MDADM_CASES[name]
    fmt, assessments = assess_file_with_format(fixtures / "mdadm" / name)
    assert fmt is FileFormat.MDADM_DETAIL
    assert [a.verdict for a in assessments] == [expected]
    assert assessments[0].device == "md0" and assessments[0].model == "raid10"


def test_smartctl_scan_lists_inventory_without_health(fixtures: Path) -> None:
    assessments = assess_file(fixtures / "smartctl" / "smartctl_scan_megaraid.json")
    assert [a.device for a in assessments] == ["/dev/bus/0 [megaraid,0]", "/dev/bus/0 [megaraid,1]"]
    assert {a.verdict for a in assessments} == {Verdict.UNKNOWN}
    assert all(a.kind == "inventory" for a in assessments)
    assert len(assess_file(fixtures / "smartctl" / "smartctl_scan_simple.json")) == 7


def test_partial_output_still_judges_attributes(fixtures: Path) -> None:
    # -A only: no overall status (UNKNOWN) but the counters were read.
    [assessment] = assess_file(fixtures / "smartctl" / "smartctl_sat_seagate_no_smart_status_partial.json")
    assert assessment.metrics["ata.5"] == 0
    assert assessment.metrics["ata.196"] == 2111  # first number of "2111 (12437 0)"


def test_seagate_packed_command_timeout_is_decoded(fixtures: Path) -> None:
    [exos] = assess_file(fixtures / "smartctl" / "smartctl_ata_seagate_exos_x16_healthy_cmd_timeout_packed_raw.json")
    [es3] = assess_file(fixtures / "smartctl" / "smartctl_ata_seagate_ST3000NM0033_realloc1_cmd_timeout_packed_raw.json")
    # raw 51540393996 = 0x000C_000C_000C and 17180131332 = 0x0004_0004_0004
    assert exos.metrics["ata.188"] == 12
    assert es3.metrics["ata.188"] == 4
    # Rates 1/7/195 are vendor-packed and never trended or judged on raw.
    assert not {"ata.1", "ata.7", "ata.195"} & set(es3.metrics)


def test_cabling_is_reported_separately_from_media(fixtures: Path) -> None:
    [crc] = assess_file(fixtures / "smartctl" / "smartctl_ata_wdc_RE4_WD2003FYYS_udma_crc3118119_cabling.json")
    from pacsvault.hardware import Category

    cabling = crc.reasons_in(Category.CABLING)
    assert [r.value for r in cabling] == ["3118119"]
    assert crc.reasons_in(Category.MEDIA) == []
    assert crc.metrics["ata.199"] == 3118119


def test_sysfs_tree_verdicts(fixtures: Path) -> None:
    from pacsvault.hardware import assess_array, read_sysfs_md

    arrays = {a.name: a for a in read_sysfs_md(fixtures / "mdstat" / "sysfs_md_node_exporter")}
    verdicts = {name: assess_array(a).verdict for name, a in arrays.items()}
    assert verdicts == {"md0": H, "md1": H, "md4": H, "md10": H, "md5": FG, "md6": W}
    assert arrays["md6"].sync_action == "recovery"
    assert arrays["md6"].sync_percent == pytest.approx(75.0)
    assert [m.name for m in arrays["md5"].members if m.state.value == "failed"] == ["sdp"]


def test_json_rows_have_cli_fields(fixtures: Path) -> None:
    from pacsvault.hardware import report_rows

    path = fixtures / "mdstat" / "mdstat_raid5_degraded_4of3_UUU_.txt"
    [row] = report_rows([path])
    assert {"file", "kind", "device", "verdict", "reasons"} <= set(row)
    assert row["file"] == str(path) and row["verdict"] == "failing" and row["kind"] == "md_array"
    assert row["reasons"][0]["rule"]
