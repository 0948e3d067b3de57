"""The test Ceph itself: on loopback only, and its gateway can go and come back alone."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.ceph_cluster import CephCluster, CephError


def test_every_daemon_listens_on_loopback_only(ceph: CephCluster) -> None:
    listening = []
    for name, pid in ceph.pids().items():
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                listening.append((name, conn.laddr.ip, conn.laddr.port))
    assert {name for name, _, _ in listening} >= {"mon", "osd", "rgw"}
    assert all(ip == "127.0.0.1" for _, ip, _ in listening), listening
    health = ceph.ceph("health")
    assert health.startswith("HEALTH_OK") or health.startswith("HEALTH_WARN"), health


def test_the_gateway_stops_and_starts_alone(ceph: CephCluster) -> None:
    before = ceph.pids()
    ceph.stop_gateway()
    try:
        assert "rgw" not in ceph.pids()
        try:
            urllib.request.urlopen(ceph.endpoint, timeout=1)
            raise AssertionError("the stopped gateway still answered")
        except OSError:
            pass
    finally:
        ceph.start_gateway()
    with urllib.request.urlopen(ceph.endpoint, timeout=5) as response:
        assert response.status == 200
    after = ceph.pids()
    assert after["rgw"] != before["rgw"]
    assert {k: v for k, v in after.items() if k != "rgw"} == {k: v for k, v in before.items() if k != "rgw"}


def test_without_ceph_the_cluster_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CephError, match="missing ceph-authtool, monmaptool, ceph-mon.*apt-get install"):
        CephCluster(tmp_path).start()
