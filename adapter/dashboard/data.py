"""What the dashboard shows, as plain data (also served as /dashboard/data.json).

Assembled over a connection and the caller's restriction on Patient ids (the one
`$evaluate-measure` uses): the chosen month's result of every published Measure's groups
against its target, each group's score over the twelve months up to that month, the children
whose IHA/RHA is open and due or overdue, and the reasons for delay of late IHAs over the
twelve months. Names and NHS numbers come from `patients`, a function reading Patient
resources through the store's access checks (rest/dashboard_op.py), so a child the caller
may not see is never counted, listed nor named.
"""

from __future__ import annotations

import calendar
import tomllib
from collections.abc import Callable
from datetime import date, timedelta

from ..kpi import scores
from ..kpi.rules import KPI_FILE, SEGMENTS, load_kpi_rules
from ..store import dashboard_sql

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
TREND_MONTHS = 12

PatientReader = Callable[[list[str]], dict[str, dict]]  # Patient ids -> {id: Patient resource} (visible ones)


def due_within_days(path=KPI_FILE) -> int:
    """config/kpi.toml [dashboard] due_within_days: how far ahead the due list looks."""
    with open(path, "rb") as fh:
        return int(tomllib.load(fh).get("dashboard", {}).get("due_within_days", 28))


def month_bounds(year: int, month: int) -> tuple[date, date]:
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def trend_months(first_of_month: date, count: int = TREND_MONTHS) -> list[tuple[str, date, date]]:
    """The `count` months ending with the given one, oldest first: (YYYY-MM, first day, last day)."""
    out = []
    y, m = first_of_month.year, first_of_month.month
    for _ in range(count):
        start, end = month_bounds(y, m)
        out.append((f"{y}-{m:02d}", start, end))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out[::-1]


def assemble(conn, restrict, measures: list[dict], month: date, as_of: date, patients: PatientReader,
             ahead_days: int | None = None) -> dict:
    """The dashboard's data for the month starting `month` (its first day), clocks judged `as_of`."""
    months = trend_months(month)
    start, end = months[-1][1], months[-1][2]
    window = (months[0][1], end)
    runnable = [m for m in measures if scores.runnable(m)]
    kpis, delay = [], []
    for measure in sorted(runnable, key=lambda m: m.get("id") or ""):
        groups = []
        current = scores.evaluate_groups(conn, measure, start, end, as_of, restrict, "scores")
        history = {label: {r["group"]: r for r in scores.evaluate_groups(conn, measure, first, last, as_of,
                                                                          restrict, "scores")}
                   for label, first, last in months}
        for row in current:
            groups.append({**_group(row), "trend": [_point(label, history[label].get(row["group"]))
                                                    for label, _, _ in months]})
        for row in scores.evaluate_groups(conn, measure, window[0], window[1], as_of, restrict, "delay"):
            delay.append({"measure": row["measure"], "group": row["group"],
                          "late": row["populations"].get("initial-population", 0),
                          "segments": _segments(row["segments"])})
        kpis.append({"id": measure.get("id"), "title": measure.get("title") or measure.get("id"),
                     "scoring": scores.scoring_of(measure), "target": scores.target_of(measure), "groups": groups})
    ahead = due_within_days() if ahead_days is None else ahead_days
    return {"month": months[-1][0], "period": {"start": start.isoformat(), "end": end.isoformat()},
            "asOf": as_of.isoformat(), "trendMonths": [label for label, _, _ in months],
            "measures": kpis, "due": due_list(conn, restrict, as_of, ahead, patients),
            "dueWithinDays": ahead,
            "delay": {"period": {"start": window[0].isoformat(), "end": window[1].isoformat()}, "groups": delay}}


def _group(row: dict) -> dict:
    return {"group": row["group"], "populations": row["populations"], "score": row["score"],
            "unit": row.get("unit"), "target": row["target"], "met": row["met"]}


def _point(label: str, row: dict | None) -> dict:
    counts = (row or {}).get("populations") or {}
    return {"month": label, "score": (row or {}).get("score"), "denominator": counts.get("denominator"),
            "numerator": counts.get("numerator"), "measurePopulation": counts.get("measure-population")}


def _segments(rows: list[dict]) -> list[dict]:
    allowances = load_kpi_rules().allowances
    return [{**s, "allowance": allowances.get(s["segment"]) if s["segment"] in SEGMENTS else None} for s in rows]


def due_list(conn, restrict, as_of: date, ahead_days: int, patients: PatientReader) -> list[dict]:
    """Open IHAs/RHAs overdue or due within `ahead_days`, most overdue first, with the child's
    name and NHS number (children `patients` does not return are left out)."""
    rows = dashboard_sql.open_assessments(conn, as_of + timedelta(days=ahead_days), restrict)
    found = patients(sorted({r["patient_id"] for r in rows}))
    out = []
    for r in rows:
        patient = found.get(r["patient_id"])
        if patient is None:
            continue
        out.append({"patient": f"Patient/{r['patient_id']}", "task": f"Task/{r['task_id']}",
                    "name": display_name(patient), "nhsNumber": nhs_number(patient),
                    "assessment": r["assessment"], "status": r["status"], "due": r["due"].isoformat(),
                    "daysOverdue": (as_of - r["due"]).days, "provider": r["provider"], "la": r["la"],
                    "placement": r["placement"]})
    return out


def display_name(patient: dict) -> str:
    names = patient.get("name") or []
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    if name.get("text"):
        return name["text"]
    return " ".join([*(name.get("given") or []), name.get("family") or ""]).strip()


def nhs_number(patient: dict) -> str | None:
    return next((i.get("value") for i in patient.get("identifier") or [] if i.get("system") == NHS_SYSTEM), None)
