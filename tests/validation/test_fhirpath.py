"""FHIRPath for invariants: fhirpathpy plus hasValue() and the boundary functions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapter.validation import fhirpath
from adapter.validation.fhirpath import FhirPathError, check, check_detail, evaluate

PATIENT = {
    "resourceType": "Patient",
    "birthDate": "2012-03",
    "_gender": {"extension": [{"url": "https://x.example/why", "valueString": "not asked"}]},
    "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}],
    "extension": [{"url": "https://x.example/weight", "valueDecimal": Decimal("2.50")}],
}


def _str(values: list) -> list[str]:
    return [getattr(v, "asStr", None) or str(v) for v in values]


def test_evaluates_on_the_resource_with_the_r4_model():
    assert evaluate("Patient.identifier.value", PATIENT) == ["9990000018"]
    assert evaluate("identifier.where(system = 'https://fhir.nhs.uk/Id/nhs-number').exists()", PATIENT) == [True]


def test_decimals_are_given_to_fhirpathpy_as_numbers():
    assert evaluate("extension.value > 2.4", PATIENT) == [True]


def test_focus_inside_the_resource_with_its_type_for_choice_elements():
    ext = PATIENT["extension"][0]
    assert evaluate("value", PATIENT, ext, path="Extension") == [2.5]
    assert evaluate("value", PATIENT, ext, path="Patient.extension") == [2.5]
    ident = PATIENT["identifier"][0]
    assert evaluate("value.length()", PATIENT, ident, path="Patient.identifier") == [10]
    assert evaluate("%resource.birthDate", PATIENT, ident) == ["2012-03"]
    assert evaluate("%context.system", PATIENT, ident) == ["https://fhir.nhs.uk/Id/nhs-number"]


def test_has_value():
    assert evaluate("birthDate.hasValue()", PATIENT) == [True]
    assert evaluate("gender.hasValue()", PATIENT) == [False]       # extension only
    assert evaluate("identifier.hasValue()", PATIENT) == [False]   # not a primitive
    assert evaluate("deceased.hasValue()", PATIENT) == [False]     # absent
    both = {"resourceType": "Patient", "birthDate": "2012-03-01",
            "_birthDate": {"extension": [{"url": "https://x.example/a", "valueString": "b"}]}}
    assert evaluate("birthDate.hasValue()", both) == [True]


def test_low_and_high_boundary():
    assert evaluate("1.587.lowBoundary()", PATIENT) == [Decimal("1.58650000")]
    assert evaluate("1.587.highBoundary()", PATIENT) == [Decimal("1.58750000")]
    assert evaluate("1.587.lowBoundary(2)", PATIENT) == [Decimal("1.58")]
    assert _str(evaluate("birthDate.lowBoundary()", PATIENT)) == ["2012-03-01"]
    assert _str(evaluate("birthDate.highBoundary()", PATIENT)) == ["2012-03-31"]
    assert evaluate("@2016-02.highBoundary() = @2016-02-29", PATIENT) == [True]
    assert _str(evaluate("@T10:30.highBoundary()", PATIENT)) == ["10:30:59.999"]
    assert evaluate("'not a date'.lowBoundary()", PATIENT) == []


def test_check_true_false_empty_and_errors():
    assert check("birthDate.exists()", PATIENT, PATIENT) is True
    assert check("deceased.exists()", PATIENT, PATIENT) is False
    assert check_detail("name.given", PATIENT, PATIENT) == (False, "evaluated to empty")
    ok, reason = check_detail("identifier.value.noSuchFunction()", PATIENT, PATIENT)
    assert ok is False and "noSuchFunction" in reason
    ok, reason = check_detail("identifier.(", PATIENT, PATIENT)
    assert ok is False and reason
    ok, reason = check_detail("identifier | extension", PATIENT, PATIENT)
    assert ok is False and "2 values" in reason


def test_evaluate_raises_a_fhirpath_error():
    with pytest.raises(FhirPathError):
        evaluate("identifier.value.noSuchFunction()", PATIENT)


def test_expressions_are_compiled_once():
    fhirpath.compile_expression.cache_clear()
    evaluate("birthDate", PATIENT)
    evaluate("birthDate", PATIENT)
    info = fhirpath.compile_expression.cache_info()
    assert info.misses == 1 and info.hits == 1


NHS = ("value.matches('^[0-9]{10}$') and ((11 - ((" +
       " + ".join(f"value.substring({i},1).toInteger() * {10 - i}" for i in range(9)) +
       ") mod 11)) mod 11) = value.substring(9,1).toInteger()")


@pytest.mark.parametrize("number, valid", [("9990000018", True), ("9990000026", True), ("9990000017", False),
                                           ("999000001", False), ("99900000a8", False)])
def test_nhs_number_check_in_pure_fhirpath(number, valid):
    ident = {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": number}
    assert check(NHS, ident, PATIENT, path="Identifier") is valid
