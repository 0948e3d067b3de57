"""A test CA and the mutual-TLS certificates of an appliance pair.

Peers authenticate each other by certificates from one CA. An appliance's
identity is the SAN URI ``spiffe://pacsvault/appliance/<name>`` (gRPC exposes
it as the ``peer_spiffe_id`` auth property); the CN is informational only and
must never be relied on. Appliance certificates serve and connect (EKU
serverAuth + clientAuth); optional client certificates (an operator's tools)
only connect and carry ``spiffe://pacsvault/client/<name>``. Keys are ECDSA
P-256.

Command line (idempotent, so Ansible can run it on every converge)::

    python -m pacsvault.daemon.replication.certs OUT_DIR \\
        --appliance site-a=127.0.0.1,localhost --appliance site-b=127.0.0.2 \\
        [--client operator] [--days 825] [--force]

writes ``ca.pem``, ``ca.key`` and ``<name>.pem`` / ``<name>.key`` per name,
keys mode 0600. An existing CA is reused unless ``--force``; an existing
certificate is kept while it is issued by that CA, has the requested names
and has more than 30 days left. Each line printed says ``created`` or ``kept``.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pacsvault.daemon.errors import InvalidInput

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_RENEW_BEFORE = datetime.timedelta(days=30)
# Issued slightly in the past: a peer whose clock is a little behind still accepts it.
_BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def identity_uri(name: str, kind: str = "appliance") -> str:
    """The SAN URI that identifies ``name``: ``spiffe://pacsvault/<kind>/<name>``."""
    return f"spiffe://pacsvault/{kind}/{name}"


def make_ca(common_name: str = "pacsvault test CA", days: int = 3650) -> Issued:
    """A new self-signed CA that may sign leaf certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue_cert(ca: Issued, name: str, *, dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = (),
               days: int = 825, server: bool = True, kind: str = "appliance",
               uris: Sequence[str] | None = None, serial_number: int | None = None) -> Issued:
    """A leaf certificate for ``name`` signed by ``ca``.

    Args:
        ca: the issuing CA.
        name: the appliance or client name; lower-case letters, digits, dashes.
        dns_names: DNS SANs a client may dial.
        ip_addresses: IP SANs a client may dial (gRPC checks these for IP targets).
        days: validity.
        server: serverAuth as well as clientAuth; False for client-only certificates.
        kind: ``appliance`` or ``client``, the path segment of the identity URI.
        uris: the URI SANs instead of the one identity URI; ``[]`` for none (with no
            DNS or IP names either, the certificate has no SAN at all: CN only).
            For tests of certificates that name no single principal.
        serial_number: a chosen serial instead of a random one (tests of how serials are typed).

    Raises:
        InvalidInput: a bad name or IP address.
    """
    _check_name(name)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server \
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject).public_key(key.public_key())
        .serial_number(serial_number if serial_number is not None else x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    san = _san(name, kind, dns_names, ip_addresses, uris)
    if list(san):
        builder = builder.add_extension(san, critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def write_set(out_dir: Path, appliances: dict[str, list[str]], clients: Sequence[str] = (),
              days: int = 825, force: bool = False) -> list[str]:
    """Writes (or keeps) the CA and every certificate; returns one line per file set.

    Args:
        out_dir: where the PEM files go; created if missing.
        appliances: name -> DNS names and IP addresses for its SANs.
        clients: names of client-only certificates.
        days: validity of the leaf certificates.
        force: make a new CA (and so new everything) even when one exists.
    """
    if set(appliances) & set(clients):
        raise InvalidInput(f"names used for both an appliance and a client: {sorted(set(appliances) & set(clients))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    ca, ca_created = _load_or_make_ca(out_dir, force)
    actions = [f"{'created' if ca_created else 'kept'} ca.pem"]
    wanted = [(name, addresses, True, "appliance") for name, addresses in appliances.items()]
    wanted += [(name, [], False, "client") for name in clients]
    for name, addresses, server, kind in wanted:
        dns_names, ips = _split_addresses(addresses)
        if not ca_created and _up_to_date(out_dir, name, ca, dns_names, ips, kind):
            actions.append(f"kept {name}.pem")
            continue
        issued = issue_cert(ca, name, dns_names=dns_names, ip_addresses=ips, days=days, server=server, kind=kind)
        _write_file(out_dir / f"{name}.key", issued.key_pem(), 0o600)
        _write_file(out_dir / f"{name}.pem", issued.cert_pem(), 0o644)
        actions.append(f"created {name}.pem")
    return actions


def _load_or_make_ca(out_dir: Path, force: bool) -> tuple[Issued, bool]:
    cert_path, key_path = out_dir / "ca.pem", out_dir / "ca.key"
    if cert_path.exists() and not force:
        if not key_path.exists():
            raise InvalidInput(f"{cert_path} exists without ca.key: cannot issue; use --force for a new CA")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise InvalidInput(f"{key_path} is not the key of {cert_path}; use --force for a new CA")
        return Issued(cert, key), False
    ca = make_ca()
    # Key first: a crash in between leaves no ca.pem, so the next run starts afresh.
    _write_file(key_path, ca.key_pem(), 0o600)
    _write_file(cert_path, ca.cert_pem(), 0o644)
    return ca, True


def _up_to_date(out_dir: Path, name: str, ca: Issued, dns_names: list[str], ips: list[str], kind: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate((out_dir / f"{name}.pem").read_bytes())
        key = serialization.load_pem_private_key((out_dir / f"{name}.key").read_bytes(), password=None)
        cert.verify_directly_issued_by(ca.cert)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    now = datetime.datetime.now(datetime.UTC)
    if key.public_key() != cert.public_key() or cert.not_valid_after_utc - now < _RENEW_BEFORE:
        return False
    try:
        current = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(current) == set(_san(name, kind, dns_names, ips))


def _san(name: str, kind: str, dns_names: Sequence[str], ip_addresses: Sequence[str],
         uris: Sequence[str] | None = None) -> x509.SubjectAlternativeName:
    try:
        ips = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    except ValueError as exc:
        raise InvalidInput(f"certificate for {name}: {exc}") from exc
    general: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(u) for u in (uris if uris is not None else [identity_uri(name, kind)])]
    general += [x509.DNSName(d) for d in dns_names]
    general += ips
    return x509.SubjectAlternativeName(general)


def _split_addresses(addresses: Sequence[str]) -> tuple[list[str], list[str]]:
    dns_names, ips = [], []
    for address in addresses:
        try:
            ipaddress.ip_address(address)
            ips.append(address)
        except ValueError:
            dns_names.append(address)
    return dns_names, ips


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise InvalidInput(f"name {name!r} must be lower-case letters, digits and dashes (it is a file name and a URI)")


def _write_file(path: Path, data: bytes, mode: int) -> None:
    # temp with its final mode from the start (a key is never world-readable,
    # not even briefly) -> fsync -> rename -> fsync dir.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)  # the umask narrowed the mode given to open; make it exact
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pacsvault.daemon.replication.certs",
                                     description="Create a test CA and mutual-TLS certificates for an appliance pair.")
    parser.add_argument("out_dir", type=Path, help="directory for the PEM files")
    parser.add_argument("--appliance", action="append", default=[], metavar="NAME=ADDR[,ADDR...]",
                        help="an appliance and the IP addresses / DNS names in its certificate (repeatable)")
    parser.add_argument("--client", action="append", default=[], metavar="NAME",
                        help="a client-only certificate (repeatable)")
    parser.add_argument("--days", type=int, default=825, help="validity of the leaf certificates (default 825)")
    parser.add_argument("--force", action="store_true", help="make a new CA and reissue everything")
    args = parser.parse_args(argv)
    if not args.appliance and not args.client:
        parser.error("give at least one --appliance or --client")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = _parse_args(argv)
    appliances: dict[str, list[str]] = {}
    for spec in args.appliance:
        name, _, addresses = spec.partition("=")
        appliances[name] = [a for a in addresses.split(",") if a]
    try:
        actions = write_set(args.out_dir, appliances, args.client, args.days, args.force)
    except InvalidInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in actions:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
