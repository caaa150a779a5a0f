"""The plain rules behind the remaining measures of issue 7: own consent offered, the quality
audit's outcome, the health plan's return time, the tariff configuration and the SSDA903 OC2
cohort and items. Hand-computed values.

2022 England & Wales bank holidays used: Thursday 2 and Friday 3 June (spring, Platinum Jubilee).
"""

from __future__ import annotations

from datetime import date

import pytest

from adapter.kpi import oc2, rules
from adapter.kpi.rules import KpiRules

BASE = "https://lac-fhir-adapter.example/fhir/"
BS = rules.BUSINESS_STATUS
LAC_OBS = BASE + "CodeSystem/lac-observation"
LEGAL_STATUS = BASE + "StructureDefinition/lac-legal-status"
RULES = KpiRules(home_las=frozenset({"LA-DEMO-1"}),
                 age_bands=((0, "0-4"), (5, "5-9"), (10, "10-15"), (16, "16-17"), (18, "18+")),
                 sdq_bands=((0, "normal"), (14, "borderline"), (17, "cause-for-concern")))
LOOKED_AFTER = [{"coding": [{"system": "http://snomed.info/sct", "code": "764841000000100"}]}]


def consent(status: str, when: str | None, grantor: str = "young-person", provision: str = "permit") -> dict:
    body = {"resourceType": "Consent", "status": status,
            "extension": [{"url": rules.GRANTOR_URL, "valueCoding": {"system": rules.GRANTOR, "code": grantor}}],
            "provision": {"type": provision, "purpose": [{"system": rules.CONSENT_PURPOSE, "code": "assessment"}]},
            "meta": {"lastUpdated": "2022-08-15T10:00:00Z"}}
    if when:
        body["dateTime"] = when
    return body


def test_offered_means_any_status_of_the_young_persons_own_consent_from_their_sixteenth_birthday():
    sixteen = date(2022, 8, 10)
    assert rules.own_consent_offered([consent("proposed", "2022-08-10")], sixteen) == date(2022, 8, 10)
    assert rules.own_consent_offered([consent("proposed", "2022-08-09")], sixteen) is None   # still 15
    assert rules.own_consent_offered([consent("rejected", "2022-09-01", provision="deny")], sixteen) == date(2022, 9, 1)
    assert rules.own_consent_offered([consent("entered-in-error", "2022-09-01")], sixteen) is None
    assert rules.own_consent_offered([consent("proposed", "2022-09-01", grantor="parent")], sixteen) is None
    assert rules.own_consent_offered([consent("proposed", None)], sixteen) == date(2022, 8, 15)  # when stored
    # offered but not signed: only a permitting active/inactive consent is signed
    offered = [consent("proposed", "2022-08-12"), consent("rejected", "2022-08-15")]
    assert rules.assessment_consent_date(offered, sixteen, own=True) is None
    signed = offered + [consent("active", "2022-08-20")]
    assert rules.assessment_consent_date(signed, sixteen, own=True) == date(2022, 8, 20)
    assert rules.own_consent_offered(signed, sixteen) == date(2022, 8, 12)


def audit(score: int, effective: str, status: str = "final") -> dict:
    return {"resourceType": "Observation", "status": status, "effectiveDateTime": effective,
            "code": {"coding": [{"system": rules.QUALITY_AUDIT, "code": "assessment-quality-audit"}]},
            "valueQuantity": {"value": score, "unit": "%"}}


def test_the_latest_audit_decides_and_the_pass_mark_is_inclusive():
    assert rules.audit_outcome([], 100) == (None, None)
    assert rules.audit_outcome([audit(100, "2022-09-01T10:00:00Z")], 100) == (100, True)
    assert rules.audit_outcome([audit(99, "2022-09-01T10:00:00Z")], 100) == (99, False)
    amended = [audit(83, "2022-09-01T10:00:00Z"), audit(100, "2022-09-03T10:00:00Z")]
    assert rules.audit_outcome(amended, 100) == (100, True)
    assert rules.audit_outcome([audit(100, "2022-09-01T10:00:00Z", "entered-in-error")], 100) == (None, None)
    other = dict(audit(100, "2022-09-01"), code={"coding": [{"system": LAC_OBS, "code": "sdq-total"}]})
    assert rules.audit_outcome([other], 100) == (None, None)


def task_versions(assessed: str | None, returned: str) -> list[dict]:
    def version(status, business, when, n):
        return {"resourceType": "Task", "id": "t1", "status": status, "intent": "order",
                "meta": {"versionId": str(n), "lastUpdated": "2026-11-01T10:00:00Z"},
                "code": {"coding": [{"system": rules.ASSESSMENT_TYPES, "code": "rha"}]},
                "restriction": {"period": {"end": "2022-06-30"}}, "authoredOn": "2022-05-03", "lastModified": when,
                "businessStatus": {"coding": [{"system": BS, "code": business}]},
                "output": [{"type": {"text": "assessment"}, "valueReference": {"reference": "QuestionnaireResponse/q1"}}]}
    steps = [version("accepted", "accepted", "2022-05-03", 1)]
    if assessed:
        steps.append(version("in-progress", "assessment-done", assessed, 2))
    return steps + [version("in-progress", "report-sent", returned, 3)]


@pytest.mark.parametrize("assessed, returned, working_days", [
    ("2022-06-01", "2022-06-10", 5),   # Thu 2 and Fri 3 June are bank holidays: day 5 is Friday 10th
    ("2022-06-01", "2022-06-13", 6),   # the next Monday is day 6: late
    ("2022-05-27", "2022-06-06", 4),   # Fri -> Mon 30, Tue 31, Wed 1, (2, 3), Mon 6
    (None, "2022-06-20", None),        # the assessment's date not recorded: not measured
])
def test_health_plan_return_counts_working_days_from_the_assessment(assessed, returned, working_days):
    facts = rules.assessment_facts(task_versions(assessed, returned), {"birthDate": "2012-01-01"}, [], "RDY",
                                   lambda e: None, RULES)
    assert facts["plan_return_wd"] == working_days
    assert facts["response_id"] == "q1"


def test_tariff_and_sdq_bands_are_configuration():
    loaded = rules.rules_from_dict({"tariff": {"currency": "GBP", "amounts": {"iha": 600, "rha": 300}},
                                    "health_plan": {"return_working_days": 7},
                                    "oc2": {"sdq_bands": [[17, "concern"], [0, "normal"]]}})
    assert loaded.tariffs == {"iha": 600.0, "rha": 300.0} and loaded.tariff_needs_audit_pass
    assert loaded.health_plan_return_wd == 7 and loaded.sdq_bands == ((0, "normal"), (17, "concern"))
    with pytest.raises(ValueError, match="unknown assessments"):
        rules.rules_from_dict({"tariff": {"amounts": {"adoption": 100}}})
    configured = rules.load_kpi_rules()
    assert configured.tariffs == {"iha": 600.0, "rha": 300.0} and configured.health_plan_return_wd == 5
    assert [label for _, label in configured.sdq_bands] == ["normal", "borderline", "cause-for-concern"]


def episode(start: str, end: str | None = None, legal: str | None = None, la: str = "LA-DEMO-1") -> dict:
    body = {"resourceType": "EpisodeOfCare", "status": "finished" if end else "active", "type": LOOKED_AFTER,
            "period": {"start": start, **({"end": end} if end else {})}, "managingOrganization": {"display": la}}
    if legal:
        body["extension"] = [{"url": LEGAL_STATUS, "valueCoding": {"code": legal}}]
    return body


def item(code: str, when: str = "2023-03-31", **value) -> dict:
    return {"resourceType": "Observation", "status": "final", "effectiveDateTime": when,
            "code": {"coding": [{"system": LAC_OBS, "code": code}]}, **value}


def rows(birth: str, episodes: list[dict], observations: list[dict] = ()) -> dict[int, dict]:
    found = oc2.oc2_facts({"birthDate": birth}, episodes, list(observations),
                          lambda e: e["managingOrganization"]["display"], RULES)
    return {r["year"]: r for r in found}


def test_the_oc2_cohort_is_the_export_rule_looked_after_from_1_april_to_31_march():
    assert 2023 in rows("2012-01-01", [episode("2022-04-01")])          # from 1 April: in
    assert 2023 not in rows("2012-01-01", [episode("2022-04-02")])      # a day short: out
    assert 2023 not in rows("2012-01-01", [episode("2020-01-01", "2023-03-30")])  # left before 31 March
    assert 2023 in rows("2012-01-01", [episode("2020-01-01", "2023-03-31")])
    assert 2023 not in rows("2012-01-01", [episode("2020-01-01", legal="V3")])   # short breaks
    # a transfer between LAs mid-year keeps the chain; the LA on 31 March is the new one
    moved = rows("2012-01-01", [episode("2021-01-01", "2022-09-30", la="LA-OLD"), episode("2022-09-30", la="LA-NEW")])
    assert moved[2023]["la"] == "LA-NEW" and moved[2022]["la"] == "LA-OLD"
    assert 2023 not in rows("2012-01-01", [episode("2021-01-01", "2022-09-29"), episode("2022-09-30")])  # a gap
    # an open episode gives the rows of every census year before the child's 18th birthday (1 Jan 2030)
    assert sorted(rows("2012-01-01", [episode("2022-04-01")])) == list(range(2023, 2030))


def test_oc2_items_apply_by_age_on_31_march():
    four = rows("2018-04-01", [episode("2021-06-01")], [item("development-check-up-to-date", valueBoolean=True),
                                                         item("sdq-total", valueInteger=12)])[2023]
    assert four["health_check_applies"] and four["health_check"] is True
    assert four["sdq_applies"] and four["sdq_score"] == 12 and four["age_band"] == "0-4"
    five = rows("2018-03-31", [episode("2021-06-01")], [item("development-check-up-to-date", valueBoolean=True)])[2023]
    assert not five["health_check_applies"] and five["health_check"] is None and five["age_band"] == "5-9"
    young = rows("2019-04-01", [episode("2021-06-01")], [item("sdq-total", valueInteger=3)])[2023]
    assert not young["sdq_applies"] and young["sdq_score"] is None    # not yet 4 by 31 March
    teen = rows("2006-05-05", [episode("2019-01-01")], [
        item("immunisations-up-to-date", valueBoolean=False), item("dental-check-last-12-months", valueBoolean=True),
        item("substance-misuse-identified", valueBoolean=True), item("health-assessment-up-to-date", valueBoolean=True),
        item("sdq-total", dataAbsentReason={"coding": [{"system": BASE + "CodeSystem/ssda903-sdq-reason",
                                                        "code": "SDQ2"}]}),
        item("immunisations-up-to-date", when="2022-03-31", valueBoolean=True)])
    year = teen[2023]
    assert (year["immunisations"], year["teeth_check"], year["health_assessment"], year["substance_misuse"]) == \
        (False, True, True, True)
    assert year["sdq_score"] is None and year["sdq_reason"] == "SDQ2"
    assert teen[2022]["immunisations"] is True and teen[2022]["teeth_check"] is None  # each census its own items
