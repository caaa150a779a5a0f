"""$evaluate-measure over HTTP on a hand-built population, on SQLite and PostgreSQL.

Hand-computed expectations. 2021 bank holidays: Monday 3 May, Monday 31 May. Children entering
care on Friday 30 April 2021 have their IHA due on Tuesday 1 June (working day 20).
"""

from __future__ import annotations

import pytest

from tests.kpi.population import (
    ASSESSMENT,
    BS,
    assessment,
    child,
    counts,
    episode,
    episode_body,
    evaluate,
    group,
    iha_steps,
    organisation,
    strata,
)
from tests.security.population import tagged
from tests.support.auth import headers_for
from tests.support.data import NHS, nhs_number

IHA = "iha-within-20-working-days"
RHA = "rha-by-due-date"
OOA = "out-of-area-requests"
DELAY_SEGMENT = "https://lac-fhir-adapter.example/fhir/StructureDefinition/lac-delay-segment"
DELAY_CAUSE = "https://lac-fhir-adapter.example/fhir/StructureDefinition/lac-delay-cause"


def as_role(fhir, role: str):
    from tests.conftest import Fhir

    return Fhir(fhir.base, headers_for(role))


def test_measures_are_published_and_readable_by_partners(fhir):
    found = fhir.search("Measure", url=f"https://lac-fhir-adapter.example/fhir/Measure/{IHA}")
    assert found["entry"][0]["resource"]["id"] == IHA
    r = as_role(fhir, "la").get(f"Measure/{RHA}")
    assert r.status_code == 200 and r.json()["scoring"]["coding"][0]["code"] == "proportion"


def test_iha_day_20_on_time_day_21_late_by_la_provider_placement_and_age(fhir, tag):
    la = organisation(fhir, tag, "LA-DEMO-1", la=True)
    other_la_code = f"LA-P-{tag[:8]}"
    other_la = organisation(fhir, tag, other_la_code, la=True)
    rd3, zz = organisation(fhir, tag, "RD3"), organisation(fhir, tag, "ZZ907")
    c1, c2, c3, c4 = (child(fhir, tag, b) for b in ("2016-09-10", "2010-01-15", "2005-03-01", "2014-06-01"))
    episode(fhir, tag, c1, la, "2021-04-30")
    episode(fhir, tag, c2, la, "2021-04-30")
    episode(fhir, tag, c3, other_la, "2021-04-30", district="BH17", out_of_area=True)  # placed in our area
    episode(fhir, tag, c4, la, "2021-04-30", district="SO14", out_of_area=True)
    assessment(fhir, tag, c1, rd3, "iha", iha_steps("2021-05-04", "2021-06-01"))            # day 20
    assessment(fhir, tag, c2, rd3, "iha", iha_steps("2021-05-07", "2021-06-02", consent="2021-05-11",
                                                    requested="2021-05-12", assessed="2021-05-28"))  # day 21
    assessment(fhir, tag, c3, rd3, "iha", iha_steps("2021-05-04", "2021-05-27"))
    assessment(fhir, tag, c4, zz, "iha", iha_steps("2021-05-21", "2021-06-04"))            # told late

    report = evaluate(fhir, IHA, "2021-06-01", "2021-06-30")
    assert report["type"] == "summary" and report["period"] == {"start": "2021-06-01", "end": "2021-06-30"}
    assert report["measure"].endswith(f"Measure/{IHA}|0.1.0")
    iha = group(report, "iha")
    assert counts(iha["population"]) == {"initial-population": 4, "denominator": 4, "numerator": 2}
    assert iha["measureScore"]["value"] == 0.5
    by_la = strata(report, "iha", "la")
    assert by_la["LA-DEMO-1"]["counts"]["denominator"] == 3 and by_la["LA-DEMO-1"]["counts"]["numerator"] == 1
    assert by_la["LA-DEMO-1"]["score"] == 0.3333
    assert by_la[other_la_code]["counts"]["numerator"] == 1 and by_la[other_la_code]["score"] == 1.0
    assert {k: (v["counts"]["denominator"], v["counts"]["numerator"]) for k, v in strata(report, "iha", "placement").items()} \
        == {"in-area": (2, 1), "out-of-area": (1, 0), "placed-in": (1, 1)}
    assert {k: (v["counts"]["denominator"], v["counts"]["numerator"]) for k, v in strata(report, "iha", "provider").items()} \
        == {"RD3": (3, 2), "ZZ907": (1, 0)}
    assert {k: (v["counts"]["denominator"], v["counts"]["numerator"]) for k, v in strata(report, "iha", "age-band").items()} \
        == {"0-4": (1, 1), "10-15": (1, 0), "16-17": (1, 1), "5-9": (1, 0)}

    # reasons for delay: c2 lost its days in scheduling, c4 waited 14 working days for the LA
    delays = group(report, "delay-reasons")
    assert counts(delays["population"]) == {"initial-population": 2}
    caused = {k: v["counts"]["initial-population"] for k, v in strata(report, "delay-reasons", "breach-segment").items()}
    assert caused == {"notification": 1, "consent": 0, "referral": 0, "scheduling": 1, "did-not-attend": 0, "report": 0}
    segments = {e["extension"][0]["valueCode"]: {s["url"]: list(s.values())[1] for s in e["extension"][1:]}
                for e in delays["extension"] if e["url"] == DELAY_SEGMENT}
    assert segments["notification"] == {"caused": 1, "totalWorkingDays": 18, "meanWorkingDays": 9.0}
    assert segments["scheduling"] == {"caused": 1, "totalWorkingDays": 21, "meanWorkingDays": 10.5}
    assert segments["report"]["totalWorkingDays"] == 2

    listed = evaluate(fhir, IHA, "2021-06-01", "2021-06-30", reportType="subject-list")
    assert listed["type"] == "subject-list"
    for produced in (report, listed):  # valid R4 MeasureReports
        outcome = fhir.post("MeasureReport/$validate", produced).json()
        assert not [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")], outcome
    lists = {c["id"]: c for c in listed["contained"]}
    numerator = next(p for p in group(listed, "iha")["population"] if p["code"]["coding"][0]["code"] == "numerator")
    members = lists[numerator["subjectResults"]["reference"][1:]]["entry"]
    assert [e["item"]["reference"] for e in members] == sorted([f"Patient/{c1}", f"Patient/{c3}"])
    late = lists[group(listed, "delay-reasons")["population"][0]["subjectResults"]["reference"][1:]]["entry"]
    causes = {e["item"]["reference"]: e["extension"][0]["extension"][0]["valueCode"] for e in late}
    assert causes == {f"Patient/{c2}": "scheduling", f"Patient/{c4}": "notification"}

    # the out-of-area requests of May: sent for c4 (9 working days back), received for c3 (17)
    ooa = evaluate(fhir, OOA, "2021-05", "2021-05")
    assert counts(group(ooa, "sent")["population"]) == {"initial-population": 1, "measure-population": 1}
    assert group(ooa, "sent")["measureScore"]["value"] == 9.0
    assert counts(group(ooa, "received")["population"]) == {"initial-population": 1, "measure-population": 1}
    assert group(ooa, "received")["measureScore"] == {"value": 17.0, "unit": "working days"}


def test_a_local_authority_counts_and_lists_only_its_children(fhir, tag):
    la, other = organisation(fhir, tag, "LA-DEMO-1", la=True), organisation(fhir, tag, "LA-OTHER-2", la=True)
    rd3 = organisation(fhir, tag, "RD3")
    a1, a2, b1 = (child(fhir, tag, "2012-02-02") for _ in range(3))
    for c, org in ((a1, la), (a2, la), (b1, other)):
        episode(fhir, tag, c, org, "2021-07-16")                       # IHA due Friday 13 August
    assessment(fhir, tag, a1, rd3, "iha", iha_steps("2021-07-19", "2021-08-12"))
    assessment(fhir, tag, a2, rd3, "iha", [("requested", "notification-received", "2021-07-20")])  # still open
    assessment(fhir, tag, b1, rd3, "iha", iha_steps("2021-07-19", "2021-08-13"))

    admin = evaluate(fhir, IHA, "2021-08-01", "2021-08-31")
    assert counts(group(admin, "iha")["population"])["denominator"] == 3
    assert counts(group(admin, "iha")["population"])["numerator"] == 2

    mine = evaluate(as_role(fhir, "la"), IHA, "2021-08-01", "2021-08-31", reportType="subject-list")
    assert counts(group(mine, "iha")["population"]) == {"initial-population": 2, "denominator": 2, "numerator": 1}
    assert set(strata(mine, "iha", "la")) == {"LA-DEMO-1"}
    listed = {e["item"]["reference"] for c in mine["contained"] if c["id"] == "iha-denominator" for e in c["entry"]}
    assert listed == {f"Patient/{a1}", f"Patient/{a2}"}
    waiting = {k: v["counts"]["initial-population"] for k, v in strata(mine, "delay-reasons", "breach-segment").items()}
    assert waiting["consent"] == 1 and sum(waiting.values()) == 1  # a2 has waited for consent since 20 July

    theirs = evaluate(as_role(fhir, "other-la"), IHA, "2021-08-01", "2021-08-31")
    assert counts(group(theirs, "iha")["population"]) == {"initial-population": 1, "denominator": 1, "numerator": 1}
    nobody = evaluate(as_role(fhir, "ooa"), IHA, "2021-08-01", "2021-08-31")
    assert counts(group(nobody, "iha")["population"])["denominator"] == 0
    assert "measureScore" not in group(nobody, "iha")

    r = as_role(fhir, "la").get(f"Measure/{IHA}/$evaluate-measure",
                                params={"periodStart": "2021-08-01", "periodEnd": "2021-08-31", "patient": f"Patient/{b1}"})
    assert r.status_code == 404
    one = evaluate(as_role(fhir, "la"), IHA, "2021-08-01", "2021-08-31", patient=f"Patient/{a1}")
    assert one["type"] == "individual" and one["subject"] == {"reference": f"Patient/{a1}"}
    assert counts(group(one, "iha")["population"])["numerator"] == 1


def complete(fhir, task: dict, patient_id: str, when: str) -> dict:
    response = fhir.create({"resourceType": "QuestionnaireResponse", "status": "completed",
                            "subject": {"reference": f"Patient/{patient_id}"}})
    plan = fhir.create({"resourceType": "CarePlan", "status": "active", "intent": "plan",
                        "subject": {"reference": f"Patient/{patient_id}"}})
    body = dict(task, status="completed", lastModified=when, executionPeriod={"end": when},
                output=[{"type": {"text": "assessment"}, "valueReference": {"reference": f"QuestionnaireResponse/{response['id']}"}},
                        {"type": {"text": "health plan"}, "valueReference": {"reference": f"CarePlan/{plan['id']}"}}])
    r = fhir.put(f"Task/{task['id']}", body)
    assert r.status_code == 200, r.text
    return r.json()


def test_rha_interval_changes_when_the_child_turns_five(fhir, tag):
    la, rdy = organisation(fhir, tag, "LA-DEMO-1", la=True), organisation(fhir, tag, "RDY")
    x = child(fhir, tag, "2016-09-10")   # five on 10 Sep 2021: the next RHA is 12 months on
    y = child(fhir, tag, "2017-09-10")   # still four in Oct 2021: 6 months on
    planned = {}
    for c in (x, y):
        episode(fhir, tag, c, la, "2020-01-06")
        first = assessment(fhir, tag, c, rdy, "rha", [("in-progress", "appointment-booked", "2021-04-01")],
                           due="2021-04-20")
        done = complete(fhir, first, c, "2021-04-15")
        found = fhir.search("Task", identifier=f"https://lac-fhir-adapter.example/fhir/Id/planned-assessment|{done['id']}/next")
        planned[c] = found["entry"][0]["resource"]
    assert planned[x]["restriction"]["period"]["end"] == "2022-04-15"
    assert planned[y]["restriction"]["period"]["end"] == "2021-10-15"
    for c, when in ((x, "2022-01-20"), (y, "2021-12-01")):
        task = planned[c]
        for status, business in (("accepted", "accepted"), ("in-progress", "report-sent")):
            task = dict(task, status=status, lastModified=when,
                        businessStatus={"coding": [{"system": task["businessStatus"]["coding"][0]["system"],
                                                    "code": business}]})
            r = fhir.put(f"Task/{task['id']}", task)
            assert r.status_code == 200, r.text
            task = r.json()

    october = evaluate(fhir, RHA, "2021-10-01", "2021-10-31")
    assert counts(group(october, "rha")["population"]) == {"initial-population": 1, "denominator": 1, "numerator": 0}
    assert set(strata(october, "rha", "age-band")) == {"0-4"}
    april = evaluate(fhir, RHA, "2022-04-01", "2022-04-30")
    assert counts(group(april, "rha")["population"]) == {"initial-population": 1, "denominator": 1, "numerator": 1}
    assert set(strata(april, "rha", "age-band")) == {"5-9"}
    first_round = evaluate(fhir, RHA, "2021-04-01", "2021-04-30")
    assert counts(group(first_round, "rha")["population"])["numerator"] == 2


def test_a_transfer_mid_period_moves_the_assessment_to_the_new_la(fhir, tag):
    code = f"LA-T-{tag[:8]}"
    old, new = organisation(fhir, tag, code, la=True), organisation(fhir, tag, "LA-DEMO-1", la=True)
    rdy = organisation(fhir, tag, "RDY")
    t1, t2 = child(fhir, tag, "2011-05-05"), child(fhir, tag, "2011-06-06")
    first = {c: episode(fhir, tag, c, old, "2020-01-06") for c in (t1, t2)}
    assessment(fhir, tag, t1, rdy, "rha", [("requested", "request-sent", "2021-02-22"), ("accepted", "accepted", "2021-02-23"),
                                            ("in-progress", "report-sent", "2021-03-24")], due="2021-03-25")
    assessment(fhir, tag, t2, rdy, "rha", [("requested", "request-sent", "2021-02-22"), ("accepted", "accepted", "2021-02-23"),
                                            ("in-progress", "report-sent", "2021-03-12")], due="2021-03-10")
    before = evaluate(fhir, RHA, "2021-03-01", "2021-03-31")
    assert {k: v["counts"]["denominator"] for k, v in strata(before, "rha", "la").items()} == {code: 2}
    assert {k: v["counts"]["denominator"] for k, v in strata(before, "rha", "placement").items()} == {"placed-in": 2}

    for c in (t1, t2):  # responsibility passes to LA-DEMO-1 on 16 March
        r = fhir.put(f"EpisodeOfCare/{first[c]['id']}", dict(first[c], status="finished",
                                                              period={"start": "2020-01-06", "end": "2021-03-15"}))
        assert r.status_code == 200, r.text
        episode(fhir, tag, c, new, "2021-03-16")
    after = evaluate(fhir, RHA, "2021-03-01", "2021-03-31")
    assert counts(group(after, "rha")["population"]) == {"initial-population": 2, "denominator": 2, "numerator": 1}
    by_la = strata(after, "rha", "la")
    assert by_la["LA-DEMO-1"]["counts"] == {"initial-population": 1, "denominator": 1, "numerator": 1}  # t1, due 25 March
    assert by_la[code]["counts"] == {"initial-population": 1, "denominator": 1, "numerator": 0}         # t2, due 10 March
    assert {k: v["counts"]["denominator"] for k, v in strata(after, "rha", "placement").items()} \
        == {"in-area": 1, "placed-in": 1}


@pytest.mark.parametrize("params, message", [
    ({"periodEnd": "2021-06-30"}, "periodStart is required"),
    ({"periodStart": "2021-13-01", "periodEnd": "2021-06-30"}, "is not a date"),
    ({"periodStart": "2021-06-30", "periodEnd": "2021-06-01"}, "before periodStart"),
    ({"periodStart": "2021-06", "periodEnd": "2021-06", "reportType": "everything"}, "reportType"),
])
def test_bad_parameters_are_refused(fhir, params, message):
    r = fhir.get(f"Measure/{IHA}/$evaluate-measure", params=params)
    assert r.status_code == 400 and message in r.json()["issue"][0]["diagnostics"]


def test_type_level_by_canonical_and_unknown_measure(fhir):
    r = fhir.get("Measure/$evaluate-measure", params={"measure": f"https://lac-fhir-adapter.example/fhir/Measure/{RHA}",
                                                       "periodStart": "2019", "periodEnd": "2019"})
    assert r.status_code == 200 and r.json()["period"] == {"start": "2019-01-01", "end": "2019-12-31"}
    assert fhir.get("Measure/nope/$evaluate-measure", params={"periodStart": "2019", "periodEnd": "2019"}).status_code == 404


def own_consent(fhir, tag: str, patient_id: str, when: str, grantor: str) -> dict:
    from tests.security.population import tagged

    base = "https://lac-fhir-adapter.example/fhir/"
    return fhir.create(tagged(tag, {
        "resourceType": "Consent", "status": "active", "dateTime": when,
        "extension": [{"url": base + "StructureDefinition/lac-consent-grantor",
                       "valueCoding": {"system": base + "CodeSystem/lac-consent-grantor", "code": grantor}}],
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "performer": [{"reference": f"Patient/{patient_id}"}],
        "provision": {"type": "permit", "period": {"start": when},
                      "purpose": [{"system": base + "CodeSystem/lac-consent-purpose", "code": "assessment"}]}}))


def test_young_people_signing_their_own_consent_and_quality_assurance(fhir, tag):
    la, rdy = organisation(fhir, tag, "LA-DEMO-1", la=True), organisation(fhir, tag, "RDY")
    y1, y2, y3 = child(fhir, tag, "2005-01-01"), child(fhir, tag, "2005-02-02"), child(fhir, tag, "2010-03-03")
    for c in (y1, y2, y3):
        episode(fhir, tag, c, la, "2019-01-07")
    steps = [("requested", "request-sent", "2021-08-02"), ("accepted", "accepted", "2021-08-03")]
    assessment(fhir, tag, y1, rdy, "rha", steps + [("in-progress", "report-sent", "2021-09-10"),
                                                   ("in-progress", "quality-assured", "2021-09-20")], due="2021-09-15")
    assessment(fhir, tag, y2, rdy, "rha", steps + [("in-progress", "report-sent", "2021-09-12")], due="2021-09-15")
    assessment(fhir, tag, y3, rdy, "rha", steps + [("in-progress", "report-sent", "2021-10-01")], due="2021-09-15")
    own_consent(fhir, tag, y1, "2021-08-20", "young-person")   # stored after the Task: the facts follow

    own = evaluate(fhir, "young-people-own-consent", "2021-09-01", "2021-09-30")
    assert counts(group(own, "signed")["population"]) == {"initial-population": 2, "denominator": 2, "numerator": 1}
    assert set(strata(own, "signed", "age-band")) == {"16-17"}
    qa = evaluate(fhir, "assessments-quality-assured", "2021-09-01", "2021-09-30")
    assert counts(group(qa, "quality-assured")["population"]) == {"initial-population": 2, "denominator": 2,
                                                                  "numerator": 1}
    rha = evaluate(fhir, RHA, "2021-09-01", "2021-09-30")
    assert counts(group(rha, "rha")["population"]) == {"initial-population": 3, "denominator": 3, "numerator": 2}


def test_a_measure_in_a_transaction_counts_the_children_written_before_it(fhir, tag):
    """The facts a transaction's writes make stale are settled before a Measure reads them, not
    only at commit: a GET entry of the same transaction Bundle counts the child it wrote."""
    la, rd3 = organisation(fhir, tag, "LA-DEMO-1", la=True), organisation(fhir, tag, "RD3")
    patient = tagged(tag, {"resourceType": "Patient", "birthDate": "2012-02-02",
                           "identifier": [{"system": NHS, "value": nhs_number(811)}]})
    stay = episode_body(tag, "urn:uuid:0b9a8e1c-0000-4000-8000-000000000001", la, "2014-10-01")
    task = tagged(tag, {"resourceType": "Task", "status": "requested", "intent": "order",
                        "code": {"coding": [{"system": ASSESSMENT, "code": "iha"}]},
                        "for": {"reference": "urn:uuid:0b9a8e1c-0000-4000-8000-000000000001"},
                        "authoredOn": "2014-10-02", "owner": {"reference": f"Organization/{rd3}"},
                        "businessStatus": {"coding": [{"system": BS, "code": "notification-received"}]}})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b9a8e1c-0000-4000-8000-000000000001", "resource": patient,
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": stay, "request": {"method": "POST", "url": "EpisodeOfCare"}},
        {"resource": task, "request": {"method": "POST", "url": "Task"}},
        {"request": {"method": "GET", "url": f"Measure/{IHA}/$evaluate-measure?periodStart=2014-10-01"
                                             "&periodEnd=2014-11-30"}}]}
    r = fhir.post("", bundle)
    assert r.status_code == 200, r.text
    report = r.json()["entry"][3]["resource"]
    assert counts(group(report, "iha")["population"])["initial-population"] == 1
    assert counts(group(evaluate(fhir, IHA, "2014-10-01", "2014-11-30"), "iha")["population"])["initial-population"] == 1
