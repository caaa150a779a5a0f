"""Search over HTTP: parameter types, modifiers, prefixes, chains, includes, paging."""

from __future__ import annotations

from tests.support.auth import admin_session
from tests.support.data import NHS, TAG_SYSTEM, nhs_number, observation, patient, task

ADMIN_HTTP = admin_session()


def ids(bundle: dict, mode: str = "match") -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == mode}


def test_token_forms(fhir, tag):
    number = nhs_number(500 + hash(tag) % 400000)
    p = fhir.create(patient(tag, nhs=number))
    assert ids(fhir.search("Patient", identifier=f"{NHS}|{number}")) >= {p["id"]}
    assert p["id"] in ids(fhir.search("Patient", identifier=number, _tag=tag))
    assert p["id"] in ids(fhir.search("Patient", identifier=f"{NHS}|", _tag=tag))
    assert ids(fhir.search("Patient", identifier=f"http://other|{number}")) == set()
    assert p["id"] in ids(fhir.search("Patient", _tag=f"{TAG_SYSTEM}|{tag}"))
    assert p["id"] in ids(fhir.search("Patient", gender="female", _tag=tag))
    assert ids(fhir.search("Patient", **{"gender:not": "female", "_tag": tag})) == set()


def test_string_default_exact_contains_and_accents(fhir, tag):
    p = fhir.create(patient(tag, family="Ångström"))
    assert p["id"] in ids(fhir.search("Patient", family="angs", _tag=tag))
    assert p["id"] in ids(fhir.search("Patient", name="ÅNG", _tag=tag))
    assert ids(fhir.search("Patient", family="strom", _tag=tag)) == set()
    assert p["id"] in ids(fhir.search("Patient", **{"family:contains": "strö", "_tag": tag}))
    assert p["id"] in ids(fhir.search("Patient", **{"family:exact": "Ångström", "_tag": tag}))
    assert ids(fhir.search("Patient", **{"family:exact": "ångström", "_tag": tag})) == set()


def test_missing_modifier(fhir, tag):
    with_birth = fhir.create(patient(tag))
    without = patient(tag)
    del without["birthDate"]
    without = fhir.create(without)
    assert ids(fhir.search("Patient", **{"birthdate:missing": "true", "_tag": tag})) == {without["id"]}
    assert ids(fhir.search("Patient", **{"birthdate:missing": "false", "_tag": tag})) == {with_birth["id"]}


def test_date_prefixes(fhir, tag):
    a = fhir.create(patient(tag, birth_date="2010-06-15"))
    b = fhir.create(patient(tag, birth_date="2016-01-01"))
    q = lambda v: ids(fhir.search("Patient", birthdate=v, _tag=tag))  # noqa: E731
    assert q("2010-06-15") == {a["id"]}
    assert q("2010") == {a["id"]}
    assert q("ne2010-06-15") == {b["id"]}
    assert q("lt2012-01-01") == {a["id"]}
    assert q("gt2012") == {b["id"]}
    assert q("ge2016-01-01") == {b["id"]}
    assert q("le2010-06-15") == {a["id"]}
    assert q("sa2010-12-31") == {b["id"]}
    assert q("eb2016") == {a["id"]}
    assert q("ap2016-01-02") == {b["id"]}
    both = ids(fhir.search("Patient", birthdate=["ge2010-01-01", "le2016-12-31"], _tag=tag))
    assert both == {a["id"], b["id"]}


def test_bad_date_is_400(fhir):
    r = fhir.get("Patient", params={"birthdate": "yesterday"})
    assert r.status_code == 400
    assert "birthdate" in r.json()["issue"][0]["diagnostics"]


def test_quantity_and_reference_by_id_and_url(fhir, tag):
    p = fhir.create(patient(tag))
    light = fhir.create(observation(tag, f"Patient/{p['id']}", kg="20.5"))
    heavy = fhir.create(observation(tag, f"Patient/{p['id']}", kg="40"))
    q = lambda v: ids(fhir.search("Observation", **{"value-quantity": v, "_tag": tag}))  # noqa: E731
    assert q("gt30") == {heavy["id"]}
    assert q("20.5|http://unitsofmeasure.org|kg") == {light["id"]}
    assert q("lt30||kg") == {light["id"]}
    by_ref = ids(fhir.search("Observation", subject=f"Patient/{p['id']}"))
    assert by_ref == {light["id"], heavy["id"]}
    assert ids(fhir.search("Observation", patient=p["id"])) == by_ref
    assert ids(fhir.search("Observation", subject=f"{fhir.base}/Patient/{p['id']}")) == by_ref
    assert ids(fhir.search("Observation", **{"subject:Patient": p["id"]})) == by_ref


def test_chained_parameter(fhir, tag):
    number = nhs_number(400000 + hash(tag) % 500000)
    p = fhir.create(patient(tag, nhs=number))
    other = fhir.create(patient(tag, nhs=nhs_number(1 + hash(tag) % 300000)))
    t = fhir.create(task(tag, f"Patient/{p['id']}"))
    fhir.create(task(tag, f"Patient/{other['id']}"))
    found = fhir.search("Task", **{"patient.identifier": f"{NHS}|{number}", "_tag": tag})
    assert ids(found) == {t["id"]}
    typed = fhir.search("Task", **{"subject:Patient.identifier": f"{NHS}|{number}", "_tag": tag})
    assert ids(typed) == {t["id"]}


def test_reverse_chaining_has(fhir, tag):
    p = fhir.create(patient(tag))
    lonely = fhir.create(patient(tag))
    fhir.create(observation(tag, f"Patient/{p['id']}", kg="33"))
    found = fhir.search("Patient", **{"_has:Observation:subject:value-quantity": "gt30", "_tag": tag})
    assert ids(found) == {p["id"]}
    assert lonely["id"] not in ids(found)


def test_include_revinclude_and_iterate(fhir, tag):
    org = fhir.create({"resourceType": "Organization", "name": f"Trust {tag}"})
    p = fhir.create(patient(tag) | {"managingOrganization": {"reference": f"Organization/{org['id']}"}})
    t = fhir.create(task(tag, f"Patient/{p['id']}"))
    b = fhir.search("Task", _tag=tag, _include="Task:patient")
    assert ids(b) == {t["id"]} and ids(b, "include") == {p["id"]}
    b = fhir.search("Task", _tag=tag, _include=["Task:patient"], **{"_include:iterate": "Patient:organization"})
    assert ids(b, "include") == {p["id"], org["id"]}
    b = fhir.search("Patient", _id=p["id"], _revinclude="Task:patient")
    assert ids(b) == {p["id"]} and ids(b, "include") == {t["id"]}
    assert b["total"] == 1  # included resources are not counted


def test_paging_through_three_pages_with_absolute_links(fhir, tag):
    created = {fhir.create(patient(tag, given=f"G{i}"))["id"] for i in range(7)}
    seen: list[str] = []
    page = fhir.search("Patient", _tag=tag, _count=3)
    pages = 1
    assert page["total"] == 7
    while True:
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        links = {link["relation"]: link["url"] for link in page["link"]}
        assert all(u.startswith(fhir.base) for u in links.values())
        if "next" not in links:
            break
        page = ADMIN_HTTP.get(links["next"]).json()
        pages += 1
    assert pages == 3
    assert sorted(seen) == sorted(created) and len(seen) == 7
    assert "previous" in links


def test_sort(fhir, tag):
    births = ["2012-01-01", "2009-01-01", "2015-01-01"]
    for i, d in enumerate(births):
        fhir.create(patient(tag, given=f"S{i}", birth_date=d))
    asc = fhir.search("Patient", _tag=tag, _sort="birthdate")
    assert [e["resource"]["birthDate"] for e in asc["entry"]] == sorted(births)
    desc = fhir.search("Patient", _tag=tag, _sort="-birthdate")
    assert [e["resource"]["birthDate"] for e in desc["entry"]] == sorted(births, reverse=True)
    by_name = fhir.search("Patient", _tag=tag, _sort="given")
    assert [e["resource"]["name"][0]["given"][0] for e in by_name["entry"]] == ["S0", "S1", "S2"]


def test_total_summary_and_elements(fhir, tag):
    for _ in range(2):
        fhir.create(patient(tag))
    count = fhir.search("Patient", _tag=tag, _summary="count")
    assert count["total"] == 2 and "entry" not in count
    assert "total" not in fhir.search("Patient", _tag=tag, _total="none")
    summary = fhir.search("Patient", _tag=tag, _summary="true")["entry"][0]["resource"]
    assert "birthDate" in summary and any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    elements = fhir.search("Patient", _tag=tag, _elements="gender")["entry"][0]["resource"]
    assert set(elements) == {"resourceType", "id", "meta", "gender"}


def test_unknown_parameter_lenient_and_strict(fhir, tag):
    lenient = fhir.get("Patient", params={"nonsense": "x", "_tag": tag})
    assert lenient.status_code == 200
    outcome = [e for e in lenient.json()["entry"] if e["search"]["mode"] == "outcome"]
    assert "nonsense" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    strict = fhir.get("Patient", params={"nonsense": "x"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert "nonsense" in strict.json()["issue"][0]["diagnostics"]


def test_post_search_form(fhir, tag):
    p = fhir.create(patient(tag))
    r = fhir.http.post(fhir.url("Patient/_search"), data={"_tag": tag},
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert ids(r.json()) == {p["id"]}


def test_id_and_last_updated(fhir, tag):
    p = fhir.create(patient(tag))
    assert ids(fhir.search("Patient", _id=p["id"])) == {p["id"]}
    stamp = p["meta"]["lastUpdated"]
    assert p["id"] in ids(fhir.search("Patient", _lastUpdated=f"ge{stamp}", _tag=tag))
    assert ids(fhir.search("Patient", _lastUpdated=f"lt{stamp}", _tag=tag)) == set()


def test_system_level_search_by_tag(fhir, tag):
    p = fhir.create(patient(tag))
    t = fhir.create(task(tag, f"Patient/{p['id']}"))
    found = fhir.search("", _tag=tag)
    assert {(e["resource"]["resourceType"], e["resource"]["id"]) for e in found["entry"]} == {
        ("Patient", p["id"]), ("Task", t["id"])}
    assert found["total"] == 2
    refused = fhir.get("", params={"family": "x"}, headers={"Prefer": "handling=strict"})
    assert refused.status_code == 400


def test_pretty_and_format_parameters(fhir, tag):
    p = fhir.create(patient(tag))
    pretty = fhir.get(f"Patient/{p['id']}", params={"_pretty": "true", "_format": "json"})
    assert pretty.status_code == 200 and b"\n  " in pretty.content
    assert fhir.get(f"Patient/{p['id']}", params={"_format": "text/csv"}).status_code == 406


def test_date_on_a_choice_element(fhir, tag):
    p = fhir.create(patient(tag))
    obs = fhir.create(observation(tag, f"Patient/{p['id']}", when="2024-03-01"))
    assert ids(fhir.search("Observation", date="2024-03", _tag=tag)) == {obs["id"]}
    assert ids(fhir.search("Observation", date="lt2024-03-01", _tag=tag)) == set()
    period = observation(tag, f"Patient/{p['id']}")
    del period["effectiveDateTime"]
    period["effectivePeriod"] = {"start": "2025-01-01", "end": "2025-01-31"}
    spanning = fhir.create(period)
    assert ids(fhir.search("Observation", date="2025-01-15", _tag=tag)) == set()   # eq: the period is wider
    assert ids(fhir.search("Observation", date="ge2025-01-15", _tag=tag)) == {spanning["id"]}
