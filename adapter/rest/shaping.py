"""_summary and _elements: returning part of a resource, marked SUBSETTED."""

from __future__ import annotations

from ..fhir.definitions import summary_elements

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "subsetted"}
ALWAYS = ("resourceType", "id", "meta")


def _mark(resource: dict) -> dict:
    meta = dict(resource.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(t.get("code") == "SUBSETTED" for t in tags):
        tags.append(SUBSETTED)
    meta["tag"] = tags
    resource["meta"] = meta
    return resource


def shape(resource: dict, summary: str | None, elements: list[str] | None) -> dict:
    """Apply _summary / _elements; the result is tagged SUBSETTED so nobody writes it back."""
    if summary in (None, "false") and not elements:
        return resource
    rtype = resource["resourceType"]
    if summary == "true":
        keep = summary_elements(rtype) | set(ALWAYS)
    elif summary == "text":
        keep = {"text", *ALWAYS} | {k for k in resource if _mandatory(rtype, k)}
    elif summary == "data":
        keep = set(resource) - {"text"}
    else:
        keep = set(elements or ()) | set(ALWAYS)
    out = {k: v for k, v in resource.items() if k in keep or (k.startswith("_") and k[1:] in keep)}
    return _mark(out)


def _mandatory(rtype: str, key: str) -> bool:
    from ..fhir.definitions import element_index

    spec = element_index()["types"].get(rtype, {}).get(key)
    return bool(spec and spec.get("r"))
