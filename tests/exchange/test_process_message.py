"""BaRS-style `$process-message` on a real server: accepted, idempotent, refused when malformed."""

from __future__ import annotations

import copy
import json
import os
import uuid

import pytest
import requests

from adapter.config import PROJECT_ROOT, DevToken
from adapter.exchange.partners import (
    DeliveryRules,
    OutboundAuth,
    Partner,
    Registry,
    default_registry,
)
from adapter.exchange.worker import DeliveryWorker
from adapter.store.database import make_engine
from tests.conftest import Fhir
from tests.security.population import consent
from tests.support.auth import TEST_TOKENS, admin_session
from tests.support.data import nhs_number
from tests.support.server import running_server

ADMIN_HTTP = admin_session()

NHS = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
REQ_ID = "https://lac-fhir-adapter.example/fhir/Id/lac-assessment-request"
PLAN_CATEGORY = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-care-plan-category"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    with running_server(f"sqlite:///{tmp_path_factory.mktemp('msg') / 'adapter.sqlite3'}") as url:
        yield url


def message(nhs: str = "9990000263", request_value: str | None = None) -> dict:
    header_id = str(uuid.uuid4())
    patient_url, sr_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    request_value = request_value or f"ZZ902/{uuid.uuid4().hex[:8]}/rha"
    return {
        "resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "message", "timestamp": "2026-11-20T10:00:00Z",
        "entry": [
            {"fullUrl": f"urn:uuid:{header_id}", "resource": {
                "resourceType": "MessageHeader", "id": header_id,
                "eventCoding": {"system": "https://fhir.nhs.uk/CodeSystem/message-events-bars",
                                "code": "servicerequest-request"},
                "sender": {"identifier": {"system": ODS, "value": "ZZ902"}},
                "source": {"endpoint": "https://zz902.example/fhir/$process-message"},
                "destination": [{"endpoint": "https://rdy.example/fhir/$process-message"}],
                "focus": [{"reference": sr_url}]}},
            {"fullUrl": sr_url, "resource": {
                "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "identifier": [{"system": REQ_ID, "value": request_value}],
                "code": {"coding": [{"system": "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-assessment-type",
                                     "code": "rha", "display": "Review health assessment"}]},
                "subject": {"reference": patient_url}, "authoredOn": "2026-11-20T10:00:00Z",
                "occurrencePeriod": {"start": "2026-11-20", "end": "2026-12-18"},
                "requester": {"identifier": {"system": ODS, "value": "ZZ902"}},
                "performer": [{"identifier": {"system": ODS, "value": "RDY"}}]}},
            {"fullUrl": patient_url, "resource": {
                "resourceType": "Patient", "identifier": [{"system": NHS, "value": nhs}],
                "name": [{"family": "Messagechild", "given": ["Ada"]}], "birthDate": "2014-03-02",
                "gender": "female"}},
        ]}


def count(base: str, rtype: str, **params) -> int:
    r = ADMIN_HTTP.get(f"{base}/{rtype}", params={**params, "_summary": "count"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["total"]


def post(base: str, body: dict, **headers) -> requests.Response:
    return ADMIN_HTTP.post(f"{base}/$process-message", json=body, timeout=30,
                         headers={"Content-Type": "application/fhir+json", **headers})


def test_accepted_message_stores_request_and_task_and_acknowledges(base):
    msg = message(nhs="9990000271")
    header_id = msg["entry"][0]["resource"]["id"]
    value = msg["entry"][1]["resource"]["identifier"][0]["value"]
    r = post(base, msg)
    assert r.status_code == 200, r.text
    ack = r.json()
    assert ack["resourceType"] == "Bundle" and ack["type"] == "message"
    head = ack["entry"][0]["resource"]
    assert head["resourceType"] == "MessageHeader"
    assert head["response"] == {"identifier": header_id, "code": "ok"}
    assert head["eventCoding"]["code"] == "servicerequest-request"
    task_url = head["focus"][0]["reference"]
    assert "/Task/" in task_url
    task = ADMIN_HTTP.get(task_url, timeout=10).json()
    assert task["status"] == "requested"
    assert task["owner"]["identifier"] == {"system": ODS, "value": default_registry().self_ods}
    assert task["requester"]["identifier"] == {"system": ODS, "value": "ZZ902"}
    assert task["restriction"]["period"]["end"] == "2026-12-18"
    sr_ref = task["basedOn"][0]["reference"]
    sr = ADMIN_HTTP.get(f"{base}/{sr_ref}", timeout=10).json()
    assert sr["identifier"][0]["value"] == value
    patient = ADMIN_HTTP.get(f"{base}/{task['for']['reference']}", timeout=10).json()
    assert patient["identifier"][0]["value"] == "9990000271"
    assert sr["subject"]["reference"] == task["for"]["reference"]
    assert ack["entry"][1]["resource"]["id"] == task["id"]


def test_duplicate_message_gets_the_same_answer_and_adds_nothing(base):
    msg = message(nhs="9990000280")
    value = msg["entry"][1]["resource"]["identifier"][0]["value"]
    first = post(base, msg)
    assert first.status_code == 200, first.text
    again = post(base, copy.deepcopy(msg))
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert count(base, "Task", identifier=f"{REQ_ID}|{value}") == 1
    assert count(base, "ServiceRequest", identifier=f"{REQ_ID}|{value}") == 1
    assert count(base, "Patient", identifier=f"{NHS}|9990000280") == 1
    # a new message about the same child reuses the Patient
    other = message(nhs="9990000280")
    assert post(base, other).status_code == 200
    assert count(base, "Patient", identifier=f"{NHS}|9990000280") == 1


@pytest.mark.parametrize("breaks, element", [
    (lambda m: m.update(type="transaction"), "Bundle.type"),
    (lambda m: m["entry"].reverse(), "Bundle.entry[0].resource"),
    (lambda m: m["entry"][0]["resource"]["eventCoding"].update(system="http://example.org/events"),
     "Bundle.entry[0].resource.eventCoding.system"),
    (lambda m: m["entry"][0]["resource"]["focus"][0].update(reference="urn:uuid:nowhere"),
     "Bundle.entry[0].resource.focus[0].reference"),
    (lambda m: m["entry"][0]["resource"].pop("sender"), "Bundle.entry[0].resource.sender.identifier"),
    (lambda m: m["entry"][1]["resource"].pop("subject"), "Bundle.entry[1].resource.subject"),
    (lambda m: m["entry"][2]["resource"].pop("identifier"), "Bundle.entry[2].resource.identifier"),
])
def test_malformed_message_is_refused_naming_the_element(base, breaks, element):
    msg = message(nhs="9990000298")
    breaks(msg)
    r = post(base, msg)
    assert r.status_code == 400, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["severity"] == "error"
    assert element in issue.get("expression", []), issue
    assert count(base, "Patient", identifier=f"{NHS}|9990000298") == 0


# -- the sender is who the token says; the result goes back to it ------------------------------

class Capture:
    """A partner's FHIR endpoint on loopback that records what it is sent."""

    def __init__(self):
        import http.server
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                received.append((self.path, dict(self.headers), self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.end_headers()
                self.wfile.write(b'{"resourceType":"OperationOutcome","issue":[{"severity":"information",'
                                 b'"code":"informational"}]}')

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


ZZ902 = DevToken(token="test-zz902-token", organisation="ZZ902", role="ooa-trust", scopes=("system/*.cruds",))


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    capture = Capture()
    os.environ["TEST_ZZ902_TOKEN"] = "token-for-zz902"
    partners = Registry(self_ods="RDY", partners={"ZZ902": Partner(
        ods="ZZ902", name="Out-of-area trust", role="ooa-trust", base_url=capture.base,
        outbound_auth=OutboundAuth(type="bearer", token_env="TEST_ZZ902_TOKEN"))},
        delivery=DeliveryRules(max_attempts=2, base_seconds=0.05, max_seconds=0.1, lease_seconds=5, timeout_seconds=5))
    url = f"sqlite:///{tmp_path_factory.mktemp('msg-result') / 'adapter.sqlite3'}"
    with running_server(url, partners=partners, dev_tokens=(*TEST_TOKENS, ZZ902)) as base:
        yield base, url, partners, capture
    capture.server.shutdown()


def test_a_partner_sends_only_as_itself(exchange):
    base, *_ = exchange
    msg = message(nhs=nhs_number(3100))
    msg["entry"][0]["resource"]["sender"]["identifier"]["value"] = "ZZ903"  # not who the token is
    r = requests.post(f"{base}/$process-message", json=msg, timeout=30,
                      headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {ZZ902.token}"})
    assert r.status_code == 403 and "sender" in r.text


def test_the_completed_assessment_goes_back_to_the_sender(exchange):
    base, url, partners, capture = exchange
    auth = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {ZZ902.token}"}
    msg = message(nhs=nhs_number(3200))
    patient_url = msg["entry"][2]["fullUrl"]
    parent_url = f"urn:uuid:{uuid.uuid4()}"
    msg["entry"] += [
        {"fullUrl": parent_url, "resource": {"resourceType": "RelatedPerson", "patient": {"reference": patient_url},
                                             "name": [{"family": "Messageparent"}]}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": consent("t", patient_url, parent_url)}]
    header_id = msg["entry"][0]["resource"]["id"]
    r = requests.post(f"{base}/$process-message", json=msg, timeout=30, headers=auth)
    assert r.status_code == 200, r.text
    task = ADMIN_HTTP.get(r.headers["Location"], timeout=10).json()
    # our service does the assessment
    fhir = Fhir(base)
    for step in ("accepted", "in-progress"):
        task = fhir.put(f"Task/{task['id']}", dict(task, status=step)).json()
    form = json.loads((PROJECT_ROOT / "fixtures" / "forms" / "rha-yp-completed.json").read_text())
    form.pop("id")
    form["subject"] = task["for"]
    qr = fhir.create(form)
    plan = fhir.create({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": task["for"],
                        "category": [{"coding": [{"system": PLAN_CATEGORY, "code": "health-plan"}]}]})
    task["status"] = "completed"
    task["output"] = [{"type": {"text": "Completed assessment"},
                       "valueReference": {"reference": f"QuestionnaireResponse/{qr['id']}"}},
                      {"type": {"text": "Health plan"}, "valueReference": {"reference": f"CarePlan/{plan['id']}"}}]
    assert fhir.put(f"Task/{task['id']}", task).status_code == 200
    engine = make_engine(url)
    try:
        assert DeliveryWorker(engine, partners).run_once() == 1
    finally:
        engine.dispose()
    [(path, headers, body)] = capture.received
    assert path == "/fhir/$process-message"
    assert headers["Authorization"] == "Bearer token-for-zz902" and headers["X-Request-Id"]
    answer = json.loads(body)
    assert answer["type"] == "message"
    head = answer["entry"][0]["resource"]
    assert head["response"] == {"identifier": header_id, "code": "ok"}
    assert head["destination"][0]["receiver"]["identifier"]["value"] == "ZZ902"
    sent = {e["resource"]["resourceType"]: e["resource"] for e in answer["entry"][1:]}
    assert sent["Task"]["status"] == "completed"
    assert sent["QuestionnaireResponse"]["id"] == qr["id"] and sent["CarePlan"]["id"] == plan["id"]
    assert {"system": NHS, "value": nhs_number(3200)} in sent["Patient"]["identifier"]
