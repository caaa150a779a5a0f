"""Validation against a profile's differential: a passing and a failing case for every rule."""

from __future__ import annotations

import copy
from decimal import Decimal

from adapter.validation.profiles import resolver_for, validate_profile
from adapter.validation.terminology import Terminology

X = "https://x.example"
CS = {"resourceType": "CodeSystem", "url": f"{X}/CodeSystem/colour", "status": "active", "content": "complete",
      "concept": [{"code": "red"}, {"code": "blue"}]}
VS = {"resourceType": "ValueSet", "url": f"{X}/ValueSet/colour", "status": "active",
      "compose": {"include": [{"system": CS["url"]}]}}
TERMINOLOGY = Terminology([CS, VS])
NHS = "https://fhir.nhs.uk/Id/nhs-number"
LOCAL = f"{X}/Id/local"
NHS_CHECK = ("value.empty() or (value.matches('^[0-9]{10}$') and ((11 - ((" +
             " + ".join(f"value.substring({i},1).toInteger() * {10 - i}" for i in range(9)) +
             ") mod 11)) mod 11) = value.substring(9,1).toInteger())")


def profile(rtype: str, *elements: dict) -> dict:
    return {"resourceType": "StructureDefinition", "url": f"{X}/StructureDefinition/test-{rtype.lower()}",
            "name": "Test", "status": "active", "kind": "resource", "abstract": False, "type": rtype,
            "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{rtype}", "derivation": "constraint",
            "differential": {"element": [{"id": rtype, "path": rtype}, *elements]}}


def el(element_id: str, **kw) -> dict:
    path = ".".join(part.split(":")[0] for part in element_id.split("."))
    out = {"id": element_id, "path": path}
    last = element_id.split(".")[-1]
    if ":" in last and not last.split(":")[0].endswith("[x]"):
        out["sliceName"] = last.split(":")[1]
    out.update(kw)
    return out


def run(resource: dict, prof: dict, **kw) -> list:
    return validate_profile(resource, prof, TERMINOLOGY, **kw)


def codes(issues: list) -> list[tuple[str, str, str]]:
    return [(i.code, i.severity, i.expression[0]) for i in issues]


def errors(issues: list) -> list:
    return [i for i in issues if i.severity == "error"]


# ---- cardinality ------------------------------------------------------------------------------

CARD = profile("Patient", el("Patient.birthDate", min=1), el("Patient.name", min=1, max="2"),
               el("Patient.photo", max="0"), el("Patient.contact.name", min=1),
               el("Patient.contact.telecom.value", min=1))


def test_cardinality_passes():
    p = {"resourceType": "Patient", "birthDate": "2012-01-01", "name": [{"family": "A"}],
         "contact": [{"name": {"family": "B"}, "telecom": [{"system": "phone", "value": "1"}]},
                     {"name": {"family": "C"}}]}
    assert run(p, CARD) == []


def test_cardinality_min_max_and_forbidden():
    p = {"resourceType": "Patient", "name": [{"family": "A"}, {"family": "B"}, {"family": "C"}],
         "photo": [{"contentType": "image/png"}]}
    assert codes(run(p, CARD)) == [("structure", "error", "Patient.birthDate"),
                                   ("structure", "error", "Patient.name"),
                                   ("structure", "error", "Patient.photo")]


def test_cardinality_inside_every_array_instance_at_any_depth():
    p = {"resourceType": "Patient", "birthDate": "2012-01-01", "name": [{"family": "A"}],
         "contact": [{"name": {"family": "B"}},
                     {"telecom": [{"system": "phone", "value": "1"}, {"system": "email"}]}]}
    assert codes(run(p, CARD)) == [("structure", "error", "Patient.contact[1].name"),
                                   ("structure", "error", "Patient.contact[1].telecom[1].value")]


def test_a_primitive_with_only_extensions_counts_as_present():
    p = {"resourceType": "Patient", "name": [{"family": "A"}],
         "_birthDate": {"extension": [{"url": f"{X}/why-missing", "valueString": "unknown"}]}}
    assert run(p, CARD) == []


# ---- choice types -----------------------------------------------------------------------------

CHOICE = profile("Observation", el("Observation.value[x]", min=1, type=[{"code": "Quantity"}]))


def test_choice_type_restriction():
    ok = {"resourceType": "Observation", "valueQuantity": {"value": Decimal("1.50")}}
    assert run(ok, CHOICE) == []
    bad = {"resourceType": "Observation", "valueString": "1.5"}
    assert codes(run(bad, CHOICE)) == [("structure", "error", "Observation.valueString")]
    missing = {"resourceType": "Observation"}
    assert codes(run(missing, CHOICE)) == [("structure", "error", "Observation.value")]


def test_renamed_choice_element():
    prof = profile("Observation", el("Observation.value[x]:valueQuantity.unit", min=1))
    assert run({"resourceType": "Observation", "valueQuantity": {"value": 1, "unit": "kg"}}, prof) == []
    assert codes(run({"resourceType": "Observation", "valueQuantity": {"value": 1}}, prof)) == \
        [("structure", "error", "Observation.valueQuantity.unit")]


# ---- fixed and pattern ------------------------------------------------------------------------

FIXED = profile("Task", el("Task.intent", fixedCode="order"),
                el("Task.code", fixedCodeableConcept={"coding": [{"system": CS["url"], "code": "red"}]}),
                el("Task.priority", patternCode="urgent"),
                el("Task.performerType", patternCodeableConcept={"coding": [{"system": CS["url"], "code": "blue"}]}),
                el("Task.input.valueDecimal", fixedDecimal=2.5))


def test_fixed_and_pattern_pass():
    t = {"resourceType": "Task", "intent": "order", "code": {"coding": [{"system": CS["url"], "code": "red"}]},
         "priority": "urgent",
         "performerType": [{"coding": [{"system": "other", "code": "x"},
                                       {"system": CS["url"], "code": "blue", "display": "Blue"}], "text": "b"}],
         "input": [{"type": {"text": "w"}, "valueDecimal": Decimal("2.50")}]}
    assert run(t, FIXED) == []


def test_fixed_is_exact_and_pattern_is_contained():
    t = {"resourceType": "Task", "intent": "plan",
         "code": {"coding": [{"system": CS["url"], "code": "red"}], "text": "extra"},
         "priority": "routine",
         "performerType": [{"coding": [{"system": CS["url"], "code": "red"}]}],
         "input": [{"type": {"text": "w"}, "valueDecimal": Decimal("2.4")}]}
    assert codes(run(t, FIXED)) == [("value", "error", "Task.intent"), ("value", "error", "Task.code"),
                                    ("value", "error", "Task.priority"),
                                    ("value", "error", "Task.performerType[0]"),
                                    ("value", "error", "Task.input[0].valueDecimal")]


# ---- bindings ---------------------------------------------------------------------------------

def bound(strength: str, url: str = VS["url"]) -> dict:
    b = {"strength": strength, "valueSet": url}
    return profile("Task", el("Task.priority", binding=b), el("Task.code", binding=b),
                   el("Task.statusReason.coding", binding=b))


def test_required_binding_on_code_coding_and_codeable_concept():
    ok = {"resourceType": "Task", "priority": "red",
          "code": {"coding": [{"system": "other", "code": "z"}, {"system": CS["url"], "code": "blue"}]},
          "statusReason": {"coding": [{"system": CS["url"], "code": "red"}]}}
    assert run(ok, bound("required")) == []
    bad = {"resourceType": "Task", "priority": "green",
           "code": {"coding": [{"system": CS["url"], "code": "green"}]},
           "statusReason": {"coding": [{"system": "other", "code": "red"}]}}
    assert codes(run(bad, bound("required"))) == [("code-invalid", "error", "Task.priority"),
                                                  ("code-invalid", "error", "Task.code"),
                                                  ("code-invalid", "error", "Task.statusReason.coding[0]")]


def test_extensible_and_preferred_warn_example_says_nothing():
    bad = {"resourceType": "Task", "code": {"coding": [{"system": CS["url"], "code": "green"}]}}
    assert codes(run(bad, bound("extensible"))) == [("code-invalid", "warning", "Task.code")]
    assert codes(run(bad, bound("preferred"))) == [("code-invalid", "warning", "Task.code")]
    assert run(bad, bound("example")) == []


def test_a_value_set_we_do_not_hold_cannot_be_checked():
    t = {"resourceType": "Task", "code": {"coding": [{"system": CS["url"], "code": "green"}]}}
    issues = run(t, bound("required", f"{X}/ValueSet/unknown"))
    assert codes(issues) == [("informational", "information", "Task.code")]
    assert "cannot check" in issues[0].diagnostics


# ---- slicing ----------------------------------------------------------------------------------

SLICED = profile(
    "Patient",
    el("Patient.identifier", slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}),
    el("Patient.identifier:nhs", min=1, max="1",
       constraint=[{"key": "nhs-1", "severity": "error", "human": "valid NHS number", "expression": NHS_CHECK}]),
    el("Patient.identifier:nhs.system", patternUri=NHS),
    el("Patient.identifier:nhs.value", min=1),
    el("Patient.identifier:local", max="1"),
    el("Patient.identifier:local.system", fixedUri=LOCAL),
)


def test_identifier_slices_pass_with_other_identifiers_allowed():
    p = {"resourceType": "Patient", "identifier": [{"system": "https://other.example", "value": "x"},
                                                   {"system": NHS, "value": "9990000018"},
                                                   {"system": LOCAL, "value": "C123"}]}
    assert run(p, SLICED) == []


def test_slice_min_and_max():
    assert codes(run({"resourceType": "Patient", "identifier": [{"system": LOCAL, "value": "C1"}]}, SLICED)) == \
        [("structure", "error", "Patient.identifier")]
    two = {"resourceType": "Patient", "identifier": [{"system": NHS, "value": "9990000018"},
                                                     {"system": NHS, "value": "9990000026"}]}
    issues = run(two, SLICED)
    assert codes(issues) == [("structure", "error", "Patient.identifier")]
    assert "at most 1" in issues[0].diagnostics


def test_slice_children_and_slice_constraints():
    no_value = {"resourceType": "Patient", "identifier": [{"system": NHS}]}
    assert codes(run(no_value, SLICED)) == [("structure", "error", "Patient.identifier[0].value")]
    for number in ("9990000017", "999000001"):
        bad = {"resourceType": "Patient", "identifier": [{"system": NHS, "value": number}]}
        issues = run(bad, SLICED)
        assert codes(issues) == [("invariant", "error", "Patient.identifier[0]")]
        assert "nhs-1" in issues[0].diagnostics and "valid NHS number" in issues[0].diagnostics


def test_closed_slicing_rejects_unmatched_items():
    closed = copy.deepcopy(SLICED)
    closed["differential"]["element"][1]["slicing"]["rules"] = "closed"
    p = {"resourceType": "Patient", "identifier": [{"system": NHS, "value": "9990000018"},
                                                   {"system": "https://other.example", "value": "x"}]}
    assert codes(run(p, closed)) == [("structure", "error", "Patient.identifier[1]")]
    assert run({"resourceType": "Patient", "identifier": [p["identifier"][0]]}, closed) == []


def test_pattern_discriminator_on_this():
    prof = profile("EpisodeOfCare",
                   el("EpisodeOfCare.type", slicing={"discriminator": [{"type": "pattern", "path": "$this"}],
                                                     "rules": "open"}),
                   el("EpisodeOfCare.type:main", min=1,
                      patternCodeableConcept={"coding": [{"system": CS["url"], "code": "red"}]}))
    ok = {"resourceType": "EpisodeOfCare", "type": [{"text": "x"},
                                                    {"coding": [{"system": CS["url"], "code": "red"}]}]}
    assert run(ok, prof) == []
    assert codes(run({"resourceType": "EpisodeOfCare", "type": [{"text": "x"}]}, prof)) == \
        [("structure", "error", "EpisodeOfCare.type")]


# ---- extension slices -------------------------------------------------------------------------

EXT_URL = f"{X}/StructureDefinition/colour-ext"
COMPLEX_URL = f"{X}/StructureDefinition/complex-ext"
COLOUR_EXT = {"resourceType": "StructureDefinition", "url": EXT_URL, "kind": "complex-type", "type": "Extension",
              "differential": {"element": [
                  {"id": "Extension", "path": "Extension"},
                  {"id": "Extension.url", "path": "Extension.url", "fixedUri": EXT_URL},
                  {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1, "type": [{"code": "Coding"}],
                   "binding": {"strength": "required", "valueSet": VS["url"]}}]}}
COMPLEX_EXT = {"resourceType": "StructureDefinition", "url": COMPLEX_URL, "kind": "complex-type",
               "type": "Extension", "differential": {"element": [
                   {"id": "Extension", "path": "Extension"},
                   el("Extension.extension", slicing={"discriminator": [{"type": "value", "path": "url"}],
                                                      "rules": "open"}),
                   el("Extension.extension:size", min=1, max="1"),
                   el("Extension.extension:size.url", fixedUri="size"),
                   el("Extension.extension:size.value[x]", min=1, type=[{"code": "integer"}]),
                   el("Extension.url", fixedUri=COMPLEX_URL),
                   el("Extension.value[x]", max="0")]}}
RESOLVE = resolver_for([COLOUR_EXT, COMPLEX_EXT])
WITH_EXT = profile(
    "EpisodeOfCare",
    el("EpisodeOfCare.extension", slicing={"discriminator": [{"type": "value", "path": "url"}], "rules": "open"}),
    el("EpisodeOfCare.extension:colour", min=1, max="1", type=[{"code": "Extension", "profile": [EXT_URL]}]),
    el("EpisodeOfCare.extension:colour.value[x]", type=[{"code": "Coding"}],
       binding={"strength": "required", "valueSet": VS["url"]}),
    el("EpisodeOfCare.extension:more", max="1", type=[{"code": "Extension", "profile": [COMPLEX_URL]}]),
)


def colour(code: str) -> dict:
    return {"url": EXT_URL, "valueCoding": {"system": CS["url"], "code": code}}


def test_extension_slices_by_url_pass():
    e = {"resourceType": "EpisodeOfCare", "extension": [{"url": f"{X}/other", "valueString": "x"}, colour("red"),
                                                        {"url": COMPLEX_URL,
                                                         "extension": [{"url": "size", "valueInteger": 3}]}]}
    assert run(e, WITH_EXT, resolve=RESOLVE) == []
    # without the Extension profiles at hand, the url still tells the slices apart
    assert run(e, WITH_EXT, resolve=lambda url: None) == []


def test_extension_slice_cardinality_and_binding():
    missing = {"resourceType": "EpisodeOfCare", "extension": [{"url": f"{X}/other", "valueString": "x"}]}
    assert codes(run(missing, WITH_EXT, resolve=RESOLVE)) == [("structure", "error", "EpisodeOfCare.extension")]
    twice = {"resourceType": "EpisodeOfCare", "extension": [colour("red"), colour("blue")]}
    assert codes(run(twice, WITH_EXT, resolve=RESOLVE)) == [("structure", "error", "EpisodeOfCare.extension")]
    wrong = {"resourceType": "EpisodeOfCare", "extension": [colour("green")]}
    # stated in the profile and in the Extension profile: reported once
    assert codes(run(wrong, WITH_EXT, resolve=RESOLVE)) == \
        [("code-invalid", "error", "EpisodeOfCare.extension[0].valueCoding")]
    assert codes(run(wrong, WITH_EXT, resolve=lambda url: None)) == \
        [("code-invalid", "error", "EpisodeOfCare.extension[0].valueCoding")]


def test_extension_validated_against_its_own_profile():
    e = {"resourceType": "EpisodeOfCare", "extension": [
        colour("red"), {"url": COMPLEX_URL, "valueString": "no",
                        "extension": [{"url": "size", "valueString": "big"}]}]}
    assert codes(run(e, WITH_EXT, resolve=RESOLVE)) == [
        ("structure", "error", "EpisodeOfCare.extension[1].extension[0].valueString"),
        ("structure", "error", "EpisodeOfCare.extension[1].value"),
    ]


# ---- constraints ------------------------------------------------------------------------------

CONSTRAINED = profile(
    "Patient",
    el("Patient.contact", constraint=[
        {"key": "c-1", "severity": "error", "human": "a contact has a name", "expression": "name.exists()"},
        {"key": "c-2", "severity": "warning", "human": "a contact has a phone", "expression": "telecom.exists()"}]),
    el("Patient.birthDate", constraint=[{"key": "c-3", "severity": "error", "human": "not in the future",
                                         "expression": "$this <= today()"}]),
)
CONSTRAINED["differential"]["element"][0]["constraint"] = [
    {"key": "c-0", "severity": "error", "human": "a name or an identifier",
     "expression": "name.exists() or identifier.exists()"}]


def test_constraints_pass():
    p = {"resourceType": "Patient", "name": [{"family": "A"}], "birthDate": "2012-01-01",
         "contact": [{"name": {"family": "B"}, "telecom": [{"system": "phone", "value": "1"}]}]}
    assert run(p, CONSTRAINED) == []


def test_constraints_fail_with_their_key_human_text_and_severity():
    p = {"resourceType": "Patient", "birthDate": "2999-01-01",
         "contact": [{"name": {"family": "B"}, "telecom": [{"system": "phone", "value": "1"}]},
                     {"gender": "male"}]}
    issues = run(p, CONSTRAINED)
    assert codes(issues) == [("invariant", "error", "Patient"),
                             ("invariant", "error", "Patient.contact[1]"),
                             ("invariant", "warning", "Patient.contact[1]"),
                             ("invariant", "error", "Patient.birthDate")]
    assert "c-1: a contact has a name" in issues[1].diagnostics


def test_a_constraint_that_cannot_be_evaluated_fails_with_its_reason():
    prof = profile("Patient", el("Patient.name", constraint=[
        {"key": "bad-1", "severity": "error", "human": "broken", "expression": "family.noSuchFunction()"}]))
    issues = run({"resourceType": "Patient", "name": [{"family": "A"}]}, prof)
    assert codes(issues) == [("invariant", "error", "Patient.name[0]")]
    assert "noSuchFunction" in issues[0].diagnostics


# ---- references and resource type ------------------------------------------------------------

def test_reference_targets():
    prof = profile("Task", el("Task.for", type=[{"code": "Reference",
                                                 "targetProfile": ["http://hl7.org/fhir/StructureDefinition/Patient"]}]))
    assert run({"resourceType": "Task", "for": {"reference": "Patient/1"}}, prof) == []
    assert run({"resourceType": "Task", "for": {"reference": "urn:uuid:0b1c"}}, prof) == []
    assert codes(run({"resourceType": "Task", "for": {"reference": "Group/1"}}, prof)) == \
        [("structure", "error", "Task.for")]


def test_resource_of_another_type():
    assert codes(run({"resourceType": "Task"}, CARD)) == [("business-rule", "error", "Task")]
