"""Every official FHIR R4 example of a type we serve can be stored and read back unchanged.

The examples come from the npm package hl7.fhir.r4.examples@4.0.1 (fetched on first run
into .cache/, never committed). A few official examples break the R4 rules themselves;
they are listed with the rule they break and must be refused with 422.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from adapter.config import load_settings
from adapter.fhir import jsonio
from tests.support.auth import ADMIN_HEADERS
from tests.support.r4_examples import examples_dir

# Official examples that are invalid R4; each must be rejected (422), naming the element.
INVALID_EXAMPLES = {
    "CodeSystem-v2-0550.json": "code",               # codes with doubled spaces break the code regex
    "Bundle-v2-valuesets.json": "code",              # contains CodeSystem v2-0550 (above)
    "Questionnaire-qs1.json": "linkId",               # nested items without the required linkId
    **{f"SearchParameter-{s}-extensions-{t}-{c}.json": "base"  # SearchParameter.base is 1..*
       for s, t in (("codesystem", "CodeSystem"), ("valueset", "ValueSet"))
       for c in ("author", "effective", "end", "keyword", "workflow")},
}
# Ids longer than FHIR's 64 characters: refused with 400 when used in a URL.
INVALID_IDS = {"SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json"}
# The specification's own definition Bundles (20-35 MB) exceed the configured body limit
# (max_body_bytes, 8 MiB): refused with 413 before parsing, as that limit promises.
OVERSIZED = {"Bundle-dataelements.json", "Bundle-resources.json"}
# AuditEvents are written by this server only (IHE BALP: an audit trail no client may edit):
# refused with 405.
SERVER_WRITTEN = ("AuditEvent",)
# Stored with a change the specification asks the server to make.
SERVER_SETS = {"Subscription-example.json": {"status": "active"}}  # a requested Subscription becomes active


def _examples() -> list[tuple[str, dict]]:
    types = set(load_settings().resource_types)
    out = []
    for path in sorted(examples_dir().glob("*.json")):
        if path.name in ("package.json", ".index.json"):
            continue
        resource = jsonio.loads(path.read_bytes())
        if isinstance(resource, dict) and resource.get("resourceType") in types and resource.get("id"):
            out.append((path.name, resource))
    return out


def _without_version_meta(resource: dict) -> dict:
    out = dict(resource)
    meta = {k: v for k, v in (out.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out


def test_official_examples_store_and_read_back_equal(base_url):
    examples = _examples()
    assert len(examples) > 4000
    session = requests.Session()
    session.headers.update(ADMIN_HEADERS)
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=8))

    def check(item: tuple[str, dict]) -> str | None:
        name, resource = item
        url = f"{base_url}/{resource['resourceType']}/{resource['id']}"
        put = session.put(url, data=jsonio.dumps(resource), headers={"Content-Type": "application/fhir+json"})
        if resource["resourceType"] in SERVER_WRITTEN:
            return None if put.status_code == 405 else f"{name}: expected 405, got {put.status_code}"
        if name in OVERSIZED or name in INVALID_IDS:
            want = 413 if name in OVERSIZED else 400
            return None if put.status_code == want else f"{name}: expected {want}, got {put.status_code}"
        if name in INVALID_EXAMPLES:
            if put.status_code != 422 or INVALID_EXAMPLES[name] not in put.text:
                return f"{name}: expected 422 naming {INVALID_EXAMPLES[name]}, got {put.status_code}"
            return None
        if put.status_code not in (200, 201):
            return f"{name}: PUT {put.status_code} {put.text[:300]}"
        got = session.get(url)
        if got.status_code != 200:
            return f"{name}: GET {got.status_code}"
        expected = dict(resource, **SERVER_SETS.get(name, {}))
        if _without_version_meta(jsonio.loads(got.content)) != _without_version_meta(expected):
            return f"{name}: read back differs"
        return None

    with ThreadPoolExecutor(4) as pool:
        failures = [f for f in pool.map(check, examples) if f]
    assert not failures, f"{len(failures)} of {len(examples)} failed:\n" + "\n".join(failures[:20])
