"""The local authority's health notifications (XML, mappings/la-notification/) to FHIR.

`map_notification(bytes)` parses the message safely, checks it against the XSD, runs the
checks the XSD cannot express (NHS number check digit, co-occurrence rules, date order),
then applies the mapping definition `mappings/la-notification/la-notification-1.0.json`
to the one event the message carries. The rules are data; this module is a small, generic
template engine over them:

- strings hold placeholders `{path}`, `{path|lower}`, `{path|boolean}`, `{%constant}`, `{@}`;
  a path is `./a/b` (from the context element: the event, or a fragment's context), `../a`
  (from the context's parent), `@` (the current `foreach` item), `=literal`, or `a/b` from
  the message root (element local names, namespace implied);
- objects `{"$coding": path, "system": "<CodeSystem id>"}` (checked against our CodeSystems:
  an unknown code is a 422 naming the line), `{"$ref": key}` (the fullUrl of another entry,
  or the mapping's conditional reference when the event has no such entry), `{"$map": path,
  "values": {...} | "%constant"}`, `{"$if": {"path", "equals"?}, "then", "else"?}`,
  `{"$list": path}`, `{"$join": [...], "sep", "prefix"}`, `{"$fn": name, "args": [...]}`;
- an object one of whose placeholders names an absent source element is left out (so an
  optional NHS number or phone leaves no half-filled identifier or telecom behind); `null`
  leaves its key out.

Every element a rule reads counts as consumed; the leaf elements no rule read are reported
in `MappedDocument.unconsumed` with their line numbers.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

from lxml import etree

from ..config import PROJECT_ROOT
from ..fhir.errors import FhirError, Issue
from ..fhir.identifiers import nhs_number_valid
from ..pathway.clocks import add_working_days, bank_holidays
from ..validation.terminology import Terminology, default_terminology
from .document import MappedDocument
from .xmldoc import check_schema, line_of, parse_document

MAPPING = "mappings/la-notification/la-notification-1.0.json"
MAPPING_PATH = PROJECT_ROOT / MAPPING
CONTENT_TYPE = "application/xml"
_PLACEHOLDER = re.compile(r"\{([^{}|]+)(?:\|([a-z]+))?\}")
MAX_ISSUES = 20


class _Missing:
    """A value left out: OMIT drops its key; ABSENT (a source element is missing) drops the
    enclosing object."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:  # pragma: no cover
        return self.name


OMIT = _Missing("OMIT")
ABSENT = _Missing("ABSENT")


@lru_cache(maxsize=1)
def load_mapping() -> dict:
    """The mapping definition, with the pathway's IHA interval from config/pathway.toml."""
    from ..pathway.schedule import load_rules

    mapping = json.loads(MAPPING_PATH.read_text(encoding="utf-8"))
    mapping["constants"]["iha-due-working-days"] = str(load_rules().iha_working_days)
    return mapping


def map_notification(data: bytes) -> MappedDocument:
    """Map one LA health notification (XML bytes) to a MappedDocument (transaction Bundle)."""
    mapping = load_mapping()
    root = parse_document(data)
    ns = mapping["namespace"]
    if root.tag != f"{{{ns}}}{mapping['root']}":
        raise FhirError(422, "structure", f"{line_of(root)}: the root element must be {mapping['root']} "
                                          f"in namespace {ns}, not {root.tag}")
    check_schema(root, MAPPING_PATH.parent / mapping["schema"])
    engine = _Engine(mapping, root, default_terminology())
    issues = engine.checks()
    event = next(child for child in root if etree.QName(child).localname in mapping["events"])
    name = etree.QName(event).localname
    rules = mapping["events"][name]
    bundle, subject = engine.run(rules, event)
    issues += engine.issues
    if issues:
        raise FhirError(422, issues[0].code, issues[0].diagnostics, issues=issues[:MAX_ISSUES])
    top = _Scope(event, None)
    identifier = engine.render(mapping["document_identifier"], top, top_level=True)
    return MappedDocument(bundle=bundle, identifier=identifier, source=data, content_type=CONTENT_TYPE,
                          document_type=rules["document_type"], mapping=MAPPING, subject=subject,
                          unconsumed=engine.unconsumed())




# -- the engine -----------------------------------------------------------------------------

@dataclass
class _Scope:
    context: etree._Element         # what ./ means
    item: etree._Element | None     # what @ means (foreach)


@dataclass
class _Instance:
    rule: dict
    scope: _Scope
    key: str
    full_url: str


@dataclass
class _Engine:
    mapping: dict
    root: etree._Element
    terminology: Terminology
    issues: list[Issue] = field(default_factory=list)
    consumed: set = field(default_factory=set)
    full_urls: dict[str, str] = field(default_factory=dict)

    # -- paths

    def elements(self, path: str, scope: _Scope, consume: bool = True) -> list[etree._Element]:
        if path == "@":
            found = [scope.item] if scope.item is not None else []
        else:
            if path.startswith("./"):
                nodes, rest = [scope.context], path[2:]
            elif path == ".":
                nodes, rest = [scope.context], ""
            elif path.startswith("../"):
                parent = scope.context.getparent()
                nodes, rest = ([parent] if parent is not None else []), path[3:]
            else:
                nodes, rest = [self.root], path
            ns = self.mapping["namespace"]
            for step in [s for s in rest.split("/") if s]:
                nodes = [c for n in nodes for c in n.findall(f"{{{ns}}}{step}")]
            found = nodes
        if consume:
            for el in found:
                self.consumed.add(el)
                self.consumed.update(el.iter())
        return found

    def text(self, path: str, scope: _Scope, consume: bool = True) -> str | None:
        if path.startswith("="):
            return path[1:]
        found = self.elements(path, scope, consume)
        if not found:
            return None
        value = (found[0].text or "").strip()
        return value or None

    def condition(self, cond: dict, scope: _Scope, consume: bool = True) -> bool:
        value = self.text(cond["path"], scope, consume) if "equals" in cond else None
        if "equals" in cond:
            return value in cond["equals"]
        return bool(self.elements(cond["path"], scope, consume))

    # -- checks the XSD cannot express

    def checks(self) -> list[Issue]:
        ns = self.mapping["namespace"]
        issues: list[Issue] = []
        for check in self.mapping.get("checks", []):
            for el in self.root.iter(f"{{{ns}}}{check['element']}"):
                scope = _Scope(el, None)
                where = f"{line_of(el)}: {self.path_of(el)}"
                rule = check.get("rule")
                if rule == "nhs-number":
                    value = (el.text or "").strip()
                    if not nhs_number_valid(value):
                        issues.append(Issue("invalid", f"{where}: {value} is not a valid NHS number "
                                                       "(modulus 11 check digit)", expression=[self.path_of(el)]))
                elif rule == "not-before":
                    other = self.text(check["other"], scope, consume=False)
                    value = (el.text or "").strip()
                    if other and value and date.fromisoformat(value) < date.fromisoformat(other):
                        issues.append(Issue("business-rule", f"{where}: {check['message']} ({value} < {other})",
                                            expression=[self.path_of(el)]))
                elif "require" in check:
                    if (not check.get("when") or self.condition(check["when"], scope, consume=False)) \
                            and not self.elements(check["require"], scope, consume=False):
                        issues.append(Issue("required", f"{where}: {check['message']}",
                                            expression=[self.path_of(el)]))
        return issues

    # -- entries

    def expand(self, rules: list[dict], scope: _Scope) -> list[_Instance]:
        out: list[_Instance] = []
        for rule in rules:
            if rule.get("when") and not self.condition(rule["when"], scope, consume=False):
                continue
            if "include" in rule:
                contexts = self.elements(rule.get("context", "."), scope, consume=False)
                for ctx in contexts:
                    out += self.expand(self.mapping["fragments"][rule["include"]], _Scope(ctx, None))
                continue
            items = self.elements(rule["foreach"], scope, consume=False) if "foreach" in rule else [None]
            for item in items:
                inst = _Instance(rule, _Scope(scope.context, item), rule["key"], f"urn:uuid:{uuid.uuid4()}")
                self.full_urls.setdefault(inst.key, inst.full_url)
                out.append(inst)
        return out

    def run(self, event_rules: dict, event: etree._Element) -> tuple[dict, str]:
        instances = self.expand(event_rules["entries"], _Scope(event, None))
        entries = []
        for inst in instances:
            if "patch" in inst.rule:
                entries.append(self.patch_entry(inst))
            else:
                resource = self.render(inst.rule["resource"], inst.scope, top_level=True)
                request = self.render(inst.rule["request"], inst.scope, top_level=True)
                entries.append({"fullUrl": inst.full_url, "resource": resource, "request": request})
        entries = _merge_duplicates(entries)
        subject = self.reference(event_rules["subject"], _Scope(event, None))["reference"]
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, subject

    def patch_entry(self, inst: _Instance) -> dict:
        target = inst.rule["patch"]
        ops = [self.render(op, inst.scope, top_level=True) for op in inst.rule["operations"]]
        criteria = self.render(target["criteria"], inst.scope)
        body = json.dumps(ops, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                             "data": base64.b64encode(body).decode("ascii")},
                "request": {"method": "PATCH", "url": f"{target['resourceType']}?{criteria}"}}

    def reference(self, key: str, scope: _Scope) -> dict:
        if key in self.full_urls:
            return {"reference": self.full_urls[key]}
        conditional = self.mapping.get("references", {}).get(key)
        if conditional is None:
            raise KeyError(f"mapping error: no entry or conditional reference for '{key}'")
        ref = self.render(conditional["conditional"], scope)
        return {"reference": ref, "type": conditional["type"]}

    # -- templates

    def render(self, template: Any, scope: _Scope, top_level: bool = False) -> Any:
        if template is None:
            return OMIT
        if isinstance(template, str):
            return self.string(template, scope)
        if isinstance(template, list):
            out = [v for v in (self.render(t, scope) for t in template) if not isinstance(v, _Missing)]
            return out or OMIT
        if not isinstance(template, dict):
            return template
        special = next((k for k in template if k.startswith("$")), None)
        if special:
            return getattr(self, "op_" + special[1:])(template, scope)
        out = {}
        for key, value in template.items():
            rendered = self.render(value, scope)
            if rendered is ABSENT and not top_level:
                return OMIT  # an object missing a source element is left out whole
            if not isinstance(rendered, _Missing):
                out[key] = rendered
        return out or OMIT

    def string(self, template: str, scope: _Scope) -> Any:
        whole = _PLACEHOLDER.fullmatch(template)
        if whole:
            return self.placeholder(whole.group(1), whole.group(2), scope)
        missing = False

        def sub(m: re.Match) -> str:
            nonlocal missing
            value = self.placeholder(m.group(1), m.group(2), scope)
            if isinstance(value, _Missing):
                missing = True
                return ""
            return str(value)

        text = _PLACEHOLDER.sub(sub, template)
        return ABSENT if missing else text

    def placeholder(self, path: str, flt: str | None, scope: _Scope) -> Any:
        if path.startswith("%"):
            value = self.mapping["constants"][path[1:]]
        else:
            value = self.text(path, scope)
            if value is None:
                return ABSENT
        if flt == "lower":
            return value.lower()
        if flt == "boolean":
            return value in ("true", "1")
        return value

    def op_coding(self, t: dict, scope: _Scope) -> Any:
        code = self.text(t["$coding"], scope)
        if code is None:
            return ABSENT
        base = self.mapping["code_systems"]
        system = base + t["system"]
        value_set = system.replace("/CodeSystem/", "/ValueSet/")
        if self.terminology.contains(value_set, system, code) is not True:
            el = None if t["$coding"].startswith("=") else self.elements(t["$coding"], scope, consume=False)
            where = f"{line_of(el[0])}: {self.path_of(el[0])}" if el else t["$coding"]
            self.issues.append(Issue("code-invalid", f"{where}: '{code}' is not a code of CodeSystem {system}",
                                     expression=[self.path_of(el[0])] if el else []))
            return {"system": system, "code": code}
        out = {"system": system, "code": code}
        display = self.terminology.display(system, code)
        if display:
            out["display"] = display
        return out

    def op_ref(self, t: dict, scope: _Scope) -> Any:
        return self.reference(t["$ref"], scope)

    def op_map(self, t: dict, scope: _Scope) -> Any:
        key = self.text(t["$map"], scope)
        if key is None:
            return ABSENT
        values = t["values"]
        if isinstance(values, str):
            values = self.mapping["constants"][values.lstrip("%")]
        if key not in values:
            return OMIT
        return self.render(values[key], scope)

    def op_if(self, t: dict, scope: _Scope) -> Any:
        branch = t.get("then") if self.condition(t["$if"], scope) else t.get("else")
        return self.render(branch, scope)

    def op_list(self, t: dict, scope: _Scope) -> Any:
        values = [(el.text or "").strip() for el in self.elements(t["$list"], scope)]
        values = [v for v in values if v]
        return values or ABSENT

    def op_join(self, t: dict, scope: _Scope) -> Any:
        parts = [self.render(p, scope) for p in t["$join"]]
        parts = [str(p) for p in parts if not isinstance(p, _Missing)]
        if not parts:
            return ABSENT
        return t.get("prefix", "") + t.get("sep", "").join(parts)

    def op_fn(self, t: dict, scope: _Scope) -> Any:
        args = [self.render(a, scope) for a in t.get("args", [])]
        if any(isinstance(a, _Missing) for a in args):
            return ABSENT
        return FUNCTIONS[t["$fn"]](*args)

    # -- reporting

    def path_of(self, el: etree._Element) -> str:
        parts = []
        node = el
        while node is not None:
            parts.append(etree.QName(node).localname)
            node = node.getparent()
        return "/" + "/".join(reversed(parts))

    def unconsumed(self) -> list[str]:
        out = []
        for el in self.root.iter():
            if not isinstance(el.tag, str) or len(el):
                continue
            if el not in self.consumed:
                out.append(f"{line_of(el)}: {self.path_of(el)}")
        return out


def _due_date(start: str, days: str) -> str:
    return add_working_days(date.fromisoformat(start), int(days), bank_holidays()).isoformat()


FUNCTIONS = {"add_working_days": _due_date}


def _merge_duplicates(entries: list[dict]) -> list[dict]:
    """Entries that create the same thing (same type and ifNoneExist) become one, and
    references to the dropped ones point at the kept one: two POSTs with the same
    ifNoneExist in one transaction would otherwise both create."""
    kept: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    out = []
    for entry in entries:
        request = entry["request"]
        key = (request.get("method"), request.get("url"), request.get("ifNoneExist"))
        if request.get("ifNoneExist") and key in kept:
            alias[entry["fullUrl"]] = kept[key]
            continue
        if request.get("ifNoneExist"):
            kept[key] = entry["fullUrl"]
        out.append(entry)
    if alias:
        _rewrite(out, alias)
    return out


def _rewrite(node: Any, alias: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in alias:
            node["reference"] = alias[ref]
        for v in node.values():
            _rewrite(v, alias)
    elif isinstance(node, list):
        for v in node:
            _rewrite(v, alias)
