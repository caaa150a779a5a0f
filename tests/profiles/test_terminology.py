"""The published terminology under profiles/terminology/: structure, canonical URLs, contents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapter.validation.structure import validate_structure
from adapter.validation.terminology import Terminology

ROOT = Path(__file__).resolve().parents[2] / "profiles" / "terminology"
BASE = "https://lac-fhir-adapter.example/fhir"
SNOMED = "http://snomed.info/sct"
JSON_FILES = sorted(ROOT.glob("*.json"))

# The contract other modules code against: exact code lists.
SSDA903 = {
    "ssda903-legal-status": ["C1", "C2", "D1", "E1", "V2", "V3", "V4", "L1", "L2", "L3", "J1", "J2", "J3"],
    "ssda903-reason-new-episode": ["S", "L", "P", "T", "B", "U"],
    "ssda903-category-of-need": ["N1", "N2", "N3", "N4", "N5", "N6", "N7", "N8"],
    "ssda903-placement-type": ["A3", "A4", "A5", "A6", "K1", "K2", "K3", "P1", "P3", "R1", "R2", "R3", "R5",
                               "S1", "T0", "T1", "T2", "T3", "T4", "U1", "U2", "U3", "U4", "U5", "U6",
                               "Z11", "Z12", "Z13", "Z14"],
    "ssda903-placement-provider": ["PR0", "PR1", "PR2", "PR3", "PR4", "PR5"],
    "ssda903-reason-episode-ceased": ["E11", "E12", "E2", "E3", "E4A", "E4B", "E13", "E41", "E45", "E46", "E47",
                                      "E48", "E5", "E6", "E7", "E8", "E9", "E14", "E15", "E16", "E17", "X1"],
    "ssda903-sdq-reason": ["SDQ1", "SDQ2", "SDQ3", "SDQ4", "SDQ5"],
}
PLACEMENT_2025_26 = SSDA903["ssda903-placement-type"]
LOCAL = {
    "lac-care-plan-category": ["health-plan"],
    "lac-episode-type": ["care-leaver"],
    "lac-assessment-type": ["iha", "rha", "adoption-medical", "leaving-care-summary", "carer-report", "consent"],
    "lac-consent-grantor": ["young-person", "parent-with-pr", "local-authority", "other-person-with-pr", "court"],
    "lac-consent-capacity": ["presumed-16-17", "gillick-competent", "not-competent", "lacks-capacity", "not-assessed"],
    "lac-consent-purpose": ["assessment", "information-sharing"],
    "lac-consent-legal-basis": ["section-20-agreement", "care-order", "placement-order", "young-person-own-consent",
                                "court-direction", "parental-responsibility"],
    "lac-health-plan-domain": ["physical-health", "long-term-condition", "medication", "immunisation", "dental",
                               "vision", "hearing", "growth-nutrition", "development", "education-learning",
                               "emotional-wellbeing", "sleep", "physical-activity", "sexual-health", "substance-use",
                               "smoking", "alcohol", "exploitation-risk", "self-harm", "transition-to-adulthood",
                               "other"],
    "lac-task-business-status": ["notification-received", "awaiting-consent", "consent-received", "request-sent",
                                 "accepted", "appointment-booked", "did-not-attend", "assessment-done", "report-sent",
                                 "quality-assured", "rejected-incomplete-request", "cancelled-left-care"],
    "lac-delay-reason": ["late-notification", "consent-late", "consent-refused", "notification-incomplete",
                         "child-not-brought", "young-person-declined", "appointment-capacity", "interpreter-needed",
                         "placement-move", "out-of-area-provider", "report-late", "child-unwell", "other"],
    "lac-observation": ["sdq-total", "immunisations-up-to-date", "dental-registered", "dental-check-last-12-months",
                        "vision-check-up-to-date", "hearing-concern", "substance-misuse-identified", "smoker",
                        "development-concern", "convicted-in-year", "development-check-up-to-date",
                        "health-assessment-up-to-date", "substance-misuse-intervention-received",
                        "substance-misuse-intervention-offered"],
    "lac-yes-no-unknown": ["yes", "no", "unknown", "declined"],
    "lac-quality-audit": ["assessment-quality-audit", "fix-assessment", "consent-recorded", "child-voice-recorded",
                          "sdq-considered", "growth-measured", "immunisations-stated",
                          "plan-actions-owned-and-dated"],
    "lac-health-plan-outcome": ["achieved", "partly-achieved", "not-achieved", "in-progress", "no-longer-needed"],
}
SNOMED_CODES = {"764841000000100", "342191000000101", "1064311000000109"}
VALUE_SET_ONLY = {"ssda903-placement-type-2025-26", "lac-status-snomed"}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def resources(kind: str) -> dict[str, dict]:
    return {r["id"]: r for r in map(load, JSON_FILES) if r["resourceType"] == kind}


@pytest.fixture(scope="module")
def terminology() -> Terminology:
    return Terminology.from_directory()


def cs_url(id_: str) -> str:
    return f"{BASE}/CodeSystem/{id_}"


def vs_url(id_: str) -> str:
    return f"{BASE}/ValueSet/{id_}"


def test_folder_holds_only_code_systems_value_sets_and_readme():
    names = {p.name for p in ROOT.iterdir()}
    assert "README.md" in names
    others = names - {"README.md"}
    assert others and all(n.startswith(("CodeSystem-", "ValueSet-")) and n.endswith(".json") for n in others)


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: p.name)
def test_resource_metadata_and_structure(path: Path):
    res = load(path)
    kind, _, stem = path.stem.partition("-")
    assert res["resourceType"] == kind
    validate_structure(res)  # raises FhirError when structurally invalid
    assert res["id"] == stem
    assert res["url"] == f"{BASE}/{kind}/{stem}"
    assert res["version"] == "1.0.0"
    assert res["status"] == "active"
    assert res["experimental"] is False
    assert res["publisher"] == "lac-fhir-adapter"
    assert res["name"][0].isupper() and res["name"].isidentifier()
    assert res["title"] and res["description"]
    if kind == "CodeSystem":
        assert res["caseSensitive"] is True
        assert res["content"] == "complete"


def test_every_code_system_has_a_whole_value_set_of_the_same_id():
    code_systems, value_sets = resources("CodeSystem"), resources("ValueSet")
    for id_ in code_systems:
        assert value_sets[id_]["compose"]["include"][0] == {"system": cs_url(id_)}
    assert set(value_sets) - set(code_systems) == VALUE_SET_ONLY
    assert set(code_systems) == set(SSDA903) | set(LOCAL)


def test_code_systems_have_unique_codes_with_display_and_definition():
    for id_, cs in resources("CodeSystem").items():
        codes = [c["code"] for c in cs["concept"]]
        assert len(codes) == len(set(codes)), id_
        assert cs.get("count", len(codes)) == len(codes), id_
        for concept in cs["concept"]:
            assert concept.get("display", "").strip(), (id_, concept["code"])
            assert concept.get("definition", "").strip(), (id_, concept["code"])
        declared = {p["code"] for p in cs.get("property", [])}
        used = {p["code"] for c in cs["concept"] for p in c.get("property", [])}
        assert used <= declared, id_


def test_every_value_set_expands_and_is_not_empty(terminology):
    for id_ in resources("ValueSet"):
        expansion = terminology.expand(vs_url(id_))
        assert expansion is not None, id_
        assert expansion, id_


@pytest.mark.parametrize("id_", sorted(SSDA903) + sorted(LOCAL))
def test_code_lists_are_exactly_the_contract(id_, terminology):
    expected = (SSDA903 | LOCAL)[id_]
    cs = resources("CodeSystem")[id_]
    assert sorted(c["code"] for c in cs["concept"]) == sorted(expected)
    assert terminology.expand(vs_url(id_)) == frozenset((cs_url(id_), code) for code in expected)


def test_placement_2025_26_value_set_is_exactly_the_2025_26_codes(terminology):
    expansion = terminology.expand(vs_url("ssda903-placement-type-2025-26"))
    assert expansion == frozenset((cs_url("ssda903-placement-type"), c) for c in PLACEMENT_2025_26)
    cs = resources("CodeSystem")["ssda903-placement-type"]
    for concept in cs["concept"]:
        years = [p["valueString"] for p in concept["property"] if p["code"] == "collection-years"]
        assert years and "2025-26" in years[0].split(), concept["code"]


def test_short_break_property_marks_v3_and_v4_only():
    cs = resources("CodeSystem")["ssda903-legal-status"]
    flagged = {c["code"] for c in cs["concept"]
               for p in c.get("property", []) if p["code"] == "short-break" and p["valueBoolean"]}
    assert flagged == {"V3", "V4"}


def _snomed_codes(node, found: set[str]) -> None:
    """Codes of every Coding-like or compose include/expansion entry whose system is SNOMED CT."""
    if isinstance(node, dict):
        if node.get("system") == SNOMED:
            if "code" in node:
                found.add(node["code"])
            for concept in node.get("concept", []):
                found.add(concept["code"])
        for value in node.values():
            _snomed_codes(value, found)
    elif isinstance(node, list):
        for item in node:
            _snomed_codes(item, found)


def test_only_the_three_verified_snomed_codes_appear_anywhere(terminology):
    found: set[str] = set()
    for path in JSON_FILES:
        _snomed_codes(load(path), found)
    assert found == SNOMED_CODES
    assert terminology.expand(vs_url("lac-status-snomed")) == frozenset((SNOMED, c) for c in SNOMED_CODES)
    assert not [cs for cs in resources("CodeSystem").values() if cs["url"] == SNOMED]


def test_membership(terminology):
    ls = vs_url("ssda903-legal-status")
    assert terminology.contains(ls, cs_url("ssda903-legal-status"), "C2") is True
    assert terminology.contains(ls, cs_url("ssda903-legal-status"), "V1") is False
    assert terminology.contains(ls, cs_url("ssda903-category-of-need"), "C2") is False
    place = vs_url("ssda903-placement-type-2025-26")
    assert terminology.contains(place, cs_url("ssda903-placement-type"), "U4") is True
    assert terminology.contains(place, cs_url("ssda903-placement-type"), "Z1") is False
    assert terminology.contains(place, None, "H5") is False
    status = vs_url("lac-status-snomed")
    assert terminology.contains(status, SNOMED, "764841000000100") is True
    assert terminology.contains(status, SNOMED, "999999999") is False
    assert terminology.contains(vs_url("lac-yes-no-unknown"), None, "declined") is True
    assert terminology.display(cs_url("ssda903-reason-new-episode"), "S") == "Started to be looked after"
