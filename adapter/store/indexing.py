"""Turn one resource into search index rows, per SearchParameter type."""

from __future__ import annotations

from collections import defaultdict

from ..fhir import search_params as sp
from ..fhir.search_params import SearchRegistry
from .tables import INDEX_TABLES

MAX_STRING = 400


def index_rows(registry: SearchRegistry, resource: dict, base_url: str | None = None) -> dict:
    """{table: [row dicts]} for every indexed parameter of the resource's type."""
    rtype, rid = resource["resourceType"], resource["id"]
    rows: dict = defaultdict(list)
    for code, param in registry.params(rtype).items():
        if code in ("_id", "_lastUpdated"):
            continue
        nodes = sp.evaluate(param.expression, resource)
        if not nodes:
            continue
        table = INDEX_TABLES[param.type]
        seen: set = set()
        for row in _rows_for(param.type, nodes, base_url):
            key = tuple(sorted(row.items()))
            if key in seen:
                continue
            seen.add(key)
            row.update(res_type=rtype, res_id=rid, param=code)
            rows[table].append(row)
    return rows


def _rows_for(kind: str, nodes: list, base_url: str | None) -> list[dict]:
    out: list[dict] = []
    for node in nodes:
        if kind == "string":
            for s in sp.string_values(node):
                out.append({"value": sp.normalise_string(s)[:MAX_STRING], "exact": s[:MAX_STRING]})
        elif kind in ("token", "uri"):
            if kind == "uri" and isinstance(node, str):
                out.append({"system": None, "code": node[:MAX_STRING], "text": None})
                continue
            for t in sp.token_values(node):
                out.append({"system": _cut(t.system), "code": _cut(t.code),
                            "text": _cut(sp.normalise_string(t.text)) if t.text else None})
        elif kind == "reference":
            for r in sp.reference_values(node, base_url):
                out.append({"target_type": r.target_type, "target_id": r.target_id,
                            "url": r.url[:1000] if r.url else None})
        elif kind == "date":
            for d in sp.date_values(node):
                out.append({"low": d.low, "high": d.high})
        elif kind in ("number", "quantity"):
            for n in sp.number_values(node):
                out.append({"value": n.value, "low": n.low, "high": n.high,
                            "system": _cut(n.system), "code": _cut(n.code, 100)})
    return out


def _cut(value: str | None, size: int = MAX_STRING) -> str | None:
    return value[:size] if value is not None else None
