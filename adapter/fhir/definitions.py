"""The FHIR R4 specification as data: element definitions and search parameters.

Both files under profiles/r4/ are derived from the specification itself (see their
README); nothing here hard-codes a resource's shape.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

R4_DIR = Path(__file__).resolve().parents[2] / "profiles" / "r4"
FHIR_VERSION = "4.0.1"


@lru_cache(maxsize=1)
def element_index() -> dict:
    return json.loads((R4_DIR / "elements.json").read_text())


def resource_type_names() -> frozenset[str]:
    kinds = element_index()["kinds"]
    return frozenset(t for t, k in kinds.items() if k == "resource")


@lru_cache(maxsize=None)
def summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level element names marked isSummary (JSON names, choice types expanded)."""
    elements = element_index()["types"].get(resource_type, {})
    names: set[str] = set()
    for path, spec in elements.items():
        if "." in path or not spec.get("s"):
            continue
        if path.endswith("[x]"):
            stem = path[:-3]
            names.update(stem + t[0].upper() + t[1:] for t in spec["t"])
        else:
            names.add(path)
    return frozenset(names)


def find_element(elements: dict, key: str) -> tuple[dict | None, str | None]:
    """An element of one type's `elements` by its JSON path, with the type a renamed choice
    names: `scheduledPeriod` finds `scheduled[x]` and "Period". (spec, None) when not a choice."""
    spec = elements.get(key)
    if spec is not None:
        return spec, None
    for path, candidate in elements.items():
        if path.endswith("[x]") and path.count(".") == key.count(".") and key.startswith(path[:-3]):
            suffix = key[len(path) - 3:]
            chosen = next((t for t in candidate["t"] if t[:1].upper() + t[1:] == suffix), None)
            if chosen:
                return candidate, chosen
    return None, None


@lru_cache(maxsize=1)
def search_parameter_bundle() -> dict:
    return json.loads((R4_DIR / "search-parameters.json").read_text())
