"""Test support for the ATNA export: the DICOM audit schema and a real rsyslog repository."""

from __future__ import annotations

import functools
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from lxml import etree

from pacsvault.daemon.replication.certs import issue_cert, make_ca
from tests.ports import free_port

SCHEMA = Path(__file__).parent / "fixtures" / "atna" / "dicom-audit-message.rnc"
BOM = "\ufeff"


@functools.cache
def audit_schema() -> etree.RelaxNG:
    """The DICOM audit message schema (PS3.15 A.5.1.1) as saved from the standard.

    The standard writes its value comments as ``##``, which the compact syntax
    reserves for documentation annotations placed before a pattern; strict
    parsers (rnc2rng, as trang) reject them after one, so they become plain
    ``#`` comments here. The grammar itself is untouched.
    """
    return etree.RelaxNG.from_rnc_string(re.sub(r"##", "#", SCHEMA.read_text()))


def validate(xml: bytes | str) -> etree._Element:
    """Parses one audit message and asserts it is valid against the schema; the root element."""
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    schema = audit_schema()
    assert schema.validate(root), f"{schema.error_log}\n{xml!r}"
    return root



class RsyslogRepository:
    """A real rsyslogd (Debian) as an audit record repository: imtcp over TLS (gtls), client certs required."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "work").mkdir(exist_ok=True)
        ca = make_ca("atna test CA")
        server = issue_cert(ca, "audit-repository", ip_addresses=["127.0.0.1"], dns_names=["localhost"])
        client = issue_cert(ca, "pacsvault-atna", server=False, kind="client")
        self.ca_file, self.client_cert, self.client_key = directory / "ca.pem", directory / "client.pem", \
            directory / "client.key"
        for path, data in [(self.ca_file, ca.cert_pem()), (directory / "server.pem", server.cert_pem()),
                           (directory / "server.key", server.key_pem()), (self.client_cert, client.cert_pem()),
                           (self.client_key, client.key_pem())]:
            path.write_bytes(data)
        self.port = free_port()
        self.received = directory / "received.log"
        self.pid_file = directory / "rsyslogd.pid"
        self.conf = directory / "rsyslog.conf"
        self.conf.write_text(f'''
global(workDirectory="{directory}/work" maxMessageSize="64k"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{self.ca_file}"
       defaultNetstreamDriverCertFile="{directory}/server.pem"
       defaultNetstreamDriverKeyFile="{directory}/server.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="x509/certvalid")
input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="atna")
# One line per message: the header fields the test checks, then the XML.
template(name="atna" type="string" string="%pri%|%app-name%|%msgid%|%msg%\\n")
ruleset(name="atna") {{
  action(type="omfile" file="{self.received}" template="atna")
}}
''')
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> RsyslogRepository:
        self.pid_file.unlink(missing_ok=True)
        log = open(self.dir / "rsyslogd.out", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.pid_file)],
                                     stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {(self.dir / 'rsyslogd.out').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("rsyslogd did not listen") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def messages(self) -> list[tuple[str, str, str, str]]:
        """(PRI, APP-NAME, MSGID, MSG) of each message received so far, in arrival order."""
        if not self.received.exists():
            return []
        found = []
        data = self.received.read_bytes()
        # rsyslog's omfile writes its buffer in blocks, so while a backlog arrives
        # the file can end inside a message (or a character): only whole lines are messages yet.
        for line in data[:data.rfind(b"\n") + 1].decode("utf-8").splitlines():
            pri, app, msgid, msg = line.split("|", 3)
            found.append((pri, app, msgid, msg.removeprefix(BOM)))
        return found

    def wait_for(self, predicate, timeout: float = 30.0) -> list[tuple[str, str, str, str]]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages()
            if predicate(messages):
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(f"rsyslog did not receive what was expected in {timeout}s; got "
                                     f"{len(messages)} messages")
            time.sleep(0.1)

