"""The annual summary for the commissioner, in the shape of the annual LAC health report's
tables: the children, each published Measure over the financial year (April to March) against
its target, the same per month and per quarter (the trend the report discusses), and the
reasons for delay of late initial health assessments.

Plain assembly over a connection: every number comes from `kpi/scores.evaluate_groups` (the
Measures as `$evaluate-measure` evaluates them) and `store/dashboard_sql` (children counted
once each). Run as the system by `lac-adapter report annual`: every child is counted.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import date

from ..store import dashboard_sql
from . import scores
from .rules import SEGMENTS, load_kpi_rules

QUARTERS = (("Q1", 4), ("Q2", 7), ("Q3", 10), ("Q4", 1))
MEASURE_COLUMNS = ["measure", "title", "group", "initial_population", "denominator", "numerator",
                   "measure_population", "score", "unit", "target", "met"]
PERIOD_COLUMNS = ["period", "start", "end", "measure", "group", "initial_population", "denominator", "numerator",
                  "measure_population", "score", "target", "met"]
CHILDREN_COLUMNS = ["breakdown", "value", "children"]
DELAY_COLUMNS = ["segment", "caused", "total_working_days", "mean_working_days", "allowance_working_days"]


@dataclass
class AnnualSummary:
    year: int                       # the financial year starting in April of this year
    start: date
    end: date
    as_of: date
    children: list[dict] = field(default_factory=list)
    measures: list[dict] = field(default_factory=list)
    periods: list[dict] = field(default_factory=list)
    delay: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        """`2026-27`, as financial years are written."""
        return f"{self.year}-{(self.year + 1) % 100:02d}"

    def tables(self) -> list[tuple[str, list[dict], list[str]]]:
        return [("Children", self.children, CHILDREN_COLUMNS), ("Measures", self.measures, MEASURE_COLUMNS),
                ("Months and quarters", self.periods, PERIOD_COLUMNS), ("Reasons for delay", self.delay, DELAY_COLUMNS)]


def parse_year(text: str) -> int:
    """`2026`, `2026-27` or `2026/27`: the financial year starting 1 April 2026."""
    m = re.fullmatch(r"(\d{4})(?:[-/](\d{2}|\d{4}))?", text.strip())
    if not m:
        raise ValueError(f"'{text}' is not a financial year like 2026 or 2026-27")
    year = int(m[1])
    if m[2] and int(m[2]) % 100 != (year + 1) % 100:
        raise ValueError(f"'{text}': a financial year runs from April of one year to March of the next")
    return year


def financial_year(year: int) -> tuple[date, date]:
    return date(year, 4, 1), date(year + 1, 3, 31)


def months(year: int) -> list[tuple[str, date, date]]:
    """The twelve months of the financial year: (YYYY-MM, first day, last day)."""
    out = []
    for i in range(12):
        y, m = (year, 4 + i) if i < 9 else (year + 1, i - 8)
        out.append((f"{y}-{m:02d}", date(y, m, 1), date(y, m, calendar.monthrange(y, m)[1])))
    return out


def quarters(year: int) -> list[tuple[str, date, date]]:
    out = []
    for name, first in QUARTERS:
        y = year if first >= 4 else year + 1
        last = first + 2
        out.append((name, date(y, first, 1), date(y, last, calendar.monthrange(y, last)[1])))
    return out


def _flat(row: dict, **extra) -> dict:
    counts = row["populations"]
    return {**extra, "measure": row["measure"], "title": row["title"], "group": row["group"],
            "initial_population": counts.get("initial-population"), "denominator": counts.get("denominator"),
            "numerator": counts.get("numerator"), "measure_population": counts.get("measure-population"),
            "score": row["score"], "unit": row.get("unit"), "target": row["target"], "met": row["met"]}


def annual_summary(conn, measures: list[dict], year: int, as_of: date, restrict=None) -> AnnualSummary:
    """Everything of the year's summary; `measures` are the published Measures (any number)."""
    start, end = financial_year(year)
    summary = AnnualSummary(year, start, end, as_of)
    summary.children = _children(conn, start, end, restrict)
    runnable = [m for m in measures if scores.runnable(m)]
    for measure in runnable:
        for row in scores.evaluate_groups(conn, measure, start, end, as_of, restrict):
            summary.measures.append(_flat(row))
            if row["delay"]:
                summary.delay += _delay(row)
    for period, first, last in months(year) + quarters(year):
        for measure in runnable:
            for row in scores.evaluate_groups(conn, measure, first, last, as_of, restrict, "scores"):
                summary.periods.append(_flat(row, period=period, start=first.isoformat(), end=last.isoformat()))
    return summary


def _children(conn, start: date, end: date, restrict) -> list[dict]:
    """Children with an IHA or RHA due in the year: in all, by assessment, placement and age band."""
    total = dashboard_sql.children_due(conn, start, end, restrict)[None]
    rows = [{"breakdown": "all", "value": "", "children": total}]
    for by in ("assessment", "placement", "age_band"):
        for value, n in dashboard_sql.children_due(conn, start, end, restrict, by).items():
            rows.append({"breakdown": by.replace("_", "-"), "value": value if value is not None else "unknown",
                         "children": n})
    return rows


def _delay(row: dict) -> list[dict]:
    allowances = load_kpi_rules().allowances
    return [{"segment": s["segment"], "caused": s["caused"], "total_working_days": s["totalWorkingDays"],
             "mean_working_days": s["meanWorkingDays"],
             "allowance_working_days": allowances.get(s["segment"]) if s["segment"] in SEGMENTS else None}
            for s in row["segments"]]
