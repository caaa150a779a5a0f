"""Organisation scoping rules: which child a resource is about, and who is granted that child.

Plain functions over resources and the policy in config/access.toml; the store applies them
(adapter/store/access_sql.py) so that every path goes through the same rules. Nothing here
touches HTTP or SQL.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from ..config import PROJECT_ROOT
from .caller import Caller

DEFAULT_FILE = PROJECT_ROOT / "config" / "access.toml"
COMPARTMENT_FILE = PROJECT_ROOT / "profiles" / "r4" / "patient-compartment.json"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
ODS_LOWER = "https://fhir.nhs.uk/id/ods-organization-code"
# Identifier systems that name an organisation by the code the partner registry uses: NHS ODS
# codes, and local authority codes (the LA notification mapping's system).
ORGANISATION_SYSTEMS = (ODS, ODS_LOWER, "https://lac-fhir-adapter.example/fhir/Id/local-authority")


@dataclass(frozen=True)
class GrantRule:
    """A resource of `type` grants the organisations it names access to the child it names."""

    type: str
    patient: str
    organisations: tuple[str, ...]
    while_status: frozenset[str] | None = None

    def active(self, resource: dict) -> bool:
        return self.while_status is None or resource.get("status") in self.while_status


@dataclass(frozen=True)
class AccessPolicy:
    shared_types: frozenset[str]
    server_written_types: frozenset[str]
    compartment: dict[str, tuple[str, ...]]
    grants: dict[str, GrantRule]
    gated_types: frozenset[str] = field(default_factory=frozenset)
    compartment_from_targets: dict[str, str] = field(default_factory=dict)

    def shared(self, rtype: str) -> bool:
        return rtype in self.shared_types

    def gated(self, rtype: str) -> bool:
        return rtype in self.gated_types

    def compartment_params(self, rtype: str) -> tuple[str, ...]:
        return self.compartment.get(rtype, ())


def load_policy(path: Path | None = None, gated_types: frozenset[str] | None = None) -> AccessPolicy:
    with open(path or DEFAULT_FILE, "rb") as fh:
        raw = tomllib.load(fh)
    definition = json.loads(COMPARTMENT_FILE.read_text())
    compartment = {r["code"]: tuple(r["param"]) for r in definition["resource"]}
    for rtype, params in raw.get("compartment", {}).items():
        compartment[rtype] = tuple(params)
    grants = {}
    for entry in raw.get("grant", []):
        status = entry.get("while_status")
        grants[entry["type"]] = GrantRule(entry["type"], entry["patient"], tuple(entry["organisations"]),
                                          frozenset(status) if status is not None else None)
    if gated_types is None:
        from ..consent.rules import gated_types as consent_gated

        gated_types = consent_gated()
    return AccessPolicy(frozenset(raw.get("shared_types", ())), frozenset(raw.get("server_written_types", ())),
                        compartment, grants, frozenset(gated_types),
                        dict(raw.get("compartment_from_targets", {})))


@lru_cache(maxsize=1)
def default_policy() -> AccessPolicy:
    return load_policy()


def caller_organisations(caller: Caller) -> frozenset[str]:
    """The organisations whose grants the caller shares: its own and the LAs it serves."""
    if not caller.organisation:
        return frozenset()
    return frozenset({caller.organisation, *caller.serves})


def ods_of(reference: dict, organisation_ods: Callable[[str], str | None]) -> str | None:
    """The ODS code a Reference names: by identifier, or by a literal Organization reference
    (`organisation_ods` looks up the stored Organization's ODS identifier)."""
    if not isinstance(reference, dict):
        return None
    ident = reference.get("identifier") or {}
    if isinstance(ident, dict) and ident.get("system") in ORGANISATION_SYSTEMS and ident.get("value"):
        return str(ident["value"])
    ref = reference.get("reference")
    if isinstance(ref, str) and "Organization/" in ref:
        org_id = ref.rsplit("Organization/", 1)[1].split("/_history", 1)[0]
        return organisation_ods(org_id) if org_id else None
    return None


def ods_identifier(organisation: dict) -> str | None:
    for ident in organisation.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") in ORGANISATION_SYSTEMS and ident.get("value"):
            return str(ident["value"])
    return None


def organisation_caller(ods: str, registry, client_id: str | None = None) -> Caller:
    """The Caller an organisation acts as when data is sent to it (its notifications, its
    requests): its role and the LAs it serves come from the partner registry."""
    partner = registry.organisation(ods) if registry is not None else None
    return Caller(client_id=client_id or (partner.client_id if partner else ods), organisation=ods,
                  role=(partner.role or None) if partner else None,
                  serves=frozenset(partner.serves) if partner else frozenset(),
                  scopes=frozenset({"system/*.rs"}))
