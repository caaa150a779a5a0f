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
    for code, kind, table, parts in _plan(registry, rtype):
        if len(parts) == 1:
            nodes = parts[0].evaluate(resource)
        else:
            nodes = []
            for part in parts:
                nodes += part.evaluate(resource)
        if not nodes:
            continue
        found = _rows_for(kind, nodes, base_url)
        if not found:
            continue
        if len(found) > 1:  # the same value reached twice (e.g. through a union) is one row
            unique = {tuple(row.values()): row for row in reversed(found)}
            found = [row for row in found if unique.get(tuple(row.values())) is row]
        target = rows[table]
        for row in found:
            row["res_type"], row["res_id"], row["param"] = rtype, rid, code
            target.append(row)
    return rows


def _plan(registry: SearchRegistry, rtype: str) -> list[tuple]:
    """(code, kind, table, compiled expression parts) of the type's indexed parameters, in order;
    kept on the registry."""
    plans = registry.__dict__.setdefault("_index_plans", {})
    plan = plans.get(rtype)
    if plan is None:
        plan = plans[rtype] = [(code, param.type, INDEX_TABLES[param.type], sp.compile_expression(param.expression))
                              for code, param in registry.params(rtype).items()
                              if code not in ("_id", "_lastUpdated")]
    return plan


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
