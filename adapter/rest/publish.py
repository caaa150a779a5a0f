"""Put the conformance resources of profiles/ into the store, so partners can read them.

Run at start-up: a resource whose content already matches is left alone, so restarts
create no new versions; a changed file becomes a new version.
"""

from __future__ import annotations

from ..fhir.errors import FhirError
from ..security.caller import SYSTEM
from ..validation.conformance import published_resources
from ..validation.structure import validate_structure


def _content(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "meta"}


def publish_conformance(router) -> int:
    """Store new or changed conformance resources in one transaction; returns how many."""
    written = 0
    resources = published_resources()
    with router.repo.transaction(SYSTEM, write=True) as tx:
        for resource in resources:
            rtype, rid = resource["resourceType"], resource["id"]
            if rtype not in router.types:
                raise FhirError(500, "not-supported", f"profiles/ holds a {rtype}, which this server does not serve")
            current = tx.current(rtype, rid)
            if current is not None and not current.deleted and _content(current.resource()) == _content(resource):
                continue
            validate_structure(resource)
            tx.update(rtype, rid, dict(resource))
            written += 1
    return written
