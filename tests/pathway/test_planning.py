"""Planning the next assessment: pure, dates computed by hand (config/pathway.toml: 6 months
under 5, 12 from 5; summary 3 months before 18; cover to 21, 25 with an EHCP)."""

from __future__ import annotations

from datetime import date

import pytest

from adapter.pathway.planning import completed_on, load_planning_rules, next_assessment

SNOMED_LAC = {"coding": [{"system": "http://snomed.info/sct", "code": "764841000000100"}]}
CARE_LEAVER = {"coding": [{"system": "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-episode-type",
                           "code": "care-leaver"}]}
TODAY = date(2026, 11, 22)


@pytest.fixture(scope="module")
def rules():
    return load_planning_rules()


def child(born: str) -> dict:
    return {"resourceType": "Patient", "id": "p1", "birthDate": born}


def episode(district: str | None = "BH15", out: bool | None = False, status: str = "active",
            kind: dict = SNOMED_LAC, ehcp: bool | None = None) -> dict:
    subs = [{"url": "type", "valueCoding": {"code": "U3"}}]
    if district is not None:
        subs.append({"url": "postcodeDistrict", "valueString": district})
    if out is not None:
        subs.append({"url": "outOfArea", "valueBoolean": out})
    ext = [{"url": "https://lac-fhir-adapter.example/fhir/StructureDefinition/lac-placement", "extension": subs}]
    if ehcp is not None:
        ext.append({"url": "https://lac-fhir-adapter.example/fhir/StructureDefinition/lac-ehcp", "valueBoolean": ehcp})
    return {"resourceType": "EpisodeOfCare", "id": "e1", "status": status, "type": [kind], "extension": ext}


def plan(born, last, rules, today=TODAY, **kw):
    ep = kw.pop("ep", None) or episode()
    return next_assessment(child(born), ep, last, today, rules, **kw)


def test_under_five_six_months_in_area(rules):
    p = plan("2023-03-10", date(2026, 11, 20), rules)
    assert (p.assessment, p.due, p.route.ods) == ("rha", date(2027, 5, 20), "RDY")
    assert "6 months" in p.basis


def test_five_and_over_twelve_months(rules):
    p = plan("2018-01-01", date(2026, 11, 20), rules)
    assert (p.assessment, p.due) == ("rha", date(2027, 11, 20))
    assert "12 months" in p.basis


@pytest.mark.parametrize("born,due", [
    ("2022-05-21", date(2027, 5, 20)),   # still 4 on 20 May 2027: six months
    ("2022-05-20", date(2027, 11, 20)),  # five on the day six months would fall: twelve months
    ("2022-02-01", date(2027, 11, 20)),  # turns five before the six months are up
])
def test_child_turning_five(rules, born, due):
    assert plan(born, date(2026, 11, 20), rules).due == due


@pytest.mark.parametrize("born,last,due", [
    ("2024-02-29", date(2027, 8, 29), date(2028, 2, 29)),  # six months lands on a leap day
    ("2024-02-29", date(2027, 8, 31), date(2028, 2, 29)),  # 31 Aug + 6 months -> 29 Feb 2028
    ("2020-02-29", date(2024, 8, 27), date(2025, 2, 27)),  # 5th birthday is 28 Feb 2025: still 4
    ("2020-02-29", date(2024, 8, 28), date(2025, 8, 28)),  # six months = 28 Feb 2025 = 5th birthday
])
def test_leap_day_birthdays(rules, born, last, due):
    assert plan(born, last, rules).due == due


def test_out_of_area_and_unknown_routing(rules):
    assert plan("2018-01-01", date(2026, 11, 20), rules, ep=episode("SO14", True)).route.ods == "ZZ901"
    unrouted = plan("2018-01-01", date(2026, 11, 20), rules, ep=episode("NE1", True))
    assert unrouted.route.ods is None and unrouted.route.reason.startswith("unrouted")
    assert unrouted.due == date(2027, 11, 20)  # still planned: a person routes it


def test_seventeen_and_three_quarters_gets_the_leaving_care_summary(rules):
    # born 1 Mar 2009: 18 on 1 Mar 2027, summary due 1 Dec 2026; 17 years 9 months on 1 Dec 2026.
    p = plan("2009-03-01", date(2026, 11, 20), rules, today=date(2026, 12, 1))
    assert (p.assessment, p.due, p.route.ods) == ("leaving-care-summary", date(2026, 12, 1), "RDY")
    # once it exists: the next RHA (20 Nov 2027) is after 18, so nothing
    assert plan("2009-03-01", date(2026, 11, 20), rules, today=date(2026, 12, 1), summary_exists=True) is None


def test_summary_due_in_the_past_is_due_today(rules):
    # born 1 Jan 2009: summary due 1 Oct 2026, already past on 22 Nov 2026
    p = plan("2009-01-01", date(2026, 11, 20), rules)
    assert (p.assessment, p.due) == ("leaving-care-summary", TODAY)


def test_sixteen_year_old_gets_an_rha_not_the_summary(rules):
    # born 15 Jun 2010: summary due 15 Mar 2028; next RHA 20 Nov 2027 comes first
    p = plan("2010-06-15", date(2026, 11, 20), rules)
    assert (p.assessment, p.due) == ("rha", date(2027, 11, 20))


def test_rha_between_summary_and_eighteen_once_the_summary_exists(rules):
    # born 1 Feb 2010: summary due 1 Nov 2027; RHA 20 Nov 2027 is before 18 (1 Feb 2028)
    assert plan("2010-02-01", date(2026, 11, 20), rules).assessment == "leaving-care-summary"
    p = plan("2010-02-01", date(2026, 11, 20), rules, summary_exists=True)
    assert (p.assessment, p.due) == ("rha", date(2027, 11, 20))


def test_finished_or_no_episode_gets_nothing(rules):
    assert plan("2018-01-01", date(2026, 11, 20), rules, ep=episode(status="finished")) is None
    assert next_assessment(child("2018-01-01"), None, date(2026, 11, 20), TODAY, rules) is None


def test_care_leaver_gets_the_summary_while_covered(rules):
    leaver = episode(kind=CARE_LEAVER, ehcp=False)
    p = plan("2008-09-01", None, rules, ep=leaver)
    assert (p.assessment, p.due) == ("leaving-care-summary", TODAY)
    assert plan("2008-09-01", None, rules, ep=leaver, summary_exists=True) is None
    # cover ends the day before the 21st birthday (31 Dec 2023) ...
    assert plan("2003-01-01", None, rules, ep=leaver) is None
    # ... or the 25th with an EHCP (31 Dec 2027)
    assert plan("2003-01-01", None, rules, ep=episode(kind=CARE_LEAVER, ehcp=True)).assessment == "leaving-care-summary"
    # a finished care-leaver episode: nothing
    assert plan("2008-09-01", None, rules, ep=episode(kind=CARE_LEAVER, status="finished")) is None


def test_no_birth_date_or_no_last_assessment_plans_nothing(rules):
    assert plan("2018", date(2026, 11, 20), rules) is None
    assert plan("2018-01-01", None, rules) is None


def test_completed_on():
    task = {"executionPeriod": {"end": "2026-11-20T10:00:00Z"}, "lastModified": "2026-11-21T00:00:00Z"}
    assert completed_on(task) == date(2026, 11, 20)
    assert completed_on({"lastModified": "2026-11-21T09:00:00Z"}) == date(2026, 11, 21)
    assert completed_on({"meta": {"lastUpdated": "2026-11-22T09:00:00Z"}}) == date(2026, 11, 22)
    assert completed_on(date(2026, 1, 2)) == date(2026, 1, 2)
    assert completed_on("2026-01-02") == date(2026, 1, 2)
    assert completed_on(None) is None
    # a completed Task passed as is
    p = next_assessment(child("2018-01-01"), episode(), task, TODAY, load_planning_rules())
    assert p.due == date(2027, 11, 20)
