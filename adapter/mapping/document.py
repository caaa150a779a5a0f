"""What a mapped source document hands to the store."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MappedDocument:
    """A source document and the FHIR it maps to, before anything is written.

    `bundle` is a FHIR transaction Bundle whose entries refer to each other by `urn:uuid:`
    fullUrls and use conditional requests (ifNoneExist, or PUT Type?criteria) wherever
    the same fact may already be stored, so that importing a document twice changes
    nothing. `adapter.mapping.ingest` adds the kept source (Binary + DocumentReference)
    and a Provenance for every derived resource, then runs it as one transaction.
    """

    bundle: dict
    identifier: dict                # {"system": ..., "value": ...}: the document's own identity
    source: bytes                   # the bytes as received, kept as a Binary
    content_type: str               # e.g. "application/xml", "text/csv"
    document_type: str              # human label, e.g. "IHA-C form (BAAF-style XML)"
    mapping: str                    # the mapping definition applied, e.g. "mappings/forms/iha-c-1.0.0.json"
    subject: str | None = None      # fullUrl or literal reference of the Patient it is about
    unconsumed: list[str] = field(default_factory=list)  # source locations not mapped, with lines
