"""Our LAC profiles: well-formed, conventional, on real R4 paths, and they judge data as meant."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from adapter.fhir.definitions import element_index, find_element
from adapter.fhir.errors import FhirError
from adapter.validation.profiles import resolver_for, validate_profile
from adapter.validation.structure import validate_structure
from adapter.validation.terminology import Terminology

ROOT = Path(__file__).resolve().parents[2] / "profiles" / "structuredefinitions"
BASE = "https://lac-fhir-adapter.example/fhir"
FILES = sorted(ROOT.glob("StructureDefinition-*.json"))
SDS = {p.name[len("StructureDefinition-"):-len(".json")]: json.loads(p.read_text(encoding="utf-8")) for p in FILES}
RESOLVE = resolver_for(SDS.values())
UK_CORE = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-"
SNOMED = "http://snomed.info/sct"
NHS = "https://fhir.nhs.uk/Id/nhs-number"


def test_the_profiles_are_there():
    assert set(SDS) >= {"lac-patient", "lac-episode-of-care", "lac-consent", "lac-health-plan",
                        "lac-assessment-task", "lac-assessment-request", "lac-assessment-response",
                        "lac-legal-status", "lac-placement", "lac-consent-capacity", "lac-consent-grantor"}


@pytest.mark.parametrize("name", sorted(SDS))
def test_structure_and_conventions(name):
    sd = SDS[name]
    try:
        validate_structure(sd)
    except FhirError as exc:  # pragma: no cover - the message is the point
        pytest.fail(exc.diagnostics)
    assert sd["id"] == name
    assert sd["url"] == f"{BASE}/StructureDefinition/{name}"
    assert (sd["version"], sd["status"], sd["publisher"], sd["fhirVersion"]) == \
        ("1.0.0", "active", "lac-fhir-adapter", "4.0.1")
    assert sd["derivation"] == "constraint" and sd["abstract"] is False
    assert "snapshot" not in sd and sd["differential"]["element"]
    if sd["type"] == "Extension":
        assert sd["kind"] == "complex-type"
        assert sd["baseDefinition"] == "http://hl7.org/fhir/StructureDefinition/Extension"
        url = next(e for e in sd["differential"]["element"] if e["id"] == "Extension.url")
        assert url["fixedUri"] == sd["url"]
    else:
        assert sd["kind"] == "resource"
        assert sd["baseDefinition"] == UK_CORE + sd["type"]


def _resolve_path(type_name: str, segments: list[str]) -> bool:
    """Does the element path exist in R4 (through data types, backbones and content references)?"""
    types = element_index()["types"]
    current, local = type_name, ""
    for seg in segments:
        elements = types.get(current, {})
        key = f"{local}.{seg}" if local else seg
        spec, chosen = find_element(elements, key)  # also a renamed choice: valueCoding
        if spec is None:
            return False
        if spec.get("c"):
            key = spec["c"].lstrip("#")
            key = key.split(".", 1)[1] if key.startswith(current + ".") else key
            spec = elements[key]
        kinds = [chosen] if chosen else spec["t"]
        if kinds and kinds[0] not in ("BackboneElement", "Element") and len(kinds) == 1:
            current, local = kinds[0], ""
        else:
            local = key
    return True


@pytest.mark.parametrize("name", sorted(SDS))
def test_every_differential_path_exists_in_r4(name):
    sd = SDS[name]
    for element in sd["differential"]["element"]:
        parts = element["id"].split(".")
        assert parts[0] == sd["type"], element["id"]
        assert element["path"] == ".".join(p.split(":")[0] for p in parts), element["id"]
        if len(parts) == 1:
            continue
        segments = []
        for part in parts[1:]:
            name_, _, slice_name = part.partition(":")
            if name_.endswith("[x]") and slice_name:
                name_ = slice_name  # a type slice such as value[x]:valueCoding
            segments.append(name_)
        assert _resolve_path(sd["type"], segments), element["id"]
        for t in element.get("type", []):
            for target in t.get("profile", []):
                assert target in {s["url"] for s in SDS.values()}, f"{element['id']}: unknown profile {target}"


# ---- judging data ----------------------------------------------------------------------------

def _cs(vs_id: str, *codes: str) -> list[dict]:
    return [{"resourceType": "CodeSystem", "url": f"{BASE}/CodeSystem/{vs_id}", "status": "active",
             "content": "complete", "concept": [{"code": c} for c in codes]},
            {"resourceType": "ValueSet", "url": f"{BASE}/ValueSet/{vs_id}", "status": "active",
             "compose": {"include": [{"system": f"{BASE}/CodeSystem/{vs_id}"}]}}]


TERMINOLOGY = Terminology([
    *_cs("ssda903-legal-status", "C1", "C2", "V2", "E1"),
    *_cs("ssda903-placement-type", "K1", "U1", "R1"),
    *_cs("ssda903-placement-provider", "PR0", "PR1", "PR2"),
    *_cs("lac-consent-capacity", "aged-16-or-over", "gillick-competent", "parental-responsibility"),
    *_cs("lac-consent-grantor", "young-person", "parent-with-pr", "local-authority"),
    *_cs("lac-consent-purpose", "assessment", "information-sharing"),
    *_cs("lac-health-plan-domain", "dental", "immunisation", "emotional-health"),
    *_cs("lac-health-plan-outcome", "achieved", "not-achieved"),
    *_cs("lac-assessment-type", "iha", "rha"),
    *_cs("lac-task-business-status", "awaiting-consent", "assessment-done"),
    *_cs("lac-delay-reason", "late-notification", "did-not-attend"),
])


def coding(vs_id: str, code: str) -> dict:
    return {"system": f"{BASE}/CodeSystem/{vs_id}", "code": code}


def ext(name: str, **value) -> dict:
    return {"url": f"{BASE}/StructureDefinition/{name}", **value}


PATIENT = {
    "resourceType": "Patient", "id": "child-1",
    "identifier": [{"system": NHS, "value": "9990000018"},
                   {"system": f"{BASE}/Id/la-child-id", "value": "DC-0001"}],
    "name": [{"family": "Example", "given": ["Sam"]}], "birthDate": "2014-05-02",
}
EPISODE = {
    "resourceType": "EpisodeOfCare", "status": "active",
    "extension": [ext("lac-legal-status", valueCoding=coding("ssda903-legal-status", "C2")),
                  ext("lac-placement", extension=[
                      {"url": "type", "valueCoding": coding("ssda903-placement-type", "U1")},
                      {"url": "provider", "valueCoding": coding("ssda903-placement-provider", "PR1")},
                      {"url": "postcodeDistrict", "valueString": "BH15"},
                      {"url": "outOfArea", "valueBoolean": False},
                      {"url": "responsibleAuthority", "valueReference": {"reference": "Organization/la"}}])],
    "type": [{"coding": [{"system": SNOMED, "code": "764841000000100", "display": "Looked after child"}]}],
    "patient": {"reference": "Patient/child-1"}, "managingOrganization": {"reference": "Organization/la"},
    "period": {"start": "2024-01-15"},
}
CONSENT = {
    "resourceType": "Consent", "status": "active",
    "extension": [ext("lac-consent-grantor", valueCoding=coding("lac-consent-grantor", "young-person")),
                  ext("lac-consent-capacity", valueCoding=coding("lac-consent-capacity", "aged-16-or-over"))],
    "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]},
    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
    "patient": {"reference": "Patient/child-1"}, "dateTime": "2024-01-16T10:00:00Z",
    "performer": [{"reference": "Patient/child-1"}],
    "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentpolicycodes",
                               "code": "cric"}]},
    "provision": {"type": "permit", "purpose": [coding("lac-consent-purpose", "assessment")]},
}
HEALTH_PLAN = {
    "resourceType": "CarePlan", "status": "active", "intent": "plan",
    "category": [{"coding": [{"system": f"{BASE}/CodeSystem/lac-care-plan-category", "code": "health-plan"}]}],
    "subject": {"reference": "Patient/child-1"},
    "activity": [
        {"detail": {"status": "scheduled", "code": {"coding": [coding("lac-health-plan-domain", "dental")]},
                    "description": "Register with a dentist near the placement",
                    "performer": [{"reference": "RelatedPerson/carer"}],
                    "scheduledPeriod": {"end": "2024-03-31"}},
         "outcomeCodeableConcept": [{"coding": [coding("lac-health-plan-outcome", "achieved")]}]},
        {"detail": {"status": "not-started", "code": {"coding": [coding("lac-health-plan-domain", "immunisation")]},
                    "description": "Catch up the missing vaccinations",
                    "performer": [{"reference": "Practitioner/gp"}],
                    "scheduledString": "within 3 months"}},
    ],
}
TASK = {
    "resourceType": "Task", "status": "in-progress", "intent": "order",
    "businessStatus": {"coding": [coding("lac-task-business-status", "awaiting-consent")]},
    "statusReason": {"coding": [coding("lac-delay-reason", "late-notification")]},
    "code": {"coding": [coding("lac-assessment-type", "iha")]},
    "for": {"reference": "Patient/child-1"}, "authoredOn": "2024-01-16T09:00:00Z",
    "requester": {"reference": "Organization/la"}, "owner": {"reference": "Organization/trust"},
    "restriction": {"period": {"end": "2024-02-12"}},
}
REQUEST = {
    "resourceType": "ServiceRequest", "status": "active", "intent": "order",
    "code": {"coding": [coding("lac-assessment-type", "rha")]},
    "subject": {"reference": "Patient/child-1"}, "authoredOn": "2024-06-01",
    "requester": {"reference": "Organization/home-trust"}, "performer": [{"reference": "Organization/ooa-trust"}],
    "occurrencePeriod": {"end": "2024-07-01"},
}
RESPONSE = {
    "resourceType": "QuestionnaireResponse", "status": "completed",
    "questionnaire": f"{BASE}/Questionnaire/rha-c", "subject": {"reference": "Patient/child-1"},
    "authored": "2024-06-20T14:00:00Z", "author": {"reference": "Practitioner/nurse"},
}


def _drop(*path):
    def f(r):
        node = r
        for step in path[:-1]:
            node = node[step]
        del node[path[-1]]
    return f


def _set(value, *path):
    def f(r):
        node = r
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
    return f


# (profile, valid resource, how to break it, (issue code, FHIRPath location) expected)
CASES = [
    ("lac-patient", PATIENT, _set([{"system": NHS, "value": "9990000017"}], "identifier"),
     ("invariant", "Patient.identifier[0]")),
    ("lac-patient", PATIENT, _set([{"system": NHS, "value": "999000001"}], "identifier"),
     ("invariant", "Patient.identifier[0]")),
    ("lac-patient", PATIENT, _set([{"system": "https://other.example/id", "value": "1"}], "identifier"),
     ("invariant", "Patient")),
    ("lac-patient", PATIENT, _drop("birthDate"), ("structure", "Patient.birthDate")),
    ("lac-patient", PATIENT, _drop("name"), ("structure", "Patient.name")),
    ("lac-patient", PATIENT, _set([{"system": NHS}], "identifier"), ("structure", "Patient.identifier[0].value")),
    ("lac-episode-of-care", EPISODE, lambda r: r["extension"].pop(0), ("structure", "EpisodeOfCare.extension")),
    ("lac-episode-of-care", EPISODE, _set("Z9", "extension", 0, "valueCoding", "code"),
     ("code-invalid", "EpisodeOfCare.extension[0].valueCoding")),
    ("lac-episode-of-care", EPISODE, _set("ZZ", "extension", 1, "extension", 0, "valueCoding", "code"),
     ("code-invalid", "EpisodeOfCare.extension[1].extension[0].valueCoding")),
    ("lac-episode-of-care", EPISODE, _set("BH15 1AA", "extension", 1, "extension", 2, "valueString"),
     ("invariant", "EpisodeOfCare.extension[1].extension[2].valueString")),
    ("lac-episode-of-care", EPISODE, _set([{"text": "looked after"}], "type"), ("structure", "EpisodeOfCare.type")),
    ("lac-episode-of-care", EPISODE, _drop("managingOrganization"),
     ("structure", "EpisodeOfCare.managingOrganization")),
    ("lac-episode-of-care", EPISODE, _set({"end": "2024-02-01"}, "period"),
     ("structure", "EpisodeOfCare.period.start")),
    ("lac-consent", CONSENT, lambda r: r["extension"].pop(0), ("structure", "Consent.extension")),
    ("lac-consent", CONSENT, _set("someone", "extension", 1, "valueCoding", "code"),
     ("code-invalid", "Consent.extension[1].valueCoding")),
    ("lac-consent", CONSENT, _drop("performer"), ("structure", "Consent.performer")),
    ("lac-consent", CONSENT, _drop("provision", "purpose"), ("structure", "Consent.provision.purpose")),
    ("lac-consent", CONSENT, _drop("dateTime"), ("structure", "Consent.dateTime")),
    ("lac-consent", CONSENT, _set("research", "provision", "purpose", 0, "code"),
     ("code-invalid", "Consent.provision.purpose[0]")),
    ("lac-health-plan", HEALTH_PLAN, _drop("activity", 1, "detail", "scheduledString"),
     ("invariant", "CarePlan.activity[1].detail")),
    ("lac-health-plan", HEALTH_PLAN, _drop("activity", 0, "detail", "performer"),
     ("structure", "CarePlan.activity[0].detail.performer")),
    ("lac-health-plan", HEALTH_PLAN, _drop("activity", 1, "detail", "description"),
     ("structure", "CarePlan.activity[1].detail.description")),
    ("lac-health-plan", HEALTH_PLAN, _set([{"text": "plan"}], "category"), ("structure", "CarePlan.category")),
    ("lac-assessment-task", TASK, _set("plan", "intent"), ("value", "Task.intent")),
    ("lac-assessment-task", TASK, _set({"coding": [coding("lac-assessment-type", "dental")]}, "code"),
     ("code-invalid", "Task.code")),
    ("lac-assessment-task", TASK, _set({"coding": [coding("lac-task-business-status", "lost")]}, "businessStatus"),
     ("code-invalid", "Task.businessStatus")),
    ("lac-assessment-task", TASK, _set({"period": {"start": "2024-01-16"}}, "restriction"),
     ("structure", "Task.restriction.period.end")),
    ("lac-assessment-task", TASK, _drop("owner"), ("structure", "Task.owner")),
    ("lac-assessment-task", TASK, _set({"coding": [coding("lac-delay-reason", "weather")]}, "statusReason"),
     ("code-invalid", "Task.statusReason")),
    ("lac-assessment-request", REQUEST, _set({"start": "2024-06-01"}, "occurrencePeriod"),
     ("invariant", "ServiceRequest")),
    ("lac-assessment-request", REQUEST, _drop("performer"), ("structure", "ServiceRequest.performer")),
    ("lac-assessment-request", REQUEST, _set({"coding": [coding("lac-assessment-type", "x")]}, "code"),
     ("code-invalid", "ServiceRequest.code")),
    ("lac-assessment-response", RESPONSE, _drop("authored"), ("invariant", "QuestionnaireResponse")),
    ("lac-assessment-response", RESPONSE, _drop("author"), ("structure", "QuestionnaireResponse.author")),
]


@pytest.mark.parametrize("name, resource", sorted({(c[0], json.dumps(c[1])) for c in CASES}))
def test_valid_synthetic_resources_conform(name, resource):
    resource = json.loads(resource)
    validate_structure(resource)
    issues = validate_profile(resource, SDS[name], TERMINOLOGY, resolve=RESOLVE)
    assert [i for i in issues if i.severity in ("error", "warning")] == []


@pytest.mark.parametrize("name, resource, breaks, expected", CASES,
                         ids=[f"{c[0]}-{c[3][0]}-{c[3][1]}" for c in CASES])
def test_broken_twins_fail(name, resource, breaks, expected):
    broken = copy.deepcopy(resource)
    breaks(broken)
    issues = validate_profile(broken, SDS[name], TERMINOLOGY, resolve=RESOLVE)
    found = [(i.code, i.expression[0]) for i in issues if i.severity in ("error", "warning")]
    assert expected in found, issues


def test_nhs_number_with_check_value_ten_is_invalid():
    number = next(f"999{n:06d}" for n in range(1000000)
                  if (11 - sum(int(d) * (10 - i) for i, d in enumerate(f"999{n:06d}")) % 11) == 10)
    for last in "0123456789":
        p = copy.deepcopy(PATIENT)
        p["identifier"][0]["value"] = number + last
        codes = [(i.code, i.expression[0]) for i in validate_profile(p, SDS["lac-patient"], TERMINOLOGY)]
        assert ("invariant", "Patient.identifier[0]") in codes


def test_episode_extensions_are_checked_without_the_extension_profiles_at_hand():
    broken = copy.deepcopy(EPISODE)
    broken["extension"][0]["valueCoding"]["code"] = "Z9"
    issues = validate_profile(broken, SDS["lac-episode-of-care"], TERMINOLOGY, resolve=lambda url: None)
    assert [(i.code, i.expression[0]) for i in issues] == [("code-invalid", "EpisodeOfCare.extension[0].valueCoding")]
