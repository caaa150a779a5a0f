"""The remaining measures of issue 7 over HTTP, on SQLite and PostgreSQL, with hand-computed
values: young people offered / signing their own consent, assessments passing the quality
audit, health plans returned in time, the out-of-area tariff and the SSDA903 OC2 outcomes.

Each test has its own months of 2022 (no other test has assessments due, returned or requested
then) and its own local authority codes, so the shared server's other data never counts. 2022
England & Wales bank holidays used: Thursday 2 and Friday 3 June.
"""

from __future__ import annotations

from tests.kpi.population import (
    assessment,
    child,
    counts,
    episode,
    evaluate,
    group,
    organisation,
    strata,
)
from tests.security.population import tagged
from tests.support.auth import headers_for

BASE = "https://lac-fhir-adapter.example/fhir/"
LAC_OBS = BASE + "CodeSystem/lac-observation"
AUDIT = BASE + "CodeSystem/lac-quality-audit"


def as_role(fhir, role: str):
    from tests.conftest import Fhir

    return Fhir(fhir.base, headers_for(role))


def consent(fhir, tag: str, patient_id: str, status: str, when: str, provision: str = "permit",
            gillick: bool = False) -> dict:
    """A Consent to an assessment with the young person as grantor (under 16: Gillick competent)."""
    competent = [{"url": BASE + "StructureDefinition/lac-consent-capacity",
                  "valueCoding": {"system": BASE + "CodeSystem/lac-consent-capacity", "code": "gillick-competent"}}]
    return fhir.create(tagged(tag, {
        "resourceType": "Consent", "status": status, "dateTime": when,
        "extension": [{"url": BASE + "StructureDefinition/lac-consent-grantor",
                       "valueCoding": {"system": BASE + "CodeSystem/lac-consent-grantor", "code": "young-person"}}]
        + (competent if gillick else []),
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "performer": [{"reference": f"Patient/{patient_id}"}],
        "provision": {"type": provision, "period": {"start": when},
                      "purpose": [{"system": BASE + "CodeSystem/lac-consent-purpose", "code": "assessment"}]}}))


def test_young_people_offered_and_signing_their_own_consent(fhir, tag):
    la_code = f"LA-Y-{tag[:8]}"
    la, rdy = organisation(fhir, tag, la_code, la=True), organisation(fhir, tag, "RDY")
    born = {"y1": "2006-08-10",   # 16 on the due date, 10 Aug: offered (proposed) on the birthday
            "y2": "2006-08-11",   # 16 the day after the due date: not counted
            "y3": "2005-01-01",   # signed (active)
            "y4": "2005-02-02",   # refused (rejected): offered, not signed
            "y5": "2004-12-12",   # nothing recorded
            "y6": "2006-03-03"}   # offered at 15 (Gillick competent), the day before their 16th birthday: not counted
    due = {"y1": "2022-08-10", "y2": "2022-08-10", "y3": "2022-08-20", "y4": "2022-08-25", "y5": "2022-08-31",
           "y6": "2022-08-15"}
    ids = {}
    for key, birth in born.items():
        ids[key] = child(fhir, tag, birth)
        episode(fhir, tag, ids[key], la, "2019-01-07")
        assessment(fhir, tag, ids[key], rdy, "rha", [("requested", "request-sent", "2022-07-01")], due=due[key])
    consent(fhir, tag, ids["y1"], "proposed", "2022-08-10")
    consent(fhir, tag, ids["y3"], "active", "2022-07-01")
    consent(fhir, tag, ids["y4"], "rejected", "2022-08-01", provision="deny")
    consent(fhir, tag, ids["y6"], "proposed", "2022-03-02", gillick=True)

    report = evaluate(fhir, "young-people-own-consent", "2022-08-01", "2022-08-31")
    assert report["measure"].endswith("Measure/young-people-own-consent|0.2.0")
    assert counts(group(report, "offered")["population"]) == {"initial-population": 5, "denominator": 5, "numerator": 3}
    assert group(report, "offered")["measureScore"]["value"] == 0.6
    assert counts(group(report, "signed")["population"]) == {"initial-population": 5, "denominator": 5, "numerator": 1}
    assert strata(report, "offered", "la")[la_code]["counts"]["numerator"] == 3
    assert set(strata(report, "signed", "age-band")) == {"16-17"}

    listed = evaluate(fhir, "young-people-own-consent", "2022-08-01", "2022-08-31", reportType="subject-list")
    lists = {c["id"]: {e["item"]["reference"] for e in c.get("entry", [])} for c in listed["contained"]}
    assert lists["offered-numerator"] == {f"Patient/{ids[k]}" for k in ("y1", "y3", "y4")}
    assert lists["signed-numerator"] == {f"Patient/{ids['y3']}"}


def returned_task(fhir, tag: str, patient_id: str, owner: str, kind: str, steps: list, with_response: bool = True):
    """An assessment Task whose outputs name its report (a QuestionnaireResponse), and the response."""
    response = fhir.create({"resourceType": "QuestionnaireResponse", "status": "completed",
                            "subject": {"reference": f"Patient/{patient_id}"}}) if with_response else None
    extra = {"output": [{"type": {"text": "assessment"},
                         "valueReference": {"reference": f"QuestionnaireResponse/{response['id']}"}}]} \
        if response else {}
    return assessment(fhir, tag, patient_id, owner, kind, steps, due="2022-12-31", **extra), response


def audit(fhir, patient_id: str, response: dict, score: int) -> dict:
    """The quality audit Observation of a report, as kpi/quality.py stores it."""
    ref = f"QuestionnaireResponse/{response['id']}"
    return fhir.create({"resourceType": "Observation", "status": "final",
                        "identifier": [{"system": BASE + "Id/quality-audit", "value": ref}],
                        "code": {"coding": [{"system": AUDIT, "code": "assessment-quality-audit"}]},
                        "subject": {"reference": f"Patient/{patient_id}"}, "focus": [{"reference": ref}],
                        "effectiveDateTime": "2026-11-01T10:00:00Z",
                        "valueQuantity": {"value": score, "unit": "%", "system": "http://unitsofmeasure.org",
                                          "code": "%"},
                        "interpretation": [{"text": "passed" if score >= 100 else "failed"}]})


def test_assessments_returned_in_the_period_audited_and_passing(fhir, tag):
    la_code = f"LA-Q-{tag[:8]}"
    la, rdy = organisation(fhir, tag, la_code, la=True), organisation(fhir, tag, "RDY")
    kids = [child(fhir, tag, "2012-03-03") for _ in range(5)]
    for c in kids:
        episode(fhir, tag, c, la, "2019-01-07")

    def steps(returned: str) -> list:
        return [("accepted", "accepted", "2022-08-15"), ("in-progress", "report-sent", returned)]

    audit_first = returned_task(fhir, tag, kids[0], rdy, "rha", [("accepted", "accepted", "2022-08-15")])
    audit(fhir, kids[0], audit_first[1], 100)          # audited before the report is marked returned
    task = dict(audit_first[0], status="in-progress", lastModified="2022-09-01",
                businessStatus={"coding": [{"system": BASE + "CodeSystem/lac-task-business-status",
                                            "code": "report-sent"}]})
    assert fhir.put(f"Task/{task['id']}", task).status_code == 200        # returned 1 September: passed
    _, failed = returned_task(fhir, tag, kids[1], rdy, "rha", steps("2022-09-30"))
    audit(fhir, kids[1], failed, 99)                                        # one short of the pass mark
    returned_task(fhir, tag, kids[2], rdy, "iha", steps("2022-09-15"))     # not audited
    _, amended = returned_task(fhir, tag, kids[3], rdy, "rha", steps("2022-09-20"))
    first = audit(fhir, kids[3], amended, 83)
    assert fhir.put(f"Observation/{first['id']}", dict(first, valueQuantity=dict(first["valueQuantity"], value=100),
                                                       effectiveDateTime="2026-11-02T10:00:00Z")).status_code == 200
    _, later = returned_task(fhir, tag, kids[4], rdy, "rha", steps("2022-10-03"))  # returned in October
    audit(fhir, kids[4], later, 100)

    report = evaluate(fhir, "assessments-passing-quality-audit", "2022-09-01", "2022-09-30")
    assert counts(group(report, "audited")["population"]) == {"initial-population": 4, "denominator": 4, "numerator": 3}
    assert counts(group(report, "passed")["population"]) == {"initial-population": 4, "denominator": 4, "numerator": 2}
    assert group(report, "passed")["measureScore"]["value"] == 0.5
    by_provider = strata(report, "passed", "provider")
    assert by_provider["RDY"]["counts"]["numerator"] == 2
    assert {k: v["counts"]["denominator"] for k, v in strata(report, "audited", "la").items()} == {la_code: 4}


def test_health_plans_returned_within_five_working_days_of_the_assessment(fhir, tag):
    la_code = f"LA-H-{tag[:8]}"
    la, rdy = organisation(fhir, tag, la_code, la=True), organisation(fhir, tag, "RDY")
    kids = [child(fhir, tag, b) for b in ("2019-05-05", "2015-06-06", "2015-07-07", "2015-08-08", "2015-09-09")]
    for c in kids:
        episode(fhir, tag, c, la, "2019-01-07")

    def rha(c, assessed: str | None, returned: str):
        steps = [("accepted", "accepted", "2022-05-03")]
        if assessed:
            steps.append(("in-progress", "assessment-done", assessed))
        assessment(fhir, tag, c, rdy, "rha", steps + [("in-progress", "report-sent", returned)], due="2022-06-30")

    rha(kids[0], "2022-06-01", "2022-06-10")   # day 5 (2 and 3 June are bank holidays): in time
    rha(kids[1], "2022-06-01", "2022-06-13")   # day 6: late
    rha(kids[2], "2022-05-27", "2022-06-06")   # day 4: in time
    rha(kids[3], None, "2022-06-20")           # the assessment's date not recorded: not measured
    rha(kids[4], "2022-06-28", "2022-07-01")   # returned in July

    report = evaluate(fhir, "health-plans-returned-in-time", "2022-06-01", "2022-06-30")
    plans = group(report, "health-plan")
    assert counts(plans["population"]) == {"initial-population": 3, "denominator": 3, "numerator": 2}
    assert plans["measureScore"]["value"] == 0.6667
    assert {k: (v["counts"]["denominator"], v["counts"]["numerator"]) for k, v in strata(report, "health-plan", "age-band").items()} \
        == {"0-4": (1, 1), "5-9": (2, 1)}


def test_out_of_area_tariff_payable_and_receivable_in_gbp(fhir, tag):
    home = organisation(fhir, tag, "LA-DEMO-1", la=True)
    other_code = f"LA-R-{tag[:8]}"
    other = organisation(fhir, tag, other_code, la=True)
    provider_code = f"ZT{tag[:6]}"
    ooa, rdy = organisation(fhir, tag, provider_code), organisation(fhir, tag, "RDY")
    sent = [child(fhir, tag, "2012-10-10") for _ in range(5)]
    for c in sent:
        episode(fhir, tag, c, home, "2019-01-07", district="SO14", out_of_area=True)
    placed = child(fhir, tag, "2013-11-11")
    episode(fhir, tag, placed, other, "2019-01-07", district="BH17", out_of_area=True)

    def request(c, owner, kind: str, asked: str, returned: str | None, score: int | None, first="request-sent"):
        steps = [("requested", first, asked), ("accepted", "accepted", asked)]
        if returned:
            steps.append(("in-progress", "report-sent", returned))
        _, response = returned_task(fhir, tag, c, owner, kind, steps)
        if score is not None:
            audit(fhir, c, response, score)

    request(sent[0], ooa, "iha", "2022-10-03", "2022-10-20", 100)   # payable: 600
    request(sent[1], ooa, "rha", "2022-10-10", "2022-10-28", 100)   # payable: 300
    request(sent[2], ooa, "rha", "2022-10-12", "2022-10-27", 83)    # failed the audit: not paid
    request(sent[3], ooa, "iha", "2022-10-31", None, None)          # not returned yet
    request(sent[4], ooa, "rha", "2022-09-30", "2022-10-14", 100)   # requested in September
    request(placed, rdy, "rha", "2022-10-05", "2022-10-25", 100, first="notification-received")  # receivable: 300

    report = evaluate(fhir, "out-of-area-tariff", "2022-10-01", "2022-10-31")
    payable = group(report, "payable")
    assert counts(payable["population"]) == {"initial-population": 4, "measure-population": 2}
    assert payable["measureScore"] == {"value": 900.0, "unit": "GBP", "system": "urn:iso:std:iso:4217", "code": "GBP"}
    by_provider = strata(report, "payable", "provider")
    assert by_provider[provider_code]["counts"] == {"initial-population": 4, "measure-population": 2}
    receivable = group(report, "receivable")
    assert counts(receivable["population"]) == {"initial-population": 1, "measure-population": 1}
    assert receivable["measureScore"]["value"] == 300.0
    assert set(strata(report, "receivable", "la")) == {other_code}
    outcome = fhir.post("MeasureReport/$validate", report).json()
    assert not [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")], outcome
    # the turnaround of the same requests stays with out-of-area-requests
    turnaround = evaluate(fhir, "out-of-area-requests", "2022-10-01", "2022-10-31")
    assert counts(group(turnaround, "sent")["population"]) == {"initial-population": 4, "measure-population": 3}
    assert group(turnaround, "sent")["measureScore"]["value"] == 12.67   # (13 + 14 + 11) working days / 3


def oc2_item(fhir, tag: str, patient_id: str, code: str, **value) -> dict:
    return fhir.create(tagged(tag, {"resourceType": "Observation", "status": "final", "effectiveDateTime": "2023-03-31",
                                    "code": {"coding": [{"system": LAC_OBS, "code": code}]},
                                    "subject": {"reference": f"Patient/{patient_id}"}, **value}))


def test_oc2_health_outcomes_of_the_children_looked_after_for_twelve_months(fhir, tag):
    la_code, old_code = f"LA-O-{tag[:8]}", f"LA-N-{tag[:8]}"
    la, old = organisation(fhir, tag, la_code, la=True), organisation(fhir, tag, old_code, la=True)
    k = {key: child(fhir, tag, birth) for key, birth in {
        "k1": "2018-04-01",   # 4 on 31 March 2023: under 5, SDQ age
        "k2": "2018-03-31",   # turns 5 on 31 March 2023: no longer under 5
        "k3": "2010-05-05",   # transferred from another LA mid-year
        "k4": "2010-06-06",   # entered care on 2 April 2022: one day short
        "k5": "2009-01-01",   # left care on 30 March 2023
        "k6": "2007-02-02",   # 16, nothing recorded
    }.items()}
    episode(fhir, tag, k["k1"], la, "2021-06-01")
    episode(fhir, tag, k["k2"], la, "2022-04-01")
    episode(fhir, tag, k["k3"], old, "2021-01-01", end="2022-09-30")
    episode(fhir, tag, k["k3"], la, "2022-09-30")
    episode(fhir, tag, k["k4"], la, "2022-04-02")
    episode(fhir, tag, k["k5"], la, "2020-01-01", end="2023-03-30")
    episode(fhir, tag, k["k6"], la, "2019-01-07")
    for code in ("immunisations-up-to-date", "dental-check-last-12-months", "health-assessment-up-to-date",
                 "development-check-up-to-date"):
        oc2_item(fhir, tag, k["k1"], code, valueBoolean=True)
    oc2_item(fhir, tag, k["k1"], "sdq-total", valueInteger=13)
    oc2_item(fhir, tag, k["k2"], "immunisations-up-to-date", valueBoolean=False)
    oc2_item(fhir, tag, k["k2"], "development-check-up-to-date", valueBoolean=True)   # not counted at 5
    oc2_item(fhir, tag, k["k2"], "health-assessment-up-to-date", valueBoolean=True)
    oc2_item(fhir, tag, k["k2"], "sdq-total", valueInteger=14)
    oc2_item(fhir, tag, k["k3"], "dental-check-last-12-months", valueBoolean=True)
    oc2_item(fhir, tag, k["k3"], "substance-misuse-identified", valueBoolean=True)
    oc2_item(fhir, tag, k["k3"], "sdq-total", valueInteger=17)
    for key in ("k4", "k5"):
        oc2_item(fhir, tag, k[key], "immunisations-up-to-date", valueBoolean=True)

    report = evaluate(fhir, "oc2-health-outcomes", "2022-04-01", "2023-03-31")

    def mine(gid: str) -> dict:
        return strata(report, gid, "la").get(la_code, {}).get("counts")

    assert mine("immunisations") == {"initial-population": 4, "denominator": 4, "numerator": 1}
    assert mine("dental-check") == {"initial-population": 4, "denominator": 4, "numerator": 2}
    assert mine("health-assessment") == {"initial-population": 4, "denominator": 4, "numerator": 2}
    assert mine("health-check-under-5") == {"initial-population": 4, "denominator": 1, "numerator": 1}
    assert mine("sdq-completed") == {"initial-population": 4, "denominator": 4, "numerator": 3}
    assert mine("substance-misuse") == {"initial-population": 4, "denominator": 4, "numerator": 1}
    assert strata(report, "immunisations", "la")[la_code]["score"] == 0.25
    assert old_code not in strata(report, "immunisations", "la")
    assert mine("sdq-bands") == {"initial-population": 3}
    for key, band in (("k1", "normal"), ("k2", "borderline"), ("k3", "cause-for-concern")):   # 13, 14, 17
        one = evaluate(fhir, "oc2-health-outcomes", "2022-04-01", "2023-03-31", patient=f"Patient/{k[key]}")
        assert {s: v["counts"]["initial-population"] for s, v in strata(one, "sdq-bands", "sdq-band").items()} == {band: 1}

    listed = evaluate(fhir, "oc2-health-outcomes", "2022-04-01", "2023-03-31", reportType="subject-list")
    outcome = fhir.post("MeasureReport/$validate", listed).json()
    assert not [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")], outcome
    lists = {c["id"]: {e["item"]["reference"] for e in c.get("entry", [])} for c in listed["contained"]}
    ours = {f"Patient/{k[key]}" for key in k}
    assert lists["immunisations-initial-population"] & ours == {f"Patient/{k[x]}" for x in ("k1", "k2", "k3", "k6")}
    assert lists["sdq-bands-initial-population"] & ours == {f"Patient/{k[x]}" for x in ("k1", "k2", "k3")}
    # the census of another year is not this period's
    other_year = evaluate(fhir, "oc2-health-outcomes", "2023-04-01", "2024-03-31")
    assert strata(other_year, "immunisations", "la")[la_code]["counts"]["numerator"] == 0

    # a local authority sees only its own children: none of these
    theirs = evaluate(as_role(fhir, "la"), "oc2-health-outcomes", "2022-04-01", "2023-03-31")
    assert la_code not in strata(theirs, "immunisations", "la")
    r = as_role(fhir, "la").get("Measure/oc2-health-outcomes/$evaluate-measure",
                                params={"periodStart": "2022-04-01", "periodEnd": "2023-03-31",
                                        "patient": f"Patient/{k['k1']}"})
    assert r.status_code == 404


def test_every_published_measure_is_valid_r4(fhir):
    import json
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[2] / "profiles" / "measures").glob("Measure-*.json")):
        measure = json.loads(path.read_text(encoding="utf-8"))
        outcome = fhir.post("Measure/$validate", measure).json()
        assert not [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")], (path.name, outcome)
        assert fhir.get(f"Measure/{measure['id']}").json()["version"] == measure["version"]
