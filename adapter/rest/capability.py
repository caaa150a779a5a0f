"""The CapabilityStatement, generated from what the router and registry really support."""

from __future__ import annotations

from functools import lru_cache

from .. import __version__
from ..fhir.definitions import FHIR_VERSION
from ..fhir.search_query import MODIFIERS

INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance",
                "history-type", "create", "search-type"]
RESULT_PARAMS = [
    ("_count", "number", "Page size (bounded by the server's maximum)"),
    ("_offset", "number", "Index of the first match on the page (used by paging links)"),
    ("_sort", "string", "Comma-separated parameters, '-' for descending"),
    ("_include", "string", "Type:parameter[:target], with :iterate"),
    ("_revinclude", "string", "Type:parameter[:target], with :iterate"),
    ("_summary", "token", "true | text | data | count | false"),
    ("_elements", "string", "Comma-separated top-level elements to return"),
    ("_total", "token", "none | estimate | accurate"),
    ("_has", "string", "Reverse chaining: _has:Type:reference:parameter"),
]


def capability_statement(router, base: str) -> dict:
    cors = bool(getattr(router.settings, "cors_origins", ()))
    return _build(tuple(sorted(router.types)), router.registry, base, router.settings.max_page_size, cors)


@lru_cache(maxsize=8)
def _build(types: tuple[str, ...], registry, base: str, max_page: int, cors: bool = False) -> dict:
    from ..api.auth_routes import capability_security, token_url_for

    resources = []
    for rtype in types:
        params = registry.params(rtype)
        search_params = []
        for code in sorted(params):  # the registry has _id and _lastUpdated already
            p = params[code]
            entry = {"name": code, "type": p.type}
            if p.url:
                entry["definition"] = p.url
            search_params.append(entry)
        search_params += [{"name": n, "type": t, "documentation": d} for n, t, d in RESULT_PARAMS]
        ref_params = sorted(c for c, p in params.items() if p.type == "reference")
        resources.append({
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": c} for c in INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical"],
            "searchInclude": [f"{rtype}:*"] + [f"{rtype}:{c}" for c in ref_params],
            "searchRevInclude": ["*"],
            "searchParam": search_params,
        })
    modifiers = "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in MODIFIERS.items())
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "lac-fhir-adapter",
        "kind": "instance",
        "software": {"name": "lac-fhir-adapter", "version": __version__},
        "implementation": {"description": "FHIR R4 adapter for looked-after children's health", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json", "application/fhir+xml", "application/xml"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "security": capability_security(token_url_for(base), cors=cors),
            "documentation": f"Search modifiers by type: {modifiers}. Chained parameters, _has, "
                             f"_include and _revinclude (with :iterate) are supported. Pages hold at most "
                             f"{max_page} entries.",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "search-system"},
                            {"code": "history-system"}],
            "operation": [{"name": "validate",
                           "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"},
                          {"name": "everything",
                           "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                          {"name": "evaluate-measure",
                           "definition": "http://hl7.org/fhir/OperationDefinition/Measure-evaluate-measure"}],
        }],
    }
