"""Create, read, vread, update, delete, patch and the version headers, over HTTP."""

from __future__ import annotations

import json
import threading

from tests.support.data import patient


def test_create_read_round_trip_keeps_decimal_precision(fhir, tag):
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
            "valueQuantity": {"value": 2.00, "unit": "kg"}}
    raw = json.dumps(body).replace("2.0", "2.00")
    r = fhir.http.post(fhir.url("Observation"), data=raw, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 201
    assert r.headers["ETag"] == 'W/"1"'
    assert "Last-Modified" in r.headers
    created = r.json()
    assert r.headers["Location"].endswith(f"/Observation/{created['id']}/_history/1")
    read = fhir.get(f"Observation/{created['id']}")
    assert read.status_code == 200
    assert b'"value":2.00' in read.content
    assert read.json()["meta"]["versionId"] == "1"


def test_plain_application_json_is_accepted(fhir, tag):
    r = fhir.http.post(fhir.url("Patient"), data=json.dumps(patient(tag)),
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 201
    assert r.headers["Content-Type"].startswith("application/fhir+json")


def test_update_versions_and_vread(fhir, tag):
    created = fhir.create(patient(tag))
    pid = created["id"]
    created["gender"] = "male"
    r = fhir.put(f"Patient/{pid}", created)
    assert r.status_code == 200
    assert r.headers["ETag"] == 'W/"2"'
    v1 = fhir.get(f"Patient/{pid}/_history/1").json()
    v2 = fhir.get(f"Patient/{pid}/_history/2").json()
    assert v1["gender"] == "female" and v2["gender"] == "male"
    assert fhir.get(f"Patient/{pid}/_history/3").status_code == 404


def test_update_as_create_with_client_id(fhir, tag):
    pid = f"client-{tag}"
    body = patient(tag) | {"id": pid}
    r = fhir.put(f"Patient/{pid}", body)
    assert r.status_code == 201
    assert fhir.get(f"Patient/{pid}").json()["id"] == pid


def test_update_id_mismatch_is_400(fhir, tag):
    created = fhir.create(patient(tag))
    r = fhir.put(f"Patient/{created['id']}", created | {"id": "other"})
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


def test_if_match_conflict_is_412(fhir, tag):
    created = fhir.create(patient(tag))
    pid = created["id"]
    ok = fhir.put(f"Patient/{pid}", created, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = fhir.put(f"Patient/{pid}", created, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert "version" in stale.json()["issue"][0]["diagnostics"]


def test_two_concurrent_writers_with_same_etag_one_wins(fhir, tag):
    created = fhir.create(patient(tag))
    pid = created["id"]
    results = []

    def write(gender: str) -> None:
        body = dict(created, gender=gender)
        results.append(fhir.put(f"Patient/{pid}", body, headers={"If-Match": 'W/"1"'}).status_code)

    threads = [threading.Thread(target=write, args=(g,)) for g in ("male", "other")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 412]
    assert fhir.get(f"Patient/{pid}").json()["meta"]["versionId"] == "2"


def test_if_none_match_and_if_modified_since_give_304(fhir, tag):
    created = fhir.create(patient(tag))
    path = f"Patient/{created['id']}"
    assert fhir.get(path, headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert fhir.get(path, headers={"If-None-Match": 'W/"9"'}).status_code == 200
    last_modified = fhir.get(path).headers["Last-Modified"]
    assert fhir.get(path, headers={"If-Modified-Since": last_modified}).status_code == 304
    assert fhir.get(path, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200


def test_delete_then_gone_and_history_keeps_tombstone(fhir, tag):
    created = fhir.create(patient(tag))
    path = f"Patient/{created['id']}"
    r = fhir.delete(path)
    assert r.status_code == 204
    gone = fhir.get(path)
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"
    history = fhir.get(f"{path}/_history").json()
    assert history["type"] == "history"
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert fhir.search("Patient", _tag=tag).get("total") == 0
    # deleting again is harmless; re-creating by PUT revives it as a new version
    assert fhir.delete(path).status_code == 204
    revived = fhir.put(path, created | {"meta": {}})
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"


def test_prefer_return_variants(fhir, tag):
    minimal = fhir.post("Patient", patient(tag), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["Location"]
    outcome = fhir.post("Patient", patient(tag), headers={"Prefer": "return=OperationOutcome"})
    assert outcome.json()["resourceType"] == "OperationOutcome"


def test_json_patch(fhir, tag):
    created = fhir.create(patient(tag))
    path = f"Patient/{created['id']}"
    r = fhir.patch(path, [{"op": "replace", "path": "/gender", "value": "male"},
                          {"op": "add", "path": "/active", "value": True}])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["gender"] == "male" and body["active"] is True and body["meta"]["versionId"] == "2"
    failed = fhir.patch(path, [{"op": "test", "path": "/gender", "value": "female"}])
    assert failed.status_code == 422
    invalid = fhir.patch(path, [{"op": "replace", "path": "/gender", "value": 7}])
    assert invalid.status_code == 422
    assert "gender" in invalid.json()["issue"][0]["diagnostics"]
    stale = fhir.patch(path, [{"op": "remove", "path": "/active"}], headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412


def test_instance_type_and_system_history(fhir, tag):
    created = fhir.create(patient(tag))
    pid = created["id"]
    fhir.put(f"Patient/{pid}", created | {"gender": "male"})
    instance = fhir.get(f"Patient/{pid}/_history").json()
    assert instance["total"] == 2
    assert [e["response"]["etag"] for e in instance["entry"]] == ['W/"2"', 'W/"1"']
    typed = fhir.get("Patient/_history", params={"_count": 1}).json()
    assert typed["entry"][0]["resource"]["resourceType"] == "Patient"
    assert any(link["relation"] == "next" for link in typed["link"])
    system = fhir.get("_history", params={"_count": 5}).json()
    assert system["type"] == "history" and len(system["entry"]) == 5
    since = fhir.get(f"Patient/{pid}/_history", params={"_since": instance["entry"][0]["resource"]["meta"]["lastUpdated"]}).json()
    assert since["total"] == 1


def test_head_returns_headers_only(fhir, tag):
    created = fhir.create(patient(tag))
    r = fhir.http.head(fhir.url(f"Patient/{created['id']}"))
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"1"' and r.content == b""
