"""SDC $extract of the worked examples (fixtures/forms), driven by the Questionnaires' annotations."""

from __future__ import annotations

import copy
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from adapter.fhir.jsonio import FhirDecimal, dumps, loads
from adapter.mapping.extract import EXTRACTED_ID_SYSTEM, ExtractionError, extract
from adapter.validation.conformance import published_index
from adapter.validation.terminology import default_terminology
from adapter.validation.validator import Validator, errors

ROOT = Path(__file__).resolve().parents[2]
FORMS = ROOT / "fixtures" / "forms"
BASE = "https://lac-fhir-adapter.example/fhir"
UCUM = "http://unitsofmeasure.org"
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
COMPLETED = sorted(p.name[:-len("-completed.json")] for p in FORMS.glob("*-completed.json"))

# form -> (Observations, CarePlans, Consents) its worked example gives
EXPECTED = {
    "lac-consent": (0, 0, 2), "iha-c": (10, 3, 0), "iha-yp": (11, 3, 0), "rha-c": (10, 2, 0),
    "rha-yp": (11, 2, 0), "cr-c": (1, 0, 0), "cr-yp": (1, 0, 0),
}


def load(form: str) -> tuple[dict, dict]:
    response = loads((FORMS / f"{form}-completed.json").read_bytes())
    questionnaire = published_index().resolve("Questionnaire", response["questionnaire"])
    assert questionnaire is not None
    return response, questionnaire


def resources(bundle: dict, rtype: str | None = None) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if rtype is None or e["resource"]["resourceType"] == rtype]


def by_link(bundle: dict, rtype: str) -> dict[str, dict]:
    """Extracted resources by the `<linkId>/<n>` part of their extracted identifier."""
    return {r["identifier"][0]["value"].split("/", 1)[1]: r for r in resources(bundle, rtype)}


def find_item(items: list[dict], link_id: str) -> list[dict]:
    out = []
    for item in items:
        if item.get("linkId") == link_id:
            out.append(item)
        out += find_item(item.get("item", []), link_id)
    return out


def drop_item(items: list[dict], link_id: str) -> None:
    items[:] = [i for i in items if i.get("linkId") != link_id]
    for item in items:
        drop_item(item.get("item", []), link_id)


def test_every_form_has_a_worked_example():
    assert set(COMPLETED) == set(EXPECTED)


@pytest.mark.parametrize("form", COMPLETED)
def test_counts_per_worked_example(form):
    bundle = extract(*load(form))
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    got = tuple(len(resources(bundle, t)) for t in ("Observation", "CarePlan", "Consent"))
    assert got == EXPECTED[form]
    assert len(bundle["entry"]) == sum(got)  # nothing else (a Provenance is the ingest's)


@pytest.mark.parametrize("form", COMPLETED)
def test_every_extracted_resource_validates_clean(form):
    validator = Validator(default_terminology())
    resolve = published_index().resolve
    for resource in resources(extract(*load(form))):
        problems = errors(validator.validate(resource, resolve))
        assert problems == [], (resource["resourceType"], resource["identifier"], problems)


@pytest.mark.parametrize("form", COMPLETED)
def test_entries_are_conditional_posts_on_the_extracted_identifier(form):
    response, questionnaire = load(form)
    bundle = extract(response, questionnaire)
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(full_urls)) == len(full_urls) and all(u.startswith("urn:uuid:") for u in full_urls)
    values = set()
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        [ident] = [i for i in resource["identifier"] if i["system"] == EXTRACTED_ID_SYSTEM]
        assert ident["value"].startswith(response["id"] + "/")
        values.add(ident["value"])
        assert request["method"] == "POST" and request["url"] == resource["resourceType"]
        assert parse_qsl(request["ifNoneExist"]) == [("identifier", f"{EXTRACTED_ID_SYSTEM}|{ident['value']}")]
    assert len(values) == len(bundle["entry"])


@pytest.mark.parametrize("form", COMPLETED)
def test_re_extraction_is_identical(form):
    response, questionnaire = load(form)
    first = dumps(extract(response, questionnaire))
    second = dumps(extract(copy.deepcopy(response), questionnaire))
    assert first == second


def test_growth_observations_keep_units_and_decimal_text():
    response, questionnaire = load("iha-c")
    obs = by_link(extract(response, questionnaire), "Observation")
    weight = obs["partB.growth.weight/0"]
    assert weight["valueQuantity"] == {"value": FhirDecimal("10.2"), "unit": "kg", "system": UCUM, "code": "kg"}
    assert isinstance(weight["valueQuantity"]["value"], FhirDecimal)
    assert weight["code"]["coding"][0] == {"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}
    assert weight["category"][0]["coding"][0]["code"] == "vital-signs"
    assert weight["status"] == "final"
    assert weight["subject"]["reference"] == "Patient/demo-child-2"
    assert weight["performer"] == [response["author"]]
    assert weight["effectiveDateTime"] == response["authored"]
    assert weight["derivedFrom"] == [{"reference": "QuestionnaireResponse/iha-c-completed"}]
    assert obs["partB.growth.headCircumference/0"]["valueQuantity"]["value"] == FhirDecimal("46.8")
    assert obs["partB.growth.bmi/0"]["valueQuantity"]["code"] == "kg/m2"
    assert obs["partB.dental.registered/0"]["valueBoolean"] is False
    assert obs["partB.dental.registered/0"]["category"][0]["coding"][0]["code"] == "survey"
    assert obs["partB.immunisations.upToDate/0"]["valueCodeableConcept"]["coding"][0]["code"] == "no"

    # the lexical form of a decimal survives to the JSON sent
    find_item(response["item"], "partB.growth.weight")[0]["answer"][0]["valueQuantity"]["value"] = FhirDecimal("10.20")
    text = dumps(extract(response, questionnaire)).decode()
    assert '"value":10.20,' in text


@pytest.mark.parametrize("form, link, total", [
    ("cr-c", "sdq.total", 12), ("cr-yp", "sdq.total", 21), ("iha-yp", "partB.emotional.sdqTotal", 17),
    ("rha-c", "partB.emotional.sdqTotal", 14), ("rha-yp", "partB.emotional.sdqTotal", 11)])
def test_sdq_total(form, link, total):
    obs = by_link(extract(*load(form)), "Observation")[f"{link}/0"]
    assert obs["valueInteger"] == total
    assert obs["code"]["coding"][0] == {"system": f"{BASE}/CodeSystem/lac-observation", "code": "sdq-total",
                                        "display": obs["code"]["coding"][0].get("display")}
    assert obs["category"][0]["coding"][0]["code"] == "survey"


def test_health_plan_rows_become_care_plans():
    plans = by_link(extract(*load("iha-c")), "CarePlan")
    assert sorted(plans) == ["partC.plan/0", "partC.plan/1", "partC.plan/2"]
    first = plans["partC.plan/0"]
    assert first["meta"]["profile"] == [f"{BASE}/StructureDefinition/lac-health-plan"]
    assert (first["status"], first["intent"]) == ("active", "plan")
    assert first["category"] == [{"coding": [{"system": f"{BASE}/CodeSystem/lac-care-plan-category",
                                               "code": "health-plan"}]}]
    assert first["subject"]["reference"] == "Patient/demo-child-2"
    [activity] = first["activity"]
    detail = activity["detail"]
    assert detail["status"] == "scheduled"
    assert detail["description"] == "Give the 1-year vaccinations at the practice."
    assert detail["reasonCode"] == [{"text": "Immunisations not up to date"}]
    assert detail["code"]["coding"][0]["code"] == "immunisation"
    assert detail["performer"] == [{"display": "Practice nurse"}, {"display": "Harbourside Surgery (example)"}]
    assert detail["scheduledPeriod"] == {"end": "2026-12-18"}
    assert activity["outcomeCodeableConcept"][0]["coding"][0]["code"] == "in-progress"
    third = plans["partC.plan/2"]["activity"][0]
    assert third["detail"]["performer"] == [{"display": "Mrs Example (foster carer)"}]
    assert third["detail"]["scheduledPeriod"] == {"end": "2026-12-31"}
    assert "outcomeCodeableConcept" not in third  # not answered, not invented


def test_consent_form_gives_two_consents_permit_and_deny():
    response, questionnaire = load("lac-consent")
    consents = by_link(extract(response, questionnaire), "Consent")
    assert sorted(consents) == ["consent.assessment/0", "consent.sharing/0"]
    assessment, sharing = consents["consent.assessment/0"], consents["consent.sharing/0"]
    assert assessment["provision"]["type"] == "permit"
    assert sharing["provision"]["type"] == "deny"
    assert [c["code"] for c in assessment["provision"]["purpose"]] == ["assessment"]
    assert [c["code"] for c in sharing["provision"]["purpose"]] == ["information-sharing"]
    for consent in (assessment, sharing):
        assert consent["meta"]["profile"] == [f"{BASE}/StructureDefinition/lac-consent"]
        assert consent["status"] == "active"
        assert consent["patient"]["reference"] == "Patient/demo-child-1"
        assert consent["performer"] == [{"display": "Rachel Penhallow"}]
        assert consent["organization"] == [{"display": "Example County Council"}]
        assert consent["dateTime"] == "2026-11-03"
        assert consent["scope"]["coding"][0]["code"] == "patient-privacy"
        assert consent["policyRule"]["coding"][0]["code"] == "section-20-agreement"
        ext = {e["url"].rsplit("/", 1)[1]: e["valueCoding"]["code"] for e in consent["extension"]}
        assert ext == {"lac-consent-grantor": "parent-with-pr", "lac-consent-capacity": "gillick-competent"}


def test_the_consent_questionnaire_expresses_the_split_as_data():
    _, questionnaire = load("lac-consent")
    decisions = [i for i in find_item(questionnaire["item"], "consent")[0]["item"]
                 if i.get("definition", "").endswith("#Consent.provision.type")]
    assert len(decisions) == 2
    for item in decisions:
        urls = [e["url"] for e in item["extension"]]
        assert f"{BASE}/StructureDefinition/lac-definition-extract-per-answer" in urls
        assert urls.count(f"{BASE}/StructureDefinition/lac-definition-extract-answer-map") == 2
        assert SDC + "sdc-questionnaire-definitionExtractValue" in urls
    for name in ("lac-definition-extract-per-answer", "lac-definition-extract-answer-map"):
        assert published_index().resolve("StructureDefinition", f"{BASE}/StructureDefinition/{name}")


def test_unanswered_items_yield_nothing():
    response, questionnaire = load("iha-c")
    drop_item(response["item"], "partB.growth.weight")
    bundle = extract(response, questionnaire)
    obs = by_link(bundle, "Observation")
    assert "partB.growth.weight/0" not in obs and len(obs) == EXPECTED["iha-c"][0] - 1
    # an unanswered plan row gives no CarePlan
    plan_rows = [i for i in find_item(response["item"], "partC")[0]["item"] if i["linkId"] == "partC.plan"]
    find_item(response["item"], "partC")[0]["item"].remove(plan_rows[1])
    assert len(resources(extract(response, questionnaire), "CarePlan")) == 2

    consent, cq = load("lac-consent")
    drop_item(consent["item"], "consent.sharing")
    assert list(by_link(extract(consent, cq), "Consent")) == ["consent.assessment/0"]


def test_response_reference_and_key():
    response, questionnaire = load("cr-c")
    del response["id"]
    with pytest.raises(ExtractionError):
        extract(response, questionnaire)
    [obs] = resources(extract(response, questionnaire, response_ref="urn:uuid:1b2c"), "Observation")
    assert obs["derivedFrom"] == [{"reference": "urn:uuid:1b2c"}]
    assert obs["identifier"][0]["value"] == "urn:uuid:1b2c/sdq.total/0"
    response["identifier"] = {"system": "https://la.example/forms", "value": "CR-77"}
    [obs] = resources(extract(response, questionnaire, response_ref="urn:uuid:1b2c"), "Observation")
    assert obs["identifier"][0]["value"] == "CR-77/sdq.total/0"


def test_inherited_flag_repeats_and_item_override_on_a_synthetic_form():
    questionnaire = {
        "resourceType": "Questionnaire", "status": "active",
        "extension": [{"url": SDC + "sdc-questionnaire-observationExtract", "valueBoolean": True}],
        "item": [
            {"linkId": "g", "type": "group", "repeats": True, "item": [
                {"linkId": "g.temp", "type": "decimal", "code": [{"system": "http://loinc.org", "code": "8310-5"}],
                 "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/questionnaire-unit",
                                "valueCoding": {"system": UCUM, "code": "Cel", "display": "°C"}}]},
                {"linkId": "g.note", "type": "string", "code": [{"system": "http://example.org", "code": "n"}],
                 "extension": [{"url": SDC + "sdc-questionnaire-observationExtract", "valueBoolean": False}]},
                {"linkId": "g.uncoded", "type": "string"}]}],
    }
    response = {
        "resourceType": "QuestionnaireResponse", "id": "qr1", "status": "completed",
        "subject": {"reference": "Patient/p"}, "encounter": {"reference": "Encounter/e"},
        "item": [{"linkId": "g", "item": [{"linkId": "g.temp", "answer": [{"valueDecimal": FhirDecimal("37.50")}]},
                                          {"linkId": "g.note", "answer": [{"valueString": "x"}]},
                                          {"linkId": "g.uncoded", "answer": [{"valueString": "y"}]}]},
                 {"linkId": "g", "item": [{"linkId": "g.temp", "answer": [{"valueDecimal": FhirDecimal("38")}]}]}],
    }
    obs = by_link(extract(response, questionnaire), "Observation")
    assert sorted(obs) == ["g.temp/0", "g.temp/1"]
    assert obs["g.temp/0"]["valueQuantity"] == {"value": FhirDecimal("37.50"), "unit": "°C", "system": UCUM,
                                                "code": "Cel"}
    assert obs["g.temp/0"]["encounter"] == {"reference": "Encounter/e"}
    assert "performer" not in obs["g.temp/0"] and "effectiveDateTime" not in obs["g.temp/0"]
