"""A child's assessments as BAAF-style form documents (mappings/forms/, health-assessment-form 1.0).

Each form starts from the documented example of its kind (mappings/forms/examples/<form>.xml,
which the form mapper accepts) and is rewritten for the child: header, Part A (legal status,
date looked after, placement, social worker, consent), assessment dates, next review, Part D
(the OC2 items) and the SDQ. The example's other dates move with the assessment date; its
free-text answers stay (with the example child's first name replaced by the child's).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

from lxml import etree

from ..config import PROJECT_ROOT
from ..pathway.schedule import age_on
from ..validation.terminology import default_terminology
from .population import Assessment, Child, ConsentDecision

NS = "https://lac-fhir-adapter.example/ns/health-assessment-form/1.0"
EXAMPLES = PROJECT_ROOT / "mappings" / "forms" / "examples"
CS = "https://lac-fhir-adapter.example/fhir/CodeSystem/"
RELATIONSHIP = {"MTH": "Mother", "FTH": "Father", "GRMTH": "Grandmother", None: "Self (young person)"}


@dataclass
class Form:
    name: str          # file name, e.g. 03-rha-yp.xml
    form: str          # iha-c, rha-yp, cr-c, lac-consent, ...
    document_id: str
    completed: date
    xml: bytes


@dataclass(frozen=True)
class _Template:
    root: etree._Element
    anchor: date          # the example's assessment / completion date: other dates move with it
    given: str            # the example child's first name


@cache
def _template(form: str) -> _Template:
    parser = etree.XMLParser(remove_comments=True, remove_blank_text=True, resolve_entities=False, no_network=True)
    root = etree.parse(str(EXAMPLES / f"{form}.xml"), parser).getroot()
    anchor = date.fromisoformat(root.get("completed")[:10])
    name = root.find(f"{{{NS}}}Child/{{{NS}}}Name").text
    return _Template(root, anchor, name.split()[0])


# Texts the generator writes for each child (the rest come unchanged from the examples)
WRITTEN_TEXTS = ("name", "telephone", "email", "postcodeDistrict", "responsibleAuthority")


def varied_text_names() -> tuple[str, ...]:
    """The names of the Text fields that differ from child to child: those the generator writes,
    and those of the examples that mention the example child's first name."""
    names = set(WRITTEN_TEXTS)
    for form in sorted(p.stem for p in EXAMPLES.glob("*.xml")):
        t = _template(form)
        names.update(el.get("name") for el in t.root.iter(_q("Text")) if el.text and t.given in el.text)
    return tuple(sorted(names))


def _q(tag: str, name: str | None = None) -> str:
    return f"{{{NS}}}{tag}" + (f"[@name='{name}']" if name else "")


def _find(parent: etree._Element, *steps: tuple[str, str]) -> etree._Element | None:
    el = parent
    for tag, name in steps:
        el = el.find(_q(tag, name)) if el is not None else None
    return el


def _set(parent, text: str, *steps) -> None:
    el = _find(parent, *steps)
    if el is not None:
        el.text = text


@cache
def _display(system: str, code: str) -> str:
    return default_terminology().display(system, code) or code


def _coded(el: etree._Element | None, system: str, code: str) -> None:
    if el is None:
        return
    el.set("code", code)
    el.set("system", system)
    el.text = _display(system, code)


def _boolean(parent: etree._Element, name: str, value: bool | None) -> None:
    el = parent.find(_q("Boolean", name))
    if value is None:
        if el is not None:
            parent.remove(el)
        return
    if el is None:
        el = etree.SubElement(parent, _q("Boolean"), name=name)
    el.text = "true" if value else "false"


def _start(child: Child, form: str, document_id: str, completed: date) -> tuple[etree._Element, int]:
    t = _template(form)
    root = copy.deepcopy(t.root)
    root.set("documentId", document_id)
    root.set("completed", f"{completed.isoformat()}T15:00:00Z")
    header = root.find(_q("Child"))
    header.set("nhsNumber", child.nhs)
    header.set("dateOfBirth", child.birth.isoformat())
    header.find(_q("Name")).text = f"{child.given} {child.family}"
    shift = (completed - t.anchor).days
    for el in root.iter(_q("Date")):
        el.text = (date.fromisoformat(el.text) + timedelta(days=shift)).isoformat()
    for el in root.iter(_q("Text")):
        if el.text and t.given in el.text:
            el.text = el.text.replace(t.given, child.given)
    return root, shift


def _part_a(child: Child, root: etree._Element, part: etree._Element, day: date, legal_status: str, placement,
            consent_day: date | None) -> None:
    _coded(part.find(_q("Coded", "sexAtBirth")), "http://hl7.org/fhir/administrative-gender", child.sex)
    _coded(part.find(_q("Coded", "legalStatus")), CS + "ssda903-legal-status", legal_status)
    _coded(part.find(_q("Coded", "categoryOfNeed")), CS + "ssda903-category-of-need", child.category_of_need)
    _set(part, child.entered.isoformat(), ("Date", "dateLookedAfter"))
    _set(part, child.la.name, ("Text", "responsibleAuthority"))
    group = part.find(_q("Group", "placement"))
    if group is not None and placement is not None:
        _coded(group.find(_q("Coded", "type")), CS + "ssda903-placement-type", placement.type)
        _coded(group.find(_q("Coded", "provider")), CS + "ssda903-placement-provider", placement.provider)
        _set(group, placement.start.isoformat(), ("Date", "startDate"))
        _set(group, placement.district, ("Text", "postcodeDistrict"))
        _set(group, "true" if placement.out_of_area else "false", ("Boolean", "outOfArea"))
    sw = part.find(_q("Group", "socialWorker"))
    if sw is not None:
        person = child.social_worker
        _set(sw, f"{person.given} {person.family}", ("Text", "name"))
        _set(sw, person.phone, ("Text", "telephone"))
        _set(sw, person.email, ("Text", "email"))
    if consent_day is not None:
        _set(part, consent_day.isoformat(), ("Group", "consent"), ("Date", "date"))


def _part_d(child: Child, part: etree._Element, a: Assessment) -> None:
    age = age_on(child.birth, a.date)
    score, reason = part.find(_q("Integer", "sdqScore")), part.find(_q("Coded", "sdqReason"))
    if 4 <= age <= 16:
        if reason is not None:
            part.remove(reason)
        if score is None:
            score = etree.SubElement(part, _q("Integer"), name="sdqScore")
        score.text = str(a.health.sdq)
    else:
        if score is not None:
            part.remove(score)
        if reason is None:
            reason = etree.SubElement(part, _q("Coded"), name="sdqReason")
        _coded(reason, CS + "ssda903-sdq-reason", "SDQ1")
    _boolean(part, "immunisations", a.health.immunisations)
    _boolean(part, "teethCheck", a.health.teeth)
    _boolean(part, "healthAssessment", True)
    if a.form.endswith("-c"):
        _boolean(part, "healthCheck", a.health.immunisations if age < 5 else None)
    else:
        _boolean(part, "substanceMisuse", a.health.substance_misuse)
        misuse = a.health.substance_misuse
        _boolean(part, "interventionReceived", a.health.intervention_received if misuse else None)
        _boolean(part, "interventionOffered", True if misuse and not a.health.intervention_received else None)


def document_id(child: Child, label: str) -> str:
    return f"{child.la.prefix}-F-{child.index + 1:06d}-{label}"


def assessment_form(child: Child, a: Assessment) -> tuple[str, bytes]:
    doc_id = document_id(child, f"{a.kind}-{a.number:02d}")
    root, _ = _start(child, a.form, doc_id, a.date)
    _part_a(child, root, root.find(_q("Part") + "[@id='A']"), a.date, a.legal_status, a.placement,
            child.consent_for_iha)
    part_b = root.find(_q("Part") + "[@id='B']")
    _set(part_b, a.date.isoformat(), ("Date", "assessmentDate"))
    if a.previous is not None:
        _set(part_b, a.previous.isoformat(), ("Date", "previousAssessmentDate"))
    _set(part_b, str(a.health.sdq), ("Group", "emotional"), ("Integer", "sdqTotal"))
    sexual = part_b.find(_q("Group", "sexualHealth"))
    pregnancy = sexual.find(_q("Coded", "pregnancy")) if sexual is not None else None
    if pregnancy is not None and child.sex != "female":   # asked of girls only (enableWhen)
        sexual.remove(pregnancy)
    growth = part_b.find(_q("Group", "growth"))
    if growth is not None and growth.find(_q("Boolean", "under2")) is not None:
        under2 = age_on(child.birth, a.date) < 2
        _boolean(growth, "under2", under2)
        head = growth.find(_q("Quantity", "headCircumference"))
        if head is not None and not under2:                # measured under 2 only (enableWhen)
            growth.remove(head)
    _set(root.find(_q("Part") + "[@id='C']"), a.next_due.isoformat(), ("Date", "nextReviewDue"))
    _part_d(child, root.find(_q("Part") + "[@id='D']"), a)
    return doc_id, _bytes(root)


def carer_report(child: Child, a: Assessment) -> tuple[str, bytes, date]:
    doc_id = document_id(child, f"cr-{a.number:02d}")
    day = a.date - timedelta(days=7)
    root, _ = _start(child, a.carer_report, doc_id, day)
    carer = root.find(_q("Section", "carer"))
    _set(carer, a.placement.start.isoformat(), ("Date", "since"))
    _set(carer, day.isoformat(), ("Date", "dateCompleted"))
    sdq = root.find(_q("Section", "sdq"))
    if sdq is not None:
        _set(sdq, day.isoformat(), ("Date", "date"))
        parts = _split(a.health.sdq)
        for name, value in zip(("emotional", "conduct", "hyperactivity", "peer"), parts):
            _set(sdq, str(value), ("Integer", name))
        _set(sdq, str(a.health.sdq), ("Integer", "total"))
    return doc_id, _bytes(root), day


def _split(total: int) -> tuple[int, int, int, int]:
    """Four SDQ difficulty scales (0-10 each) that add up to the total (0-40)."""
    base, rest = divmod(total, 4)
    return tuple(base + (1 if i < rest else 0) for i in range(4))  # type: ignore[return-value]


def consent_form(child: Child, c: ConsentDecision) -> tuple[str, bytes]:
    doc_id = document_id(child, "consent")
    root, _ = _start(child, "lac-consent", doc_id, c.date)
    sw = child.social_worker
    root.find(_q("Author")).text = f"{sw.given} {sw.family}, social worker"
    section = root.find(_q("Section", "child"))
    _part_a(child, root, section, c.date, child.legal_status_on(c.date), None, None)
    consent = root.find(_q("Section", "consent"))
    _coded(consent.find(_q("Coded", "grantor")), CS + "lac-consent-grantor", c.grantor)
    capacity = consent.find(_q("Coded", "capacity"))
    if c.capacity:
        _coded(capacity, CS + "lac-consent-capacity", c.capacity)
    elif capacity is not None:
        consent.remove(capacity)
    _coded(consent.find(_q("Coded", "legalBasis")), CS + "lac-consent-legal-basis", c.legal_basis)
    _boolean(consent, "assessment", c.decision == "given")
    _boolean(consent, "sharing", c.decision == "given")
    refusal = consent.find(_q("Text", "refusalReason"))
    if refusal is not None and c.decision == "given":
        consent.remove(refusal)
    signatory = root.find(_q("Section", "signatory"))
    _set(signatory, f"{c.grantor_name.given} {c.grantor_name.family}", ("Text", "name"))
    _set(signatory, RELATIONSHIP.get(c.relationship, "Parent"), ("Text", "relationship"))
    _set(signatory, c.date.isoformat(), ("Date", "dateSigned"))
    section = root.find(_q("Section", "socialWorker"))
    _set(section, f"{sw.given} {sw.family}", ("Text", "name"))
    _set(section, sw.phone, ("Text", "telephone"))
    _set(section, sw.email, ("Text", "email"))
    return doc_id, _bytes(root)


def _bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def forms(child: Child) -> list[Form]:
    """The child's form documents in the order they were completed: the consent form that
    allowed the IHA, then each assessment (with its carer's report just before it)."""
    out: list[tuple[date, int, str, str, bytes]] = []
    given = next((c for c in child.consents if c.decision == "given"), None)
    if given is not None and given.date <= child.as_of:
        doc_id, xml = consent_form(child, given)
        out.append((given.date, 0, "lac-consent", doc_id, xml))
    for a in child.assessments:
        if a.carer_report:
            doc_id, xml, day = carer_report(child, a)
            out.append((day, 1, a.carer_report, doc_id, xml))
        doc_id, xml = assessment_form(child, a)
        out.append((a.date, 2, a.form, doc_id, xml))
    out.sort(key=lambda item: (item[0], item[1]))
    return [Form(f"{n:02d}-{form}.xml", form, doc_id, day, xml)
            for n, (day, _, form, doc_id, xml) in enumerate(out, start=1)]
