"""The conformance resources we publish (profiles/), and canonical-URL lookups.

The same files are loaded into the store at start-up (so partners can read and search
them) and used directly by offline validation (`lac-adapter validate`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from ..config import PROJECT_ROOT

PROFILES_DIR = PROJECT_ROOT / "profiles"
PUBLISHED_FOLDERS = ("terminology", "questionnaires", "structuredefinitions", "measures")
CANONICAL_TYPES = ("CodeSystem", "ValueSet", "Questionnaire", "StructureDefinition")

# (resource type, canonical url with optional |version) -> the resource, or None
Resolver = Callable[[str, str], "dict | None"]


def published_resources(root: Path = PROFILES_DIR) -> list[dict]:
    """Every conformance resource under profiles/ (except the R4 definitions in profiles/r4)."""
    out = []
    for folder in PUBLISHED_FOLDERS:
        for path in sorted((root / folder).glob("*.json")):
            out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


class CanonicalIndex:
    """Look resources up by canonical URL, `url|version` picking one version exactly."""

    def __init__(self, resources: Iterable[dict]):
        self._by_url: dict[tuple[str, str], list[dict]] = {}
        for res in resources:
            if res.get("resourceType") in CANONICAL_TYPES and res.get("url"):
                self._by_url.setdefault((res["resourceType"], res["url"]), []).append(res)

    def resolve(self, resource_type: str, canonical: str) -> dict | None:
        url, _, version = canonical.partition("|")
        candidates = self._by_url.get((resource_type, url), [])
        if version:
            candidates = [c for c in candidates if c.get("version") == version]
        if not candidates:
            return None
        return max(candidates, key=lambda c: _version_key(c.get("version", "")))


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.replace("-", ".").split("."))


@lru_cache(maxsize=1)
def published_index() -> CanonicalIndex:
    return CanonicalIndex(published_resources())
