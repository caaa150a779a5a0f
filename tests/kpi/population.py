"""A small synthetic population for the commissioning measures, built through the HTTP API.

Each test uses its own months of 2021/22 (no other test writes assessments due then) and
its own organisation codes where it can, so the shared test server's other data never counts.
"""

from __future__ import annotations

from tests.security.population import LA_SYSTEM, ODS, tagged
from tests.support.data import NHS, nhs_number

BASE = "https://lac-fhir-adapter.example/fhir/"
ASSESSMENT = BASE + "CodeSystem/lac-assessment-type"
BS = BASE + "CodeSystem/lac-task-business-status"
PLACEMENT = BASE + "StructureDefinition/lac-placement"
LOOKED_AFTER = {"coding": [{"system": "http://snomed.info/sct", "code": "764841000000100"}]}

_serial = [700]


def organisation(fhir, tag: str, code: str, la: bool = False) -> str:
    """The Organization with this code: conditional create, as the mappers and the pathway do
    (other tests on the shared server rely on one Organization per ODS code)."""
    system = LA_SYSTEM if la else ODS
    r = fhir.post("Organization", {"resourceType": "Organization", "name": f"Org {code}",
                                   "identifier": [{"system": system, "value": code}]},
                  headers={"If-None-Exist": f"identifier={system}|{code}"})
    if r.status_code in (200, 201):
        return r.json()["id"]
    assert r.status_code == 412, r.text  # made more than once elsewhere: any of them will do
    return fhir.search("Organization", identifier=f"{system}|{code}")["entry"][0]["resource"]["id"]


def child(fhir, tag: str, birth: str) -> str:
    _serial[0] += 3
    made = fhir.create(tagged(tag, {"resourceType": "Patient", "birthDate": birth,
                                    "identifier": [{"system": NHS, "value": nhs_number(_serial[0])}],
                                    "name": [{"family": "Kpi", "given": ["Sam"]}]}))
    return made["id"]


def episode(fhir, tag: str, patient_id: str, la_org: str, start: str, end: str | None = None,
            district: str | None = "BH17", out_of_area: bool | None = False) -> dict:
    return fhir.create(episode_body(tag, f"Patient/{patient_id}", la_org, start, end, district, out_of_area))


def episode_body(tag: str, patient_ref: str, la_org: str, start: str, end: str | None = None,
                 district: str | None = "BH17", out_of_area: bool | None = False) -> dict:
    subs = ([{"url": "postcodeDistrict", "valueString": district}] if district else []) + \
           ([{"url": "outOfArea", "valueBoolean": out_of_area}] if out_of_area is not None else [])
    body = {"resourceType": "EpisodeOfCare", "status": "finished" if end else "active", "type": [LOOKED_AFTER],
            "patient": {"reference": patient_ref},
            "managingOrganization": {"reference": f"Organization/{la_org}"},
            "period": {"start": start, **({"end": end} if end else {})},
            "extension": [{"url": PLACEMENT, "extension": subs}]}
    return tagged(tag, body)


def assessment(fhir, tag: str, patient_id: str, owner_org: str, kind: str, steps: list[tuple[str, str, str]],
               due: str | None = None, **extra) -> dict:
    """A Task taken through `steps` ((status, businessStatus, date of the step)), one version each."""
    status, business, when = steps[0]
    body = tagged(tag, {"resourceType": "Task", "status": status, "intent": "order",
                        "code": {"coding": [{"system": ASSESSMENT, "code": kind}]},
                        "for": {"reference": f"Patient/{patient_id}"}, "authoredOn": when,
                        "owner": {"reference": f"Organization/{owner_org}"}, "lastModified": when,
                        "businessStatus": {"coding": [{"system": BS, "code": business}]}, **extra})
    if due:
        body["restriction"] = {"period": {"end": due}}
    task = fhir.create(body)
    for status, business, when in steps[1:]:
        task = dict(task, status=status, lastModified=when, businessStatus={"coding": [{"system": BS, "code": business}]})
        r = fhir.put(f"Task/{task['id']}", task)
        assert r.status_code == 200, r.text
        task = r.json()
    return task


def iha_steps(notified: str, done: str, consent: str | None = None, requested: str | None = None,
              assessed: str | None = None) -> list[tuple[str, str, str]]:
    steps = [("requested", "notification-received", notified)]
    if consent:
        steps.append(("requested", "consent-received", consent))
    if requested:
        steps.append(("requested", "request-sent", requested))
    steps.append(("accepted", "accepted", requested or notified))
    steps.append(("in-progress", "assessment-done", assessed or done))
    steps.append(("in-progress", "report-sent", done))
    return steps


def evaluate(fhir, measure: str, start: str, end: str, **params) -> dict:
    r = fhir.get(f"Measure/{measure}/$evaluate-measure", params={"periodStart": start, "periodEnd": end, **params})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["resourceType"] == "MeasureReport"
    return report


def counts(populations: list[dict]) -> dict[str, int]:
    return {p["code"]["coding"][0]["code"]: p["count"] for p in populations}


def group(report: dict, gid: str) -> dict:
    return next(g for g in report["group"] if g["id"] == gid)


def strata(report: dict, gid: str, stratifier: str) -> dict[str, dict]:
    """{stratum text: {"counts": {...}, "score": value}}."""
    found = next(s for s in group(report, gid).get("stratifier", []) if s["code"][0]["text"] == stratifier)
    return {s["value"]["text"]: {"counts": counts(s["population"]), "score": (s.get("measureScore") or {}).get("value")}
            for s in found["stratum"]}
