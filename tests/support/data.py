"""Synthetic FHIR resources for tests: only 999-range NHS numbers, only invented people."""

from __future__ import annotations

NHS = "https://fhir.nhs.uk/Id/nhs-number"
TAG_SYSTEM = "https://lac-fhir-adapter.example/test-run"


def nhs_number(serial: int) -> str:
    """A test-range NHS number (999...) with a valid modulus-11 check digit."""
    while True:
        stem = f"999{serial:06d}"
        total = sum(int(d) * w for d, w in zip(stem, range(10, 1, -1)))
        check = 11 - total % 11
        check = 0 if check == 11 else check
        if check != 10:
            return stem + str(check)
        serial += 1


def patient(tag: str, family: str = "Testchild", given: str = "Alex", nhs: str = "9990000018",
            birth_date: str = "2014-05-06", gender: str = "female") -> dict:
    return {
        "resourceType": "Patient",
        "meta": {"tag": [{"system": TAG_SYSTEM, "code": tag}]},
        "identifier": [{"system": NHS, "value": nhs}],
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth_date,
    }


def observation(tag: str, patient_ref: str, kg: str = "21.50", when: str = "2024-03-01") -> dict:
    return {
        "resourceType": "Observation",
        "meta": {"tag": [{"system": TAG_SYSTEM, "code": tag}]},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": when,
        "valueQuantity": {"value": float(kg), "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }


def task(tag: str, patient_ref: str, status: str = "requested") -> dict:
    return {
        "resourceType": "Task",
        "meta": {"tag": [{"system": TAG_SYSTEM, "code": tag}]},
        "status": status,
        "intent": "order",
        "for": {"reference": patient_ref},
        "authoredOn": "2024-01-10",
    }


def worked_example(form: str) -> dict:
    """A completed form's worked example (fixtures/forms/<form>-completed.json), without its id
    and with a fresh identifier, ready to be POSTed again."""
    import json
    import uuid
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "fixtures" / "forms" / f"{form}-completed.json"
    response = json.loads(path.read_text())
    response.pop("id", None)
    response["identifier"] = {"system": "https://lac-fhir-adapter.example/fhir/Id/test-response",
                              "value": uuid.uuid4().hex}
    return response
