"""The CodeSystems and ValueSets we hold, and membership checks against them.

Validation of bindings asks one question: is this (system, code) in that ValueSet?
We answer it for ValueSets whose content we hold (concepts listed in `compose`, whole
CodeSystems of ours, other ValueSets of ours); for anything else the answer is
"cannot tell" (None), and the caller decides what that means.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from ..config import PROJECT_ROOT

PROFILES_DIR = PROJECT_ROOT / "profiles"
Code = tuple[str, str]  # (system, code)


def _canonical(url: str) -> tuple[str, str | None]:
    base, _, version = url.partition("|")
    return base, version or None


class Terminology:
    def __init__(self, resources: Iterable[dict]):
        self._code_systems: dict[str, dict] = {}
        self._value_sets: dict[str, dict] = {}
        for res in resources:
            kind = res.get("resourceType")
            if kind == "CodeSystem" and res.get("url"):
                self._code_systems[res["url"]] = res
            elif kind == "ValueSet" and res.get("url"):
                self._value_sets[res["url"]] = res
        self._expansions: dict[str, frozenset[Code] | None] = {}

    @classmethod
    def from_directory(cls, root: Path = PROFILES_DIR) -> "Terminology":
        """Every CodeSystem-*.json and ValueSet-*.json below `root` (profiles/r4 excluded)."""
        resources = []
        for path in sorted(root.rglob("*.json")):
            if "r4" in path.relative_to(root).parts[:1]:
                continue
            if path.name.startswith(("CodeSystem-", "ValueSet-")):
                resources.append(json.loads(path.read_text(encoding="utf-8")))
        return cls(resources)

    def code_system(self, url: str) -> dict | None:
        return self._code_systems.get(_canonical(url)[0])

    def value_set(self, url: str) -> dict | None:
        return self._value_sets.get(_canonical(url)[0])

    def display(self, system: str, code: str) -> str | None:
        cs = self.code_system(system)
        if cs is None:
            return None
        for concept in _concepts(cs.get("concept", [])):
            if concept.get("code") == code:
                return concept.get("display")
        return None

    def expand(self, url: str) -> frozenset[Code] | None:
        """All (system, code) pairs of the ValueSet, or None if we cannot enumerate it."""
        key = _canonical(url)[0]
        if key not in self._expansions:
            self._expansions[key] = None  # guards against ValueSets that include themselves
            vs = self._value_sets.get(key)
            self._expansions[key] = self._expand(vs) if vs is not None else None
        return self._expansions[key]

    def contains(self, url: str, system: str | None, code: str) -> bool | None:
        """True/False when we hold the ValueSet's content; None when we cannot tell."""
        codes = self.expand(url)
        if codes is None:
            return None
        if system is None:
            return any(c == code for _, c in codes)
        return (system, code) in codes

    def _expand(self, vs: dict) -> frozenset[Code] | None:
        compose = vs.get("compose")
        if not compose:
            expansion = vs.get("expansion", {}).get("contains")
            if expansion is None:
                return None
            return frozenset((c["system"], c["code"]) for c in _concepts(expansion) if "code" in c)
        included: set[Code] = set()
        for part in compose.get("include", []):
            codes = self._part(part)
            if codes is None:
                return None
            included |= codes
        for part in compose.get("exclude", []):
            codes = self._part(part)
            if codes is None:
                return None
            included -= codes
        return frozenset(included)

    def _part(self, part: dict) -> set[Code] | None:
        if part.get("filter"):
            return None  # filters need a terminology server
        system = part.get("system")
        codes: set[Code] | None = None
        if system:
            if part.get("concept"):
                codes = {(system, c["code"]) for c in part["concept"]}
            else:
                cs = self.code_system(system)
                if cs is None or cs.get("content") not in (None, "complete"):
                    return None
                codes = {(system, c["code"]) for c in _concepts(cs.get("concept", []))}
        for ref in part.get("valueSet", []):
            other = self.expand(ref)
            if other is None:
                return None
            codes = set(other) if codes is None else codes & other
        return codes if codes is not None else set()


def _concepts(concepts: list) -> Iterable[dict]:
    """Concepts with their nested children (CodeSystem.concept.concept, expansion.contains)."""
    stack = list(reversed(concepts))
    while stack:
        concept = stack.pop()
        yield concept
        stack.extend(reversed(concept.get("concept", []) + concept.get("contains", [])))


@lru_cache(maxsize=1)
def default_terminology() -> Terminology:
    """Our published terminology under profiles/."""
    return Terminology.from_directory()
