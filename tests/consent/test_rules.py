"""Consent rules (adapter/consent, config/consent.toml), tested directly: no server, no database.

Dates are explicit. The child in most tables is 10 on 2026-10-07 (born 2016-06-01); the
young person turns 16 on 2026-05-03 (born 2010-05-03).
"""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from adapter.consent import (
    ChildFacts,
    child_facts_from,
    gated_types,
    grantor_problems,
    load_rules,
    sharing_decision,
)
from adapter.consent.rules import CONSENT_FILE, GRANTOR_AT, age_on, rules_from_dict

ROOT = Path(__file__).resolve().parents[2]
TERMINOLOGY = ROOT / "profiles" / "terminology"
BASE = "https://lac-fhir-adapter.example/fhir/"

PERFORMERS = {
    "young-person": {"reference": "Patient/child", "type": "Patient"},
    "parent-with-pr": {"reference": "RelatedPerson/mum"},
    "other-person-with-pr": {"reference": "RelatedPerson/guardian"},
    "local-authority": {"reference": "Organization/la"},
    "court": {"display": "Court"},
}


def consent(id="c1", grantor="parent-with-pr", on="2026-10-07", kind="permit", status="active",
            capacity=None, purpose="information-sharing", start=None, end=None, performer=None,
            basis=None, updated=None) -> dict:
    """A Consent in the lac-consent shape."""
    extension = []
    if grantor is not None:
        extension.append({"url": f"{BASE}StructureDefinition/lac-consent-grantor",
                          "valueCoding": {"system": f"{BASE}CodeSystem/lac-consent-grantor",
                                          "code": grantor}})
    if capacity is not None:
        extension.append({"url": f"{BASE}StructureDefinition/lac-consent-capacity",
                          "valueCoding": {"system": f"{BASE}CodeSystem/lac-consent-capacity",
                                          "code": capacity}})
    period = {"start": start or on} if (start or on) else {}
    if end:
        period["end"] = end
    resource = {
        "resourceType": "Consent",
        "id": id,
        "meta": {"profile": [f"{BASE}StructureDefinition/lac-consent"]},
        "extension": extension,
        "status": status,
        "patient": {"reference": "Patient/child"},
        "performer": [performer or PERFORMERS.get(grantor, {"display": "someone"})],
        "provision": {"type": kind, "period": period,
                      "purpose": [{"system": f"{BASE}CodeSystem/lac-consent-purpose", "code": purpose}]},
    }
    if on:
        resource["dateTime"] = on
    if basis:
        resource["policyRule"] = {"coding": [{"system": f"{BASE}CodeSystem/lac-consent-legal-basis",
                                              "code": basis}]}
    if updated:
        resource["meta"]["lastUpdated"] = updated
    return resource


CHILD_10 = date(2016, 6, 1)  # 10 on 2026-10-07
YOUNG = date(2010, 5, 3)  # 16 on 2026-05-03


def child(legal_status="C2", birth=CHILD_10) -> ChildFacts:
    return ChildFacts(birth_date=birth, legal_status=legal_status)


# --- the data itself ------------------------------------------------------------------------


def codes(name: str) -> set[str]:
    system = json.loads((TERMINOLOGY / f"CodeSystem-{name}.json").read_text())
    return {c["code"] for c in system["concept"]}


def test_the_rules_use_only_the_published_codes():
    raw = tomllib.loads(CONSENT_FILE.read_text())
    rules = load_rules()
    grantors = codes("lac-consent-grantor")
    assert set(rules.rank) == grantors
    for allowed in (*rules.legal_status.values(), *rules.legal_basis.values(), rules.holders_of_pr):
        assert allowed <= grantors
    assert set(rules.performer_types) <= grantors
    capacity = codes("lac-consent-capacity")
    assert rules.competent_under_age | rules.cannot_decide | rules.accepted_without_birth_date <= capacity
    assert set(rules.purposes.values()) == codes("lac-consent-purpose")
    assert rules.default_purpose == "information-sharing"
    assert set(rules.legal_basis) == codes("lac-consent-legal-basis")
    assert raw["ages"]["own_consent_from"] == 16 and raw["ages"]["adult_from"] == 18


def test_every_legal_status_code_has_a_row():
    assert set(load_rules().legal_status) == codes("ssda903-legal-status") | {"none"}


def test_gated_types_are_the_assessment_content():
    assert gated_types() == frozenset({
        "QuestionnaireResponse", "CarePlan", "Observation", "DocumentReference", "Immunization",
        "Condition", "AllergyIntolerance", "Composition", "DiagnosticReport", "Binary"})
    assert "Patient" not in gated_types() and "Consent" not in gated_types()


def test_rules_load_from_a_given_path(tmp_path):
    text = CONSENT_FILE.read_text().replace("own_consent_from = 16", "own_consent_from = 15")
    path = tmp_path / "consent.toml"
    path.write_text(text)
    rules = load_rules(path)
    assert rules.own_consent_from == 15
    at_15 = consent(grantor="young-person", on="2026-10-07", capacity="presumed-16-17")
    assert grantor_problems(at_15, child("V2", date(2011, 6, 1)), rules) == []
    assert grantor_problems(at_15, child("V2", date(2011, 6, 1))) != []


def test_rules_refuse_a_grantor_without_a_rank():
    raw = tomllib.loads(CONSENT_FILE.read_text())
    raw["legal_status"]["V2"] = ["parent-with-pr", "grandparent"]
    with pytest.raises(ValueError, match="grandparent"):
        rules_from_dict(raw)


# --- who may grant, by legal status ------------------------------------------------------------

PR_HOLDERS = ["parent-with-pr", "local-authority", "other-person-with-pr"]

# legal status -> which of parent / LA / other person with PR may consent for a 10-year-old
BY_LEGAL_STATUS = {
    "C1": (True, True, True),  # interim care order: LA shares PR
    "C2": (True, True, True),  # full care order: LA shares PR
    "D1": (False, True, False),  # freeing order: PR with the agency only
    "E1": (True, True, True),  # placement order: LA and prospective adopters; parents keep PR
    "V2": (True, False, True),  # section 20: parents only, LA has no PR
    "V3": (True, False, True),
    "V4": (True, False, True),
    "L1": (True, False, True),  # police protection: no PR for the LA
    "L2": (True, True, True),  # emergency protection order: the LA applicant has PR
    "L3": (True, False, True),  # child assessment order: no PR passes
    "J1": (True, False, True),  # remand: no PR for the LA
    "J2": (True, False, True),
    "J3": (True, False, True),
    None: (True, True, True),  # not known here (e.g. a copy from a partner): nothing refutes the grantor
}


@pytest.mark.parametrize("legal_status,grantor,ok", [
    (ls, grantor, allowed[i]) for ls, allowed in BY_LEGAL_STATUS.items()
    for i, grantor in enumerate(PR_HOLDERS)
])
def test_persons_with_parental_responsibility_by_legal_status(legal_status, grantor, ok):
    problems = grantor_problems(consent(grantor=grantor, capacity="not-competent"),
                                child(legal_status))
    assert (problems == []) is ok, problems
    if not ok:
        assert [where for where, _ in problems] == [GRANTOR_AT]
        assert f"'{grantor}' may not consent under" in problems[0][1]


@pytest.mark.parametrize("legal_status", [*BY_LEGAL_STATUS])
def test_a_court_and_a_competent_child_may_decide_under_every_legal_status(legal_status):
    assert grantor_problems(consent(grantor="court"), child(legal_status)) == []
    assert grantor_problems(consent(grantor="young-person", capacity="gillick-competent"),
                            child(legal_status)) == []


def test_an_unknown_legal_status_makes_the_grantor_unknowable():
    problems = grantor_problems(consent(grantor="parent-with-pr"), child("X9"))
    assert len(problems) == 1 and "'X9'" in problems[0][1]


# --- the young person's own decision -----------------------------------------------------------

@pytest.mark.parametrize("capacity,ok", [
    ("gillick-competent", True),
    ("not-competent", False),
    ("not-assessed", False),
    (None, False),
    ("presumed-16-17", False),  # the presumption does not reach a 10-year-old
    ("lacks-capacity", False),
])
def test_an_under_16_decides_only_when_assessed_competent(capacity, ok):
    problems = grantor_problems(consent(grantor="young-person", capacity=capacity), child("V2"))
    assert (problems == []) is ok, problems
    if not ok:
        assert len(problems) == 1
        where = problems[0][0]
        assert where.startswith("Consent.extension(")
        assert ("lac-consent-capacity" in where) is (capacity is not None)


@pytest.mark.parametrize("on,capacity,ok", [
    ("2026-05-02", "presumed-16-17", False),  # the day before the 16th birthday
    ("2026-05-02", None, False),
    ("2026-05-02", "gillick-competent", True),  # 15 and competent
    ("2026-05-03", "presumed-16-17", True),  # the 16th birthday
    ("2026-05-03", None, True),  # 16-17: presumed, no assessment needed
    ("2026-05-03", "not-assessed", True),
    ("2026-05-03T08:00:00+01:00", "presumed-16-17", True),
    ("2026-05-02T23:30:00+01:00", "presumed-16-17", False),  # still the 2nd in England
    ("2026-05-03", "lacks-capacity", False),  # Mental Capacity Act
    ("2027-11-30", "presumed-16-17", True),  # 17
    ("2028-05-03", None, True),  # 18: an adult
    ("2028-05-03", "lacks-capacity", False),
])
def test_the_16th_birthday_boundary(on, capacity, ok):
    problems = grantor_problems(consent(grantor="young-person", on=on, capacity=capacity,
                                        start=on[:10]), child("V2", YOUNG))
    assert (problems == []) is ok, problems


def test_age_is_taken_at_the_period_start_when_there_is_no_datetime():
    early = consent(grantor="young-person", on=None, start="2026-05-02")
    on_time = consent(grantor="young-person", on=None, start="2026-05-03")
    assert grantor_problems(early, child("V2", YOUNG)) != []
    assert grantor_problems(on_time, child("V2", YOUNG)) == []


@pytest.mark.parametrize("on,ok", [
    ("2028-05-02", True),  # 17: parents still hold parental responsibility
    ("2028-05-03", False),  # 18: it has ended
])
def test_parental_responsibility_ends_at_18(on, ok):
    for grantor in PR_HOLDERS:
        problems = grantor_problems(consent(grantor=grantor, on=on), child("C2", YOUNG))
        assert (problems == []) is ok, (grantor, problems)


def test_birthday_on_29_february():
    assert age_on(date(2008, 2, 29), date(2026, 2, 28)) == 17
    assert age_on(date(2008, 2, 29), date(2026, 3, 1)) == 18
    assert age_on(date(2010, 2, 28), date(2026, 2, 28)) == 16


def test_unknown_birth_date_trusts_only_a_recorded_capacity():
    unknown = ChildFacts(birth_date=None, legal_status="V2")
    assert grantor_problems(consent(grantor="young-person", capacity="presumed-16-17"), unknown) == []
    assert grantor_problems(consent(grantor="young-person", capacity="gillick-competent"), unknown) == []
    assert grantor_problems(consent(grantor="young-person", capacity="not-assessed"), unknown) != []
    assert grantor_problems(consent(grantor="young-person"), unknown) != []
    assert grantor_problems(consent(grantor="parent-with-pr"), unknown) == []


# --- the Consent's own record -------------------------------------------------------------------

def test_missing_grantor():
    problems = grantor_problems(consent(grantor=None), child())
    assert [w for w, _ in problems] == [f"Consent.extension('{BASE}StructureDefinition/lac-consent-grantor')"]
    assert "no grantor" in problems[0][1]


def test_unknown_grantor_code():
    problems = grantor_problems(consent(grantor="grandparent"), child())
    assert len(problems) == 1 and "unknown grantor" in problems[0][1]


def test_missing_performer():
    c = consent(grantor="local-authority")
    c["performer"] = []
    assert grantor_problems(c, child("C2")) == [
        ("Consent.performer", "no performer: who consented must be recorded")]


@pytest.mark.parametrize("grantor,performer,ok", [
    ("young-person", {"reference": "Patient/child"}, True),
    ("young-person", {"reference": "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000190",
                      "type": "Patient"}, True),
    ("young-person", {"reference": "RelatedPerson/mum"}, False),
    ("parent-with-pr", {"reference": "Organization/la"}, False),
    ("parent-with-pr", {"reference": "http://example.org/fhir/RelatedPerson/1"}, True),
    ("local-authority", {"reference": "Organization/la"}, True),
    ("local-authority", {"reference": "urn:uuid:ae05b729-01e0-40b0-9a12-dd9608b4220a"}, True),
    ("parent-with-pr", {"display": "Rachel Penhallow"}, True),  # display only: not checked
])
def test_the_performer_matches_the_grantor(grantor, performer, ok):
    c = consent(grantor=grantor, capacity="presumed-16-17", performer=performer, on="2026-10-07")
    problems = grantor_problems(c, child("C2", YOUNG))
    assert (problems == []) is ok, problems
    if not ok:
        assert problems[0][0] == "Consent.performer[0]"


@pytest.mark.parametrize("grantor,basis,ok", [
    ("parent-with-pr", "section-20-agreement", True),
    ("parent-with-pr", "care-order", True),
    ("parent-with-pr", "young-person-own-consent", False),
    ("young-person", "young-person-own-consent", True),
    ("young-person", "care-order", False),
    ("local-authority", "care-order", True),
    ("local-authority", "section-20-agreement", False),
    ("court", "court-direction", True),
])
def test_the_legal_basis_fits_the_grantor(grantor, basis, ok):
    c = consent(grantor=grantor, basis=basis, capacity="presumed-16-17")
    problems = grantor_problems(c, child("C2", YOUNG))
    assert (problems == []) is ok, problems
    if not ok:
        assert problems == [("Consent.policyRule.coding[0]", problems[0][1])]


def test_a_consent_without_a_date():
    c = consent(on=None)
    c["provision"].pop("period")
    assert ("Consent.dateTime", "no date: the grantor's age and standing cannot be checked") \
        in grantor_problems(c, child())


def test_legal_status_is_taken_on_the_consents_date():
    episodes = [
        {"resourceType": "EpisodeOfCare", "status": "finished", "period": {"start": "2026-01-10"},
         "extension": [{"url": f"{BASE}StructureDefinition/lac-legal-status",
                        "valueCoding": {"code": "C2"}}]},
        {"resourceType": "EpisodeOfCare", "status": "active", "period": {"start": "2026-08-01"},
         "extension": [{"url": f"{BASE}StructureDefinition/lac-legal-status",
                        "valueCoding": {"code": "V2"}}]},
    ]
    facts = child_facts_from({"resourceType": "Patient", "birthDate": "2016-06-01"}, episodes)
    assert facts.birth_date == CHILD_10 and facts.legal_status == "V2"
    assert facts.legal_status_on(date(2026, 3, 1)) == "C2"
    assert facts.legal_status_on(date(2025, 3, 1)) == "C2"  # before them all: the first
    assert grantor_problems(consent(grantor="local-authority", on="2026-03-01"), facts) == []
    assert grantor_problems(consent(grantor="local-authority", on="2026-09-01"), facts) != []


# --- sharing decisions ------------------------------------------------------------------------

def decide(consents, on, facts=None, **kw):
    return sharing_decision(consents, facts or child("V2", YOUNG), on, **kw)


def test_no_consent_is_not_permitted():
    d = decide([], date(2026, 10, 7))
    assert (d.permitted, d.consent_id, d.valid_until) == (False, None, None)
    assert "no applicable information-sharing consent" in d.reason


def test_young_persons_refusal_prevails_over_a_later_parent_consent():
    refusal = consent("yp", "young-person", "2026-06-01", "deny")
    parent = consent("mum", "parent-with-pr", "2026-07-01", "permit")
    for order in ([refusal, parent], [parent, refusal]):
        d = decide(order, date(2026, 8, 1))
        assert (d.permitted, d.consent_id) == (False, "yp")
        assert "refused by young-person" in d.reason and "prevails" in d.reason
    # before the parent's consent it is simply the refusal
    assert decide([refusal, parent], date(2026, 6, 15)).consent_id == "yp"


def test_a_16_year_olds_consent_prevails_over_an_earlier_parent_refusal():
    parent = consent("mum", "parent-with-pr", "2026-04-01", "deny")
    own = consent("yp", "young-person", "2026-06-01", "permit")
    assert decide([parent, own], date(2026, 5, 1)).permitted is False
    d = decide([own, parent], date(2026, 6, 1))
    assert (d.permitted, d.consent_id) == (True, "yp")


def test_a_parent_refusal_after_a_16_year_olds_consent_does_not_stop_it():
    own = consent("yp", "young-person", "2026-06-01", "permit")
    parent = consent("mum", "parent-with-pr", "2026-07-01", "deny")
    d = decide([own, parent], date(2026, 8, 1))
    assert (d.permitted, d.consent_id) == (True, "yp")


def test_a_competent_under_16s_decision_prevails_but_an_incompetent_ones_does_not_count():
    facts = child("C2", CHILD_10)
    la = consent("la", "local-authority", "2026-10-01", "permit")
    competent = consent("yp", "young-person", "2026-09-01", "deny", capacity="gillick-competent")
    not_assessed = consent("yp2", "young-person", "2026-09-01", "deny", capacity="not-assessed")
    assert decide([la, competent], date(2026, 10, 7), facts).consent_id == "yp"
    d = decide([la, not_assessed], date(2026, 10, 7), facts)
    assert (d.permitted, d.consent_id) == (True, "la")


def test_the_young_persons_own_later_decision_replaces_their_earlier_one():
    refusal = consent("no", "young-person", "2026-06-01", "deny")
    later = consent("yes", "young-person", "2026-09-01", "permit")
    assert decide([later, refusal], date(2026, 9, 1)).consent_id == "yes"
    assert decide([later, refusal], date(2026, 8, 31)).consent_id == "no"


def test_parent_refused_then_given():  # scenario 05 at decision level
    facts = child("V2", CHILD_10)
    refused = consent("r", "parent-with-pr", "2026-10-07", "deny")
    given = consent("g", "parent-with-pr", "2026-10-21", "permit")
    assert decide([given, refused], date(2026, 10, 20), facts).permitted is False
    assert decide([given, refused], date(2026, 10, 21), facts).permitted is True


def test_within_a_rank_the_newest_wins_whoever_holds_pr():
    facts = child("C2", CHILD_10)
    mum = consent("mum", "parent-with-pr", "2026-09-01", "permit")
    la = consent("la", "local-authority", "2026-09-10", "deny")
    assert decide([la, mum], date(2026, 10, 1), facts).consent_id == "la"
    assert decide([la, mum], date(2026, 9, 5), facts).consent_id == "mum"


def test_on_the_same_day_a_refusal_beats_a_permit_unless_recorded_order_says_otherwise():
    facts = child("C2", CHILD_10)
    yes = consent("yes", "parent-with-pr", "2026-09-01", "permit")
    no = consent("no", "local-authority", "2026-09-01", "deny")
    assert decide([yes, no], date(2026, 9, 1), facts).consent_id == "no"
    yes_later = consent("yes", "parent-with-pr", "2026-09-01", "permit", updated="2026-09-02T10:00:00Z")
    no_first = consent("no", "local-authority", "2026-09-01", "deny", updated="2026-09-01T10:00:00Z")
    assert decide([yes_later, no_first], date(2026, 9, 3), facts).consent_id == "yes"


def test_withdrawal_stops_sharing_from_its_date():
    given = consent("given", "young-person", "2026-06-01", "permit")
    withdrawn = consent("wd", "young-person", "2026-09-01", "deny", status="inactive")
    assert decide([given, withdrawn], date(2026, 8, 31)).permitted is True
    d = decide([given, withdrawn], date(2026, 9, 1))
    assert (d.permitted, d.consent_id) == (False, "wd") and "withdrawn" in d.reason


def test_a_permit_set_inactive_in_place_no_longer_permits():
    withdrawn = consent("given", "parent-with-pr", "2026-06-01", "permit", status="inactive")
    d = decide([withdrawn], date(2026, 8, 1), child("V2", CHILD_10))
    assert d.permitted is False and "withdrawn" in d.reason


def test_withdrawal_at_an_instant():
    facts = child("V2", CHILD_10)
    given = consent("given", "parent-with-pr", "2026-06-01", "permit")
    withdrawn = consent("wd", "parent-with-pr", "2026-10-20T10:00:00Z", "deny", status="inactive",
                        start="2026-10-20T10:00:00Z")
    assert decide([given, withdrawn], datetime(2026, 10, 20, 9, tzinfo=UTC), facts).permitted is True
    assert decide([given, withdrawn], datetime(2026, 10, 20, 11, tzinfo=UTC), facts).permitted is False
    assert decide([given, withdrawn], date(2026, 10, 20), facts).permitted is False  # that day


@pytest.mark.parametrize("status", ["entered-in-error", "rejected", "draft", "proposed"])
def test_consents_not_in_force_are_ignored(status):
    facts = child("V2", CHILD_10)
    given = consent("given", "parent-with-pr", "2026-06-01", "permit")
    error = consent("err", "parent-with-pr", "2026-07-01", "deny", status=status)
    d = decide([given, error], date(2026, 8, 1), facts)
    assert (d.permitted, d.consent_id) == (True, "given")
    d = decide([error], date(2026, 8, 1), facts)
    assert d.permitted is False and f"is {status}" in d.reason
    if status == "entered-in-error":
        mistaken_permit = consent("err", "parent-with-pr", "2026-07-01", "permit", status=status)
        assert decide([mistaken_permit], date(2026, 8, 1), facts).permitted is False


@pytest.mark.parametrize("on,permitted", [
    (date(2026, 5, 31), False),  # before the period
    (date(2026, 6, 1), True),
    (date(2026, 12, 31), True),  # the end day is included
    (date(2027, 1, 1), False),
])
def test_provision_period(on, permitted):
    c = consent("p", "parent-with-pr", "2026-06-01", "permit", end="2026-12-31")
    d = decide([c], on, child("V2", CHILD_10))
    assert d.permitted is permitted
    if permitted:
        assert d.valid_until == date(2026, 12, 31)


def test_a_consent_dated_after_the_moment_does_not_apply_yet():
    c = consent("p", "parent-with-pr", "2026-06-01", "permit", start="2026-05-01")
    assert decide([c], date(2026, 5, 15), child("V2", CHILD_10)).permitted is False


def test_purpose_filtering():
    facts = child("V2", CHILD_10)
    assessment = consent("a", "parent-with-pr", "2026-06-01", "permit", purpose="assessment")
    assert decide([assessment], date(2026, 7, 1), facts).permitted is False
    assert decide([assessment], date(2026, 7, 1), facts, purpose="assessment").permitted is True
    sharing_refused = consent("s", "parent-with-pr", "2026-06-01", "deny")
    d = decide([assessment, sharing_refused], date(2026, 7, 1), facts)
    assert (d.permitted, d.consent_id) == (False, "s")
    assert decide([assessment, sharing_refused], date(2026, 7, 1), facts,
                  purpose="assessment").consent_id == "a"


def test_other_purpose_systems_do_not_count():
    c = consent("t", "parent-with-pr", "2026-06-01", "permit")
    c["provision"]["purpose"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                  "code": "TREAT"}]
    assert decide([c], date(2026, 7, 1), child("V2", CHILD_10)).permitted is False


def test_an_invalid_grantor_never_counts():
    facts = child("V2", CHILD_10)
    la = consent("la", "local-authority", "2026-06-01", "permit")  # no PR under section 20
    d = decide([la], date(2026, 7, 1), facts)
    assert d.permitted is False and "invalid grantor" in d.reason
    # nor does an invalid refusal hide a valid permit
    mum = consent("mum", "parent-with-pr", "2026-05-01", "permit")
    la_no = consent("la", "local-authority", "2026-06-01", "deny")
    assert decide([mum, la_no], date(2026, 7, 1), facts).consent_id == "mum"


def test_consents_by_persons_with_pr_lapse_at_18():
    facts = child("V2", date(2008, 2, 29))  # 18 on 2026-03-01
    mum = consent("mum", "parent-with-pr", "2023-03-14", "permit")
    d = decide([mum], date(2026, 2, 28), facts)
    assert (d.permitted, d.valid_until) == (True, date(2026, 2, 28))
    assert decide([mum], date(2026, 3, 1), facts).permitted is False
    own = consent("own", "young-person", "2026-03-05", "permit")
    assert decide([mum, own], date(2026, 3, 5), facts).consent_id == "own"


def test_the_lapse_at_18_is_configurable(tmp_path):
    path = tmp_path / "consent.toml"
    path.write_text(CONSENT_FILE.read_text().replace("pr_consents_lapse_at_adult = true",
                                                     "pr_consents_lapse_at_adult = false"))
    mum = consent("mum", "parent-with-pr", "2023-03-14", "permit")
    d = sharing_decision([mum], child("V2", date(2008, 2, 29)), date(2026, 3, 1), rules=load_rules(path))
    assert (d.permitted, d.valid_until) == (True, None)


def test_a_court_direction_prevails_over_a_young_persons_refusal():
    refusal = consent("yp", "young-person", "2026-09-01", "deny")
    court = consent("court", "court", "2026-08-01", "permit")
    assert decide([refusal, court], date(2026, 10, 1)).consent_id == "court"


# --- the project's own fixtures -----------------------------------------------------------------

def _resources(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    if data.get("resourceType") == "Bundle":
        return [e["resource"] for e in data.get("entry", [])]
    return [data]


@pytest.mark.parametrize("scenario", sorted(p.name for p in (ROOT / "fixtures" / "scenarios").iterdir()
                                            if (p / "fhir").is_dir()))
def test_scenario_consents_have_valid_grantors(scenario):
    resources = [r for f in sorted((ROOT / "fixtures" / "scenarios" / scenario / "fhir").glob("*.json"))
                 for r in _resources(f)]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    facts = child_facts_from(patient, [r for r in resources if r["resourceType"] == "EpisodeOfCare"])
    for c in (r for r in resources if r["resourceType"] == "Consent"):
        assert grantor_problems(c, facts) == [], c["identifier"]
