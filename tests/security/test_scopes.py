"""SMART scopes: parsing (v1 and v2), allows, narrow."""

from __future__ import annotations

import pytest

from adapter.security.scopes import Scope, ScopeError, allows, narrow, parse_scope


@pytest.mark.parametrize("text, rtype, letters", [
    ("system/Task.cruds", "Task", "cruds"),
    ("system/Task.cru", "Task", "cru"),
    ("system/*.rs", "*", "rs"),
    ("system/Observation.s", "Observation", "s"),
    ("system/*.read", "*", "rs"),      # v1 read = read + search
    ("system/Task.write", "Task", "cud"),
    ("system/*.*", "*", "cruds"),
])
def test_parse(text, rtype, letters):
    assert parse_scope(text) == Scope("system", rtype, frozenset(letters))


@pytest.mark.parametrize("text, why", [
    ("system/Observation.rs?category=laboratory", "search parameters"),
    ("patient/*.rs", "only system/"),
    ("user/Task.read", "only system/"),
    ("system/Task.rc", "order"),       # v2 letters out of order
    ("system/Task.rr", "order"),       # repeated
    ("system/Task.x", "order"),
    ("system/Task.", "SMART resource scope"),
    ("system/task.rs", "SMART resource scope"),  # a type starts upper-case
    ("openid", "SMART resource scope"),
    ("launch/patient", "SMART resource scope"),
    ("", "SMART resource scope"),
])
def test_parse_refuses(text, why):
    with pytest.raises(ScopeError, match=why):
        parse_scope(text)


@pytest.mark.parametrize("scopes, rtype, interaction, expected", [
    ({"system/*.cruds"}, "Patient", "d", True),
    ({"system/*.rs"}, "Patient", "r", True),
    ({"system/*.rs"}, "Patient", "s", True),
    ({"system/*.rs"}, "Patient", "c", False),
    ({"system/Task.cru"}, "Task", "u", True),
    ({"system/Task.cru"}, "Task", "d", False),
    ({"system/Task.cru"}, "Patient", "r", False),
    ({"system/*.read"}, "Consent", "s", True),
    ({"system/*.read"}, "Consent", "u", False),
    ({"system/Task.write"}, "Task", "c", True),
    ({"system/Task.write"}, "Task", "r", False),
    ({"system/*.*"}, "Binary", "d", True),
    ({"system/Patient.r", "system/Task.s"}, "Task", "s", True),
    ({"system/Patient.r", "system/Task.s"}, "Task", "r", False),
    (set(), "Patient", "r", False),
    ({"patient/*.cruds"}, "Patient", "r", False),           # unsupported context grants nothing
    ({"system/Observation.rs?category=x"}, "Observation", "r", False),  # nor a query-restricted one
    ({"garbage", "system/Task.r"}, "Task", "r", True),
])
def test_allows(scopes, rtype, interaction, expected):
    assert allows(frozenset(scopes), rtype, interaction) is expected


@pytest.mark.parametrize("interaction", ["x", "", "rs", "read"])
def test_allows_refuses_unknown_interaction(interaction):
    with pytest.raises(ValueError):
        allows(frozenset({"system/*.cruds"}), "Task", interaction)


@pytest.mark.parametrize("requested, allowed, granted", [
    # covered: granted as spelled
    ("system/*.rs", {"system/*.cruds"}, {"system/*.rs"}),
    ("system/*.read", {"system/*.cruds"}, {"system/*.read"}),
    ("system/Task.cru system/Patient.r", {"system/*.cruds"}, {"system/Task.cru", "system/Patient.r"}),
    # partly allowed: the v2 intersection
    ("system/*.cruds", {"system/*.rs"}, {"system/*.rs"}),
    ("system/*.cruds", {"system/Task.cru", "system/Patient.rs"}, {"system/Task.cru", "system/Patient.rs"}),
    ("system/Task.cruds", {"system/*.read"}, {"system/Task.rs"}),
    ("system/*.write", {"system/Task.cruds"}, {"system/Task.cud"}),
    # beyond what is allowed: dropped
    ("system/Task.r system/Patient.d", {"system/*.rs"}, {"system/Task.r"}),
    ("system/Task.r system/Consent.r", {"system/Task.rs"}, {"system/Task.r"}),
    # duplicates collapse to what covers them
    ("system/*.rs system/Task.r", {"system/*.cruds"}, {"system/*.rs"}),
])
def test_narrow(requested, allowed, granted):
    assert narrow(requested, frozenset(allowed)) == frozenset(granted)
    assert narrow(requested.split(), frozenset(allowed)) == frozenset(granted)


@pytest.mark.parametrize("requested, allowed, why", [
    ("system/Patient.d", {"system/*.rs"}, "none of the requested"),
    ("system/*.rs", set(), "none of the requested"),
    ("", {"system/*.rs"}, "no scope"),
    ("system/*.rs patient/*.rs", {"system/*.rs"}, "only system/"),
    ("system/Observation.rs?category=vital-signs", {"system/*.rs"}, "search parameters"),
])
def test_narrow_refuses(requested, allowed, why):
    with pytest.raises(ScopeError, match=why):
        narrow(requested, frozenset(allowed))


def test_narrow_grants_only_what_allows_permits():
    """Whatever narrow grants, allows() with the allowed scopes permits too."""
    allowed = frozenset({"system/Task.cru", "system/Patient.rs", "system/Observation.r"})
    granted = narrow("system/*.cruds system/*.read", allowed)
    for rtype in ("Task", "Patient", "Observation", "Consent"):
        for i in "cruds":
            if allows(granted, rtype, i):
                assert allows(allowed, rtype, i), (rtype, i)
            assert allows(granted, rtype, i) == allows(allowed, rtype, i)
