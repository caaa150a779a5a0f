"""Health assessment form XML (one completed BAAF-style form) <-> QuestionnaireResponse.

The document format is fixed by mappings/forms/health-assessment-form-1.0.xsd; which fields a
form has, and which Questionnaire item each one answers, is data: one mapping definition per
form and form version, mappings/forms/<form>-<formVersion>.json (see mappings/forms/README.md).
Nothing here knows any particular form.

Inbound, `map_form(xml)` returns a MappedDocument whose Bundle POSTs the QuestionnaireResponse
conditionally on its form-document identifier. Outbound, `form_xml(response)` writes the same
format back. Every problem in a document is a FhirError naming the line: 400 for bytes that are
not acceptable XML, 422 for a well-formed document we cannot accept.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache
from pathlib import Path

from lxml import etree

from ..config import PROJECT_ROOT
from ..fhir.errors import FhirError, Issue
from ..fhir.identifiers import nhs_number_valid
from ..fhir.jsonio import FhirDecimal
from ..validation.terminology import default_terminology
from .document import MappedDocument
from .xmldoc import MAX_ISSUES, check_schema, parse_document

NS = "https://lac-fhir-adapter.example/ns/health-assessment-form/1.0"
ROOT_TAG = "HealthAssessmentForm"
MAPPINGS_DIR = PROJECT_ROOT / "mappings" / "forms"
XSD = MAPPINGS_DIR / "health-assessment-form-1.0.xsd"
FORM_DOCUMENT_SYSTEM = "https://lac-fhir-adapter.example/fhir/Id/form-document"
NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
UCUM = "http://unitsofmeasure.org"
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

# The root's own attributes and children, read by the format rather than by a mapping.
ROOT_ATTRIBUTES = ("form", "formVersion", "documentId", "completed", "status")
AUTHOR = "Author"

# Answer type (QuestionnaireResponse.item.answer.value[x]) -> the field element that carries it.
ELEMENTS = {"valueString": "Text", "valueUri": "Text", "valueDate": "Date", "valueDateTime": "DateTime",
            "valueTime": "Time", "valueBoolean": "Boolean", "valueInteger": "Integer", "valueDecimal": "Decimal",
            "valueQuantity": "Quantity", "valueCoding": "Coded"}
# Attributes a field element uses for its value, besides its name.
VALUE_ATTRIBUTES = {"Quantity": ("value", "unit"), "Coded": ("code", "system")}
FIELD_ELEMENTS = set(ELEMENTS.values())
# Answer types that can also be carried by an attribute or by a plain element's text.
TEXTUAL = {"valueString", "valueUri", "valueDate", "valueDateTime", "valueTime", "valueBoolean",
           "valueInteger", "valueDecimal"}

_STEP = re.compile(r"^(?:@(?P<attr>[A-Za-z_][\w\-]*)"
                   r"|(?P<tag>[A-Z][A-Za-z]*)(?:\[@(?P<key>id|name)='(?P<val>[^']*)'\])?)$")
_DATE = re.compile(r"^[0-9]{4}(-(0[1-9]|1[0-2])(-[0-9]{2})?)?$")
_DATETIME = re.compile(r"^[0-9]{4}(-(0[1-9]|1[0-2])(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
                       r"(Z|[+\-][0-9]{2}:[0-9]{2}))?)?)?$")
_TIME = re.compile(r"^[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?$")
_INTEGER = re.compile(r"^[+\-]?[0-9]+$")
_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+\-]?[0-9]+)?$")


# --------------------------------------------------------------------------- mapping definitions

@dataclass(frozen=True)
class Entry:
    """One line of a mapping definition: an XML step and the Questionnaire item it fills."""

    path: str
    link_id: str
    type: str
    text: str | None
    answer: str | None                      # value[x]; None for a group
    repeats: bool = False
    items: tuple["Entry", ...] = ()
    answer_value_set: str | None = None
    answer_option: tuple[dict, ...] = ()
    unit: dict | None = None
    check: str | None = None
    tag: str | None = None                  # element name, or None for an attribute
    key: tuple[str, str] | None = None      # ("name", "legalStatus") / ("id", "A")
    attribute: str | None = None

    @property
    def is_group(self) -> bool:
        return self.answer is None


@dataclass(frozen=True)
class FormMapping:
    form: str
    version: str
    questionnaire: str
    document_type: str
    file: str                               # "mappings/forms/iha-c-1.0.0.json"
    items: tuple[Entry, ...]
    subject_path: str | None = None
    subject_system: str | None = None


def _entry(raw: dict, where: str) -> Entry:
    step = _STEP.match(raw.get("path", ""))
    if not step or not raw.get("linkId") or not raw.get("type"):
        raise ValueError(f"{where}: each entry needs a path (Tag[@name='x'], Tag or @attr), a linkId and a type")
    answer = raw.get("answer")
    children = tuple(_entry(c, f"{where} > {raw['linkId']}") for c in raw.get("items", []))
    if (answer is None) == (not children):
        raise ValueError(f"{where}: {raw['linkId']} must have either items (a group) or an answer type")
    if answer is not None and answer not in ELEMENTS:
        raise ValueError(f"{where}: {raw['linkId']}: unknown answer type {answer}")
    tag, attr = step.group("tag"), step.group("attr")
    if answer is not None:
        if attr or step.group("key") is None:
            if answer not in TEXTUAL:
                raise ValueError(f"{where}: {raw['linkId']}: {answer} needs its own field element")
        elif tag != ELEMENTS[answer]:
            raise ValueError(f"{where}: {raw['linkId']}: {answer} is carried by <{ELEMENTS[answer]}>, not <{tag}>")
    elif attr or tag in FIELD_ELEMENTS:
        raise ValueError(f"{where}: {raw['linkId']}: a group needs a container element")
    return Entry(
        path=raw["path"], link_id=raw["linkId"], type=raw["type"], text=raw.get("text"), answer=answer,
        repeats=bool(raw.get("repeats")), items=children, answer_value_set=raw.get("answerValueSet"),
        answer_option=tuple(raw.get("answerOption", ())), unit=raw.get("unit"), check=raw.get("check"),
        tag=tag, key=(step.group("key"), step.group("val")) if step.group("key") else None, attribute=attr)


def load_mapping(path: Path) -> FormMapping:
    raw = json.loads(path.read_text(encoding="utf-8"))
    where = path.name
    for key in ("form", "formVersion", "questionnaire", "items"):
        if key not in raw:
            raise ValueError(f"{where}: mapping definition has no {key}")
    subject = raw.get("subject") or {}
    try:
        file = path.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        file = path.as_posix()
    return FormMapping(
        form=raw["form"], version=raw["formVersion"], questionnaire=raw["questionnaire"],
        document_type=raw.get("documentType") or f"{raw['form']} form (XML)", file=file,
        items=tuple(_entry(e, where) for e in raw["items"]),
        subject_path=subject.get("path"), subject_system=subject.get("system"))


@dataclass
class _Registry:
    by_form: dict[tuple[str, str], FormMapping]
    by_questionnaire: dict[str, FormMapping]


@lru_cache(maxsize=1)
def mappings() -> _Registry:
    """Every mapping definition in mappings/forms/, by (form, formVersion) and by questionnaire|version."""
    by_form, by_q = {}, {}
    for path in sorted(MAPPINGS_DIR.glob("*.json")):
        m = load_mapping(path)
        if (m.form, m.version) in by_form or m.questionnaire in by_q:
            raise ValueError(f"{path.name}: a second mapping for {m.form} {m.version}")
        by_form[(m.form, m.version)] = m
        by_q[m.questionnaire] = m
    return _Registry(by_form, by_q)


# --------------------------------------------------------------------------- shared checks



def _date_ok(value: str, kind: str) -> bool:
    """A real date/dateTime/time in FHIR's lexical form (partial dates allowed)."""
    try:
        if kind == "valueTime":
            return bool(_TIME.match(value)) and time.fromisoformat(value) is not None
        pattern = _DATE if kind == "valueDate" else _DATETIME
        if not pattern.match(value):
            return False
        if len(value) >= 10:
            date.fromisoformat(value[:10])
        if len(value) > 10:   # Python reads at most 6 fraction digits
            datetime.fromisoformat(re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", value.replace("Z", "+00:00")))
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- inbound

class _Reader:
    def __init__(self, mapping: FormMapping):
        self.mapping = mapping
        self.terminology = default_terminology()
        self.issues: list[Issue] = []
        self.unconsumed: list[str] = []

    def fail(self, el: etree._Element, path: str, message: str, code: str = "value") -> None:
        self.issues.append(Issue(code, f"line {el.sourceline or '?'}: {path}: {message}", expression=[path]))

    # What was found under one container: linkId -> [answer, ...] or [dict of a group instance, ...]
    def container(self, el: etree._Element, entries: tuple[Entry, ...], path: str,
                  own_attributes: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> dict[str, list]:
        found: dict[str, list] = {}
        by_step = {e.path: e for e in entries if e.attribute is None}
        by_name = {e.key[1]: e for e in entries if e.key}
        consumed = set(own_attributes)
        for e in entries:
            if e.attribute is not None and el.get(e.attribute) is not None:
                consumed.add(e.attribute)
                answer = self.answer(e, el, el.get(e.attribute), f"{path}/@{e.attribute}")
                if answer is not None:
                    found[e.link_id] = [answer]
        self.leftover_attributes(el, path, consumed)
        for child in el:
            if not isinstance(child.tag, str) or child.tag in skip:
                continue
            qn = etree.QName(child)
            step = _step_of(child)
            child_path = f"{path}/{step}"
            e = by_step.get(step)
            if e is None:
                other = by_name.get(child.get("name") or "") if qn.namespace == NS else None
                if other is not None and not other.is_group and qn.localname in FIELD_ELEMENTS:
                    self.fail(child, child_path, f"'{other.key[1]}' is a {other.type} field, written as "
                                                 f"<{other.tag}>, not <{qn.localname}>", code="structure")
                else:
                    self.unconsumed.append(f"line {child.sourceline}: {child_path}")
                continue
            if e.link_id in found and not e.repeats:
                self.fail(child, child_path, f"'{e.link_id}' appears more than once but does not repeat",
                          code="structure")
                continue
            if e.is_group:
                own = (e.key[0],) if e.key else ()
                found.setdefault(e.link_id, []).append(self.container(child, e.items, child_path, own))
            else:
                self.leftover_attributes(child, child_path, {"name", *VALUE_ATTRIBUTES.get(qn.localname, ())})
                answer = self.answer(e, child, child.text, child_path)
                if answer is not None:
                    found.setdefault(e.link_id, []).append(answer)
        return found

    def leftover_attributes(self, el: etree._Element, path: str, consumed: set[str]) -> None:
        for name in el.attrib:
            if name not in consumed:
                self.unconsumed.append(f"line {el.sourceline}: {path}/@{_qname(el, name)}")

    def answer(self, e: Entry, el: etree._Element, raw: str | None, path: str) -> dict | None:
        kind = e.answer
        text = raw if raw is not None else ""
        if kind in ("valueString", "valueUri"):
            if not text.strip():
                self.fail(el, path, "empty answer")
                return None
            if e.type == "choice" and e.answer_option:
                options = [o.get(kind) for o in e.answer_option]
                if text not in options:
                    self.fail(el, path, f"'{text}' is not one of the answers allowed for {e.link_id}", "code-invalid")
                    return None
            if e.check == "nhs-number" and not nhs_number_valid(text):
                self.fail(el, path, f"NHS number {text} fails the modulus 11 check", "value")
                return None
            return {kind: text}
        value = text.strip()
        if kind in ("valueDate", "valueDateTime", "valueTime"):
            if not _date_ok(value, kind):
                self.fail(el, path, f"'{value}' is not a possible {kind[5:].lower()}")
                return None
            return {kind: value}
        if kind == "valueBoolean":
            if value not in ("true", "false"):
                self.fail(el, path, f"'{value}' is not true or false")
                return None
            return {kind: value == "true"}
        if kind == "valueInteger":
            if not _INTEGER.match(value) or not -2**31 <= int(value) < 2**31:
                self.fail(el, path, f"'{value}' is not an integer")
                return None
            return {kind: int(value)}
        if kind == "valueDecimal":
            if not _DECIMAL.match(value):
                self.fail(el, path, f"'{value}' is not a decimal")
                return None
            return {kind: FhirDecimal(value)}
        if kind == "valueQuantity":
            number, unit = (el.get("value") or "").strip(), (el.get("unit") or "").strip()
            if not _DECIMAL.match(number):
                self.fail(el, path, f"'{number}' is not a decimal")
                return None
            if e.unit:
                if unit != e.unit.get("code"):
                    self.fail(el, path, f"unit '{unit}' is not the unit of {e.link_id} ('{e.unit.get('code')}')",
                              "code-invalid")
                    return None
                return {kind: {"value": FhirDecimal(number), "unit": e.unit.get("display") or unit,
                               "system": e.unit.get("system", UCUM), "code": unit}}
            return {kind: {"value": FhirDecimal(number), "unit": unit, "system": UCUM, "code": unit}}
        if kind == "valueCoding":
            system, code = (el.get("system") or "").strip(), (el.get("code") or "").strip()
            if not self.code_allowed(e, system, code):
                self.fail(el, path, f"code '{code}' of {system} is not an allowed answer to {e.link_id}"
                                    + (f" (ValueSet {e.answer_value_set})" if e.answer_value_set else ""),
                          "code-invalid")
                return None
            coding = {"system": system, "code": code}
            display = (text or "").strip()
            if display:
                coding["display"] = display
            return {kind: coding}
        raise AssertionError(kind)

    def code_allowed(self, e: Entry, system: str, code: str) -> bool:
        if e.answer_option:
            return any((o.get("valueCoding") or {}).get("system") == system
                       and (o.get("valueCoding") or {}).get("code") == code for o in e.answer_option)
        if e.answer_value_set:
            # A ValueSet we cannot enumerate (None) is left to the terminology service downstream.
            return self.terminology.contains(e.answer_value_set, system, code) is not False
        return True


def _step_of(el: etree._Element) -> str:
    qn = etree.QName(el)
    if qn.namespace != NS:
        return _qname(el, el.tag)
    for key in ("name", "id"):
        if el.get(key) is not None:
            return f"{qn.localname}[@{key}='{el.get(key)}']"
    return qn.localname


def _qname(el: etree._Element, clark: str) -> str:
    qn = etree.QName(clark)
    if not qn.namespace:
        return qn.localname
    for prefix, uri in (el.nsmap or {}).items():
        if uri == qn.namespace and prefix:
            return f"{prefix}:{qn.localname}"
    return clark


def _items(entries: tuple[Entry, ...], found: dict[str, list]) -> list[dict]:
    """QuestionnaireResponse items in the Questionnaire's order and nesting."""
    out = []
    for e in entries:
        values = found.get(e.link_id) or []
        if e.is_group:
            for instance in values:          # one item per occurrence of a (repeating) group
                children = _items(e.items, instance)
                if children:
                    out.append(_item(e, item=children))
        elif values:                         # one item, one answer per occurrence
            out.append(_item(e, answer=list(values)))
    return out


def _item(e: Entry, **content) -> dict:
    item: dict = {"linkId": e.link_id}
    if e.text:
        item["text"] = e.text
    item.update(content)
    return item


def _select(root: etree._Element, path: str) -> tuple[etree._Element, str | None] | None:
    """The element (and attribute value) at a simple mapping path such as Child/@nhsNumber."""
    el, steps = root, path.split("/")
    for i, step in enumerate(steps):
        m = _STEP.match(step)
        if m is None:
            return None
        if m.group("attr"):
            return (el, el.get(m.group("attr"))) if i == len(steps) - 1 else None
        nxt = None
        for child in el:
            if isinstance(child.tag, str) and etree.QName(child).namespace == NS and _step_of(child) == step:
                nxt = child
                break
        if nxt is None:
            return None
        el = nxt
    return el, el.text


def _raise(issues: list[Issue]) -> None:
    issues = issues[:MAX_ISSUES]
    raise FhirError(422, issues[0].code, issues[0].diagnostics, issues=issues)


def map_form(data: bytes) -> MappedDocument:
    """One form document (XML bytes) -> a transaction Bundle creating its QuestionnaireResponse."""
    root = parse_document(data)
    qn = etree.QName(root)
    if qn.namespace != NS or qn.localname != ROOT_TAG:
        raise FhirError(422, "structure", f"line {root.sourceline}: the root element is {_qname(root, root.tag)}, "
                                          f"not {ROOT_TAG} in namespace {NS}", expression=["/"])
    check_schema(root, XSD)
    form, version = root.get("form"), root.get("formVersion")
    mapping = mappings().by_form.get((form, version))
    if mapping is None:
        known = ", ".join(f"{f} {v}" for f, v in sorted(mappings().by_form))
        raise FhirError(422, "not-supported", f"line {root.sourceline}: no mapping for form '{form}' version "
                                              f"'{version}' (known: {known})", expression=[f"/{ROOT_TAG}/@form"])
    reader = _Reader(mapping)
    top = f"/{ROOT_TAG}"
    completed = root.get("completed")
    if completed is not None and not _date_ok(completed, "valueDateTime"):
        reader.fail(root, f"{top}/@completed", f"'{completed}' is not a possible date and time")

    author = None
    author_tag = f"{{{NS}}}{AUTHOR}"
    for child in root.iterchildren(author_tag):
        author = {}
        if child.get("reference"):
            author["reference"] = child.get("reference")
        if (child.text or "").strip():
            author["display"] = child.text.strip()
        if not author:
            reader.fail(child, f"{top}/{AUTHOR}", "the author needs a name or a reference", "required")
        reader.leftover_attributes(child, f"{top}/{AUTHOR}", {"reference"})
    found = reader.container(root, mapping.items, top, ROOT_ATTRIBUTES, skip=(author_tag,))

    nhs = None
    if mapping.subject_path:
        hit = _select(root, mapping.subject_path)
        nhs = hit[1].strip() if hit and hit[1] else None
        where = f"{top}/{mapping.subject_path}"
        if nhs is None:
            reader.fail(root, where, "the child's identifier is missing", "required")
        elif (mapping.subject_system == NHS_NUMBER_SYSTEM and not nhs_number_valid(nhs)
              and not any(where in i.expression for i in reader.issues)):
            reader.fail(hit[0], where, f"NHS number {nhs} fails the modulus 11 check")
    if reader.issues:
        _raise(reader.issues)

    document_id = root.get("documentId")
    identifier = {"system": FORM_DOCUMENT_SYSTEM, "value": document_id}
    qr: dict = {"resourceType": "QuestionnaireResponse", "identifier": identifier,
                "questionnaire": mapping.questionnaire, "status": root.get("status")}
    subject = f"Patient?identifier={mapping.subject_system}|{nhs}" if nhs else None
    if subject:
        qr["subject"] = {"reference": subject}
    if completed:
        qr["authored"] = completed
    if author:
        qr["author"] = author
    qr["item"] = _items(mapping.items, found)

    full_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{FORM_DOCUMENT_SYSTEM}|{document_id}')}"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": full_url,
        "resource": qr,
        "request": {"method": "POST", "url": "QuestionnaireResponse",
                    "ifNoneExist": f"identifier={FORM_DOCUMENT_SYSTEM}|{document_id}"},
    }]}
    return MappedDocument(bundle=bundle, identifier=dict(identifier), source=data, content_type="application/xml",
                          document_type=mapping.document_type, mapping=mapping.file, subject=subject,
                          unconsumed=reader.unconsumed)


# --------------------------------------------------------------------------- outbound

class _Writer:
    def __init__(self, mapping: FormMapping, annotate: bool):
        self.mapping = mapping
        self.annotate = annotate
        self.issues: list[Issue] = []

    def fail(self, where: str, message: str, code: str = "not-supported") -> None:
        self.issues.append(Issue(code, f"{where}: {message}", expression=[where]))

    def container(self, el: etree._Element, entries: tuple[Entry, ...], items: list, where: str) -> None:
        by_link = {e.link_id: e for e in entries}
        grouped: dict[str, list[tuple[int, dict]]] = {}
        for i, item in enumerate(items):
            link = item.get("linkId") if isinstance(item, dict) else None
            if link not in by_link:
                self.fail(f"{where}.item[{i}]", f"linkId '{link}' is not in {self.mapping.file}")
                continue
            grouped.setdefault(link, []).append((i, item))
        for e in entries:
            occurrences = grouped.get(e.link_id, [])
            if len(occurrences) > 1 and not (e.is_group and e.repeats):
                self.fail(f"{where}.item[{occurrences[1][0]}]", f"'{e.link_id}' appears more than once")
                occurrences = occurrences[:1]
            for i, item in occurrences:
                here = f"{where}.item[{i}]"
                if e.is_group:
                    if item.get("answer"):
                        self.fail(here, f"group '{e.link_id}' cannot have answers")
                    child = self.element(el, e)
                    self.container(child, e.items, item.get("item") or [], here)
                else:
                    self.answers(el, e, item, here)

    def element(self, parent: etree._Element, e: Entry) -> etree._Element:
        if self.annotate and e.is_group and e.text:
            parent.append(etree.Comment(" " + e.text.replace("--", "-") + " "))
        child = etree.SubElement(parent, f"{{{NS}}}{e.tag}")
        if e.key:
            child.set(*e.key)
        return child

    def answers(self, el: etree._Element, e: Entry, item: dict, where: str) -> None:
        answers = item.get("answer") or []
        if item.get("item"):
            self.fail(where, f"'{e.link_id}' has nested items, which the form format cannot carry")
        if len(answers) > 1 and not e.repeats:
            self.fail(where, f"'{e.link_id}' has {len(answers)} answers but does not repeat")
            answers = answers[:1]
        for j, answer in enumerate(answers):
            at = f"{where}.answer[{j}]"
            if not isinstance(answer, dict) or e.answer not in answer:
                got = [k for k in (answer if isinstance(answer, dict) else {}) if k.startswith("value")]
                self.fail(at, f"'{e.link_id}' needs {e.answer}, not {', '.join(got) or 'no value'}", "value")
                continue
            if answer.get("item"):
                self.fail(at, "answers with nested items cannot be carried by the form format")
            value = answer[e.answer]
            if e.attribute is not None:
                el.set(e.attribute, _text(value))
                continue
            child = self.element(el, e)
            if e.answer == "valueQuantity":
                if not isinstance(value, dict) or value.get("value") is None:
                    self.fail(at, "a quantity needs a value", "value")
                    continue
                unit = value.get("code") or value.get("unit")
                if e.unit and (unit != e.unit.get("code") or value.get("system", UCUM) != e.unit.get("system", UCUM)):
                    self.fail(at, f"unit '{unit}' is not the unit of {e.link_id} ('{e.unit.get('code')}')", "value")
                    continue
                child.set("value", _text(value["value"]))
                child.set("unit", unit or "")
            elif e.answer == "valueCoding":
                if not isinstance(value, dict) or not value.get("system") or not value.get("code"):
                    self.fail(at, "a coded answer needs a system and a code", "value")
                    continue
                child.set("code", value["code"])
                child.set("system", value["system"])
                if value.get("display"):
                    child.text = value["display"]
            else:
                child.text = _text(value)


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def form_xml(response: dict, annotate: bool = False) -> bytes:
    """A QuestionnaireResponse of one of our forms -> the form document (UTF-8 XML bytes).

    `annotate` adds each part's and group's Questionnaire text as a comment (for people).
    The result is checked against the XSD; what the format cannot carry is a 422.
    """
    canonical = response.get("questionnaire") or ""
    mapping = mappings().by_questionnaire.get(canonical)
    if mapping is None:
        known = ", ".join(sorted(mappings().by_questionnaire))
        raise FhirError(422, "not-supported", f"no form mapping for questionnaire '{canonical}' (known: {known})",
                        expression=["QuestionnaireResponse.questionnaire"])
    writer = _Writer(mapping, annotate)
    identifier = response.get("identifier") or {}
    if isinstance(identifier, list):   # tolerate R5-style lists
        ours = [i for i in identifier if isinstance(i, dict) and i.get("system") == FORM_DOCUMENT_SYSTEM]
        identifier = ours[0] if ours else {}
    if identifier.get("system") == FORM_DOCUMENT_SYSTEM and identifier.get("value"):
        document_id = identifier["value"]
    elif response.get("id"):
        document_id = f"QuestionnaireResponse/{response['id']}"
    else:
        writer.fail("QuestionnaireResponse.identifier", f"needs a {FORM_DOCUMENT_SYSTEM} identifier or an id",
                    "required")
        document_id = ""
    root = etree.Element(f"{{{NS}}}{ROOT_TAG}", nsmap={None: NS})
    root.set("form", mapping.form)
    root.set("formVersion", mapping.version)
    root.set("documentId", document_id)
    if response.get("authored"):
        root.set("completed", response["authored"])
    root.set("status", response.get("status") or "")
    writer.container(root, mapping.items, response.get("item") or [], "QuestionnaireResponse")
    author = response.get("author")
    if author:
        el = etree.Element(f"{{{NS}}}{AUTHOR}")
        if author.get("reference"):
            el.set("reference", author["reference"])
        if author.get("display"):
            el.text = author["display"]
        first = next((i for i, c in enumerate(root) if isinstance(c.tag, str)), -1)
        root.insert(first + 1, el)   # after the Child header, as the schema orders them
    if writer.issues:
        _raise(writer.issues)
    data = XML_DECLARATION + etree.tostring(root, encoding="UTF-8", pretty_print=True)
    try:
        check_schema(parse_document(data), XSD)
    except FhirError as err:
        raise FhirError(422, "not-supported", "the response cannot be written as a valid form document: "
                        + err.diagnostics, issues=None) from None
    return data
