"""SDC `$extract`: the resources a QuestionnaireResponse's answers produce, driven by the form.

Nothing here knows a form, a linkId or a profile: everything comes from the Questionnaire's
annotations, the profiles' StructureDefinitions and the R4 element index.

Observation-based extraction (SDC `sdc-questionnaire-observationExtract`)
    Every answered item with a `code` on which the flag is true (on the item, or inherited
    from the nearest ancestor item or the Questionnaire that sets it) gives one Observation per
    answer: status final, code = item.code, subject/encounter/performer from the response,
    effectiveDateTime = authored, value[x] from the answer (a quantity keeps its unit, system and
    code; a decimal keeps its lexical form), derivedFrom = the response, category vital-signs for
    the four vital signs of FHIR's vital signs profile we record, otherwise survey.

Definition-based extraction (SDC `sdc-questionnaire-definitionExtract`)
    The Questionnaire root or an item carrying the extension is an extraction context: one
    resource of the profile's type per instance (per repeat of a repeating group; one for the
    root). The answers of the items in that context whose `definition` is
    `<profile canonical>#<Type.path>` are put at that path, converted to the element's R4 type
    (a string becomes CodeableConcept.text, Reference.display...; a Coding becomes a
    CodeableConcept or a code; `Type.extension:slice` becomes the extension the profile's slice
    names). Fixed values come from `sdc-questionnaire-definitionExtractValue` (`definition` +
    `fixed-value`) on the context element, or on an item of the context that is present in the
    response. A repeating element on the way to a path gets a new instance when the one at hand
    already holds a value there (two performer.display answers give two performers).

    Two conventions of ours (StructureDefinitions under profiles/structuredefinitions):

    - `lac-definition-extract-per-answer` (valueBoolean true) on an item of a context: the
      context yields one resource per answer of each item so marked, instead of one; each holds
      everything else of the context (its other items and fixed values) plus that item's answer
      and the fixed values declared on that item. Unanswered marked items yield nothing.
    - `lac-definition-extract-answer-map` (repeating; `answer` + `value`) on an item: the answer
      equal to `answer` is extracted as `value` (e.g. true -> permit).

Every resource gets a business identifier `EXTRACTED_ID_SYSTEM|<response key>/<linkId>/<n>`,
where the response key is its identifier value, else its id, else the fullUrl given, linkId is
the item (or the context group; `root` for the Questionnaire) and n counts that linkId's answers
(or instances) through the response; entries are POSTs with ifNoneExist on that identifier, so
running the same extraction twice changes nothing.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import quote

from ..fhir.definitions import element_index, find_element
from ..validation.conformance import published_index

SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
OBSERVATION_EXTRACT = SDC + "sdc-questionnaire-observationExtract"
DEFINITION_EXTRACT = SDC + "sdc-questionnaire-definitionExtract"
DEFINITION_EXTRACT_VALUE = SDC + "sdc-questionnaire-definitionExtractValue"
UNIT = "http://hl7.org/fhir/StructureDefinition/questionnaire-unit"
OUR_SD = "https://lac-fhir-adapter.example/fhir/StructureDefinition/"
PER_ANSWER = OUR_SD + "lac-definition-extract-per-answer"
ANSWER_MAP = OUR_SD + "lac-definition-extract-answer-map"
EXTRACTED_ID_SYSTEM = "https://lac-fhir-adapter.example/fhir/Id/extracted"

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LOINC = "http://loinc.org"
# FHIR R4 vital signs profile codes among those our forms record (height, weight, BMI, head
# circumference): these Observations are category vital-signs, the rest survey.
VITAL_SIGNS = frozenset({"8302-2", "29463-7", "39156-5", "9843-4"})

_NAMESPACE = uuid.UUID("6f1c7a52-52d4-4c8e-9d3c-6b8f2f3a9e10")
_BACKBONE = ("BackboneElement", "Element")
_PRIMITIVE_STRINGS = {"string", "markdown", "code", "id", "uri", "url", "canonical", "oid", "uuid"}

Resolver = Callable[[str, str], "dict | None"]


class ExtractionError(ValueError):
    """The Questionnaire's annotations cannot be applied to this response."""


# ---- entry point ------------------------------------------------------------------------------

def extract(response: dict, questionnaire: dict, response_ref: str | None = None,
            resolve: Resolver | None = None) -> dict:
    """A FHIR transaction Bundle of everything the response's answers produce.

    `response_ref` is the reference to use for the response when it has no id (typically the
    `urn:uuid:` fullUrl it has in the caller's own Bundle); `resolve` finds StructureDefinitions
    by canonical (our published profiles by default).
    """
    resolve = resolve or published_index().resolve
    ctx = _Context.of(response, questionnaire, response_ref, resolve)
    resources = _observations(ctx) + _definition_resources(ctx)
    entries = []
    for resource in resources:
        ident = resource["identifier"][0]
        entries.append({
            "fullUrl": f"urn:uuid:{uuid.uuid5(_NAMESPACE, ident['system'] + '|' + ident['value'])}",
            "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"],
                        "ifNoneExist": "identifier=" + quote(f"{ident['system']}|{_escape(ident['value'])}",
                                                             safe=":/|\\")},
        })
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def extracted_identifier(response_key: str, link_id: str, index: int) -> dict:
    return {"system": EXTRACTED_ID_SYSTEM, "value": f"{response_key}/{link_id}/{index}"}


def _escape(value: str) -> str:
    """Search token escaping of a value (`\\`, `|`, `,`, `$`)."""
    for ch in ("\\", "|", ",", "$"):
        value = value.replace(ch, "\\" + ch)
    return value


# ---- shared context ---------------------------------------------------------------------------

@dataclass
class _Context:
    response: dict
    questionnaire: dict
    items: dict[str, dict]                      # linkId -> Questionnaire item
    parents: dict[str, dict]                    # linkId -> parent Questionnaire element
    key: str                                    # response key in extracted identifiers
    ref: str | None                             # reference to the response
    resolve: Resolver
    counters: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, response: dict, questionnaire: dict, response_ref: str | None, resolve: Resolver) -> "_Context":
        items: dict[str, dict] = {}
        parents: dict[str, dict] = {}
        stack = [(questionnaire, i) for i in questionnaire.get("item", [])]
        while stack:
            parent, item = stack.pop()
            items[item["linkId"]] = item
            parents[item["linkId"]] = parent
            stack += [(item, c) for c in item.get("item", [])]
        ref = f"QuestionnaireResponse/{response['id']}" if response.get("id") else response_ref
        key = (response.get("identifier") or {}).get("value") or response.get("id") or response_ref
        if not key:
            raise ExtractionError("the response needs an identifier, an id or a response_ref to extract from it")
        return cls(response, questionnaire, items, parents, key, ref, resolve)

    def next_index(self, link_id: str) -> int:
        n = self.counters.get(link_id, 0)
        self.counters[link_id] = n + 1
        return n


def _extensions(element: dict, url: str) -> list[dict]:
    return [e for e in element.get("extension", []) if e.get("url") == url]


def _sub(ext: dict, url: str) -> list[dict]:
    return [e for e in ext.get("extension", []) if e.get("url") == url]


def _value(element: dict, prefix: str = "value") -> tuple[str, Any] | None:
    """('Coding', {...}) for an element's value[x] (or fixed-value[x] etc.)."""
    for k, v in element.items():
        if k.startswith(prefix) and k[len(prefix):len(prefix) + 1].isupper():
            return k[len(prefix):], v
    return None


def _walk(items: list[dict]) -> Iterable[dict]:
    """Every response item, depth first, in document order (also those nested in answers)."""
    for item in items:
        yield item
        yield from _walk(item.get("item", []))
        for answer in item.get("answer", []):
            yield from _walk(answer.get("item", []))


# ---- observation-based ------------------------------------------------------------------------

def _observation_flag(ctx: _Context, q_item: dict) -> bool:
    element: dict | None = q_item
    while element is not None:
        flags = _extensions(element, OBSERVATION_EXTRACT)
        if flags:
            return flags[0].get("valueBoolean") is True
        element = ctx.parents.get(element["linkId"]) if "linkId" in element else None
    return False


def _observations(ctx: _Context) -> list[dict]:
    out = []
    for r_item in _walk(ctx.response.get("item", [])):
        q_item = ctx.items.get(r_item.get("linkId"))
        if q_item is None or q_item.get("type") in ("group", "display") or not q_item.get("code"):
            continue
        if not r_item.get("answer") or not _observation_flag(ctx, q_item):
            continue
        for answer in r_item["answer"]:
            index = ctx.next_index("observation#" + q_item["linkId"])
            value = _observation_value(answer, q_item)
            if value is None:
                continue
            out.append(_observation(ctx, q_item, index, value))
    return out


def _observation_value(answer: dict, q_item: dict) -> tuple[str, Any] | None:
    found = _value(answer)
    if found is None:
        return None
    kind, value = found
    unit = next((e.get("valueCoding") for e in _extensions(q_item, UNIT)), None)
    unit_parts = {}
    if unit:
        unit_parts = {k: v for k, v in (("unit", unit.get("display") or unit.get("code")),
                                        ("system", unit.get("system")), ("code", unit.get("code"))) if v}
    if kind == "Quantity":
        quantity = copy.deepcopy(value)
        if unit_parts and not quantity.get("code"):
            quantity.update(unit_parts)
        return "valueQuantity", quantity
    if kind in ("Decimal", "Integer") and unit_parts:
        return "valueQuantity", {"value": value, **unit_parts}
    simple = {"Boolean": "valueBoolean", "Integer": "valueInteger", "String": "valueString", "Time": "valueTime",
              "Date": "valueDateTime", "DateTime": "valueDateTime", "Uri": "valueString"}
    if kind in simple:
        return simple[kind], value
    if kind == "Decimal":
        return "valueQuantity", {"value": value}
    if kind == "Coding":
        return "valueCodeableConcept", {"coding": [value]}
    return None  # Reference, Attachment: no Observation.value[x] for them


def _observation(ctx: _Context, q_item: dict, index: int, value: tuple[str, Any]) -> dict:
    response = ctx.response
    codings = q_item["code"]
    vital = any(c.get("system") == LOINC and c.get("code") in VITAL_SIGNS for c in codings)
    category = ("vital-signs", "Vital Signs") if vital else ("survey", "Survey")
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [extracted_identifier(ctx.key, q_item["linkId"], index)],
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category[0], "display": category[1]}]}],
        "code": {"coding": copy.deepcopy(codings)},
    }
    if response.get("subject"):
        obs["subject"] = copy.deepcopy(response["subject"])
    if response.get("encounter"):
        obs["encounter"] = copy.deepcopy(response["encounter"])
    if response.get("authored"):
        obs["effectiveDateTime"] = response["authored"]
    if response.get("author"):
        obs["performer"] = [copy.deepcopy(response["author"])]
    obs[value[0]] = value[1]
    if ctx.ref:
        obs["derivedFrom"] = [{"reference": ctx.ref}]
    return obs


# ---- definition-based -------------------------------------------------------------------------

def _canonicals(element: dict) -> list[str]:
    out = []
    for ext in _extensions(element, DEFINITION_EXTRACT):
        out += [e["valueCanonical"] for e in _sub(ext, "definition") if e.get("valueCanonical")]
    return out


def _base(canonical: str) -> str:
    return canonical.split("|", 1)[0]


def _fixed(element: dict, canonical: str) -> list[tuple[str, tuple[str, Any]]]:
    """(Type.path, (kind, value)) of the definitionExtractValue fixed values for `canonical`."""
    out = []
    for ext in _extensions(element, DEFINITION_EXTRACT_VALUE):
        definition = next((e.get("valueCanonical") for e in _sub(ext, "definition")), None)
        if not definition or "#" not in definition:
            continue
        target, _, path = definition.partition("#")
        if _base(target) != _base(canonical):
            continue
        for e in _sub(ext, "fixed-value"):
            found = _value(e)
            if found:
                out.append((path, found))
    return out


@dataclass
class _Part:
    """What one context contributes: fixed values and answered items, or one per-answer item."""

    fixed: list[tuple[str, tuple[str, Any]]] = field(default_factory=list)
    answers: list[tuple[str, dict, dict]] = field(default_factory=list)   # (path, q item, answer)
    splits: list[tuple[dict, dict, list]] = field(default_factory=list)   # (q item, r item, fixed)


def _definition_resources(ctx: _Context) -> list[dict]:
    out: list[dict] = []
    for canonical in _canonicals(ctx.questionnaire):
        out += _context_resources(ctx, canonical, ctx.questionnaire, ctx.response, "root",
                                  ctx.next_index("root#" + canonical))
    for r_item in _walk(ctx.response.get("item", [])):
        q_item = ctx.items.get(r_item.get("linkId"))
        if q_item is None:
            continue
        for canonical in _canonicals(q_item):
            index = ctx.next_index(q_item["linkId"] + "#" + canonical)
            out += _context_resources(ctx, canonical, q_item, r_item, q_item["linkId"], index)
    return out


def _collect(ctx: _Context, canonical: str, r_items: list[dict], part: _Part) -> None:
    for r_item in r_items:
        q_item = ctx.items.get(r_item.get("linkId"))
        if q_item is None:
            continue
        if any(_base(c) == _base(canonical) for c in _canonicals(q_item)):
            continue  # a nested context of the same profile makes its own resources
        fixed = _fixed(q_item, canonical)
        definition = q_item.get("definition", "")
        target, _, path = definition.partition("#")
        ours = bool(path) and _base(target) == _base(canonical)
        if ours and _extensions(q_item, PER_ANSWER) and \
                any(e.get("valueBoolean") is True for e in _extensions(q_item, PER_ANSWER)):
            if r_item.get("answer"):
                part.splits.append((q_item, r_item, fixed))
        else:
            part.fixed += fixed
            if ours:
                part.answers += [(path, q_item, a) for a in r_item.get("answer", [])]
        _collect(ctx, canonical, r_item.get("item", []), part)
        for answer in r_item.get("answer", []):
            _collect(ctx, canonical, answer.get("item", []), part)


def _context_resources(ctx: _Context, canonical: str, q_element: dict, r_node: dict,
                       link_id: str, index: int) -> list[dict]:
    profile = ctx.resolve("StructureDefinition", canonical)
    if profile is None or not profile.get("type"):
        raise ExtractionError(f"definitionExtract names {canonical}, a profile this server does not hold")
    part = _Part(fixed=_fixed(q_element, canonical))
    _collect(ctx, canonical, r_node.get("item", []), part)
    if not part.splits:
        return [_build(ctx, profile, canonical, extracted_identifier(ctx.key, link_id, index),
                       part.fixed, part.answers)]
    out = []
    for q_item, r_item, fixed in part.splits:
        path = q_item["definition"].partition("#")[2]
        for answer in r_item["answer"]:
            n = ctx.next_index("answer#" + q_item["linkId"])
            out.append(_build(ctx, profile, canonical, extracted_identifier(ctx.key, q_item["linkId"], n),
                              part.fixed + fixed, part.answers + [(path, q_item, answer)]))
    return out


def _build(ctx: _Context, profile: dict, canonical: str, identifier: dict,
           fixed: list[tuple[str, tuple[str, Any]]], answers: list[tuple[str, dict, dict]]) -> dict:
    rtype = profile["type"]
    elements = element_index()["types"][rtype]
    resource: dict[str, Any] = {"resourceType": rtype, "meta": {"profile": [_base(canonical)]}}
    if "identifier" in elements:
        resource["identifier"] = [identifier] if elements["identifier"].get("m") else identifier
    subject = ctx.response.get("subject")
    for name in ("subject", "patient"):
        if subject and "Reference" in elements.get(name, {}).get("t", []):
            resource[name] = copy.deepcopy(subject)
            break
    encounter = ctx.response.get("encounter")
    if encounter and "Reference" in elements.get("encounter", {}).get("t", []):
        resource["encounter"] = copy.deepcopy(encounter)
    for path, (kind, value) in fixed:
        _put(resource, profile, path, kind, copy.deepcopy(value), ctx.resolve)
    for path, q_item, answer in answers:
        found = _mapped(q_item, answer)
        if found is not None:
            _put(resource, profile, path, found[0], copy.deepcopy(found[1]), ctx.resolve)
    if not resource.get("identifier"):
        resource["identifier"] = [identifier]  # the entry's ifNoneExist needs it
    return resource


def _mapped(q_item: dict, answer: dict) -> tuple[str, Any] | None:
    found = _value(answer)
    if found is None:
        return None
    maps = _extensions(q_item, ANSWER_MAP)
    if not maps:
        return found
    for m in maps:
        key = next((_value(e) for e in _sub(m, "answer")), None)
        target = next((_value(e) for e in _sub(m, "value")), None)
        if key and target and _same_answer(key, found):
            return target
    raise ExtractionError(f"item {q_item['linkId']}: no {ANSWER_MAP} entry for the answer {found[1]!r}")


def _same_answer(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] == "Coding" and b[0] == "Coding":
        return (a[1].get("system"), a[1].get("code")) == (b[1].get("system"), b[1].get("code"))
    return a == b


# ---- putting a value at a profile path ----------------------------------------------------------

@dataclass
class _Step:
    key: str                # JSON property name
    many: bool
    types: list[str]        # R4 type codes of the element (one after a renamed choice)
    url: str | None = None  # extension slices: the extension url
    value_types: list[str] = field(default_factory=list)  # extension slices: allowed value[x] types


def _steps(profile: dict, path: str, resolve: Resolver) -> list[_Step]:
    segments = path.split(".")
    rtype = profile["type"]
    if segments[0] != rtype:
        raise ExtractionError(f"definition path {path} is not on {rtype}")
    types = element_index()["types"]
    current, local, element_id = rtype, "", rtype
    steps: list[_Step] = []
    for seg in segments[1:]:
        name, _, slice_name = seg.partition(":")
        element_id += "." + seg
        elements = types.get(current, {})
        key = f"{local}.{name}" if local else name
        spec, chosen = find_element(elements, key)  # also a renamed choice: scheduledPeriod
        if spec is None:
            raise ExtractionError(f"definition path {path}: {current} has no element {key}")
        if spec.get("c"):
            ref = spec["c"].lstrip("#")
            key = ref.split(".", 1)[1] if ref.startswith(current + ".") else ref
            spec = elements[key]
        kinds = [chosen] if chosen else list(spec["t"])
        step = _Step(name, bool(spec.get("m")), kinds)
        if slice_name and name in ("extension", "modifierExtension"):
            step.url, step.value_types = _extension_slice(profile, element_id, resolve)
        steps.append(step)
        if len(kinds) == 1 and kinds[0] not in _BACKBONE:
            current, local = kinds[0], ""
        else:
            local = key
    return steps


def _extension_slice(profile: dict, element_id: str, resolve: Resolver) -> tuple[str, list[str]]:
    elements = {e.get("id"): e for e in profile.get("differential", {}).get("element", [])}
    sl = elements.get(element_id)
    if sl is None:
        raise ExtractionError(f"{profile.get('url')} has no slice {element_id}")
    url = next((p for t in sl.get("type", []) for p in t.get("profile", [])), None)
    if url is None:
        fixed = elements.get(element_id + ".url", {})
        url = fixed.get("fixedUri")
    if url is None:
        raise ExtractionError(f"{profile.get('url')}: slice {element_id} names no extension")
    value_types = [t["code"] for t in elements.get(element_id + ".value[x]", {}).get("type", [])]
    if not value_types:
        ext_sd = resolve("StructureDefinition", url) or {}
        for e in ext_sd.get("differential", {}).get("element", []):
            if e.get("id") == "Extension.value[x]":
                value_types = [t["code"] for t in e.get("type", [])]
    return url, value_types


def _can_place(node: dict, steps: list[_Step]) -> bool:
    step = steps[0]
    if len(steps) == 1:
        return step.many or step.key not in node
    if step.many:
        return True
    child = node.get(step.key)
    return child is None or _can_place(child, steps[1:])


def _put(resource: dict, profile: dict, path: str, kind: str, value: Any, resolve: Resolver) -> None:
    steps = _steps(profile, path, resolve)
    node = resource
    for i, step in enumerate(steps[:-1]):
        if step.many:
            items = node.setdefault(step.key, [])
            rest = steps[i + 1:]
            child = next((c for c in items if (step.url is None or c.get("url") == step.url)
                          and _can_place(c, rest)), None)
            if child is None:
                child = {"url": step.url} if step.url else {}
                items.append(child)
            node = child
        else:
            node = node.setdefault(step.key, {})
    leaf = steps[-1]
    if leaf.url:
        value_type = _pick(leaf.value_types or [kind[:1].lower() + kind[1:]], kind, value, path)
        converted = {"url": leaf.url, "value" + value_type[:1].upper() + value_type[1:]:
                     _convert(kind, value, value_type, path)}
        key = leaf.key
    elif leaf.key.endswith("[x]"):
        value_type = _pick(leaf.types, kind, value, path)
        key = leaf.key[:-3] + value_type[:1].upper() + value_type[1:]
        converted = _convert(kind, value, value_type, path)
    else:
        key = leaf.key
        converted = _convert(kind, value, leaf.types[0] if leaf.types else kind, path)
    if leaf.many:
        node.setdefault(key, []).append(converted)
    else:
        node[key] = converted


def _pick(types: list[str], kind: str, value: Any, path: str) -> str:
    own = kind[:1].lower() + kind[1:]
    if own in types or kind in types:
        return own if own in types else kind
    for t in types:
        try:
            _convert(kind, value, t, path)
            return t
        except ExtractionError:
            continue
    raise ExtractionError(f"{path}: a {kind} answer fits none of {types}")


def _convert(kind: str, value: Any, target: str, path: str) -> Any:
    """An answer (or fixed value) of FHIR type `kind` as a value of R4 type `target`."""
    own = kind[:1].lower() + kind[1:]
    if own == target or kind == target:
        return value
    if target in _PRIMITIVE_STRINGS or target == "string":
        if kind == "Coding":
            return value.get("code") if target == "code" else value.get("display") or value.get("code")
        if kind in ("String", "Code", "Uri", "Markdown", "Id", "Url", "Canonical"):
            return value
        if target == "string" and kind in ("Date", "DateTime", "Time", "Integer", "Decimal", "Boolean"):
            return str(value).lower() if kind == "Boolean" else str(value)
    if target == "dateTime" and kind in ("Date", "Instant"):
        return value
    if target == "date" and kind in ("DateTime", "Instant"):
        return str(value)[:10]
    if target == "instant" and kind == "DateTime" and "T" in str(value):
        return value
    if target == "decimal" and kind == "Integer":
        return value
    if target == "CodeableConcept":
        if kind == "Coding":
            return {"coding": [value]}
        if kind in ("String", "Markdown"):
            return {"text": value}
        if kind == "Code":
            return {"coding": [{"code": value}]}
    if target == "Coding":
        if kind == "Code":
            return {"code": value}
        if kind == "CodeableConcept" and len(value.get("coding", [])) == 1:
            return value["coding"][0]
    if target == "Reference" and kind in ("String", "Markdown"):
        return {"display": value}
    if target == "Annotation" and kind in ("String", "Markdown"):
        return {"text": value}
    if target == "Identifier" and kind in ("String", "Code", "Uri"):
        return {"value": value}
    if target == "Quantity" and kind in ("Decimal", "Integer"):
        return {"value": value}
    raise ExtractionError(f"{path}: cannot put a {kind} answer into a {target}")
