"""A replicating pair with settings of the test's own (the shared ``pair`` fixture has fixed ones)."""

from __future__ import annotations

from pathlib import Path

from pacsvault.daemon.replication import certs
from tests.conftest import start_together
from tests.integration.test_replication_pair import Pair, config_for
from tests.ports import free_port


def make_pair(daemon_factory, tmp_path: Path, replication: str = "", extra: str = "",  # type: ignore[no-untyped-def]
              extra_a: str = "", start: bool = True) -> Pair:
    """``replication``: more [replication] lines; ``extra``: more sections for both; ``extra_a``: for site-a."""
    cert_dir = tmp_path / "certs"
    certs.write_set(cert_dir, {"site-a": ["127.0.0.1"], "site-b": ["127.0.0.1"]})
    ports = {"site-a": free_port(), "site-b": free_port()}
    daemons = {}
    for name, peer in (("site-b", "site-a"), ("site-a", "site-b")):
        config = config_for(name, peer, cert_dir, ports[name], ports[peer], tmp_path / f"{name}.toml")
        config.write_text(config.read_text() + replication + extra + (extra_a if name == "site-a" else ""))
        daemons[name] = daemon_factory(name, config=config, start=False)
    if start:
        start_together(*daemons.values())
    return Pair(daemons["site-a"], daemons["site-b"], cert_dir, ports)
