"""Measures as data: reading our Measure resources (profiles/measures/) and writing the
MeasureReport of their evaluation. Plain functions; the counting is adapter/store/measure_sql.py.

A Measure group's populations name their criteria (`criteria.expression`, language
`text/x-lac-kpi`) among the definitions of one facts table (adapter/store/measure_sql.py
SOURCES: facts_sql.CRITERIA, oc2_sql.CRITERIA); its stratifiers name a column of that table or
`breach-segment` (the reasons for delay, adapter/kpi/delay.py). A measure-observation is
averaged, or summed with the cqfm-aggregateMethod extension `sum` (the tariff owed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
LANGUAGE = "text/x-lac-kpi"
SD = "https://lac-fhir-adapter.example/fhir/StructureDefinition/"
DELAY_SEGMENT_URL = SD + "lac-delay-segment"
DELAY_CAUSE_URL = SD + "lac-delay-cause"
BREACH_SEGMENT = "breach-segment"
OBSERVATION = "measure-observation"
AGGREGATE_METHOD = "http://hl7.org/fhir/us/cqfmeasures/StructureDefinition/cqfm-aggregateMethod"
ISO_4217 = "urn:iso:std:iso:4217"


def observation_unit(observation: str | None) -> dict:
    """The unit of a measure-observation's score (a Quantity's unit, system and code)."""
    if observation == "tariff":
        from .rules import load_kpi_rules

        currency = load_kpi_rules().tariff_currency
        return {"unit": currency, "system": ISO_4217, "code": currency}
    return {"unit": "working days"}


@dataclass
class GroupDefinition:
    id: str
    populations: list[tuple[str, str]]      # (population code, criteria name), observation excluded
    observation: str | None                  # measure-observation criteria (a facts column), if any
    stratifiers: list[str]                   # stratifier expressions
    delay: bool = False                      # the reasons-for-delay group
    aggregate: str = "mean"                  # of the observation: cqfm-aggregateMethod (mean | sum)


@dataclass
class GroupResult:
    definition: GroupDefinition
    counts: dict[str, int]
    observation: tuple[float | None, int] = (None, 0)   # (sum, count)
    strata: dict[str, list[dict]] = field(default_factory=dict)  # stratifier -> [{"stratum", "counts", ...}]
    subjects: dict[str, list[str]] = field(default_factory=dict)  # population code -> Patient ids
    extensions: list[dict] = field(default_factory=list)
    entry_extensions: dict[str, list[dict]] = field(default_factory=dict)  # Patient id -> List.entry extensions


def _code(concept: dict | None) -> str | None:
    for coding in (concept or {}).get("coding") or []:
        if coding.get("code"):
            return coding["code"]
    return (concept or {}).get("text")


def group_definitions(measure: dict) -> list[GroupDefinition]:
    """The groups of one of our Measures; ValueError for a criteria language we do not run."""
    groups = []
    for i, group in enumerate(measure.get("group") or []):
        populations, observation, method = [], None, "mean"
        for pop in group.get("population") or []:
            criteria = pop.get("criteria") or {}
            if criteria.get("language") != LANGUAGE:
                raise ValueError(f"population criteria language {criteria.get('language')!r} is not supported "
                                 f"(only {LANGUAGE})")
            code = _code(pop.get("code"))
            if code == OBSERVATION:
                observation = criteria.get("expression")
                method = next((e.get("valueCode") for e in pop.get("extension") or []
                               if e.get("url") == AGGREGATE_METHOD), None) or "mean"
                if method not in ("mean", "sum"):
                    raise ValueError(f"aggregate method {method!r} is not supported (mean, sum)")
            else:
                populations.append((code, criteria.get("expression")))
        stratifiers = [(s.get("criteria") or {}).get("expression") for s in group.get("stratifier") or []]
        groups.append(GroupDefinition(group.get("id") or f"group-{i + 1}", populations, observation, stratifiers,
                                      delay=BREACH_SEGMENT in stratifiers, aggregate=method))
    return groups


def _score(scoring: str | None, counts: dict[str, int], observation: tuple[float | None, int],
           d: GroupDefinition | None = None) -> dict | None:
    if scoring == "proportion" or scoring == "ratio":
        denominator = counts.get("denominator", 0) - counts.get("denominator-exclusion", 0)
        numerator = counts.get("numerator", 0) - counts.get("numerator-exclusion", 0)
        return {"value": round(numerator / denominator, 4)} if denominator > 0 else None
    if scoring == "continuous-variable":
        total, n = observation
        unit = observation_unit(d.observation if d else None)
        if d is not None and d.aggregate == "sum":
            return {"value": round(float(total or 0), 2), **unit}
        return {"value": round(float(total) / n, 2), **unit} if n and total is not None else None
    if scoring == "cohort":
        return None
    return None


def _populations(counts: dict[str, int], lists: dict[str, str] | None = None) -> list[dict]:
    out = []
    for code, count in counts.items():
        entry = {"code": {"coding": [{"system": POPULATION, "code": code}]}, "count": count}
        if lists and code in lists:
            entry["subjectResults"] = {"reference": "#" + lists[code]}
        out.append(entry)
    return out


def measure_report(measure: dict, results: list[GroupResult], start: date, end: date, report_type: str,
                   generated: str, subject: str | None = None) -> dict:
    """The MeasureReport (R4) of a Measure's evaluation.

    report_type: summary | subject-list | individual. With subject-list, each population's
    children are a contained List referenced from population.subjectResults."""
    scoring = _code(measure.get("scoring"))
    contained: list[dict] = []
    groups = []
    for result in results:
        d = result.definition
        lists: dict[str, str] = {}
        if report_type == "subject-list":
            for code, ids in result.subjects.items():
                list_id = f"{d.id}-{code}"
                lists[code] = list_id
                contained.append({"resourceType": "List", "id": list_id, "status": "current", "mode": "snapshot",
                                  "title": f"{measure.get('title') or measure.get('id')}: {d.id} {code}",
                                  "entry": [{"item": {"reference": f"Patient/{pid}"},
                                             **({"extension": result.entry_extensions[pid]}
                                                if pid in result.entry_extensions else {})}
                                            for pid in ids]})
        group = {"id": d.id, "code": {"text": d.id}, "population": _populations(result.counts, lists)}
        if result.extensions:
            group["extension"] = result.extensions
        score = None if d.delay else _score(scoring, result.counts, result.observation, d)
        if score is not None:
            group["measureScore"] = score
        stratifiers = []
        for expression, strata in result.strata.items():
            stratum_out = []
            for s in strata:
                item = {"value": {"text": str(s["stratum"]) if s["stratum"] is not None else "unknown"},
                        "population": _populations(s["counts"])}
                sub_score = None if d.delay else _score(scoring, s["counts"], (s.get("observation_sum"),
                                                                                s.get("observation_count", 0)), d)
                if sub_score is not None:
                    item["measureScore"] = sub_score
                stratum_out.append(item)
            stratifiers.append({"code": [{"text": expression}], "stratum": stratum_out})
        if stratifiers:
            group["stratifier"] = stratifiers
        groups.append(group)
    report = {"resourceType": "MeasureReport", "status": "complete", "type": report_type,
              "measure": measure.get("url") + (f"|{measure['version']}" if measure.get("version") else ""),
              "date": generated, "period": {"start": start.isoformat(), "end": end.isoformat()}}
    if contained:
        report = {"resourceType": "MeasureReport", "contained": contained,
                  **{k: v for k, v in report.items() if k != "resourceType"}}
    if subject:
        report["subject"] = {"reference": subject}
    if measure.get("improvementNotation"):
        report["improvementNotation"] = measure["improvementNotation"]
    report["group"] = groups
    return report


def delay_extensions(summary: dict) -> list[dict]:
    """The reasons-for-delay summary as group extensions: per segment, the late IHAs it caused
    and its total and mean working days."""
    out = []
    for segment, total in summary["total_days"].items():
        mean = summary["mean_days"][segment]
        subs = [{"url": "segment", "valueCode": segment},
                {"url": "caused", "valueInteger": summary["caused"][segment]},
                {"url": "totalWorkingDays", "valueInteger": total}]
        if mean is not None:
            subs.append({"url": "meanWorkingDays", "valueDecimal": mean})
        out.append({"url": DELAY_SEGMENT_URL, "extension": subs})
    return out


def delay_entry_extension(delay) -> list[dict]:
    """On a late IHA's List entry: the segment that caused the breach and each segment's days."""
    subs = [{"url": "cause", "valueCode": delay.cause}, {"url": "totalWorkingDays", "valueInteger": delay.total}]
    subs += [{"url": segment, "valueInteger": days} for segment, days in delay.segments.items()]
    return [{"url": DELAY_CAUSE_URL, "extension": subs}]
