"""A bounded, repeatable property-based fuzz run of the FHIR HTTP API (hypothesis).

schemathesis needs an OpenAPI description, which this FHIR API does not have (FHIR lives
under one plain ASGI endpoint), so requests are generated with hypothesis directly: served and
unknown resource types, ids, methods, query parameters drawn from the real SearchParameter
names plus garbage, modifiers and prefixes, and JSON bodies shaped like Patient, Observation
and Task with random values and extra fields.

Properties: no 5xx ever; every error body is an OperationOutcome; the server still answers
/fhir/metadata afterwards. `derandomize=True` makes CI repeatable; about 150 examples in all
per backend.
"""

from __future__ import annotations

import json
import string
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import characters

from adapter.config import load_settings
from adapter.fhir.search_params import SearchRegistry
from tests.support.auth import ADMIN_HEADERS

# Text includes NUL and other control characters, which once broke the PostgreSQL backend
# (tests/e2e/test_hardening.py keeps those requests as regression cases).


def st_text(alphabet=None, **kw):
    return st.text(alphabet if alphabet is not None else characters(), **kw)


SERVED = tuple(load_settings(database_url="sqlite://").resource_types)
REGISTRY = SearchRegistry(SERVED)
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

UNSERVED = ("Spaceship", "patient", "Medication", "Resource", "DomainResource", "_history", "metadata",
            "$validate", "Patient$x", "..", "%2e%2e", "_search", "Bundle_", "0")
TYPES = st.one_of(st.sampled_from(SERVED), st.sampled_from(("Patient", "Observation", "Task")),
                  st.sampled_from(UNSERVED))
ID_CHARS = string.ascii_letters + string.digits + "-."
IDS = st.one_of(st.uuids().map(str), st_text(ID_CHARS, min_size=1, max_size=70),
                st_text(max_size=30).filter(lambda s: s.strip("/") == s and "/" not in s and s not in (".", "..")),
                st.sampled_from(["1", "-1", "0" * 65, "null", "undefined", "$everything", "_history"]))

RESULT_PARAMS = ["_sort", "_count", "_offset", "_include", "_revinclude", "_summary", "_elements", "_total",
                 "_format", "_pretty", "_contained", "_containedType", "_id", "_lastUpdated", "_tag",
                 "_profile", "_security", "_source", "_has", "_text", "_content", "_list", "_query"]
ALL_CODES = sorted({code for t in SERVED for code in REGISTRY.params(t)})
MODIFIERS = ["", "", "", ":exact", ":contains", ":missing", ":not", ":text", ":below", ":above", ":in",
             ":not-in", ":of-type", ":identifier", ":iterate", ":Patient", ":Spaceship", ":", "::", ":x:y"]
PREFIXES = ["", "", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "zz"]
VALUE_SHAPES = st.one_of(
    st_text(max_size=40),
    st.sampled_from(["true", "false", "*", "", "|", "||", "a|b|c", "http://loinc.org|29463-7", "|9990000018",
                     "Patient/1", "Patient/", "/Patient/1/_history/1", "urn:uuid:1", "5.4|http://unitsofmeasure.org|mg",
                     "1e400", "-0", "NaN", "1.0000000000000000000001", "2024", "2024-02-30", "2024-13-01T25:61:61Z",
                     "2024-01-01T00:00:00+99:00", "Patient:subject", "Task:patient:Patient", "*:*",
                     "Observation:subject:code=1", "count", "data", "text", "true,false", "name,-birthdate",
                     "' OR 1=1 --", "1) OR (1=1", "Patient.name.where(true)", "%00", "\\", "\u202e", "\x7f"]),
    st.dates().map(str),
    st.datetimes().map(lambda d: d.isoformat()),
    st.integers(min_value=-2**63, max_value=2**63 - 1).map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)


TYPED_VALUES = {
    "string": st_text(max_size=20),
    "token": st.one_of(st_text(string.ascii_letters + string.digits + "-", max_size=12),
                       st.builds(lambda s, c: f"{s}|{c}",
                                 st.sampled_from(["http://loinc.org", "https://fhir.nhs.uk/Id/nhs-number", ""]),
                                 st_text(string.ascii_letters + string.digits, max_size=10))),
    "reference": st.one_of(st.builds(lambda t, i: f"{t}/{i}", st.sampled_from(SERVED), st.uuids().map(str)),
                           st.uuids().map(str)),
    "date": st.builds(lambda p, d: p + d, st.sampled_from(PREFIXES),
                      st.one_of(st.dates().map(str), st.datetimes().map(lambda d: d.isoformat() + "Z"),
                                st.sampled_from(["2024", "2024-02", "2024-02-29T10:00:00+01:00"]))),
    "number": st.builds(lambda p, d: p + str(d), st.sampled_from(PREFIXES),
                        st.decimals(allow_nan=False, allow_infinity=False, places=3)),
    "quantity": st.builds(lambda p, d, u: f"{p}{d}{u}", st.sampled_from(PREFIXES),
                          st.decimals(allow_nan=False, allow_infinity=False, places=2),
                          st.sampled_from(["", "||kg", "|http://unitsofmeasure.org|kg"])),
    "uri": st.sampled_from(["http://hl7.org/fhir/StructureDefinition/Patient", "urn:x", "not a uri", ""]),
}


@st.composite
def query_params(draw, rtype: str):
    """Mostly well-typed values for the type's own parameters; sometimes anything at all."""
    served = REGISTRY.params(rtype) if rtype in SERVED else {}
    codes = sorted(served)
    names = st.one_of(st.sampled_from(RESULT_PARAMS), st.sampled_from(ALL_CODES), st_text(min_size=1, max_size=15),
                      st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(codes or ALL_CODES),
                                st.sampled_from(ALL_CODES)),
                      st.builds(lambda t, a, b: f"_has:{t}:{a}:{b}", st.sampled_from(SERVED),
                                st.sampled_from(ALL_CODES), st.sampled_from(ALL_CODES)))
    params = []
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        if codes and draw(st.integers(0, 9)) < 6:  # a real parameter with a value of its type
            code = draw(st.sampled_from(codes))
            modifier = draw(st.sampled_from(["", "", "", "", ":missing"]))
            value = draw(st.sampled_from(["true", "false"])) if modifier else draw(TYPED_VALUES[served[code].type]) \
                if served[code].type in TYPED_VALUES else draw(st_text(max_size=10))
            params.append((code + modifier, value))
        else:
            name = draw(names) + draw(st.sampled_from(MODIFIERS))
            params.append((name, draw(st.sampled_from(PREFIXES)) + draw(VALUE_SHAPES)))
    return params


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**63, max_value=2**63 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), st_text(max_size=30))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st_text(max_size=12), inner, max_size=3)), max_leaves=8)
def MAYBE(strategy):  # noqa: N802 - usually the right shape, sometimes anything
    return st.one_of(strategy, strategy, strategy, strategy, strategy, JSON_VALUES)


def reference(types=("Patient", "Practitioner", "Organization", "Spaceship")):
    return st.one_of(st.builds(lambda t, i: {"reference": f"{t}/{i}"}, st.sampled_from(types), IDS),
                     st.builds(lambda i: {"reference": i}, st_text(max_size=20)),
                     st.just({"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}}))


CODING = st.fixed_dictionaries({}, optional={"system": st.sampled_from(["http://loinc.org", "urn:x", "", "not a uri"]),
                                             "code": st_text(max_size=10), "display": st_text(max_size=10)})
CONCEPT = st.fixed_dictionaries({}, optional={"coding": st.lists(CODING, max_size=2), "text": st_text(max_size=10)})
DATES = st.one_of(st.dates().map(str), st.datetimes().map(lambda d: d.isoformat()), st_text(max_size=12))

PATIENT = st.fixed_dictionaries({"resourceType": st.just("Patient")}, optional={
    "id": IDS,
    "name": MAYBE(st.lists(st.fixed_dictionaries({}, optional={"family": st_text(max_size=20),
                                                              "given": st.lists(st_text(max_size=10), max_size=2)}),
                           max_size=2)),
    "gender": MAYBE(st.sampled_from(["male", "female", "other", "unknown", "robot"])),
    "birthDate": MAYBE(DATES),
    "identifier": MAYBE(st.lists(st.fixed_dictionaries({"system": st.just("https://fhir.nhs.uk/Id/nhs-number"),
                                                        "value": st_text(string.digits, max_size=12)}), max_size=2)),
    "active": MAYBE(st.booleans()),
    "managingOrganization": MAYBE(reference(("Organization",))),
    "meta": MAYBE(st.fixed_dictionaries({}, optional={"tag": st.lists(CODING, max_size=2),
                                                      "profile": st.lists(st_text(max_size=30), max_size=2)})),
})
OBSERVATION = st.fixed_dictionaries({
    "resourceType": st.just("Observation"),
    "status": MAYBE(st.sampled_from(["final", "preliminary", "amended", "bogus"])),
    "code": MAYBE(CONCEPT),
}, optional={
    "subject": MAYBE(reference()),
    "effectiveDateTime": MAYBE(DATES),
    "valueQuantity": MAYBE(st.fixed_dictionaries({}, optional={
        "value": st.one_of(st.decimals(allow_nan=False, allow_infinity=False), st.integers()),
        "unit": st_text(max_size=5), "system": st.just("http://unitsofmeasure.org"), "code": st_text(max_size=5)})),
    "valueString": MAYBE(st_text(max_size=20)),
})
TASK = st.fixed_dictionaries({
    "resourceType": st.just("Task"),
    "status": MAYBE(st.sampled_from(["draft", "requested", "received", "accepted", "ready", "in-progress",
                                     "completed", "cancelled", "failed", "on-hold", "rejected", "nonsense"])),
    "intent": MAYBE(st.sampled_from(["order", "plan", "proposal", "x"])),
}, optional={
    "code": MAYBE(CONCEPT),
    "for": MAYBE(reference(("Patient",))),
    "owner": MAYBE(reference(("Organization", "Practitioner"))),
    "authoredOn": MAYBE(DATES),
    "executionPeriod": MAYBE(st.fixed_dictionaries({}, optional={"start": DATES, "end": DATES})),
    "input": MAYBE(st.lists(st.fixed_dictionaries({"type": CONCEPT, "valueString": st_text(max_size=10)}),
                            max_size=2)),
    "output": MAYBE(st.lists(st.fixed_dictionaries({"type": CONCEPT, "valueReference": reference()}), max_size=2)),
})


@st.composite
def bodies(draw):
    body = dict(draw(st.one_of(PATIENT, OBSERVATION, TASK)))
    if draw(st.integers(0, 3)) == 0:  # random extra fields, sometimes legal-looking, sometimes not
        for key, value in draw(st.dictionaries(st.one_of(st_text(max_size=12), st.sampled_from(
                ["text", "contained", "extension", "modifierExtension", "_birthDate", "implicitRules",
                 "resourceType", "meta", "id"])), JSON_VALUES, max_size=3)).items():
            body[key] = value
    return body


def check(r: requests.Response, what: str) -> None:
    assert r.status_code < 500, f"{what} -> {r.status_code}: {r.text[:800]}"
    if r.status_code >= 400 and r.request.method != "HEAD" and r.content:
        ctype = r.headers.get("Content-Type", "")
        assert ctype.startswith(("application/fhir+json", "application/fhir+xml")), f"{what}: {ctype}"
        if ctype.startswith("application/fhir+json"):
            assert r.json()["resourceType"] == "OperationOutcome", what
        else:
            assert b"<OperationOutcome" in r.content, what
    assert b"Traceback" not in r.content, what


def describe(method: str, path: str, params=None, body=None) -> str:
    text = f"{method} /fhir/{path}"
    if params:
        text += f" params={params!r}"
    if body is not None:
        text += f" body={json.dumps(body, default=str)[:1500]}"
    return text


def send(http: requests.Session, base: str, method: str, path: str, params=None, body=None, headers=None):
    data = json.dumps(body, default=str).encode() if body is not None else None
    hdrs = {"Content-Type": "application/fhir+json"} if data is not None else {}
    r = http.request(method, f"{base}/{path}", params=params, data=data, headers={**hdrs, **(headers or {})},
                     timeout=60)
    check(r, describe(method, path, params, body))
    return r


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        session.headers.update(ADMIN_HEADERS)
        yield session


VERSIONS = ["1", "2", "0", "-1", "x", "9223372036854775807"]


@st.composite
def read_requests(draw):
    rtype = draw(TYPES)
    shape = draw(st.sampled_from(["type", "type", "type", "instance", "history", "vread", "type-history",
                                  "_search", "operation", "system"]))
    rid = draw(IDS)
    path = {"type": rtype, "instance": f"{rtype}/{rid}", "history": f"{rtype}/{rid}/_history",
            "vread": f"{rtype}/{rid}/_history/{draw(st.sampled_from(VERSIONS))}",
            "type-history": f"{rtype}/_history", "_search": f"{rtype}/_search",
            "operation": f"{rtype}/{draw(st.sampled_from(['$validate', '$everything', '$meta', '$report', '$x']))}",
            "system": draw(st.sampled_from(["", "_history", "metadata", "_search"]))}[shape]
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD", "DELETE"]) if shape != "_search" else st.just("POST"))
    headers = draw(st.fixed_dictionaries({}, optional={
        "Accept": st.sampled_from(["application/fhir+json", "application/fhir+xml", "*/*", "text/html", "x"]),
        "Prefer": st.sampled_from(["handling=strict", "handling=lenient", "return=minimal", "respond-async"]),
        "If-None-Match": st.sampled_from(['W/"1"', "*", "garbage"]),
        "If-Modified-Since": st.sampled_from(["Mon, 01 Jan 2024 00:00:00 GMT", "yesterday"])}))
    return method, path, draw(query_params(rtype)), headers


@FUZZ
@given(request=read_requests())
def test_fuzz_reads_and_searches(base_url, http, request):
    method, path, params, headers = request
    if method == "POST":  # _search with form-encoded parameters in the body
        r = http.post(f"{base_url}/{path}", data=params, headers=headers, timeout=60)
        check(r, describe(method, path, params))
    else:
        send(http, base_url, method, path, params=params, headers=headers)


@st.composite
def write_requests(draw):
    body = draw(bodies())
    rtype = body["resourceType"] if isinstance(body.get("resourceType"), str) else "Patient"
    kind = draw(st.sampled_from(["create", "create", "update", "conditional", "validate", "transaction", "patch"]))
    rid = draw(IDS)
    if kind == "update" and draw(st.booleans()):
        body["id"] = rid
    return kind, rtype, rid, body


@FUZZ
@given(request=write_requests())
def test_fuzz_writes(base_url, http, request):
    kind, rtype, rid, body = request
    if kind == "create":
        send(http, base_url, "POST", rtype, body=body)
    elif kind == "update":
        send(http, base_url, "PUT", f"{rtype}/{rid}", body=body)
    elif kind == "conditional":
        send(http, base_url, "POST", rtype, body=body, headers={"If-None-Exist": "identifier=" + quote(f"|{rid}")})
        send(http, base_url, "PUT", rtype, params=[("identifier", f"|{rid}")], body=body)
    elif kind == "validate":
        send(http, base_url, "POST", f"{rtype}/$validate", body=body)
    elif kind == "transaction":
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0b0b0b0b-0000-4000-8000-000000000001", "resource": body,
             "request": {"method": "POST", "url": rtype}}]}
        send(http, base_url, "POST", "", body=bundle)
    else:
        created = send(http, base_url, "POST", "Patient", body={"resourceType": "Patient", "active": True})
        assert created.status_code == 201
        ops = [{"op": "replace", "path": f"/{k}", "value": v} for k, v in body.items() if k != "resourceType"]
        r = http.patch(f"{base_url}/Patient/{created.json()['id']}", data=json.dumps(ops, default=str),
                       headers={"Content-Type": "application/json-patch+json"}, timeout=60)
        check(r, describe("PATCH", f"Patient/{created.json()['id']}", body=ops))


RAW_BODIES = st.one_of(st.binary(max_size=200), st_text(max_size=200).map(str.encode),
                       JSON_VALUES.map(lambda v: json.dumps(v).encode()),
                       st.sampled_from([b"", b"{}", b"[]", b"null", b'{"resourceType":null}', b'{"resourceType":7}',
                                        b'{"resourceType":"Patient","id":{}}', b"<Patient/>",
                                        b'<Patient xmlns="http://hl7.org/fhir"><id value=""/></Patient>',
                                        b'\xef\xbb\xbf{"resourceType":"Patient"}', b'{"a":1e999999}']))
CONTENT_TYPES = st.sampled_from(["application/fhir+json", "application/fhir+xml", "application/json",
                                 "application/json-patch+json", "application/x-www-form-urlencoded",
                                 "text/plain", "multipart/form-data; boundary=x",
                                 "application/fhir+json; charset=latin1",
                                 "", ";;;"])


@FUZZ
@given(method=st.sampled_from(["POST", "PUT", "PATCH"]), rtype=TYPES, rid=st.one_of(st.none(), IDS),
       body=RAW_BODIES, content_type=CONTENT_TYPES)
def test_fuzz_raw_bodies(base_url, http, method, rtype, rid, body, content_type):
    path = rtype if rid is None else f"{rtype}/{rid}"
    r = http.request(method, f"{base_url}/{path}", data=body, headers={"Content-Type": content_type}, timeout=60)
    check(r, f"{method} /fhir/{path} Content-Type={content_type!r} body={body[:300]!r}")


def test_server_still_answers_after_fuzzing(base_url, http):
    r = http.get(f"{base_url}/metadata", timeout=30)
    assert r.status_code == 200
    assert r.json()["resourceType"] == "CapabilityStatement"
