"""Measure groups as plain score rows: what the dashboard and the annual summary show.

Both evaluate every published Measure exactly as `$evaluate-measure` does (rest/measure_ops.
evaluate, over the facts table, with the caller's restriction), then flatten the MeasureReport
groups into rows. Stratifiers are left out: the views show totals per period, and a
twelve-month trend would otherwise cost four more queries per group and month.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from . import measures as kpi_measures

TARGET_URL = kpi_measures.SD + "lac-measure-target"


def target_of(measure: dict) -> float | None:
    """The Measure's target (extension lac-measure-target), if it publishes one."""
    for ext in measure.get("extension") or []:
        if ext.get("url") == TARGET_URL and ext.get("valueDecimal") is not None:
            return float(ext["valueDecimal"])
    return None


def scoring_of(measure: dict) -> str | None:
    return kpi_measures._code(measure.get("scoring"))


def runnable(measure: dict) -> bool:
    """Measures the facts can answer (criteria in text/x-lac-kpi naming known definitions):
    any other Measure stored on the server is skipped rather than failing the whole view."""
    from ..store.measure_sql import source_of

    try:
        definitions = kpi_measures.group_definitions(measure)
        sources = [source_of([name for _, name in d.populations]) for d in definitions]
    except (KeyError, ValueError):
        return False
    return bool(definitions) and all(
        (d.observation is None or d.observation in source.observations)
        and all(s in source.stratifiers or s == kpi_measures.BREACH_SEGMENT for s in d.stratifiers)
        for d, source in zip(definitions, sources, strict=True))


def evaluate_groups(conn, measure: dict, start: date, end: date, as_of: date, restrict,
                    which: str = "all") -> list[dict]:
    """One row per group of the Measure for the period: populations, score, target, met.

    `which`: "all" groups, "scores" (without the reasons-for-delay groups, which have no score
    and cost a pass over the late IHAs: left out of per-month trends) or "delay" (only those)."""
    from ..rest.measure_ops import evaluate

    definitions = [replace(d, stratifiers=[s for s in d.stratifiers if s == kpi_measures.BREACH_SEGMENT])
                   for d in kpi_measures.group_definitions(measure)
                   if which == "all" or (which == "delay") == d.delay]
    results = evaluate(conn, definitions, start, end, as_of, restrict)
    report = kpi_measures.measure_report(measure, results, start, end, "summary", "", None)
    target = target_of(measure)
    scoring = scoring_of(measure)
    rows = []
    for result, group in zip(results, report["group"], strict=True):
        score = (group.get("measureScore") or {}).get("value")
        row = {"measure": measure.get("id"), "title": measure.get("title") or measure.get("id"),
               "scoring": scoring, "group": group["id"], "delay": result.definition.delay,
               "populations": dict(result.counts), "score": score,
               "unit": (group.get("measureScore") or {}).get("unit"),
               "target": target if scoring == "proportion" and not result.definition.delay else None}
        row["met"] = None if row["target"] is None or score is None else score >= row["target"]
        if result.definition.delay:
            row["segments"] = delay_segments(result)
        rows.append(row)
    return rows


def delay_segments(result: kpi_measures.GroupResult) -> list[dict]:
    """The reasons-for-delay group's per-segment summary (from its lac-delay-segment extensions)."""
    out = []
    for ext in result.extensions:
        subs = {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in ext["extension"]}
        out.append({"segment": subs["segment"], "caused": subs["caused"],
                    "totalWorkingDays": subs["totalWorkingDays"], "meanWorkingDays": subs.get("meanWorkingDays")})
    unknown = next((s["counts"]["initial-population"] for s in result.strata.get(kpi_measures.BREACH_SEGMENT, [])
                    if s["stratum"] is None), 0)
    if unknown:
        out.append({"segment": "unknown", "caused": unknown, "totalWorkingDays": None, "meanWorkingDays": None})
    return out
