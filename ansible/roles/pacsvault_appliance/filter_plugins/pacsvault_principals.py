"""pacsvault_appliance_principals: the role's principals as the daemon's security.principals.

Each entry of ``pacsvault_appliance_principals`` names a principal either by
``name`` (the identity ``spiffe://pacsvault/client/<name>``, whose certificate
the role can issue with pacsvault's helper) or by ``identity`` (the SAN URI
of a certificate from the hospital's PKI), with its ``roles``. The daemon's
--check-config judges the roles; this only shapes the entries and names a
malformed one by its position.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
CLIENT_PREFIX = "spiffe://pacsvault/client/"


def principals(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """[{identity, roles}] for the daemon, in the order given."""
    shaped = []
    for i, entry in enumerate(entries or []):
        where = f"pacsvault_appliance_principals[{i}]"
        if not isinstance(entry, Mapping):
            raise AnsibleFilterError(f"{where}: expected a mapping with name or identity, and roles")
        unknown = sorted(set(entry) - {"name", "identity", "roles"})
        if unknown:
            raise AnsibleFilterError(f"{where}: unknown keys {unknown} (name or identity, and roles)")
        if ("name" in entry) == ("identity" in entry):
            raise AnsibleFilterError(f"{where}: give either name (a client certificate the role can issue) or "
                                     "identity (the SAN URI of a certificate from your PKI), not both or neither")
        roles = entry.get("roles")
        if not isinstance(roles, Sequence) or isinstance(roles, str) or not roles:
            raise AnsibleFilterError(f"{where}: roles must be a non-empty list (ingest, reader, admin, "
                                     "security-admin, auditor, monitor)")
        if "name" in entry:
            if not _NAME.match(str(entry["name"])):
                raise AnsibleFilterError(f"{where}.name {entry['name']!r}: lower-case letters, digits and dashes")
            identity = CLIENT_PREFIX + str(entry["name"])
        else:
            identity = str(entry["identity"])
        shaped.append({"identity": identity, "roles": [str(r) for r in roles]})
    return shaped


def client_names(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The names of the principals given by name: the client certificates the role may issue."""
    return [str(e["name"]) for e in entries or [] if isinstance(e, Mapping) and "name" in e]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"pacsvault_appliance_principals": principals,
                "pacsvault_appliance_client_names": client_names}
