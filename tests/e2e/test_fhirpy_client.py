"""An independent, real FHIR client (fhirpy) against the adapter."""

from __future__ import annotations

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

from tests.support.auth import ADMIN_HEADERS
from tests.support.data import NHS, TAG_SYSTEM, nhs_number


@pytest.fixture
def client(base_url) -> SyncFHIRClient:
    return SyncFHIRClient(base_url, authorization=ADMIN_HEADERS["Authorization"])


def test_crud_with_fhirpy(client, tag):
    p = client.resource("Patient", meta={"tag": [{"system": TAG_SYSTEM, "code": tag}]},
                        name=[{"family": "Fhirpyson", "given": ["Kit"]}], gender="male", birthDate="2013-02-03")
    p.save()
    assert p.id and p["meta"]["versionId"] == "1"
    p["gender"] = "female"
    p.save()
    again = client.resources("Patient").search(_id=p.id).get()
    assert again["gender"] == "female" and again["meta"]["versionId"] == "2"
    p.refresh()  # fhirpy sends If-None-Match on refresh
    assert p["gender"] == "female"
    p.delete()
    with pytest.raises(ResourceNotFound):
        client.resources("Patient").search(_id=p.id).get()


def test_conditional_create_with_fhirpy(client, tag):
    number = nhs_number(600000 + hash(tag) % 300000)
    body = {"meta": {"tag": [{"system": TAG_SYSTEM, "code": tag}]},
            "identifier": [{"system": NHS, "value": number}], "gender": "unknown"}
    first = client.resources("Patient").search(identifier=f"{NHS}|{number}").get_or_create(
        client.resource("Patient", **body))
    second = client.resources("Patient").search(identifier=f"{NHS}|{number}").get_or_create(
        client.resource("Patient", **body))
    assert first[0].id == second[0].id
    assert first[1] is True and second[1] is False


def test_search_count_paging_and_include(client, tag):
    org = client.resource("Organization", name=f"Paging trust {tag}")
    org.save()
    for i in range(7):
        client.resource("Patient", meta={"tag": [{"system": TAG_SYSTEM, "code": tag}]},
                        name=[{"family": f"Page{i}"}], managingOrganization=org.to_reference()).save()
    search = client.resources("Patient").search(_tag=tag)
    assert search.count() == 7
    everything = search.limit(3).fetch_all()  # follows next links across 3 pages
    assert len(everything) == 7
    with_org = client.resources("Patient").search(_tag=tag).include("Patient", "organization").limit(10).fetch_raw()
    modes = [e["search"]["mode"] for e in with_org["entry"]]
    assert modes.count("match") == 7 and modes.count("include") == 1
