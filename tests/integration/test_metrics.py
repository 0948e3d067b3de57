"""/metrics of a real replicating pair after real work: every family the issue asks for, with
conventional names and labels, counts that match what was done, and `promtool check metrics` clean."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pacsvault.client import corpus as corpus_module
from pacsvault.daemon.replication import certs
from tests.conftest import Daemon, start_together
from tests.integration.test_replication_pair import blob_files, config_for, wait_drained
from tests.ports import free_port

pytestmark = pytest.mark.slow


def scrape_text(daemon: Daemon) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=30) as answer:
        assert answer.status == 200
        return answer.read().decode()


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Each sample by its full name (``..._total``, ``..._bucket``), with its labels."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    return sum(v for got, v in found.get(name, []) if labels.items() <= got.items())


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus (.ci/run installs it)", pytrace=False)
    return path


def test_metrics_of_a_working_pair_are_complete_conventional_and_promtool_clean(
        daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cert_dir = tmp_path / "certs"
    certs.write_set(cert_dir, {"site-a": ["127.0.0.1"], "site-b": ["127.0.0.1"]})
    ports = {"site-a": free_port(), "site-b": free_port()}
    configs = {}
    for site, peer in (("site-a", "site-b"), ("site-b", "site-a")):
        configs[site] = config_for(site, peer, cert_dir, ports[site], ports[peer], tmp_path / f"{site}.toml")
        with configs[site].open("a") as extra:
            extra.write("\n[tiering]\nmover_interval_s = 0.2\n")
    b = daemon_factory("site-b", config=configs["site-b"], start=False)
    a = daemon_factory("site-a", config=configs["site-a"], start=False)
    start_together(a, b)
    corpus = corpus_module.generate(tmp_path / "corpus", patients=2, studies_per_patient=1, series_per_study=1,
                                    instances_per_series=3, seed=5)
    with a.client() as client:
        for item in corpus:
            assert client.store(item.path.read_bytes()).status == "stored"
        assert client.store(corpus[0].path.read_bytes()).status == "duplicate"
        assert client.store(b"not DICOM at all" * 20).status == "rejected"
    wait_drained(a)
    # A bit flipped at rest: the read repairs it from the peer and raises a security alert.
    victim = blob_files(a)[0]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    victim.write_bytes(bytes(raw))
    with a.client() as client:
        for item in corpus:
            assert client.get_instance(item.sop_instance_uid) == item.path.read_bytes()
        with pytest.raises(grpc.RpcError):
            client.get_instance("1.2.826.0.1.3680043.10.81.404")
    base = f"http://127.0.0.1:{a.web_port}/dicom-web"
    with urllib.request.urlopen(f"{base}/studies", timeout=30) as answer:
        assert answer.status == 200
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{base}/no-such-route", timeout=30)
    # The peer goes away and a new study waits in the backlog: the recovery point grows.
    b.stop()
    extra = corpus_module.generate(tmp_path / "more", patients=1, studies_per_patient=1, series_per_study=1,
                                   instances_per_series=1, seed=6)
    with a.client() as client:
        assert client.store(extra[0].path.read_bytes()).status == "stored"
    time.sleep(1.5)

    text = scrape_text(a)
    found = samples(text)
    n = len(corpus)
    archive = {"grpc_service": "pacsvault.v1.ArchiveService"}
    assert value(found, "grpc_server_started_total", **archive, grpc_method="PutInstance",
                 grpc_type="unary") == n + 3
    assert value(found, "grpc_server_handled_total", **archive, grpc_method="PutInstance", grpc_code="OK") == n + 2
    assert value(found, "grpc_server_handled_total", **archive, grpc_method="PutInstance",
                 grpc_code="INVALID_ARGUMENT") == 1
    assert value(found, "grpc_server_handled_total", **archive, grpc_method="ReadInstance", grpc_type="unary",
                 grpc_code="NOT_FOUND") == 1
    assert value(found, "grpc_server_handling_seconds_count", **archive, grpc_method="ReadInstance") == n + 1
    assert value(found, "pacsvault_ingest_instances_total", outcome="stored", source="client") == n + 1
    assert value(found, "pacsvault_ingest_instances_total", outcome="duplicate") == 1
    assert value(found, "pacsvault_ingest_instances_total", outcome="not_dicom") == 1
    sizes = sum(item.path.stat().st_size for item in [*corpus, *extra])
    assert value(found, "pacsvault_ingest_bytes_total", source="client") == sizes
    assert value(found, "pacsvault_ingest_duration_seconds_count") == n + 2
    assert value(found, "pacsvault_retrieval_instances_total", outcome="ok") == n
    assert value(found, "pacsvault_retrieval_bytes_total") == sum(item.path.stat().st_size for item in corpus)
    # Counted by the back office from the audit trail (it follows the trail every second).
    assert value(found, "pacsvault_security_alerts_total", kind="BlobAuthenticationFailed") == 1
    assert value(found, "pacsvault_replication_repairs_total") == 1
    assert value(found, "pacsvault_http_requests_total", handler="/dicom-web/studies", method="GET", code="200") == 1
    assert value(found, "pacsvault_http_requests_total", handler="unmatched", code="404") == 1
    assert value(found, "pacsvault_http_request_duration_seconds_count", handler="/dicom-web/studies") == 1
    assert value(found, "pacsvault_replication_backlog_entries") == 1
    assert value(found, "pacsvault_replication_backlog_bytes") > 0
    assert value(found, "pacsvault_replication_oldest_pending_age_seconds") >= 1.0
    assert value(found, "pacsvault_replication_rpo_warning_seconds") == 2.0
    assert value(found, "pacsvault_replication_sent_blobs_total") == n
    states = {labels["state"]: v for labels, v in found["pacsvault_replication_peer_state"]}
    assert sum(states.values()) == 1 and states["connected"] == 0, states
    assert value(found, "pacsvault_mover_passes_total") >= 1
    assert "pacsvault_mover_moved_bytes_total" in found and "pacsvault_mover_pending_promotions" in found
    assert value(found, "pacsvault_audit_records_total") >= 2 * (n + 3)  # a begin and an end record per call
    assert value(found, "pacsvault_index_entries", table="instances") == n + 1
    assert value(found, "pacsvault_index_entries", table="studies") == 3
    assert value(found, "pacsvault_index_map_used_bytes") > 0
    # No label carries a UID: the scrape names no study, series or instance.
    for item in [*corpus, *extra]:
        assert item.sop_instance_uid not in text and item.study_instance_uid not in text

    checked = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), \
        checked.stdout + checked.stderr


def test_metrics_over_https_admit_only_a_monitor_or_admin_certificate(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With the [security] TLS files, /metrics speaks HTTPS like the API: a Prometheus elsewhere
    scrapes with its own certificate, which must name a principal holding monitor or admin."""
    import requests

    from pacsvault.client import PacsvaultClient
    from tests.integration.test_dicomweb_tls import Pki, session

    root = tmp_path / "pki"
    root.mkdir()
    pki = Pki(root)
    for name in ("prometheus", "viewer", "stranger", "retired"):
        pki.add(name)
    principals = ", ".join(f'{{ identity = "{certs.identity_uri(name, "client")}", roles = ["{role}"] }}'
                           for name, role in (("prometheus", "monitor"), ("viewer", "reader"),
                                              ("retired", "monitor")))
    config = tmp_path / "pv.toml"
    config.write_text(f'[security]\ntls_cert_file = "{root / "s.pem"}"\ntls_key_file = "{root / "s.key"}"\n'
                      f'client_ca_file = "{root / "ca.pem"}"\nprincipals = [{principals}, '
                      f'{{ identity = "{certs.identity_uri("secadmin", "client")}", roles = ["security-admin"] }}]\n')
    pki.add("secadmin")
    daemon = daemon_factory(config=config)
    url = f"https://127.0.0.1:{daemon.metrics_port}/metrics"
    scraped = session(pki, "prometheus").get(url, timeout=30)
    assert scraped.status_code == 200 and "pacsvault_index_entries" in scraped.text
    checked = subprocess.run([promtool(), "check", "metrics"], input=scraped.text, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for name, why in (("viewer", "may not read the metrics"), ("stranger", "names no principal configured")):
        refused = session(pki, name).get(url, timeout=30)
        assert refused.status_code == 403 and why in refused.text, (name, refused.text)
    with pytest.raises(requests.exceptions.ConnectionError):  # no certificate: the handshake fails
        session(pki, None).get(url, timeout=30)
    with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP gets nowhere either
        requests.get(url.replace("https:", "http:"), timeout=30)
    # Revocation holds here too, at once.
    assert session(pki, "retired").get(url, timeout=30).status_code == 200
    with PacsvaultClient(daemon.target, **pki.grpc_files("secadmin")) as admin:
        admin.revoke_certificate(identity=certs.identity_uri("retired", "client"), reason="scraper replaced")
    refused = session(pki, "retired").get(url, timeout=30)
    assert refused.status_code == 403 and "revoked" in refused.text
    assert "Traceback" not in daemon.log()
