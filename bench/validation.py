"""Time validation in-process: a completed IHA response and a profiled Patient.

Run by hand: `python bench/validation.py [--runs N]`. Prints a markdown table for
docs/performance.md. Target (issue 3): under 5 ms median for the IHA response.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from adapter.validation.conformance import published_index
from adapter.validation.terminology import default_terminology
from adapter.validation.validator import Validator

ROOT = Path(__file__).resolve().parents[1]
PATIENT = {
    "resourceType": "Patient",
    "meta": {"profile": ["https://lac-fhir-adapter.example/fhir/StructureDefinition/lac-patient"]},
    "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000034"},
                   {"system": "https://lac-fhir-adapter.example/fhir/Id/la-child-id", "value": "C-000101"}],
    "name": [{"family": "Example", "given": ["Robin"]}],
    "gender": "female",
    "birthDate": "2016-04-12",
}


def count_answers(items: list) -> int:
    total = 0
    for item in items:
        for answer in item.get("answer", []):
            total += 1 + count_answers(answer.get("item", []))
        total += count_answers(item.get("item", []))
    return total


def timed(fn, runs: int) -> tuple[float, float]:
    for _ in range(min(50, runs)):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    validator = Validator(default_terminology())
    resolve = published_index().resolve
    response = json.loads((ROOT / "fixtures" / "forms" / "iha-c-completed.json").read_text())
    rows = []
    for label, resource in (("completed IHA-C QuestionnaireResponse "
                             f"({count_answers(response.get('item', []))} answers)", response),
                            ("Patient claiming lac-patient", PATIENT)):
        issues = [i for i in validator.validate(resource, resolve) if i.severity == "error"]
        assert not issues, f"{label} should validate clean: {issues[0].diagnostics}"
        median, p95 = timed(lambda r=resource: validator.validate(r, resolve), args.runs)
        rows.append(f"| {label} | {median:.2f} | {p95:.2f} |")
    print("| validated | median ms | p95 ms |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
