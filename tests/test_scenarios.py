"""The curated scenario set (fixtures/scenarios) and `lac-adapter fixtures load`.

(a) golden: each scenario's XML maps, with the real mappers, to its committed fhir/*.json;
(b) `fixtures load` into our own database (twice: the second run adds nothing), then the facts
    of each story, read back through a real server on loopback;
(c) `fixtures load --target` POSTs the Bundles to a real server.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import date

import pytest

from adapter.cli_fixtures import (
    DEFAULT_SCENARIOS,
    bundle_json,
    bundle_name,
    document_key,
    documents_of,
    fixtures_app,
    map_document,
    normalise_bundle,
    scenarios,
)
from adapter.config import PROJECT_ROOT
from adapter.mapping.la_notification import nhs_number_valid
from adapter.pathway.clocks import add_working_days, bank_holidays
from tests.support.auth import ADMIN_TOKEN, admin_session
from tests.support.server import running_server

ADMIN_HTTP = admin_session()

NHS = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
LA = "https://lac-fhir-adapter.example/fhir/Id/local-authority"
SD = "https://lac-fhir-adapter.example/fhir/StructureDefinition/"
SCENARIOS = scenarios(DEFAULT_SCENARIOS)
DOCUMENTS = sum(len(s.documents) for s in SCENARIOS)
CHILDREN = {
    "01-entered-care-in-area": "9990000166",
    "02-placed-out-of-area": "9990000174",
    "03-placed-in-by-another-la": "9990000182",
    "04-sixteen-own-consent": "9990000190",
    "05-consent-refused-then-given": "9990000204",
    "06-care-leaver": "9990000212",
}


# --------------------------------------------------------------------------- (a) the files

def test_the_set_is_complete():
    assert [s.name for s in SCENARIOS] == list(CHILDREN)
    for scenario in SCENARIOS:
        assert scenario.documents, scenario.name
        assert (scenario.folder / "README.md").is_file(), scenario.name
    assert (DEFAULT_SCENARIOS / "README.md").is_file()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_golden_bundles(scenario):
    """Mapping the XML reproduces the committed fhir/*.json (scripts/build_scenarios.py rebuilds them)."""
    expected = {}
    for position, document in enumerate(documents_of(scenario.folder), start=1):
        doc = map_document(document.read_bytes())
        expected[bundle_name(position, document)] = bundle_json(normalise_bundle(doc.bundle, document_key(doc)))
    assert sorted(expected) == [p.name for p in scenario.bundles], "run scripts/build_scenarios.py"
    for name, text in expected.items():
        assert (scenario.folder / "fhir" / name).read_text(encoding="utf-8") == text, \
            f"{scenario.name}/fhir/{name} is out of date: run scripts/build_scenarios.py"


def test_normalised_uuids_are_stable_and_consistent():
    document = documents_of(DEFAULT_SCENARIOS / "01-entered-care-in-area")[0]
    one, two = map_document(document.read_bytes()), map_document(document.read_bytes())
    a, b = (normalise_bundle(d.bundle, document_key(d)) for d in (one, two))
    assert a == b
    full_urls = {e["fullUrl"] for e in a["entry"] if "fullUrl" in e}
    assert len(full_urls) == len(a["entry"])
    text = bundle_json(a)
    for ref in re.findall(r'"reference": "(urn:uuid:[^"]+)"', text):
        assert ref in full_urls


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_one_synthetic_child_per_scenario(scenario):
    nhs = CHILDREN[scenario.name]
    assert nhs.startswith("999") and nhs_number_valid(nhs)
    for document in scenario.documents:
        doc = map_document(document.read_bytes())
        assert nhs in (doc.subject or "") or nhs in bundle_json(doc.bundle), document
    # nobody else in fixtures/ or mappings/ uses these numbers
    for folder in ("fixtures", "mappings"):
        for path in (PROJECT_ROOT / folder).rglob("*"):
            if path.is_file() and DEFAULT_SCENARIOS not in path.parents and path.suffix in (".json", ".xml", ".csv"):
                assert nhs not in path.read_text(encoding="utf-8", errors="replace"), path


# --------------------------------------------------------------------------- running the command

def _registered() -> bool:
    from adapter.cli import app

    return any(group.name == "fixtures" for group in app.registered_groups)


def run_fixtures(*args: str) -> tuple[int, str]:
    """`lac-adapter fixtures ARGS` as a subprocess once the sub-app is registered in adapter.cli,
    until then through typer's test runner."""
    if _registered():
        done = subprocess.run([sys.executable, "-m", "adapter", "fixtures", *args], cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=600)
        return done.returncode, done.stdout + done.stderr
    from typer.testing import CliRunner

    result = CliRunner().invoke(fixtures_app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


# --------------------------------------------------------------------------- (b) our own database

@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> str:
    """A FHIR base over a fresh SQLite database into which `fixtures load` ran twice."""
    url = f"sqlite:///{tmp_path_factory.mktemp('scenarios') / 'x.sqlite3'}"
    code, output = run_fixtures("load", "--database", url)
    assert code == 0, output
    assert f"{DOCUMENTS} loaded, 0 already there, 0 failed" in output, output
    code, output = run_fixtures("load", "--database", url)
    assert code == 0, output
    assert f"0 loaded, {DOCUMENTS} already there, 0 failed" in output, output
    with running_server(url) as base:
        yield base


def search(base: str, rtype: str, **params) -> dict:
    r = ADMIN_HTTP.get(f"{base}/{rtype}", params={"_count": "100", **params},
                     headers={"Accept": "application/fhir+json"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def resources(bundle: dict, rtype: str | None = None) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry") or []
            if rtype is None or e["resource"]["resourceType"] == rtype]


def patient(base: str, scenario: str) -> dict:
    found = resources(search(base, "Patient", identifier=f"{NHS}|{CHILDREN[scenario]}"))
    assert len(found) == 1, found
    return found[0]


def of_child(base: str, rtype: str, scenario: str, param: str = "patient", **params) -> list[dict]:
    return resources(search(base, rtype, **{f"{param}.identifier": f"{NHS}|{CHILDREN[scenario]}"}, **params), rtype)


def ident(resource: dict, system: str) -> str | None:
    return next((i["value"] for i in resource.get("identifier") or [] if i.get("system") == system), None)


def ext(resource: dict, url: str) -> dict | None:
    return next((e for e in resource.get("extension") or [] if e["url"] == url), None)


def placement(episode: dict) -> dict:
    return {e["url"]: e for e in ext(episode, SD + "lac-placement")["extension"]}


def iha_task(base: str, scenario: str) -> tuple[dict, dict]:
    bundle = search(base, "Task", **{"patient.identifier": f"{NHS}|{CHILDREN[scenario]}"}, _include="Task:owner")
    tasks = resources(bundle, "Task")
    assert len(tasks) == 1, tasks
    owners = resources(bundle, "Organization")
    assert len(owners) == 1
    return tasks[0], owners[0]


def latest_consents(consents: list[dict]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for consent in sorted(consents, key=lambda c: c["dateTime"]):
        for purpose in consent["provision"]["purpose"]:
            latest[purpose["code"]] = consent
    return latest


def test_every_child_once_and_every_document_kept(loaded):
    for scenario in CHILDREN:
        patient(loaded, scenario)
    assert search(loaded, "DocumentReference", _summary="count")["total"] == DOCUMENTS


def test_01_entered_care_in_area(loaded):
    child = patient(loaded, "01-entered-care-in-area")
    assert child["birthDate"] == "2025-04-22"
    episodes = of_child(loaded, "EpisodeOfCare", "01-entered-care-in-area")
    assert [(e["status"], e["period"]["start"]) for e in episodes] == [("active", "2026-09-14")]
    task, owner = iha_task(loaded, "01-entered-care-in-area")
    due = add_working_days(date(2026, 9, 14), 20, bank_holidays()).isoformat()
    assert due == "2026-10-12"
    assert task["status"] == "requested" and task["restriction"]["period"]["end"] == due
    assert task["for"]["reference"] == f"Patient/{child['id']}"
    assert ident(owner, ODS) == "RD3"
    consents = of_child(loaded, "Consent", "01-entered-care-in-area")
    assert sorted(c["provision"]["purpose"][0]["code"] for c in consents) == ["assessment", "information-sharing"]
    assert all(c["status"] == "active" and c["provision"]["type"] == "permit" for c in consents)
    responses = of_child(loaded, "QuestionnaireResponse", "01-entered-care-in-area", param="subject")
    assert [(r["status"], r["questionnaire"]) for r in responses] == \
        [("completed", "https://lac-fhir-adapter.example/fhir/Questionnaire/iha-c|1.0.0")]
    observations = [o for o in of_child(loaded, "Observation", "01-entered-care-in-area", param="subject")
                    if "derivedFrom" in o]  # what the form yields (not its quality audit, focused on it)
    assert observations
    assert all(o["derivedFrom"][0]["reference"] == f"QuestionnaireResponse/{responses[0]['id']}" for o in observations)
    assert "8302-2" in {c["code"] for o in observations for c in o["code"]["coding"]}  # body height
    assert of_child(loaded, "CarePlan", "01-entered-care-in-area", param="subject")  # the health plan
    assert "2026-09-14" < responses[0]["authored"][:10] <= due


def test_02_placed_out_of_area_then_back(loaded):
    episodes = of_child(loaded, "EpisodeOfCare", "02-placed-out-of-area")
    assert len(episodes) == 1 and episodes[0]["status"] == "active"
    episode = episodes[0]
    assert episode["meta"]["versionId"] == "2"  # entered care, then the placement change
    place = placement(episode)
    assert place["postcodeDistrict"]["valueString"] == "BH14"
    assert place["outOfArea"]["valueBoolean"] is False
    assert place["provider"]["valueCoding"]["code"] == "PR1"
    assert "responsibleAuthority" in place
    task, owner = iha_task(loaded, "02-placed-out-of-area")
    assert ident(owner, ODS) == "ZZ901"  # requested from the placement area's provider
    assert task["restriction"]["period"]["end"] == "2026-06-29"


def test_03_placed_in_by_another_la(loaded):
    nhs = CHILDREN["03-placed-in-by-another-la"]
    bundle = search(loaded, "EpisodeOfCare", **{"patient.identifier": f"{NHS}|{nhs}"},
                    _include="EpisodeOfCare:organization")
    [episode] = resources(bundle, "EpisodeOfCare")
    [authority] = resources(bundle, "Organization")
    assert ident(authority, LA) == "992" and authority["name"] == "Westholm Borough Council"
    responsible = placement(episode)["responsibleAuthority"]["valueReference"]["reference"]
    assert responsible == f"Organization/{authority['id']}"
    assert placement(episode)["outOfArea"]["valueBoolean"] is True
    task, owner = iha_task(loaded, "03-placed-in-by-another-la")
    assert ident(owner, ODS) == "RD3"  # our service does the IHA for the placing authority
    assert task["restriction"]["period"]["end"] == "2026-08-03"
    ours = resources(search(loaded, "Organization", identifier=f"{LA}|991"))
    assert len(ours) == 1 and ours[0]["id"] != authority["id"]


def test_04_sixteen_year_old_consents_for_himself(loaded):
    child = patient(loaded, "04-sixteen-own-consent")
    consents = of_child(loaded, "Consent", "04-sixteen-own-consent")
    assert len(consents) == 2
    for consent in consents:
        assert consent["provision"]["type"] == "permit" and consent["status"] == "active"
        assert [p["reference"] for p in consent["performer"]] == [f"Patient/{child['id']}"]  # the child himself
        assert ext(consent, SD + "lac-consent-grantor")["valueCoding"]["code"] == "young-person"
        assert ext(consent, SD + "lac-consent-capacity")["valueCoding"]["code"] == "presumed-16-17"
        assert consent["dateTime"] == "2026-09-30"
    [response] = of_child(loaded, "QuestionnaireResponse", "04-sixteen-own-consent", param="subject")
    assert response["status"] == "completed" and "/iha-yp|" in response["questionnaire"]
    assert response["authored"][:10] > "2026-09-30"  # the assessment after the consent


def test_05_consent_refused_then_given(loaded):
    consents = of_child(loaded, "Consent", "05-consent-refused-then-given")
    assert len(consents) == 4
    assert sorted((c["dateTime"], c["provision"]["type"]) for c in consents) == [
        ("2026-10-07", "deny"), ("2026-10-07", "deny"), ("2026-10-21", "permit"), ("2026-10-21", "permit")]
    latest = latest_consents(consents)
    assert set(latest) == {"assessment", "information-sharing"}
    assert all(c["provision"]["type"] == "permit" and c["status"] == "active" for c in latest.values())


def test_06_care_leaver(loaded):
    episodes = of_child(loaded, "EpisodeOfCare", "06-care-leaver")
    by_type = {e["type"][0]["coding"][0]["code"]: e for e in episodes}
    assert set(by_type) == {"764841000000100", "care-leaver"}
    looked_after, leaver = by_type["764841000000100"], by_type["care-leaver"]
    assert looked_after["status"] == "finished"
    assert looked_after["period"] == {"start": "2023-03-14", "end": "2026-10-02"}
    assert ext(looked_after, SD + "lac-reason-episode-ceased")["valueCoding"]["code"] == "E17"
    assert leaver["status"] == "active" and leaver["period"]["start"] == "2026-10-02"
    assert ext(leaver, SD + "lac-ehcp")["valueBoolean"] is True
    [response] = of_child(loaded, "QuestionnaireResponse", "06-care-leaver", param="subject")
    assert response["status"] == "completed" and "/rha-yp|" in response["questionnaire"]
    assert "2023-03-14" < response["authored"][:10] < "2026-10-02"  # reviewed while still looked after


# --------------------------------------------------------------------------- (c) any FHIR server

def test_load_into_a_fhir_server_with_target(tmp_path):
    bundles = sum(len(s.bundles) for s in SCENARIOS)
    with running_server(f"sqlite:///{tmp_path / 'target.sqlite3'}") as base:
        code, output = run_fixtures("load", "--target", base, "--token", ADMIN_TOKEN)
        assert code == 0, output
        assert f"{bundles} loaded, 0 already there, 0 failed" in output, output
        code, output = run_fixtures("load", "--target", base, "--token", ADMIN_TOKEN)
        assert code == 0, output
        assert f"0 loaded, {bundles} already there, 0 failed" in output, output
        for scenario in CHILDREN:
            patient(base, scenario)
        [episode] = [e for e in of_child(base, "EpisodeOfCare", "06-care-leaver") if e["status"] == "finished"]
        assert episode["period"]["end"] == "2026-10-02"
        assert of_child(base, "Observation", "01-entered-care-in-area", param="subject")


def test_failures_are_reported_with_exit_code_1(tmp_path):
    broken = tmp_path / "99-broken" / "notifications"
    broken.mkdir(parents=True)
    source = DEFAULT_SCENARIOS / "06-care-leaver" / "notifications" / "02-left-care.xml"
    (broken / "01-left-care.xml").write_bytes(source.read_bytes())  # about a child not held: 422
    code, output = run_fixtures("load", str(tmp_path), "--database", f"sqlite:///{tmp_path / 'x.sqlite3'}")
    assert code == 1
    assert "0 loaded, 0 already there, 1 failed" in output
    assert "99-broken/notifications/01-left-care.xml: 422" in output
