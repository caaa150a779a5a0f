"""Two adapter processes on loopback: an out-of-area RHA request and its result, both ways.

The home service (ODS RDY) asks the out-of-area trust (ODS ZZ901) for a review health
assessment; each runs `python -m adapter serve` with its own SQLite database and its own
partner registry naming the other. Deliveries go through each side's background worker,
which authenticates to the other adapter with SMART Backend Services: a client assertion
signed (ES384) with its own key, whose public half the other side's registry holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from adapter.config import PROJECT_ROOT
from adapter.exchange import outbox
from adapter.store.database import make_engine
from tests.support.auth import ADMIN_HEADERS, ADMIN_TOKEN
from tests.support.server import free_port

NHS = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
REQUESTER_TASK = "https://lac-fhir-adapter.example/fhir/Id/requester-task"
SCENARIO = PROJECT_ROOT / "fixtures/scenarios/02-placed-out-of-area/fhir/01-entered-care-out-of-area.json"
FORM = PROJECT_ROOT / "fixtures" / "forms" / "rha-yp-completed.json"
PLAN_CATEGORY = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-care-plan-category"
WAIT = 30.0


class Adapter:
    """One `lac-adapter serve` process; can be killed and started again on the same port and database."""

    def __init__(self, name: str, ods: str, directory: Path):
        self.name, self.ods, self.dir = name, ods, directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.database = f"sqlite:///{directory / 'adapter.sqlite3'}"
        self.partners = directory / "partners.toml"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

        self.key, self.jwks = self.dir / "signing-key.pem", self.dir / "jwks.json"
        write_key_pair(self.key, self.jwks, kid=f"{ods}-test")
        self.tokens = self.dir / "dev-tokens.toml"
        self.tokens.write_text(f'"{ADMIN_TOKEN}" = {{ organisation = "TEST-ADMIN", role = "administrator", '
                               'scopes = ["system/*.cruds"] }\n')

    def configure(self, partner: "Adapter", partner_role: str) -> None:
        token_url = partner.base[: -len("/fhir")] + "/auth/token"
        self.partners.write_text(f"""
[self]
ods = "{self.ods}"
name = "{self.name}"
role = "community-trust"

[[partner]]
ods = "{partner.ods}"
name = "partner {partner.ods}"
role = "{partner_role}"
base_url = "{partner.base}"
jwks_file = "{partner.jwks}"
scopes = ["system/*.cruds"]
outbound_auth = {{ type = "smart", token_url = "{token_url}", client_id = "{self.ods}", key_file = "{self.key}", alg = "ES384", kid = "{self.ods}-test" }}

[delivery]
max_attempts = 30
base_seconds = 0.5
max_seconds = 2.0
lease_seconds = 3.0
timeout_seconds = 10.0
""")

    def start(self, wait: bool = True) -> None:
        env = {**os.environ, "ADAPTER_PARTNERS": str(self.partners), "PYTHONUNBUFFERED": "1",
               "ADAPTER_DEV_TOKENS_FILE": str(self.tokens), "ADAPTER_TOKEN_SECRET_FILE": str(self.dir / "secret")}
        env.pop("ADAPTER_DATABASE_URL", None)
        self.starts += 1
        log = open(self.dir / f"serve-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "adapter", "serve", "--port", str(self.port),
                                      "--database", self.database, "--dev"], env=env, cwd=PROJECT_ROOT,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}: {self.log()}")
            try:
                if requests.get(f"{self.base}/metadata", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not start within {WAIT}s: {self.log()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.dir.glob("serve-*.log")))

    # -- FHIR helpers
    def get(self, path: str, **params) -> dict:
        r = requests.get(f"{self.base}/{path}", params=params, timeout=10, headers=ADMIN_HEADERS)
        assert r.status_code == 200, r.text
        return r.json()

    def put(self, resource: dict) -> dict:
        r = requests.put(f"{self.base}/{resource['resourceType']}/{resource['id']}", json=resource, timeout=30,
                         headers={"Content-Type": "application/fhir+json", **ADMIN_HEADERS})
        assert r.status_code in (200, 201), r.text
        return r.json()

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(f"{self.base}/{path}", json=body, timeout=30,
                             headers={"Content-Type": "application/fhir+json", **ADMIN_HEADERS})

    def count(self, rtype: str, **params) -> int:
        return self.get(rtype, _summary="count", **params)["total"]

    def outbox(self, kind: str) -> list[outbox.Message]:
        engine = make_engine(self.database)
        try:
            with engine.connect() as conn:
                return [m for m in outbox.messages(conn, limit=1000) if m.kind == kind]
        finally:
            engine.dispose()


def write_key_pair(private_pem: Path, public_jwks: Path, kid: str) -> None:
    """An EC P-384 key for ES384 client assertions: the private key as PEM, the public as a JWKS."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    key = ec.generate_private_key(ec.SECP384R1())
    private_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    public_jwks.write_text(json.dumps({"keys": [dict(jwk, kid=kid, alg="ES384", use="sig")]}))


def poll(what: str, check, timeout: float = WAIT, *adapters: Adapter):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (requests.RequestException, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.3)
    logs = "\n".join(f"--- {a.name}:\n{a.log()}" for a in adapters)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})\n{logs}")


@pytest.fixture
def pair(tmp_path):
    home = Adapter("home", "RDY", tmp_path / "home")
    ooa = Adapter("ooa", "ZZ901", tmp_path / "ooa")
    home.configure(ooa, "ooa-trust")           # at home, ZZ901 is the out-of-area trust it asks
    ooa.configure(home, "community-trust")     # at ZZ901, RDY is the home service that asks
    try:
        yield home, ooa
    finally:
        for adapter in (home, ooa):
            adapter.stop()


def request_bundle() -> dict:
    """The placed-out-of-area scenario, asking ZZ901 for a review health assessment."""
    bundle = json.loads(SCENARIO.read_text())
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] in ("ServiceRequest", "Task"):
            for coding in res["code"]["coding"]:
                coding.update(code="rha", display="Review health assessment")
            for ident in res["identifier"]:
                ident["value"] = ident["value"].replace("/iha", "/rha")
            entry["request"]["ifNoneExist"] = entry["request"]["ifNoneExist"].replace("/iha", "/rha")
    return bundle


def create_request(home: Adapter) -> tuple[str, str]:
    """Store the request at home; returns (home Task id, its business identifier token)."""
    r = home.post("", request_bundle())
    assert r.status_code == 200, r.text
    task_entry = next(e for e in r.json()["entry"] if "/Task/" in e["response"].get("location", ""))
    task = task_entry["resource"]
    ident = task["identifier"][0]
    return task["id"], f"{ident['system']}|{ident['value']}"


def ooa_task_for(ooa: Adapter, home_task_id: str) -> dict | None:
    found = ooa.get("Task", identifier=f"{REQUESTER_TASK}|RDY/{home_task_id}")
    return found["entry"][0]["resource"] if found.get("entry") else None


def test_request_goes_out_and_the_result_comes_back(pair):
    home, ooa = pair
    ooa.start()
    home.start()
    home_task_id, business = create_request(home)

    task = poll("the OOA adapter to receive the Task", lambda: ooa_task_for(ooa, home_task_id), WAIT, home, ooa)
    assert task["status"] == "requested"
    assert task["owner"] == {"identifier": {"system": ODS, "value": "ZZ901"}}
    assert task["requester"] == {"identifier": {"system": ODS, "value": "RDY"}}
    assert {"system": business.split("|")[0], "value": business.split("|")[1]} in task["identifier"]
    patient = ooa.get(task["for"]["reference"])
    assert set(patient) <= {"resourceType", "id", "meta", "identifier", "name", "birthDate", "gender"}
    assert {"system": NHS, "value": "9990000174"} in patient["identifier"]
    sr = ooa.get(task["basedOn"][0]["reference"])
    assert sr["subject"]["reference"] == task["for"]["reference"]
    assert ooa.count("Consent", patient=task["for"]["reference"], status="active") == 2

    # storing the same request again (still requested) does not send it again
    home_task = home.get(f"Task/{home_task_id}")
    home.put(dict(home_task, description="RHA requested from the placement area"))
    assert len(home.outbox("ooa-request")) == 1

    # the OOA trust does the assessment
    for step in ("accepted", "in-progress"):
        task = ooa.put(dict(task, status=step))
    form = json.loads(FORM.read_text())
    form.pop("id")
    form["subject"] = {"reference": task["for"]["reference"]}
    form["author"] = {"display": "OOA nurse"}
    r = ooa.post("QuestionnaireResponse", form)
    assert r.status_code == 201, r.text
    qr = r.json()
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan",
            "identifier": [{"system": "https://zz901.example/Id/health-plan", "value": f"HP-{home_task_id}"}],
            "category": [{"coding": [{"system": PLAN_CATEGORY, "code": "health-plan"}]}],
            "subject": {"reference": task["for"]["reference"]}, "title": "Health plan after the RHA",
            "supportingInfo": [{"reference": f"QuestionnaireResponse/{qr['id']}"}]}
    r = ooa.post("CarePlan", plan)
    assert r.status_code == 201, r.text
    plan_id = r.json()["id"]
    task["status"] = "completed"
    task["output"] = [{"type": {"text": "Completed assessment"},
                       "valueReference": {"reference": f"QuestionnaireResponse/{qr['id']}"}},
                      {"type": {"text": "Health plan"}, "valueReference": {"reference": f"CarePlan/{plan_id}"}}]
    ooa.put(task)

    done = poll("the home Task to be completed",
                lambda: (t := home.get(f"Task/{home_task_id}"))["status"] == "completed" and t, WAIT, home, ooa)
    refs = [o["valueReference"]["reference"] for o in done["output"]]
    assert sorted(r.split("/")[0] for r in refs) == ["CarePlan", "QuestionnaireResponse"]
    home_qr = home.get(next(r for r in refs if r.startswith("QuestionnaireResponse/")))
    assert home_qr["status"] == "completed"
    assert home_qr["subject"]["reference"] == done["for"]["reference"]  # the home child, by NHS number
    home_plan = home.get(next(r for r in refs if r.startswith("CarePlan/")))
    assert home_plan["supportingInfo"][0]["reference"] == f"QuestionnaireResponse/{home_qr['id']}"
    # the home Task still points at the home child and request, and went through the states
    first = home.get(f"Task/{home_task_id}/_history/1")
    assert done["for"] == first["for"] and done["basedOn"] == first["basedOn"]
    assert done["owner"] == {"identifier": {"system": ODS, "value": "ZZ901"}}
    assert not any(i["system"] == REQUESTER_TASK for i in done["identifier"])
    history = home.get(f"Task/{home_task_id}/_history")
    statuses = [e["resource"]["status"] for e in reversed(history["entry"])]
    assert statuses == ["requested", "requested", "accepted", "in-progress", "completed"]
    # nothing went back and forth twice
    time.sleep(2.5)
    assert ooa.count("Task", identifier=f"{REQUESTER_TASK}|RDY/{home_task_id}") == 1
    assert home.count("QuestionnaireResponse", subject=done["for"]["reference"]) == 1
    [result] = ooa.outbox("ooa-result")
    assert result.status == "delivered" and result.attempts == 1
    assert ooa.outbox("ooa-request") == [] and home.outbox("ooa-result") == []  # no echo back


def test_partner_down_gets_the_request_later_exactly_once(pair):
    home, ooa = pair
    home.start()
    home_task_id, _ = create_request(home)
    time.sleep(3)  # the home worker tries and fails meanwhile
    ooa.start()
    poll("the late delivery", lambda: ooa_task_for(ooa, home_task_id), WAIT, home, ooa)
    time.sleep(3)
    assert ooa.count("Task", identifier=f"{REQUESTER_TASK}|RDY/{home_task_id}") == 1
    assert ooa.count("Task") == 1
    [message] = home.outbox("ooa-request")
    assert message.status == "delivered" and message.attempts >= 2  # refused connections first
    assert message.correlation_id == home_task_id and message.patient.startswith("Patient/")
    # sent again as a new message (new X-Request-Id, `lac-adapter outbox replay`): nothing changes
    engine = make_engine(home.database)
    try:
        with engine.connect().execution_options(write=True) as conn, conn.begin():
            outbox.replay(conn, message.message_id)
    finally:
        engine.dispose()
    poll("the replay to be delivered",
         lambda: [m.status for m in home.outbox("ooa-request")] == ["delivered", "delivered"], WAIT, home, ooa)
    assert ooa.count("Task") == 1
    assert ooa.count("Patient") == 1 and ooa.count("ServiceRequest") == 1 and ooa.count("Consent") == 2


def test_sender_killed_after_queueing_delivers_once_after_restart(pair):
    home, ooa = pair
    ooa.start()
    home.start()
    home_task_id, _ = create_request(home)
    home.kill()
    home.start()
    poll("delivery after the restart", lambda: ooa_task_for(ooa, home_task_id), WAIT, home, ooa)
    time.sleep(4)  # longer than the lease: a message claimed by the killed process is not sent twice
    assert ooa.count("Task", identifier=f"{REQUESTER_TASK}|RDY/{home_task_id}") == 1
    assert ooa.count("Task") == 1
    [message] = home.outbox("ooa-request")
    assert message.status == "delivered"
