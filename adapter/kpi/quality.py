"""The automated quality audit of a completed health assessment (plain functions, no I/O but
reading the checklist, config/quality-audit.toml).

`audit(response, checklist)` applies the checklist to a QuestionnaireResponse's answers by
linkId and gives the score (% of checks passed) and, per check, whether it passed and why not;
`audit_observation` and `fix_task` are the FHIR resources the result is stored as.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..config import PROJECT_ROOT

CHECKLIST_FILE = PROJECT_ROOT / "config" / "quality-audit.toml"
SYSTEM = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-quality-audit"
AUDIT_ID = "https://lac-fhir-adapter.example/fhir/Id/quality-audit"
KINDS = ("all_true", "any_true", "any_answered", "all_answered", "each_row")


@dataclass(frozen=True)
class Check:
    code: str
    text: str
    kind: str
    items: tuple[str, ...] = ()
    or_answered: tuple[str, ...] = ()  # any_true: also passes when one of these has an answer
    require_all: tuple[str, ...] = ()
    require_any: tuple[str, ...] = ()
    min_rows: int = 0


@dataclass(frozen=True)
class Checklist:
    forms: frozenset[str]
    pass_mark: int
    checks: tuple[Check, ...]


@dataclass
class Result:
    score: int                                    # % of checks passed
    passed: bool                                  # score >= pass mark
    checks: list[tuple[Check, bool, str]] = field(default_factory=list)  # (check, passed, why not)

    @property
    def failures(self) -> list[tuple[Check, str]]:
        return [(c, why) for c, ok, why in self.checks if not ok]


def load_checklist(path: Path | None = None) -> Checklist:
    with open(path or CHECKLIST_FILE, "rb") as fh:
        raw = tomllib.load(fh)
    checks = []
    for entry in raw.get("check", []):
        kinds = [k for k in KINDS if k in entry]
        either = kinds == ["any_true", "any_answered"]
        if either:
            kinds = ["any_true"]
        if len(kinds) != 1:
            raise ValueError(f"quality-audit check {entry.get('code')!r} needs exactly one of {', '.join(KINDS)} "
                             "(or any_true with any_answered)")
        kind = kinds[0]
        items = (entry[kind],) if kind == "each_row" else tuple(entry[kind])
        checks.append(Check(entry["code"], entry["text"], kind, items,
                            tuple(entry["any_answered"]) if either else (),
                            tuple(entry.get("require_all", ())), tuple(entry.get("require_any", ())),
                            int(entry.get("min_rows", 0))))
    return Checklist(frozenset(raw.get("forms", ())), int(raw.get("pass_mark", 100)), tuple(checks))


@lru_cache(maxsize=1)
def default_checklist() -> Checklist:
    return load_checklist()


def form_of(response: dict) -> str | None:
    """The form (Questionnaire id) a response answers: the last path segment of its canonical."""
    canonical = response.get("questionnaire")
    if not isinstance(canonical, str):
        return None
    return canonical.split("|", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def applies(response: dict, checklist: Checklist | None = None) -> bool:
    checklist = checklist or default_checklist()
    return response.get("status") in ("completed", "amended") and form_of(response) in checklist.forms


def audit(response: dict, checklist: Checklist | None = None) -> Result:
    checklist = checklist or default_checklist()
    answers = _answers(response.get("item") or [])
    rows = _rows(response.get("item") or [])
    results = [(check, *_run(check, answers, rows)) for check in checklist.checks]
    score = round(100 * sum(1 for _, ok, _ in results if ok) / len(results)) if results else 100
    return Result(score, score >= checklist.pass_mark, results)


def _run(check: Check, answers: dict[str, list], rows: dict[str, list[dict[str, list]]]) -> tuple[bool, str]:
    if check.kind == "each_row":
        found = rows.get(check.items[0], [])
        if len(found) < check.min_rows:
            return False, f"no {check.items[0]} entries"
        for n, row in enumerate(found, start=1):
            missing = [i for i in check.require_all if not row.get(i)]
            if check.require_any and not any(row.get(i) for i in check.require_any):
                missing.append(" or ".join(check.require_any))
            if missing:
                return False, f"entry {n} of {check.items[0]} lacks {', '.join(missing)}"
        return True, ""
    present = {i: answers.get(i, []) for i in check.items}
    if check.kind == "all_true":
        bad = [i for i, values in present.items() if True not in values]
        return (not bad), (f"not answered yes: {', '.join(bad)}" if bad else "")
    if check.kind == "any_true":
        ok = any(True in values for values in present.values()) or any(answers.get(i) for i in check.or_answered)
        names = " or ".join(check.items) + (f", and none of {', '.join(check.or_answered)} answered"
                                             if check.or_answered else "")
        return ok, ("" if ok else f"not answered yes: {names}")
    if check.kind == "any_answered":
        ok = any(present.values())
        return ok, ("" if ok else f"not answered: {' or '.join(check.items)}")
    bad = [i for i, values in present.items() if not values]
    return (not bad), (f"not answered: {', '.join(bad)}" if bad else "")


def _values(item: dict) -> list:
    out = []
    for answer in item.get("answer") or []:
        for key, value in answer.items():
            if key.startswith("value") and value not in (None, "", {}, []):
                out.append(value)
    return out


def _answers(items: list[dict], into: dict[str, list] | None = None) -> dict[str, list]:
    """Every answer value by linkId, anywhere in the response (nested items and answers' items)."""
    into = {} if into is None else into
    for item in items:
        into.setdefault(item.get("linkId"), []).extend(_values(item))
        _answers(item.get("item") or [], into)
        for answer in item.get("answer") or []:
            _answers(answer.get("item") or [], into)
    return into


def _rows(items: list[dict], into: dict[str, list] | None = None) -> dict[str, list[dict[str, list]]]:
    """Repeating groups: for each group linkId, one {linkId: values} per repeat."""
    into = {} if into is None else into
    for item in items:
        children = item.get("item") or []
        if children:
            into.setdefault(item.get("linkId"), []).append(_answers(children))
            _rows(children, into)
    return into


# -- the FHIR resources the result is stored as ------------------------------------------------
def audit_observation(response_ref: str, response: dict, result: Result, when: str) -> dict:
    body = {
        "resourceType": "Observation",
        "identifier": [{"system": AUDIT_ID, "value": response_ref}],
        "status": "final",
        "code": {"coding": [{"system": SYSTEM, "code": "assessment-quality-audit",
                             "display": "Assessment quality audit"}]},
        "effectiveDateTime": when,
        "valueQuantity": {"value": result.score, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
        "interpretation": [{"text": "passed" if result.passed else "failed"}],
        "focus": [{"reference": response_ref}],  # what is audited (derivedFrom: what a form yields)
        "component": [{"code": {"coding": [{"system": SYSTEM, "code": c.code}], "text": c.text},
                       "valueBoolean": ok, **({"interpretation": [{"text": why}]} if why else {})}
                      for c, ok, why in result.checks],
    }
    if isinstance(response.get("subject"), dict):
        body["subject"] = {"reference": response["subject"].get("reference")} \
            if response["subject"].get("reference") else response["subject"]
    return body


def fix_task(response_ref: str, response: dict, result: Result, when: str) -> dict:
    """Work for the assessing service: what the audit found missing, to fix and resubmit."""
    task = {
        "resourceType": "Task",
        "identifier": [{"system": AUDIT_ID, "value": f"fix/{response_ref}"}],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": SYSTEM, "code": "fix-assessment", "display": "Fix the assessment"}]},
        "description": "Quality audit: " + "; ".join(f"{c.text} ({why})" for c, why in result.failures),
        "focus": {"reference": response_ref},
        "authoredOn": when,
        "input": [{"type": {"coding": [{"system": SYSTEM, "code": c.code}], "text": c.text},
                   "valueString": why} for c, why in result.failures],
    }
    subject = response.get("subject")
    if isinstance(subject, dict) and subject.get("reference"):
        task["for"] = {"reference": subject["reference"]}
    return task
