"""LA health notifications (XML) to FHIR: golden bundles, malformed input, the IHA due date,
validation of every produced resource, and a run of the bundles through the real store.

Regenerate the golden files after a deliberate mapping change with
`LA_NOTIFICATION_UPDATE_GOLDEN=1 pytest tests/mapping/test_la_notification.py`, then review the diff.
"""

from __future__ import annotations

import base64
import json
import os
import re

import pytest

from adapter.config import PROJECT_ROOT
from adapter.fhir.errors import FhirError
from adapter.mapping.la_notification import MAPPING, map_notification, nhs_number_valid
from adapter.validation.conformance import published_index
from adapter.validation.terminology import default_terminology
from adapter.validation.validator import Validator, errors
from tests.support.auth import admin_session
from tests.support.server import running_server

EXAMPLES = PROJECT_ROOT / "mappings" / "la-notification" / "examples"
FIXTURES = PROJECT_ROOT / "fixtures" / "la-notifications"
EXPECTED = FIXTURES / "expected"
NS = "https://lac-fhir-adapter.example/ns/la-notification/1.0"
EXAMPLE_NAMES = sorted(p.stem for p in EXAMPLES.glob("*.xml"))
_UUID = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def example(name: str) -> bytes:
    return (EXAMPLES / f"{name}.xml").read_bytes()


def normalised(doc) -> dict:
    """The MappedDocument as JSON, generated urn:uuids numbered by first appearance, and
    JSON Patch bodies decoded beside their Binary so a reviewer can read them."""
    out = {"identifier": doc.identifier, "document_type": doc.document_type, "mapping": doc.mapping,
           "content_type": doc.content_type, "subject": doc.subject, "unconsumed": doc.unconsumed,
           "bundle": doc.bundle,
           "patches": [json.loads(base64.b64decode(e["resource"]["data"]))
                       for e in doc.bundle["entry"] if e["resource"]["resourceType"] == "Binary"]}
    text = json.dumps(out, indent=2, ensure_ascii=False)
    numbers: dict[str, str] = {}
    text = _UUID.sub(lambda m: numbers.setdefault(m.group(0), f"urn:uuid:#{len(numbers) + 1}"), text)
    return json.loads(text)


def mutate(name: str, old: str, new: str) -> bytes:
    data = example(name).decode("utf-8")
    assert old in data, old
    return data.replace(old, new, 1).encode("utf-8")


def line_of(data: bytes, needle: str) -> int:
    for i, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(needle)


def fails(data: bytes, status: int) -> FhirError:
    with pytest.raises(FhirError) as info:
        map_notification(data)
    assert info.value.status == status, info.value.diagnostics
    return info.value


# -- golden files ---------------------------------------------------------------------------

def test_there_is_one_example_per_event():
    events = {"entered-care", "placement-change", "legal-status-change", "consent", "left-care",
              "became-care-leaver"}
    assert events <= set(EXAMPLE_NAMES)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_golden(name):
    got = normalised(map_notification(example(name)))
    path = EXPECTED / f"{name}.json"
    if os.environ.get("LA_NOTIFICATION_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert got == json.loads(path.read_text(encoding="utf-8"))


def test_fixtures_folder_holds_the_examples_as_sent():
    for name in EXAMPLE_NAMES:
        assert (FIXTURES / f"{name}.xml").read_bytes() == example(name), name


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_resource_validates_without_errors(name):
    validator = Validator(default_terminology())
    doc = map_notification(example(name))
    for entry in doc.bundle["entry"]:
        issues = errors(validator.validate(entry["resource"], published_index().resolve))
        assert not issues, (entry["request"], [i.diagnostics for i in issues])
    for ops in normalised(doc)["patches"]:
        for op in ops:
            value = op.get("value")
            if isinstance(value, dict) and value.get("url", "").endswith("lac-placement"):
                raise AssertionError("placement sub-extensions are patched one by one")


def test_document_contract():
    data = example("entered-care")
    doc = map_notification(data)
    assert doc.identifier == {"system": "https://lac-fhir-adapter.example/fhir/Id/la-notification",
                              "value": "991/DBC-2026-000481"}
    assert doc.source == data and doc.content_type == "application/xml"
    assert doc.mapping == MAPPING == "mappings/la-notification/la-notification-1.0.json"
    assert doc.document_type == "LA health notification: entered care"
    assert doc.bundle["type"] == "transaction"
    patient = [e for e in doc.bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert len(patient) == 1 and doc.subject == patient[0]["fullUrl"]
    assert patient[0]["request"]["ifNoneExist"] == (
        "identifier=https://fhir.nhs.uk/Id/nhs-number|9990000107,"
        "https://lac-fhir-adapter.example/fhir/Id/la-child-id|DBC-C-10481")


def by_type(doc, rtype: str) -> list[dict]:
    return [e["resource"] for e in doc.bundle["entry"] if e["resource"]["resourceType"] == rtype]


def test_entered_care_raises_the_iha_request_due_in_20_working_days_with_bank_holidays():
    doc = map_notification(example("entered-care"))  # Friday 18 December 2026
    [task] = by_type(doc, "Task")
    [request] = by_type(doc, "ServiceRequest")
    # 21-24 Dec (4), 25 and 28 Dec off, 29-31 (7), 1 Jan off, then 13 more: Wednesday 20 January 2027
    assert task["restriction"]["period"]["end"] == "2027-01-20"
    assert request["occurrencePeriod"] == {"start": "2026-12-18", "end": "2027-01-20"}
    assert task["status"] == "requested" and task["intent"] == "order"
    assert task["authoredOn"] == "2026-12-18T16:05:00Z"
    assert task["businessStatus"]["coding"][0]["code"] == "notification-received"
    assert task["code"]["coding"][0]["code"] == "iha"
    orgs = {e["fullUrl"]: e["resource"] for e in doc.bundle["entry"]
            if e["resource"]["resourceType"] == "Organization"}
    ods = lambda ref: orgs[ref["reference"]]["identifier"][0]["value"]  # noqa: E731
    assert ods(task["owner"]) == "RD3" and ods(task["requester"]) == "RDY"
    assert ods(request["performer"][0]) == "RD3"


def test_out_of_area_child_goes_to_the_placement_areas_provider():
    doc = map_notification(example("entered-care-out-of-area"))  # Monday 3 August 2026
    [task] = by_type(doc, "Task")
    orgs = {e["fullUrl"]: e["resource"] for e in doc.bundle["entry"]}
    assert orgs[task["owner"]["reference"]]["identifier"][0]["value"] == "ZZ901"
    assert task["restriction"]["period"]["end"] == "2026-09-01"  # 31 August is a bank holiday


def test_the_same_organisation_is_one_entry():
    doc = map_notification(example("entered-care"))  # sending = placing = responsible LA
    criteria = [(e["request"]["url"], e["request"].get("ifNoneExist")) for e in doc.bundle["entry"]]
    assert len(criteria) == len(set(criteria))
    las = [o for o in by_type(doc, "Organization") if "local-authority" in o["identifier"][0]["system"]]
    assert len(las) == 1


def test_patient_without_nhs_number_is_matched_on_la_child_id():
    data = mutate("entered-care", "    <NhsNumber>9990000107</NhsNumber>\n", "")
    doc = map_notification(data)
    [patient] = by_type(doc, "Patient")
    assert patient["identifier"] == [{"system": "https://lac-fhir-adapter.example/fhir/Id/la-child-id",
                                      "value": "DBC-C-10481"}]
    entry = next(e for e in doc.bundle["entry"] if e["resource"] is patient)
    assert entry["request"]["ifNoneExist"] == \
        "identifier=https://lac-fhir-adapter.example/fhir/Id/la-child-id|DBC-C-10481"


def test_other_events_refer_to_the_child_conditionally():
    for name in ("placement-change", "legal-status-change", "consent", "left-care", "became-care-leaver"):
        doc = map_notification(example(name))
        assert doc.subject.startswith("Patient?identifier="), name
        assert not by_type(doc, "Patient"), name
    doc = map_notification(example("consent"))
    [consent] = by_type(doc, "Consent")
    assert consent["patient"] == {"reference": doc.subject, "type": "Patient"}
    assert consent["performer"] == [{"reference": doc.subject, "type": "Patient"}]  # the young person


def test_consent_decisions():
    given = map_notification(example("entered-care"))
    assert [(c["status"], c["provision"]["type"], c["provision"]["purpose"][0]["code"])
            for c in by_type(given, "Consent")] == [("active", "permit", "assessment"),
                                                    ("active", "permit", "information-sharing")]
    [refused] = by_type(map_notification(example("consent")), "Consent")
    assert (refused["status"], refused["provision"]["type"]) == ("active", "deny")  # an active record of a refusal
    withdrawn = map_notification(mutate("consent", "<Decision>refused</Decision>", "<Decision>withdrawn</Decision>"))
    [consent] = by_type(withdrawn, "Consent")
    assert (consent["status"], consent["provision"]["type"]) == ("inactive", "deny")
    [mother] = by_type(given, "RelatedPerson")
    assert mother["identifier"][0]["value"] == "991/DBC-2026-000481/consent-grantor"
    assert mother["relationship"][0]["coding"][0]["code"] == "MTH"


def test_unconsumed_elements_are_reported_with_lines():
    doc = map_notification(example("entered-care"))
    data = example("entered-care")
    first = line_of(data, "<PlacingAuthority>") + 1
    assert doc.unconsumed == [f"line {first}: /LANotification/EnteredCare/PlacingAuthority/Code",
                              f"line {first + 1}: /LANotification/EnteredCare/PlacingAuthority/Name"]
    change = map_notification(example("placement-change"))
    assert any(u.endswith("/PlacementChange/Date") for u in change.unconsumed)
    assert any(u.endswith("/Placement/HealthProviderOds") for u in change.unconsumed)
    assert not any("LaChildId" in u or "NhsNumber" in u or "EpisodeStart" in u for u in change.unconsumed)


# -- malformed input ------------------------------------------------------------------------

def test_not_well_formed():
    data = mutate("entered-care", "<Date>2026-12-18</Date>", "<Date>2026-12-18</Dte>")
    err = fails(data, 400)
    assert f"line {line_of(data, '</Dte>')}" in err.diagnostics and "not well-formed" in err.diagnostics


@pytest.mark.parametrize("prolog", [
    '<!DOCTYPE LANotification [<!ENTITY x "boom">]>\n',
    '<!DOCTYPE LANotification SYSTEM "file:///etc/passwd">\n',
    '<!DOCTYPE lol [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>\n',
])
def test_dtd_and_entities_are_refused(prolog):
    data = mutate("entered-care", '<LANotification', prolog + '<LANotification')
    err = fails(data, 400)
    assert err.issues[0].code == "security"


def test_wrong_namespace():
    data = example("entered-care").replace(NS.encode(), b"urn:example:other")
    err = fails(data, 422)
    assert f"line {line_of(data, '<LANotification')}" in err.diagnostics and NS in err.diagnostics


def test_schema_violation_names_the_line():
    data = mutate("entered-care", "<PostcodeDistrict>BH15</PostcodeDistrict>",
                  "<PostcodeDistrict>BH15 1AA</PostcodeDistrict>")
    err = fails(data, 422)
    assert f"line {line_of(data, 'BH15 1AA')}" in err.diagnostics and "PostcodeDistrict" in err.diagnostics


def test_missing_required_element():
    data = mutate("entered-care", "    <LaChildId>DBC-C-10481</LaChildId>\n", "")
    err = fails(data, 422)
    assert "LaChildId" in err.diagnostics and err.diagnostics.startswith("line ")


def test_two_events_are_refused():
    data = mutate("entered-care", "</EnteredCare>",
                  "</EnteredCare>\n  <BecameCareLeaver><Date>2027-01-01</Date><Ehcp>false</Ehcp></BecameCareLeaver>")
    fails(data, 422)


@pytest.mark.parametrize("old, new, needle, system", [
    ("<LegalStatus>V2</LegalStatus>", "<LegalStatus>V9</LegalStatus>", "V9", "ssda903-legal-status"),
    ("<Type>U3</Type>", "<Type>Q1</Type>", "Q1", "ssda903-placement-type"),
    ("<Provider>PR1</Provider>", "<Provider>PR9</Provider>", "PR9", "ssda903-placement-provider"),
    ("<Grantor>parent-with-pr</Grantor>", "<Grantor>neighbour</Grantor>", "neighbour", "lac-consent-grantor"),
    ("<Purpose>information-sharing</Purpose>", "<Purpose>research</Purpose>", "research", "lac-consent-purpose"),
    ("<Capacity>not-competent</Capacity>", "<Capacity>maybe</Capacity>", "maybe", "lac-consent-capacity"),
    ("<LegalBasis>section-20-agreement</LegalBasis>", "<LegalBasis>s99</LegalBasis>", "s99",
     "lac-consent-legal-basis"),
])
def test_unknown_code_is_422_naming_the_line(old, new, needle, system):
    data = mutate("entered-care", old, new)
    err = fails(data, 422)
    assert err.issues[0].code == "code-invalid"
    assert f"line {line_of(data, new)}:" in err.diagnostics
    assert f"'{needle}'" in err.diagnostics and f"CodeSystem/{system}" in err.diagnostics


def test_unknown_reason_ceased():
    data = mutate("left-care", "<Reason>E4A</Reason>", "<Reason>E99</Reason>")
    err = fails(data, 422)
    assert f"line {line_of(data, 'E99')}:" in err.diagnostics and "ssda903-reason-episode-ceased" in err.diagnostics


def test_every_unknown_code_is_reported_at_once():
    data = mutate("entered-care", "<LegalStatus>V2</LegalStatus>", "<LegalStatus>V9</LegalStatus>")
    data = data.replace(b"<Type>U3</Type>", b"<Type>Q1</Type>")
    err = fails(data, 422)
    assert len(err.issues) == 2


@pytest.mark.parametrize("old, new", [
    ("<Date>2026-12-18</Date>", "<Date>2026-02-30</Date>"),
    ("<BirthDate>2019-05-14</BirthDate>", "<BirthDate>2019-13-01</BirthDate>"),
    ("<Sent>2026-12-18T16:05:00Z</Sent>", "<Sent>2026-12-18T25:05:00Z</Sent>"),
    ("<Sent>2026-12-18T16:05:00Z</Sent>", "<Sent>2026-12-18T16:05:00</Sent>"),  # no time zone
])
def test_impossible_date(old, new):
    data = mutate("entered-care", old, new)
    err = fails(data, 422)
    assert f"line {line_of(data, new)}:" in err.diagnostics


def test_event_before_birth():
    data = mutate("entered-care", "<Date>2026-12-18</Date>", "<Date>2018-12-18</Date>")
    err = fails(data, 422)
    assert f"line {line_of(data, '2018-12-18')}:" in err.diagnostics and "birth" in err.diagnostics


def test_change_before_the_episode_started():
    data = mutate("placement-change", "<Date>2027-02-03</Date>", "<Date>2026-12-01</Date>")
    err = fails(data, 422)
    assert f"line {line_of(data, '2026-12-01')}:" in err.diagnostics


@pytest.mark.parametrize("bad", ["9990000108", "9990000100", "1234567890"])
def test_nhs_number_with_a_bad_check_digit(bad):
    data = mutate("entered-care", "<NhsNumber>9990000107</NhsNumber>", f"<NhsNumber>{bad}</NhsNumber>")
    err = fails(data, 422)
    assert f"line {line_of(data, bad)}:" in err.diagnostics and bad in err.diagnostics


def test_nhs_number_check():
    for good in ("9990000107", "9990000115", "9990000123", "9990000131", "9990000158"):
        assert nhs_number_valid(good)
    assert not nhs_number_valid("999000010")
    assert not nhs_number_valid("999000010x")


def test_nhs_number_pattern_is_a_schema_error():
    data = mutate("entered-care", "<NhsNumber>9990000107</NhsNumber>", "<NhsNumber>999 000 0107</NhsNumber>")
    err = fails(data, 422)
    assert f"line {line_of(data, '999 000 0107')}:" in err.diagnostics


def test_out_of_area_needs_the_areas_provider():
    data = mutate("entered-care-out-of-area", "      <HealthProviderOds>ZZ901</HealthProviderOds>\n", "")
    err = fails(data, 422)
    assert f"line {line_of(data, '<Placement>')}:" in err.diagnostics and "HealthProviderOds" in err.diagnostics


def test_parent_grantor_needs_a_name_and_relationship():
    data = mutate("entered-care", "      <Relationship>MTH</Relationship>\n", "")
    err = fails(data, 422)
    assert f"line {line_of(data, '<Consent>')}:" in err.diagnostics and "Relationship" in err.diagnostics


# -- through the real store -----------------------------------------------------------------

class _Http:
    """requests against a running adapter, by path from the server root, as the administrator."""

    def __init__(self, root: str):
        self.root = root
        self.session = admin_session()

    def post(self, path: str, content: bytes | str | None = None, headers: dict | None = None):
        return self.session.post(self.root + path, data=content, headers=headers)

    def get(self, path: str, params: dict | None = None):
        return self.session.get(self.root + path, params=params)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    db = tmp_path_factory.mktemp("la-notification") / "adapter.sqlite3"
    with running_server(f"sqlite:///{db}") as base:
        yield _Http(base[: -len("/fhir")])


def run(client, name: str | None = None, data: bytes | None = None):
    doc = map_notification(data if data is not None else example(name))
    return client.post("/fhir", content=json.dumps(doc.bundle), headers={"Content-Type": "application/fhir+json"})


def episode(client, value: str) -> dict:
    found = client.get("/fhir/EpisodeOfCare", params={
        "identifier": f"https://lac-fhir-adapter.example/fhir/Id/lac-episode|{value}"}).json()
    [entry] = found["entry"]
    return entry["resource"]


def test_bundles_run_through_the_store(client):
    first = run(client, "entered-care")
    assert first.status_code == 200, first.text
    again = run(client, "entered-care")  # the same message twice changes nothing
    assert [e["response"]["status"] for e in again.json()["entry"]] == ["200 OK"] * len(again.json()["entry"])

    assert run(client, "placement-change").status_code == 200
    eoc = episode(client, "DBC-C-10481/2026-12-18")
    placement = {x["url"]: x for x in eoc["extension"][1]["extension"]}
    assert placement["type"]["valueCoding"]["code"] == "U1" and placement["outOfArea"]["valueBoolean"] is True
    assert "responsibleAuthority" in placement  # kept: sub-extensions are replaced one by one

    assert run(client, "entered-care-out-of-area").status_code == 200
    assert run(client, "legal-status-change").status_code == 200
    eoc = episode(client, "DBC-C-10377/2026-08-03")
    assert eoc["extension"][0]["valueCoding"]["code"] == "C2"

    left = mutate("left-care", "<LaChildId>DBC-C-10112</LaChildId>", "<LaChildId>DBC-C-10377</LaChildId>")
    left = left.replace(b"2026-10-05", b"2026-08-03")
    assert run(client, data=left).status_code == 200
    eoc = episode(client, "DBC-C-10377/2026-08-03")
    assert eoc["status"] == "finished" and eoc["period"]["end"] == "2027-04-30"
    assert run(client, data=left).status_code == 422  # cannot leave care twice: the patch's test fails

    consent = mutate("consent", "<NhsNumber>9990000123</NhsNumber>", "<NhsNumber>9990000107</NhsNumber>")
    consent = consent.replace(b"DBC-C-09930", b"DBC-C-10481")
    # a young person's own consent, moved onto a younger child, comes from someone who cannot give it
    refused = run(client, data=consent)
    assert refused.status_code == 422, refused.text
    assert "the Consent is invalid" in refused.text

    patients = client.get("/fhir/Patient", params={"_summary": "count"}).json()
    assert patients["total"] == 2


@pytest.mark.parametrize("name", ["placement-change", "consent", "became-care-leaver", "left-care"])
def test_unknown_child_fails_cleanly(client, name):
    data = example(name).replace(b"DBC-C-", b"XYZ-C-").replace(b"99900001", b"99900000")
    data = re.sub(rb"<NhsNumber>\d+</NhsNumber>", b"<NhsNumber>9990000018</NhsNumber>", data)
    response = run(client, data=data)
    assert response.status_code == 404, response.text
