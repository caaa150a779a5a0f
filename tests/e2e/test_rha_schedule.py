"""Completing an assessment plans the next RHA (adapter/rest/pathway_hooks.py), over HTTP."""

from __future__ import annotations

from tests.support.data import nhs_number, patient

SD = "https://lac-fhir-adapter.example/fhir/StructureDefinition/"
CS = "https://lac-fhir-adapter.example/fhir/CodeSystem/"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
PLANNED = "https://lac-fhir-adapter.example/fhir/Id/planned-assessment"


def organisation(fhir, system: str, value: str, name: str) -> str:
    """Conditional create, as the mapper and the hook do (412: other tests on the shared server
    stored the code more than once; any of them will do)."""
    r = fhir.post("Organization", {"resourceType": "Organization", "identifier": [{"system": system, "value": value}],
                                   "active": True, "name": name},
                  headers={"If-None-Exist": f"identifier={system}|{value}"})
    assert r.status_code in (200, 201, 412), r.text
    found = fhir.search("Organization", identifier=f"{system}|{value}")
    return f"Organization/{found['entry'][0]['resource']['id']}"


def looked_after_episode(tag: str, patient_ref: str, la_ref: str, district: str, out: bool) -> dict:
    return {"resourceType": "EpisodeOfCare", "meta": {"profile": [SD + "lac-episode-of-care"]},
            "extension": [
                {"url": SD + "lac-legal-status",
                 "valueCoding": {"system": CS + "ssda903-legal-status", "code": "V2"}},
                {"url": SD + "lac-placement", "extension": [
                    {"url": "type", "valueCoding": {"system": CS + "ssda903-placement-type", "code": "U3"}},
                    {"url": "provider", "valueCoding": {"system": CS + "ssda903-placement-provider", "code": "PR1"}},
                    {"url": "postcodeDistrict", "valueString": district},
                    {"url": "outOfArea", "valueBoolean": out},
                    {"url": "responsibleAuthority", "valueReference": {"reference": la_ref}}]}],
            "identifier": [{"system": "https://lac-fhir-adapter.example/fhir/Id/lac-episode", "value": f"{tag}/2026-05-01"}],
            "status": "active",
            "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "764841000000100",
                                  "display": "Looked after child"}]}],
            "patient": {"reference": patient_ref}, "managingOrganization": {"reference": la_ref},
            "period": {"start": "2026-05-01"}}


def iha_task(patient_ref: str, requester: str, owner: str) -> dict:
    return {"resourceType": "Task", "meta": {"profile": [SD + "lac-assessment-task"]}, "status": "requested",
            "intent": "order", "code": {"coding": [{"system": CS + "lac-assessment-type", "code": "iha"}]},
            "for": {"reference": patient_ref}, "authoredOn": "2026-05-01T09:00:00Z",
            "requester": {"reference": requester}, "owner": {"reference": owner},
            "restriction": {"period": {"end": "2026-05-29"}}}


def put(fhir, resource: dict) -> dict:
    r = fhir.put(f"{resource['resourceType']}/{resource['id']}", resource)
    assert r.status_code == 200, r.text
    return r.json()


def complete_iha(fhir, tag: str, born: str, district: str, out: bool, serial: int) -> tuple[dict, dict, str]:
    p = fhir.create(patient(tag, nhs=nhs_number(serial), birth_date=born))
    pref = f"Patient/{p['id']}"
    la = organisation(fhir, "https://lac-fhir-adapter.example/fhir/Id/local-authority", "991", "Demo Borough Council")
    rdy = organisation(fhir, ODS, "RDY", "Dorset HealthCare LAC health team")
    rd3 = organisation(fhir, ODS, "RD3", "Poole Hospital paediatric service (initial health assessments)")
    fhir.create(looked_after_episode(tag, pref, la, district, out))
    task = fhir.create(iha_task(pref, rdy, rd3))
    for status in ("accepted", "in-progress"):
        task = put(fhir, dict(task, status=status))
    qr = fhir.create({"resourceType": "QuestionnaireResponse", "status": "completed", "subject": {"reference": pref}})
    plan = fhir.create({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": pref}})
    outputs = [{"type": {"text": "assessment"}, "valueReference": {"reference": f"QuestionnaireResponse/{qr['id']}"}},
               {"type": {"text": "health plan"}, "valueReference": {"reference": f"CarePlan/{plan['id']}"}}]
    task = put(fhir, dict(task, status="completed", output=outputs,
                          executionPeriod={"start": "2026-05-20T10:00:00Z", "end": "2026-05-20T11:00:00Z"}))
    return task, qr, rdy


def planned(fhir, rtype: str, task_id: str) -> list[dict]:
    bundle = fhir.search(rtype, identifier=f"{PLANNED}|{task_id}/next")
    return [e["resource"] for e in bundle.get("entry", [])]


def owner_ods(fhir, ref: str) -> str:
    org = fhir.get(ref).json()
    return next(i["value"] for i in org["identifier"] if i["system"] == ODS)


def test_completed_iha_plans_a_six_monthly_rha_for_an_under_five_once(fhir, tag):
    task, qr, rdy = complete_iha(fhir, tag, "2023-03-10", "BH15", False, 41001)
    [rha] = planned(fhir, "Task", task["id"])
    assert rha["status"] == "requested"
    assert rha["code"]["coding"][0]["code"] == "rha"
    assert rha["restriction"]["period"]["end"] == "2026-11-20"  # 20 May 2026 + 6 months
    assert owner_ods(fhir, rha["owner"]["reference"]) == "RDY"
    assert rha["requester"]["reference"] == rdy
    assert rha["businessStatus"]["coding"][0]["code"] == "request-sent"
    assert rha["for"]["reference"] == task["for"]["reference"]
    [request] = planned(fhir, "ServiceRequest", task["id"])
    assert rha["basedOn"][0]["reference"] == f"ServiceRequest/{request['id']}"
    assert request["occurrencePeriod"]["end"] == "2026-11-20"

    # amended: the response is amended and the completed Task saved again -> nothing new
    put(fhir, dict(qr, status="amended"))
    put(fhir, dict(task, note=[{"text": "amended after review"}]))
    assert len(planned(fhir, "Task", task["id"])) == 1
    assert len(planned(fhir, "ServiceRequest", task["id"])) == 1


def test_five_and_over_twelve_months_out_of_area_provider(fhir, tag):
    task, _, _ = complete_iha(fhir, tag, "2018-01-01", "SO14", True, 41002)
    [rha] = planned(fhir, "Task", task["id"])
    assert rha["restriction"]["period"]["end"] == "2027-05-20"  # 20 May 2026 + 12 months
    assert owner_ods(fhir, rha["owner"]["reference"]) == "ZZ901"  # invented provider for SO


def test_unknown_area_is_held_by_the_home_service_for_routing(fhir, tag):
    task, _, _ = complete_iha(fhir, tag, "2018-01-01", "NE1", True, 41003)
    [rha] = planned(fhir, "Task", task["id"])
    assert owner_ods(fhir, rha["owner"]["reference"]) == "RDY"
    assert "businessStatus" not in rha
    assert rha["statusReason"]["text"].startswith("Unrouted")


def test_completed_rha_plans_the_next_one(fhir, tag):
    task, _, _ = complete_iha(fhir, tag, "2018-01-01", "BH15", False, 41004)
    [rha] = planned(fhir, "Task", task["id"])
    pref = rha["for"]["reference"]
    for status in ("accepted", "in-progress"):
        rha = put(fhir, dict(rha, status=status))
    qr = fhir.create({"resourceType": "QuestionnaireResponse", "status": "completed", "subject": {"reference": pref}})
    plan = fhir.create({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": pref}})
    rha = put(fhir, dict(rha, status="completed", executionPeriod={"end": "2027-05-02"},
                         output=[{"type": {"text": "assessment"}, "valueReference": {"reference": f"QuestionnaireResponse/{qr['id']}"}},
                                 {"type": {"text": "health plan"}, "valueReference": {"reference": f"CarePlan/{plan['id']}"}}]))
    [following] = planned(fhir, "Task", rha["id"])
    assert following["restriction"]["period"]["end"] == "2028-05-02"


def test_a_placement_move_re_routes_the_open_rha_request(fhir, tag):
    completed, _, _ = complete_iha(fhir, tag, born="2019-03-01", district="BH15", out=False, serial=hash(tag) % 800000 + 1)
    [rha] = planned(fhir, "Task", completed["id"])
    assert owner_ods(fhir, rha["owner"]["reference"]) == "RDY"
    episodes = fhir.search("EpisodeOfCare", patient=completed["for"]["reference"], status="active")
    episode = episodes["entry"][0]["resource"]
    placement = next(e for e in episode["extension"] if e["url"].endswith("lac-placement"))
    for sub in placement["extension"]:
        if sub["url"] == "postcodeDistrict":
            sub["valueString"] = "SO14"
        if sub["url"] == "outOfArea":
            sub["valueBoolean"] = True
    put(fhir, episode)
    [moved] = planned(fhir, "Task", completed["id"])
    assert owner_ods(fhir, moved["owner"]["reference"]) == "ZZ901"
    assert "placement change" in moved["note"][-1]["text"]
    put(fhir, fhir.get(f"EpisodeOfCare/{episode['id']}").json())  # no move: nothing changes
    assert fhir.get(f"Task/{moved['id']}").json()["meta"]["versionId"] == moved["meta"]["versionId"]


def test_planning_refers_to_an_existing_provider_even_if_it_is_stored_twice(fhir, tag):
    # A partner loaded its own copy of the Birmingham provider: two Organizations with one ODS
    # code. Conditional create on that code would be 412 (many matches) and fail the completion.
    # (Other modules on the shared server may have stored ZZ907 too: count what is there.)
    for n in (1, 2):
        fhir.create({"resourceType": "Organization", "active": True, "name": f"Copy {n} of ZZ907",
                     "identifier": [{"system": ODS, "value": "ZZ907"}]})
    copies = {f"Organization/{e['resource']['id']}"
              for e in fhir.search("Organization", identifier=f"{ODS}|ZZ907", _count=100)["entry"]}
    task, _, _ = complete_iha(fhir, tag, "2018-01-01", "B15", True, 41006)
    assert task["status"] == "completed"
    [rha] = planned(fhir, "Task", task["id"])
    assert rha["owner"]["reference"] in copies
    after = fhir.search("Organization", identifier=f"{ODS}|ZZ907", _count=100)["entry"]
    assert {f"Organization/{e['resource']['id']}" for e in after} == copies  # no new copy
