"""The published forms (profiles/questionnaires) and their worked examples (fixtures/forms).

Offline checks on the JSON files only: no server, no database.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from adapter.fhir.errors import FhirError
from adapter.validation.structure import validate_structure

ROOT = Path(__file__).resolve().parents[2]
Q_DIR = ROOT / "profiles" / "questionnaires"
F_DIR = ROOT / "fixtures" / "forms"
BASE = "https://lac-fhir-adapter.example/fhir"
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
OBSERVATION_EXTRACT = SDC + "sdc-questionnaire-observationExtract"
DEFINITION_EXTRACT = SDC + "sdc-questionnaire-definitionExtract"
DEFINITION_EXTRACT_VALUE = SDC + "sdc-questionnaire-definitionExtractValue"
UNIT = "http://hl7.org/fhir/StructureDefinition/questionnaire-unit"
PLAN_PROFILE = f"{BASE}/StructureDefinition/lac-health-plan"
CONSENT_PROFILE = f"{BASE}/StructureDefinition/lac-consent"
PROFILES = (PLAN_PROFILE, CONSENT_PROFILE)

FORMS = ["lac-consent", "iha-c", "iha-yp", "rha-c", "rha-yp", "cr-c", "cr-yp"]
ASSESSMENTS = ["iha-c", "iha-yp", "rha-c", "rha-yp"]

AGREED_VALUE_SETS = {f"{BASE}/ValueSet/{vid}" for vid in (
    "ssda903-legal-status", "ssda903-reason-new-episode", "ssda903-category-of-need", "ssda903-placement-type",
    "ssda903-placement-provider", "ssda903-reason-episode-ceased", "ssda903-sdq-reason", "lac-assessment-type",
    "lac-consent-grantor", "lac-consent-capacity", "lac-consent-purpose", "lac-consent-legal-basis",
    "lac-health-plan-domain", "lac-task-business-status", "lac-delay-reason", "lac-observation",
    "lac-yes-no-unknown", "lac-health-plan-outcome")}
OBSERVATION_CODES = {("http://loinc.org", c) for c in ("8302-2", "29463-7", "39156-5", "9843-4")} | {
    (f"{BASE}/CodeSystem/lac-observation", c) for c in (
        "sdq-total", "immunisations-up-to-date", "dental-registered", "dental-check-last-12-months",
        "vision-check-up-to-date", "hearing-concern", "substance-misuse-identified", "smoker", "development-concern")}
# Consent decisions carry what they consent to as item.code (it becomes Consent.provision.purpose).
PURPOSE_CODES = {(f"{BASE}/CodeSystem/lac-consent-purpose", c) for c in ("assessment", "information-sharing")}
UCUM = "http://unitsofmeasure.org"

# Concepts every initial and review assessment form asks with the same linkId.
SHARED = [
    "header", "header.name", "header.nhsNumber", "header.birthDate",
    "partA", "partA.sexAtBirth", "partA.legalStatus", "partA.placement.type", "partA.placement.provider",
    "partA.placement.postcodeDistrict", "partA.placement.outOfArea", "partA.responsibleAuthority",
    "partA.socialWorker.name", "partA.consent.assessmentRecorded", "partA.consent.sharingRecorded",
    "partB", "partB.assessmentDate", "partB.views.presentingConcerns", "partB.views.child", "partB.views.carer",
    "partB.history.pastMedical", "partB.history.admissions", "partB.history.longTermConditions",
    "partB.history.disability", "partB.medication", "partB.medication.name", "partB.medication.dose",
    "partB.medication.reason", "partB.allergies", "partB.immunisations.upToDate", "partB.dental.registered",
    "partB.dental.lastCheck", "partB.vision.checkUpToDate", "partB.hearing.concern",
    "partB.growth", "partB.growth.height", "partB.growth.weight", "partB.growth.bmi",
    "partB.emotional.sdqConsidered", "partB.emotional.sdqTotal", "partB.lifestyle.sleep", "partB.lifestyle.diet",
    "partB.lifestyle.activity", "partB.examination", "partB.wishesAndFeelings",
    "partC", "partC.summary", "partC.plan", "partC.plan.need", "partC.plan.domain", "partC.plan.action",
    "partC.plan.responsiblePerson", "partC.plan.responsibleOrganisation", "partC.plan.dueDate",
    "partC.plan.outcome", "partD", "partD.sdqScore", "partD.sdqReason", "partD.immunisations",
    "partD.teethCheck", "partD.healthAssessment",
]
REVIEW_ONLY = {"partB.previousAssessmentDate", "partB.changesSinceLastAssessment", "partC.review",
               "partC.review.need", "partC.review.action", "partC.review.outcome", "partC.review.comment"}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


QUESTIONNAIRES = {qid: _load(Q_DIR / f"Questionnaire-{qid}.json") for qid in FORMS}
BY_CANONICAL = {f"{q['url']}|{q['version']}": q for q in QUESTIONNAIRES.values()}
RESPONSES = sorted(p.name for p in F_DIR.glob("*.json") if not p.name.endswith(".expected.json"))


def _items(items: list) -> list[dict]:
    out = []
    for item in items:
        out.append(item)
        out.extend(_items(item.get("item", [])))
    return out


def _by_link(q: dict) -> dict[str, dict]:
    return {i["linkId"]: i for i in _items(q["item"])}


def _extensions(element: dict, url: str) -> list[dict]:
    return [e for e in element.get("extension", []) if e.get("url") == url]


def _response_links(items: list) -> list[str]:
    out = []
    for item in items:
        out.append(item["linkId"])
        out += _response_links(item.get("item", []))
        for answer in item.get("answer", []):
            out += _response_links(answer.get("item", []))
    return out


# ---------------------------------------------------------------- Questionnaires

def test_every_questionnaire_file_is_a_listed_form():
    assert sorted(p.name for p in Q_DIR.glob("Questionnaire-*.json")) == sorted(
        f"Questionnaire-{qid}.json" for qid in FORMS)


@pytest.mark.parametrize("qid", FORMS)
def test_questionnaire_is_valid_r4_with_our_conventions(qid):
    q = QUESTIONNAIRES[qid]
    try:
        validate_structure(q)
    except FhirError as err:  # pragma: no cover - the message is the point
        pytest.fail(f"{qid}: {[i.diagnostics for i in err.issues]}")
    assert q["resourceType"] == "Questionnaire"
    assert q["id"] == qid
    assert q["url"] == f"{BASE}/Questionnaire/{qid}"
    assert q["version"] == "1.0.0"
    assert q["status"] == "active"
    assert q["subjectType"] == ["Patient"]
    assert q["publisher"] == "lac-fhir-adapter"
    assert re.fullmatch(r"[A-Z][A-Za-z0-9_]*", q["name"])
    for key in ("title", "date", "description"):
        assert q.get(key), key


@pytest.mark.parametrize("qid", FORMS)
def test_link_ids_are_unique_dotted_and_enable_when_targets_exist(qid):
    items = _items(QUESTIONNAIRES[qid]["item"])
    links = [i["linkId"] for i in items]
    assert len(links) == len(set(links)), sorted({x for x in links if links.count(x) > 1})
    for item in items:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*", item["linkId"]), item["linkId"]
        for when in item.get("enableWhen", []):
            assert when["question"] in links, (item["linkId"], when["question"])
            assert when["question"] != item["linkId"]
        if len(item.get("enableWhen", [])) > 1:
            assert item.get("enableBehavior") in ("all", "any"), item["linkId"]


def test_child_link_ids_extend_their_parent():
    for qid, q in QUESTIONNAIRES.items():
        for parent in _items(q["item"]):
            for child in parent.get("item", []):
                assert child["linkId"].startswith(parent["linkId"] + "."), (qid, child["linkId"])


@pytest.mark.parametrize("qid", FORMS)
def test_answer_value_sets_are_agreed_ones(qid):
    for item in _items(QUESTIONNAIRES[qid]["item"]):
        if "answerValueSet" in item:
            assert item["answerValueSet"] in AGREED_VALUE_SETS, (item["linkId"], item["answerValueSet"])
            assert item["type"] in ("choice", "open-choice"), item["linkId"]
            assert "answerOption" not in item, item["linkId"]
        if item["type"] in ("choice", "open-choice"):
            assert "answerValueSet" in item or item.get("answerOption"), item["linkId"]


@pytest.mark.parametrize("qid", FORMS)
def test_observation_extract_items_carry_an_agreed_code(qid):
    for item in _items(QUESTIONNAIRES[qid]["item"]):
        flagged = _extensions(item, OBSERVATION_EXTRACT)
        if flagged:
            assert flagged[0].get("valueBoolean") is True, item["linkId"]
            assert item.get("code"), item["linkId"]
        allowed = OBSERVATION_CODES if flagged else PURPOSE_CODES
        for coding in item.get("code", []):
            assert (coding["system"], coding["code"]) in allowed, (item["linkId"], coding)


def test_no_snomed_codes_in_forms():
    for qid in FORMS:
        assert "snomed.info" not in (Q_DIR / f"Questionnaire-{qid}.json").read_text(), qid


@pytest.mark.parametrize("qid", FORMS)
def test_quantity_items_have_one_ucum_unit(qid):
    for item in _items(QUESTIONNAIRES[qid]["item"]):
        units = _extensions(item, UNIT)
        if item["type"] == "quantity":
            assert len(units) == 1, item["linkId"]
            assert units[0]["valueCoding"]["system"] == UCUM
            assert units[0]["valueCoding"]["code"] in ("cm", "kg", "kg/m2")
        else:
            assert not units, item["linkId"]


@pytest.mark.parametrize("qid", FORMS)
def test_min_and_max_values_fit_the_item_type(qid):
    keys = {"integer": "valueInteger", "decimal": "valueDecimal", "date": "valueDate"}
    for item in _items(QUESTIONNAIRES[qid]["item"]):
        bounds = {}
        for side in ("minValue", "maxValue"):
            for ext in _extensions(item, f"http://hl7.org/fhir/StructureDefinition/{side}"):
                assert keys.get(item["type"]) in ext, (item["linkId"], ext)
                bounds[side] = ext[keys[item["type"]]]
        if len(bounds) == 2:
            assert bounds["minValue"] <= bounds["maxValue"], item["linkId"]


@pytest.mark.parametrize("qid", FORMS)
def test_definitions_point_at_agreed_profiles(qid):
    q = QUESTIONNAIRES[qid]
    for element in [q] + _items(q["item"]):
        if "definition" in element:
            base, _, path = element["definition"].partition("#")
            assert base in PROFILES and path, (element.get("linkId"), element["definition"])
        for ext in _extensions(element, DEFINITION_EXTRACT) + _extensions(element, DEFINITION_EXTRACT_VALUE):
            canonicals = [e["valueCanonical"] for e in ext["extension"] if e["url"] == "definition"]
            assert len(canonicals) == 1, element.get("linkId")
            assert canonicals[0].partition("#")[0] in PROFILES, canonicals[0]


def _definitions_below(item: dict) -> set[str]:
    return {i["definition"] for i in _items(item.get("item", [])) if "definition" in i}


@pytest.mark.parametrize("qid", ASSESSMENTS)
def test_health_plan_rows_extract_to_care_plan_activities(qid):
    plan = _by_link(QUESTIONNAIRES[qid])["partC.plan"]
    assert plan["type"] == "group" and plan.get("repeats") is True
    [ext] = _extensions(plan, DEFINITION_EXTRACT)
    assert ext["extension"] == [{"url": "definition", "valueCanonical": PLAN_PROFILE}]
    paths = {d.partition("#")[2] for d in _definitions_below(plan)}
    assert {"CarePlan.activity.detail.description", "CarePlan.activity.detail.code",
            "CarePlan.activity.detail.scheduledPeriod.end", "CarePlan.activity.outcomeCodeableConcept"} <= paths
    assert all(p.startswith("CarePlan.") for p in paths)
    required = {i["linkId"] for i in plan["item"] if i.get("required")}
    assert required == {"partC.plan.need", "partC.plan.domain", "partC.plan.action", "partC.plan.responsiblePerson",
                        "partC.plan.dueDate"}


def test_consent_form_extracts_to_the_consent_profile():
    q = QUESTIONNAIRES["lac-consent"]
    [ext] = _extensions(q, DEFINITION_EXTRACT)
    assert ext["extension"] == [{"url": "definition", "valueCanonical": CONSENT_PROFILE}]
    items = _by_link(q)
    paths = {i["linkId"]: i["definition"].partition("#")[2] for i in items.values() if "definition" in i}
    assert paths["consent.grantor"] == "Consent.extension:grantor"
    assert paths["consent.capacity"] == "Consent.extension:capacity"
    assert paths["signatory.dateSigned"] == "Consent.dateTime"
    assert paths["consent.assessment"] == paths["consent.sharing"] == "Consent.provision.type"
    assert {items[link]["code"][0]["code"] for link in ("consent.assessment", "consent.sharing")} == {
        "assessment", "information-sharing"}
    assert all(p.startswith("Consent.") for p in paths.values())
    for link in ("consent.assessment", "consent.sharing", "signatory.dateSigned", "consent.grantor"):
        assert items[link].get("required") is True, link
    refusal = items["consent.refusalReason"]
    assert refusal["enableBehavior"] == "any"
    assert {(w["question"], w["answerBoolean"]) for w in refusal["enableWhen"]} == {
        ("consent.assessment", False), ("consent.sharing", False)}


def test_shared_concepts_have_identical_link_ids_across_assessment_forms():
    indexes = {qid: _by_link(QUESTIONNAIRES[qid]) for qid in ASSESSMENTS}
    for link in SHARED:
        seen = {qid: index.get(link) for qid, index in indexes.items()}
        assert all(seen.values()), (link, [q for q, i in seen.items() if i is None])
    # Any linkId used by more than one form means the same thing in each: same type, options and code.
    for link in set().union(*indexes.values()):
        found = [index[link] for index in indexes.values() if link in index]
        shape = {json.dumps([i["type"], i.get("answerValueSet"), i.get("code"), i.get("repeats", False),
                             i.get("enableWhen")], sort_keys=True) for i in found}
        assert len(shape) == 1, link
    # The IHA and RHA form for an age band differ only by the review items.
    for iha, rha in (("iha-c", "rha-c"), ("iha-yp", "rha-yp")):
        assert set(indexes[rha]) - set(indexes[iha]) == REVIEW_ONLY
        assert set(indexes[iha]) <= set(indexes[rha])


def test_age_specific_items():
    for qid in ("iha-c", "rha-c"):
        items = _by_link(QUESTIONNAIRES[qid])
        head = items["partB.growth.headCircumference"]
        assert head["enableWhen"] == [{"question": "partB.growth.under2", "operator": "=", "answerBoolean": True}]
        assert "partB.development" in items and "partB.birth" in items and "partB.education" not in items
        assert "partD.healthCheck" in items and "partD.substanceMisuse" not in items
    for qid in ("iha-yp", "rha-yp"):
        items = _by_link(QUESTIONNAIRES[qid])
        pregnancy = items["partB.sexualHealth.pregnancy"]
        assert pregnancy["enableWhen"][0]["question"] == "partA.sexAtBirth"
        assert pregnancy["enableWhen"][0]["answerCoding"]["code"] == "female"
        for link in ("partB.education", "partB.smoking", "partB.alcohol", "partB.substance", "partB.exploitation",
                     "partB.selfHarm", "partD.substanceMisuse"):
            assert link in items, (qid, link)
        for link in ("partD.interventionReceived", "partD.interventionOffered"):
            assert items[link]["enableWhen"] == [
                {"question": "partD.substanceMisuse", "operator": "=", "answerBoolean": True}]
    for qid in ASSESSMENTS:
        reason = _by_link(QUESTIONNAIRES[qid])["partD.sdqReason"]
        assert reason["enableWhen"] == [{"question": "partD.sdqScore", "operator": "exists", "answerBoolean": False}]


@pytest.mark.parametrize("qid", ["cr-c", "cr-yp"])
def test_carers_report_holds_sdq_scores_only(qid):
    items = _by_link(QUESTIONNAIRES[qid])
    sdq = [i for link, i in items.items() if link.startswith("sdq.")]
    scores = [i for i in sdq if i["type"] == "integer"]
    assert {i["linkId"] for i in scores} == {"sdq.total", "sdq.emotional", "sdq.conduct", "sdq.hyperactivity",
                                            "sdq.peer", "sdq.prosocial", "sdq.impact"}
    assert all(i["type"] in ("integer", "boolean", "date", "choice", "string", "display") for i in sdq)


# ---------------------------------------------------------------- fixtures

def test_every_form_has_its_three_fixture_files_and_readme_entry():
    readme = (F_DIR / "README.md").read_text(encoding="utf-8")
    for qid in FORMS:
        for suffix in ("completed.json", "broken.json", "broken.expected.json"):
            assert (F_DIR / f"{qid}-{suffix}").is_file(), f"{qid}-{suffix}"
            assert f"{qid}-{suffix}" in readme or suffix == "broken.expected.json"


@pytest.mark.parametrize("name", RESPONSES)
def test_fixture_response_is_valid_and_uses_the_form_s_link_ids(name):
    response = _load(F_DIR / name)
    try:
        validate_structure(response)
    except FhirError as err:  # pragma: no cover
        pytest.fail(f"{name}: {[i.diagnostics for i in err.issues]}")
    assert response["resourceType"] == "QuestionnaireResponse"
    assert response["status"] == "completed"
    q = BY_CANONICAL.get(response["questionnaire"])
    assert q is not None, response["questionnaire"]
    assert name.startswith(q["id"] + "-")
    assert re.fullmatch(r"Patient/demo-child-\d+", response["subject"]["reference"])
    assert response.get("authored") and response.get("author")
    links = set(_by_link(q))
    assert set(_response_links(response["item"])) <= links


@pytest.mark.parametrize("qid", FORMS)
def test_broken_fixture_is_the_completed_one_with_three_expected_faults(qid):
    expected = _load(F_DIR / f"{qid}-broken.expected.json")
    assert isinstance(expected, list) and len(expected) == 3
    for issue in expected:
        assert issue["severity"] == "error"
        assert re.fullmatch(r"QuestionnaireResponse(\.item\[\d+\](\.answer\[\d+\](\.value[A-Z][A-Za-z]+)?)?)*",
                            issue["expression"]), issue["expression"]
    completed, broken = _load(F_DIR / f"{qid}-completed.json"), _load(F_DIR / f"{qid}-broken.json")
    assert {k: v for k, v in completed.items() if k not in ("id", "item")} == \
        {k: v for k, v in broken.items() if k not in ("id", "item")}


def _luhn11(number: str) -> bool:
    total = sum(int(d) * w for d, w in zip(number[:9], range(10, 1, -1)))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(number[9])


def test_only_test_range_nhs_numbers_appear_in_form_fixtures():
    candidates = re.compile(r"(?<![\d.])(\d{3}[ -]?\d{3}[ -]?\d{4})(?![\d.])")
    found = set()
    for path in sorted(F_DIR.iterdir()):
        for match in candidates.finditer(path.read_text(encoding="utf-8")):
            digits = re.sub(r"\D", "", match.group(1))
            assert digits.startswith("999") and _luhn11(digits), (path.name, match.group(1))
            found.add(digits)
    assert found, "the fixtures should carry test NHS numbers"


def _validate_response():
    try:
        from adapter.validation.questionnaire import validate_response
    except ImportError:  # pragma: no cover - the validator is developed alongside
        pytest.skip("adapter.validation.questionnaire is not available")
    return validate_response


@pytest.mark.parametrize("qid", FORMS)
def test_completed_fixture_passes_the_questionnaire_validator(qid):
    validate_response = _validate_response()
    response = _load(F_DIR / f"{qid}-completed.json")
    issues = validate_response(response, QUESTIONNAIRES[qid])
    assert [(i.severity, i.expression, i.diagnostics) for i in issues
            if i.severity in ("error", "fatal", "warning")] == []


@pytest.mark.parametrize("qid", FORMS)
def test_broken_fixture_gives_exactly_the_expected_errors(qid):
    validate_response = _validate_response()
    response = _load(F_DIR / f"{qid}-broken.json")
    expected = _load(F_DIR / f"{qid}-broken.expected.json")
    errors = [{"severity": i.severity, "expression": i.expression[0] if i.expression else None}
              for i in validate_response(response, QUESTIONNAIRES[qid]) if i.severity in ("error", "fatal")]
    key = lambda issue: issue["expression"] or ""  # noqa: E731
    assert sorted(errors, key=key) == sorted(expected, key=key)
