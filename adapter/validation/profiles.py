"""Validation of a resource against a profile (a constraining StructureDefinition).

We hold no snapshots (UK Core's included), so a profile is judged from its `differential`,
with the base facts (types, repetition, backbone elements, choice types) taken from the R4
element index (`profiles/r4/elements.json`). Everything is driven by the definitions; no
rule here knows a particular profile or resource type.

What is checked, at every instance of every element the differential names (an element
inside an array is checked in every instance of its parent):

- `min`/`max` (issue code `structure`), choice types restricted by `type`, reference
  targets restricted by core `targetProfile`s;
- `fixed[x]` (exact equality) and `pattern[x]` (recursive containment) (`value`);
- `binding`: required → error, extensible/preferred → warning, example → nothing; a ValueSet
  whose content we do not hold gives an information issue (`code-invalid`, `informational`);
- `slicing` with `value`/`pattern` discriminators (also `exists` and `type`): each slice's
  cardinality, its children and its constraints apply to the items it matches; closed
  slicing rejects unmatched items; an extension slice naming its Extension profile in
  `type.profile` matches on that url, and each matched extension is validated against the
  Extension profile when `resolve` can find it;
- `constraint`s with a FHIRPath `expression`, evaluated on each instance (`invariant`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any, Callable, Iterable

from ..config import PROJECT_ROOT
from ..fhir.definitions import element_index
from ..fhir.errors import Issue
from . import fhirpath
from .terminology import Terminology

STRUCTURE_DEFINITIONS_DIR = PROJECT_ROOT / "profiles" / "structuredefinitions"
CORE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
MAX_PROFILE_DEPTH = 8
_BACKBONE = ("BackboneElement", "Element")

Resolver = Callable[[str], "dict | None"]


# ---- the differential as a tree ---------------------------------------------------------

@dataclass
class _Node:
    """One element of the differential (or an implicit step between named elements)."""

    id: str
    name: str                        # JSON-ish element name: 'identifier', 'value[x]', 'valueCoding'
    slice_name: str | None = None
    definition: dict = field(default_factory=dict)
    children: list["_Node"] = field(default_factory=list)
    slices: list["_Node"] = field(default_factory=list)

    def child(self, name: str) -> "_Node | None":
        return next((c for c in self.children if c.name == name), None)

    def find(self, segments: list[str]) -> "_Node | None":
        node: _Node | None = self
        for seg in segments:
            node = node.child(seg) if node else None
        return node


def _split_id(element_id: str) -> list[tuple[str, str | None]]:
    """'Patient.identifier:nhs.value' -> [('Patient', None), ('identifier', 'nhs'), ('value', None)].

    A type slice of a choice ('value[x]:valueCoding') becomes the renamed element 'valueCoding'.
    """
    out: list[tuple[str, str | None]] = []
    for part in element_id.split("."):
        name, _, slice_name = part.partition(":")
        if slice_name and name.endswith("[x]") and slice_name.startswith(name[:-3]) \
                and slice_name[len(name) - 3:len(name) - 2].isupper():
            name, slice_name = slice_name, ""
        out.append((name, slice_name or None))
    return out


def _element_id(element: dict) -> str:
    if element.get("id"):
        return element["id"]
    path = element.get("path", "")
    return f"{path}:{element['sliceName']}" if element.get("sliceName") else path


def _tree(profile: dict) -> _Node:
    elements = (profile.get("differential") or {}).get("element", [])
    root_name = profile.get("type") or (elements[0]["path"].split(".")[0] if elements else "")
    root = _Node(root_name, root_name)
    for element in elements:
        parts = _split_id(_element_id(element))
        if not parts or parts[0][0] != root_name:
            continue
        node = root
        ident = root_name
        for name, slice_name in parts[1:]:
            ident += "." + name
            child = node.child(name)
            if child is None:
                child = _Node(ident, name)
                node.children.append(child)
            node = child
            if slice_name:
                ident += ":" + slice_name
                sliced = next((s for s in node.slices if s.slice_name == slice_name), None)
                if sliced is None:
                    sliced = _Node(ident, name, slice_name)
                    node.slices.append(sliced)
                node = sliced
        node.definition = element
    return root


# ---- the R4 element index -------------------------------------------------------------------

@dataclass(frozen=True)
class _Ctx:
    """Where an instance sits in the R4 model: its type and, inside a backbone, the local path."""

    type: str
    local: str = ""

    @property
    def fhirpath_type(self) -> str:
        return f"{self.type}.{self.local}" if self.local else self.type


def _spec(ctx: _Ctx, name: str) -> tuple[dict | None, str]:
    """The element index entry of `name` under `ctx`, and its local path."""
    elements = element_index()["types"].get(ctx.type, {})
    key = f"{ctx.local}.{name}" if ctx.local else name
    spec = elements.get(key)
    if spec is not None and spec.get("c"):
        target = spec["c"].lstrip("#")
        target = target.split(".", 1)[1] if target.startswith(ctx.type + ".") else target
        return elements.get(target), target
    return spec, key


def _choice_types(ctx: _Ctx, name: str) -> list[str]:
    spec, _ = _spec(ctx, name)
    return list(spec.get("t", [])) if spec and name.endswith("[x]") else []


def _child_ctx(ctx: _Ctx, name: str, type_code: str | None) -> _Ctx | None:
    """The context of a value of element `name` (of type `type_code` for choices)."""
    spec, key = _spec(ctx, name)
    if spec is None:
        # a renamed choice ('valueCoding')
        for t in _all_choice_keys(ctx):
            stem = t[:-3]
            if name.startswith(stem) and name[len(stem):]:
                type_name = _type_from_suffix(ctx, t, name[len(stem):])
                return _Ctx(type_name) if type_name else None
        return None
    types = spec.get("t", [])
    if type_code:
        return _Ctx(type_code)
    if not types or types[0] in _BACKBONE:
        return _Ctx(ctx.type, key)
    return _Ctx(types[0]) if len(types) == 1 else None


def _all_choice_keys(ctx: _Ctx) -> list[str]:
    elements = element_index()["types"].get(ctx.type, {})
    prefix = f"{ctx.local}." if ctx.local else ""
    return [k[len(prefix):] for k in elements if k.endswith("[x]") and k.startswith(prefix)
            and "." not in k[len(prefix):]]


def _type_from_suffix(ctx: _Ctx, choice: str, suffix: str) -> str | None:
    for t in _choice_types(ctx, choice):
        if t[:1].upper() + t[1:] == suffix:
            return t
    return None


# ---- instances ------------------------------------------------------------------------------

@dataclass
class _Instance:
    value: Any                       # None for a primitive with only extensions
    location: str
    ctx: _Ctx | None
    type: str | None = None          # the actual type of a choice value


def _items(raw: Any) -> list:
    return raw if isinstance(raw, list) else [raw]


def _values(parent: _Instance, name: str) -> list[_Instance]:
    """The instances of element `name` in `parent` (choices: every present type)."""
    obj = parent.value
    if not isinstance(obj, dict):
        return []
    out: list[_Instance] = []
    if name.endswith("[x]") and parent.ctx is not None:
        stem = name[:-3]
        for t in _choice_types(parent.ctx, name):
            key = stem + t[:1].upper() + t[1:]
            out.extend(_named(parent, key, _Ctx(t), t))
        return out
    ctx = _child_ctx(parent.ctx, name, None) if parent.ctx is not None else None
    type_code = ctx.type if ctx is not None and not ctx.local else None
    return _named(parent, name, ctx, type_code)


def _named(parent: _Instance, key: str, ctx: _Ctx | None, type_code: str | None) -> list[_Instance]:
    obj = parent.value
    if key not in obj and f"_{key}" not in obj:
        return []
    raw, ext = obj.get(key), obj.get(f"_{key}")
    if isinstance(raw, list) or isinstance(ext, list):
        values = raw if isinstance(raw, list) else []
        exts = ext if isinstance(ext, list) else []
        n = max(len(values), len(exts))
        return [_Instance(values[i] if i < len(values) else None, f"{parent.location}.{key}[{i}]", ctx,
                          type_code) for i in range(n)]
    return [_Instance(raw, f"{parent.location}.{key}", ctx, type_code)]


# ---- comparisons ----------------------------------------------------------------------------

def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else False
    if isinstance(a, (int, float, Decimal)) and isinstance(b, (int, float, Decimal)):
        return Decimal(str(a)) == Decimal(str(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _contains(value: Any, pattern: Any) -> bool:
    """Does `value` contain `pattern` (FHIR pattern[x] semantics)?"""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and _contains(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        items = _items(value)
        return all(any(_contains(item, p) for item in items) for p in pattern)
    return _same(value, pattern)


def _choice_value(definition: dict, prefix: str) -> tuple[str, Any] | None:
    for key, value in definition.items():
        if key.startswith(prefix) and key[len(prefix):len(prefix) + 1].isupper():
            return key, value
    return None


def _at_path(value: Any, path: str) -> list:
    """Values at a simple dotted discriminator path ('system', 'coding.code', '$this')."""
    items = [value]
    if path in ("$this", ""):
        return items
    for step in path.removeprefix("$this.").split("."):
        nxt: list = []
        for item in items:
            if not isinstance(item, dict):
                continue
            if step in item:
                nxt.extend(_items(item[step]))
            elif step.endswith("[x]"):
                nxt.extend(v for k, vs in item.items() if k.startswith(step[:-3])
                           and k[len(step) - 3:len(step) - 2].isupper() for v in _items(vs))
        items = nxt
    return items


# ---- the validator --------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _directory_profiles() -> dict[str, dict]:
    out: dict[str, dict] = {}
    if STRUCTURE_DEFINITIONS_DIR.is_dir():
        for path in sorted(STRUCTURE_DEFINITIONS_DIR.glob("StructureDefinition-*.json")):
            sd = json.loads(path.read_text(encoding="utf-8"))
            if sd.get("url"):
                out[sd["url"]] = sd
    return out


def default_resolver(url: str) -> dict | None:
    """Our own StructureDefinitions (profiles/structuredefinitions) by canonical url."""
    return _directory_profiles().get(url.partition("|")[0])


def resolver_for(profiles: Iterable[dict]) -> Resolver:
    """A resolver over the given StructureDefinitions."""
    by_url = {p["url"]: p for p in profiles if p.get("url")}
    return lambda url: by_url.get(url.partition("|")[0])


@lru_cache(maxsize=256)
def _cached_tree(key: str) -> _Node:
    return _tree(json.loads(key))


def _profile_tree(profile: dict) -> _Node:
    return _cached_tree(json.dumps(profile, sort_keys=True, default=str))


class _Validator:
    def __init__(self, resource: dict, terminology: Terminology, resolve: Resolver):
        self.resource = resource
        self.terminology = terminology
        self.resolve = resolve
        self.issues: list[Issue] = []

    def issue(self, code: str, diagnostics: str, severity: str, location: str) -> None:
        self.issues.append(Issue(code, diagnostics, severity, [location]))

    # -- elements

    def element(self, node: _Node, instances: list[_Instance], depth: int) -> None:
        """Apply `node` (found directly by the root, or matched by a slice) to its instances."""
        for inst in instances:
            self.value_rules(node, inst, depth)
            for child in node.children:
                self.child(child, inst, depth)

    def child(self, node: _Node, parent: _Instance, depth: int) -> None:
        if parent.value is None:
            return
        values = _values(parent, node.name)
        where = f"{parent.location}.{node.name.removesuffix('[x]')}"
        self.cardinality(node, values, where)
        self.choice_types(node, values)
        self.element(node, values, depth)
        if node.slices:
            self.slicing(node, values, where, depth)

    def cardinality(self, node: _Node, values: list[_Instance], where: str) -> None:
        d = node.definition
        n = len(values)
        if "min" in d and n < int(d["min"]):
            self.issue("structure", f"{where}: {node.id} requires at least {d['min']} (found {n})", "error", where)
        if "max" in d and d["max"] != "*" and n > int(d["max"]):
            if d["max"] == "0":
                text = f"{where}: {node.id} is not allowed in this profile"
            else:
                text = f"{where}: {node.id} allows at most {d['max']} (found {n})"
            self.issue("structure", text, "error", where)

    def choice_types(self, node: _Node, values: list[_Instance]) -> None:
        allowed = [t.get("code") for t in node.definition.get("type", []) if t.get("code")]
        if not allowed or not node.name.endswith("[x]"):
            return
        for v in values:
            if v.type and v.type not in allowed:
                self.issue("structure", f"{v.location}: type {v.type} not allowed here (allowed: "
                                        f"{', '.join(allowed)})", "error", v.location)

    # -- rules on one value

    def value_rules(self, node: _Node, inst: _Instance, depth: int) -> None:
        d = node.definition
        if inst.value is None:
            return
        fixed = _choice_value(d, "fixed")
        if fixed and not _same(inst.value, fixed[1]):
            self.issue("value", f"{inst.location}: value must be exactly {_show(fixed[1])} ({fixed[0]})",
                       "error", inst.location)
        pattern = _choice_value(d, "pattern")
        if pattern and not _contains(inst.value, pattern[1]):
            self.issue("value", f"{inst.location}: value must match {_show(pattern[1])} ({pattern[0]})",
                       "error", inst.location)
        if d.get("binding"):
            self.binding(d["binding"], inst)
        self.targets(d, inst)
        for constraint in d.get("constraint", []):
            self.constraint(constraint, inst)
        for t in d.get("type", []):
            for url in t.get("profile", []):
                self.type_profile(url, inst, depth)

    def binding(self, binding: dict, inst: _Instance) -> None:
        strength = binding.get("strength")
        url = binding.get("valueSet")
        if not url or strength not in ("required", "extensible", "preferred"):
            return
        codes = _codes(inst.value)
        if codes is None:
            return
        answers = [self.terminology.contains(url, system, code) for system, code in codes]
        if any(a is True for a in answers):
            return
        if any(a is None for a in answers):
            self.issue("informational", f"{inst.location}: cannot check the code against {url} "
                                        "(its content is not held here)", "information", inst.location)
            return
        shown = ", ".join(f"{s}|{c}" if s else c for s, c in codes) or "no code"
        severity = "error" if strength == "required" else "warning"
        self.issue("code-invalid", f"{inst.location}: {shown} is not in the {strength} value set {url}",
                   severity, inst.location)

    def targets(self, d: dict, inst: _Instance) -> None:
        """Reference targets, when every allowed target is a core resource type."""
        allowed: list[str] = []
        for t in d.get("type", []):
            for target in t.get("targetProfile", []):
                if not target.startswith(CORE_PREFIX):
                    return
                allowed.append(target[len(CORE_PREFIX):])
        if not allowed or not isinstance(inst.value, dict):
            return
        actual = _reference_type(inst.value)
        if actual and actual not in allowed and "Resource" not in allowed:
            self.issue("structure", f"{inst.location}: reference to {actual} where {' or '.join(allowed)} "
                                    "is required", "error", inst.location)

    def constraint(self, constraint: dict, inst: _Instance) -> None:
        expression = constraint.get("expression")
        if not expression:
            return
        path = inst.ctx.fhirpath_type if inst.ctx is not None else None
        node = inst.value if inst.value is not self.resource else None
        ok, reason = fhirpath.check_detail(expression, node, self.resource, path=path)
        if ok:
            return
        key = constraint.get("key", "?")
        human = constraint.get("human", expression)
        text = f"{inst.location}: {key}: {human}"
        if reason and reason != "evaluated to false":
            text += f" ({reason})"
        severity = "warning" if constraint.get("severity") == "warning" else "error"
        self.issue("invariant", text, severity, inst.location)

    def type_profile(self, url: str, inst: _Instance, depth: int) -> None:
        if depth >= MAX_PROFILE_DEPTH or not isinstance(inst.value, dict):
            return
        profile = self.resolve(url)
        if profile is None or profile.get("kind") == "resource":
            return
        tree = _profile_tree(profile)
        root = _Instance(inst.value, inst.location, _Ctx(profile.get("type") or tree.name))
        self.element(tree, [root], depth + 1)

    # -- slicing

    def slicing(self, node: _Node, values: list[_Instance], where: str, depth: int) -> None:
        slicing = node.definition.get("slicing") or {}
        discriminators = slicing.get("discriminator", [])
        matched_any: set[int] = set()
        for sl in node.slices:
            matched = []
            for i, v in enumerate(values):
                if v.value is not None and self.matches(sl, v, discriminators):
                    matched.append(v)
                    matched_any.add(i)
            self.cardinality(sl, matched, where)
            self.element(sl, matched, depth)
        if slicing.get("rules") == "closed":
            for i, v in enumerate(values):
                if i not in matched_any:
                    self.issue("structure", f"{v.location}: matches no slice of {node.id} (slicing is closed)",
                               "error", v.location)

    def matches(self, sl: _Node, inst: _Instance, discriminators: list[dict]) -> bool:
        if not discriminators:
            return False
        return all(self.discriminator(sl, inst, d) for d in discriminators)

    def discriminator(self, sl: _Node, inst: _Instance, disc: dict) -> bool:
        kind, path = disc.get("type"), disc.get("path", "$this")
        target = self.slice_element(sl, path)
        found = _at_path(inst.value, path)
        if kind in ("value", "pattern"):
            if target is None:
                return False
            fixed = _choice_value(target, "fixed")
            if fixed:
                return any(_same(f, fixed[1]) for f in found)
            pattern = _choice_value(target, "pattern")
            if pattern:
                return any(_contains(f, pattern[1]) for f in found)
            return False
        if kind == "exists":
            if target is None:
                return False
            if int(target.get("min", 0)) > 0:
                return bool(found)
            return not found if target.get("max") == "0" else True
        if kind == "type":
            codes = [t.get("code") for t in (target or {}).get("type", [])]
            return bool(codes) and any(_value_type(inst, path) == c for c in codes)
        return False

    def slice_element(self, sl: _Node, path: str) -> dict | None:
        """The definition the slice gives the discriminator path (or its type profile gives)."""
        segments = [] if path in ("$this", "") else path.removeprefix("$this.").split(".")
        node = sl.find(segments)
        if node is not None and node.definition and (segments or _choice_value(node.definition, "fixed")
                                                      or _choice_value(node.definition, "pattern")
                                                      or node.definition.get("type")):
            return node.definition
        for t in sl.definition.get("type", []):
            for url in t.get("profile", []):
                profile = self.resolve(url)
                if profile is not None:
                    found = _profile_tree(profile).find(segments)
                    if found is not None and found.definition:
                        return found.definition
                if segments == ["url"] and t.get("code") == "Extension":
                    return {"fixedUri": url}  # an extension's url is its profile's canonical
        return sl.definition if not segments else None


def _value_type(inst: _Instance, path: str) -> str | None:
    if path in ("$this", ""):
        return inst.type or (inst.ctx.type if inst.ctx and not inst.ctx.local else None)
    return None


def _reference_type(ref: dict) -> str | None:
    if ref.get("type"):
        return ref["type"]
    literal = ref.get("reference") or ""
    if not literal or literal.startswith(("#", "urn:")):
        return None
    parts = literal.split("/_history/")[0].rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else None


def _codes(value: Any) -> list[tuple[str | None, str]] | None:
    """The (system, code) pairs a bound value carries; None when it is not a coded type."""
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return None
    if "coding" in value or "text" in value:
        return [(c.get("system"), c["code"]) for c in value.get("coding", []) if c.get("code")]
    if "code" in value:
        return [(value.get("system"), value["code"])]
    return None


def _show(value: Any) -> str:
    return json.dumps(fhirpath.plain(value), sort_keys=True)


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set = set()
    out = []
    for i in issues:
        key = (i.code, i.severity, i.diagnostics, tuple(i.expression))
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


def validate_profile(resource: dict, profile: dict, terminology: Terminology,
                     resolve: Resolver | None = None) -> list[Issue]:
    """Every way `resource` breaks `profile`'s differential, as Issues (empty when it conforms).

    `resolve` finds other StructureDefinitions by canonical url (the Extension profiles a slice
    names); by default our own under profiles/structuredefinitions.
    """
    rtype = resource.get("resourceType")
    expected = profile.get("type")
    if expected and rtype != expected:
        return [Issue("business-rule", f"profile {profile.get('url')} is for {expected}, not {rtype}",
                      "error", [str(rtype)])]
    validator = _Validator(resource, terminology, resolve or default_resolver)
    tree = _profile_tree(profile)
    root = _Instance(resource, str(rtype), _Ctx(str(rtype)))
    validator.element(tree, [root], 0)
    return _dedupe(validator.issues)
