"""Routing rules as data: which provider (ODS code) does an assessment. Hand-checked against config/routing.toml."""

from __future__ import annotations

import pytest

from adapter.pathway.routing import (
    Route,
    load_routing,
    postcode_area,
    provider_for,
    rules_from_dict,
)


@pytest.fixture(scope="module")
def rules():
    return load_routing()


def test_shipped_rules_are_the_illustrative_tables(rules):
    assert "BH1" in rules.home_districts and "BH25" in rules.home_districts and "BH26" not in rules.home_districts
    assert "DT11" in rules.home_districts and "DT12" not in rules.home_districts
    assert rules.assessments["iha"].in_area == "RD3"
    assert rules.assessments["rha"].in_area == "RDY"
    assert rules.out_of_area["SO"] == "ZZ901"
    assert rules.unrouted_owner_ods == "RDY"


@pytest.mark.parametrize("assessment,district,out,ods", [
    ("rha", "BH15", False, "RDY"),
    ("iha", "BH15", False, "RD3"),
    ("rha", "DT1", None, "RDY"),          # in area inferred from the home list
    ("rha", " bh15 ", False, "RDY"),      # normalised
    ("rha", None, False, "RDY"),          # the LA says in area; no district given
    ("rha", "SO14", True, "ZZ901"),
    ("iha", "SO14", True, "ZZ901"),       # the placement area's provider does IHAs too
    ("rha", "SO14", None, "ZZ901"),       # out of area inferred
    ("rha", "BA2", True, "ZZ903"),
    ("rha", "B1", True, "ZZ907"),         # one-letter postcode area
    ("leaving-care-summary", "SO14", True, "RDY"),  # the summary stays with the home service
])
def test_routed(rules, assessment, district, out, ods):
    route = provider_for(assessment, district, out, rules)
    assert route.ods == ods and route.routed, route
    assert route.reason


@pytest.mark.parametrize("assessment,district,out,why", [
    ("rha", "NE1", True, "no provider known for postcode area"),
    ("rha", "NE1", None, "no provider known for postcode area"),
    ("rha", None, None, "no placement postcode district"),
    ("rha", None, True, "district is not known"),
    ("rha", "SO14", False, "not a home-area district"),
    ("rha", "BH15", True, "is a home-area district"),
    ("adoption-medical", "BH15", False, "no routing rule"),
    ("rha", "NOTAPOSTCODE", True, "no provider known"),
])
def test_unrouted(rules, assessment, district, out, why):
    route = provider_for(assessment, district, out, rules)
    assert route == Route(None, route.reason) and not route.routed
    assert route.reason.startswith("unrouted:") and why in route.reason


def test_postcode_area():
    assert postcode_area("SO14") == "SO"
    assert postcode_area("B1") == "B"
    assert postcode_area("EC1A") == "EC"
    assert postcode_area("14SO") is None


def test_rules_are_data():
    rules = rules_from_dict({"home_area": {"postcode_districts": ["ZZ1"], "home_service_ods": "H1"},
                             "assessments": {"rha": {"in_area": "N1", "out_of_area": "home"}},
                             "out_of_area": {}})
    assert provider_for("rha", "ZZ1", None, rules).ods == "N1"
    assert provider_for("rha", "SO14", True, rules).ods == "N1"   # "home": stays in area
    assert rules.unrouted_owner_ods == "H1"
