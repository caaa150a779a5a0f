"""Small helpers on FHIR References."""

from __future__ import annotations


def local_id(reference: str | None, rtype: str) -> str | None:
    """The id of a local reference `Type/id`, `Type/id/_history/n`, or an absolute one ending so."""
    if not isinstance(reference, str):
        return None
    parts = reference.split("/")
    if len(parts) >= 2 and parts[-2] == rtype:
        return parts[-1]
    if len(parts) >= 4 and parts[-4] == rtype and parts[-2] == "_history":
        return parts[-3]
    return None
