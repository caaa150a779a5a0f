"""transaction and batch Bundles, and conditional interactions."""

from __future__ import annotations

import uuid

from tests.support.data import NHS, nhs_number, patient, task


def test_transaction_resolves_urn_uuid_references(fhir, tag):
    pid, oid = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": oid, "resource": task(tag, pid), "request": {"method": "POST", "url": "Task"}},
        {"fullUrl": pid, "resource": patient(tag), "request": {"method": "POST", "url": "Patient"}},
    ]}
    r = fhir.post("", bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    task_loc, patient_loc = (e["response"]["location"] for e in out["entry"])
    patient_id = patient_loc.split("/Patient/")[1].split("/")[0]
    stored_task = fhir.get(task_loc.split("/_history")[0]).json()
    assert stored_task["for"]["reference"] == f"Patient/{patient_id}"


def test_transaction_rolls_back_when_one_entry_fails(fhir, tag):
    bad = task(tag, "Patient/x")
    bad["status"] = 42  # wrong type: the whole transaction must fail
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(tag), "request": {"method": "POST", "url": "Patient"}},
        {"resource": bad, "request": {"method": "POST", "url": "Task"}},
    ]}
    r = fhir.post("", bundle)
    assert r.status_code == 422
    diag = r.json()["issue"][0]["diagnostics"]
    assert "Bundle.entry[1]" in diag and "status" in diag
    assert fhir.search("Patient", _tag=tag)["total"] == 0


def test_transaction_conditional_create_and_conditional_reference(fhir, tag):
    number = nhs_number(200000 + hash(tag) % 700000)
    existing = fhir.create(patient(tag, nhs=number))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p", "resource": patient(tag, nhs=number),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={NHS}|{number}"}},
        {"resource": task(tag, f"Patient?identifier={NHS}|{number}"), "request": {"method": "POST", "url": "Task"}},
    ]}
    r = fhir.post("", bundle)
    assert r.status_code == 200, r.text
    first, second = r.json()["entry"]
    assert first["response"]["status"] == "200 OK"
    assert existing["id"] in first["response"]["location"]
    t = fhir.get(second["response"]["location"].split("/_history")[0]).json()
    assert t["for"]["reference"] == f"Patient/{existing['id']}"
    assert fhir.search("Patient", _tag=tag)["total"] == 1


def test_transaction_order_delete_before_post_and_get_last(fhir, tag):
    victim = fhir.create(patient(tag))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": f"Patient?_tag={tag}"}},
        {"resource": patient(tag), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": f"Patient/{victim['id']}"}},
    ]}
    r = fhir.post("", bundle)
    assert r.status_code == 200, r.text
    search = r.json()["entry"][0]["resource"]
    assert search["total"] == 1  # sees the POST, not the deleted one
    assert search["entry"][0]["resource"]["id"] != victim["id"]


def test_batch_entries_are_independent(fhir, tag):
    bad = patient(tag)
    bad["gender"] = "not-a-gender-type" if False else 12
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient(tag), "request": {"method": "POST", "url": "Patient"}},
        {"resource": bad, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
    ]}
    r = fhir.post("", bundle)
    assert r.status_code == 200
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0] == "201 Created" and statuses[1] == "422" and statuses[2] == "404"
    assert r.json()["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert fhir.search("Patient", _tag=tag)["total"] == 1


def test_transaction_patch_entry_with_binary(fhir, tag):
    import base64
    import json

    p = fhir.create(patient(tag))
    ops = base64.b64encode(json.dumps([{"op": "replace", "path": "/gender", "value": "male"}]).encode()).decode()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": ops},
         "request": {"method": "PATCH", "url": f"Patient/{p['id']}"}}]}
    r = fhir.post("", bundle)
    assert r.status_code == 200, r.text
    assert fhir.get(f"Patient/{p['id']}").json()["gender"] == "male"


def test_conditional_create_header_and_query_form(fhir, tag):
    number = nhs_number(100000 + hash(tag) % 800000)
    body = patient(tag, nhs=number)
    first = fhir.post("Patient", body, headers={"If-None-Exist": f"identifier={NHS}|{number}"})
    assert first.status_code == 201
    again = fhir.post("Patient", body, headers={"If-None-Exist": f"identifier={NHS}|{number}"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    query_form = fhir.http.post(fhir.url("Patient"), params={"identifier": f"{NHS}|{number}"}, json=body,
                                headers={"Content-Type": "application/fhir+json"})
    assert query_form.status_code == 200 and query_form.json()["id"] == first.json()["id"]
    fhir.create(patient(tag, nhs=number))  # now two match
    many = fhir.post("Patient", body, headers={"If-None-Exist": f"identifier={NHS}|{number}"})
    assert many.status_code == 412


def test_conditional_update_and_delete(fhir, tag):
    number = nhs_number(300000 + hash(tag) % 600000)
    crit = {"identifier": f"{NHS}|{number}"}
    created = fhir.http.put(fhir.url("Patient"), params=crit, json=patient(tag, nhs=number),
                            headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201
    updated = fhir.http.put(fhir.url("Patient"), params=crit, json=patient(tag, nhs=number, gender="male"),
                            headers={"Content-Type": "application/fhir+json"})
    assert updated.status_code == 200 and updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"
    deleted = fhir.http.delete(fhir.url("Patient"), params=crit)
    assert deleted.status_code == 204
    assert fhir.get(f"Patient/{created.json()['id']}").status_code == 410
    fhir.create(patient(tag, nhs=number))
    fhir.create(patient(tag, nhs=number))
    assert fhir.http.delete(fhir.url("Patient"), params=crit).status_code == 412
