"""Set-based evaluation of Measure populations over a facts table.

A Measure group's populations name criteria (text/x-lac-kpi); each facts table (a `Source`)
defines its own: kpi_assessment (facts_sql: one row per IHA/RHA) and kpi_oc2 (oc2_sql: one row
per child in the SSDA903 OC2 cohort and census year). A group's criteria all come from one
source. Counts are one GROUP BY query per stratifier; no loop over rows in Python. Every query
takes the caller's restriction on the source's Patient id column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Column, Table, and_, case, func, literal, or_, select
from sqlalchemy.sql import ColumnElement

from . import facts_sql, oc2_sql

Criterion = Callable[[date, date, date], ColumnElement]  # (period start, period end, as of) -> condition
PARENT = {"denominator": "initial-population", "numerator": "denominator",
          "denominator-exclusion": "denominator", "numerator-exclusion": "numerator",
          "measure-population": "initial-population"}


@dataclass(frozen=True)
class Source:
    name: str
    table: Table
    patient: Column
    criteria: dict[str, Criterion]
    stratifiers: dict[str, Callable[[], ColumnElement]]
    observations: dict[str, Callable[[], ColumnElement]]


ASSESSMENTS = Source("assessments", facts_sql.F, facts_sql.PATIENT_ID, facts_sql.CRITERIA, facts_sql.STRATIFIERS,
                     facts_sql.OBSERVATIONS)
OC2 = Source("oc2", oc2_sql.O, oc2_sql.PATIENT_ID, oc2_sql.CRITERIA, oc2_sql.STRATIFIERS, {})
SOURCES = (ASSESSMENTS, OC2)


def source_of(criteria: list[str]) -> Source:
    """The facts table whose criteria these are; KeyError naming the first unknown one, or
    ValueError when they mix tables."""
    found = set()
    for name in criteria:
        owner = next((s for s in SOURCES if name in s.criteria), None)
        if owner is None:
            raise KeyError(name)
        found.add(owner.name)
    if len(found) > 1:
        raise ValueError(f"criteria {sorted(criteria)} mix facts tables {sorted(found)}")
    return next((s for s in SOURCES if s.name in found), ASSESSMENTS)


def population_conditions(source: Source, populations: list[tuple[str, str]], start: date, end: date,
                          as_of: date) -> dict[str, ColumnElement]:
    """{population code: SQL condition} for (code, criteria name) pairs, each within its parent."""
    conds: dict[str, ColumnElement] = {}
    for code, name in populations:
        if name not in source.criteria:
            raise KeyError(name)
        cond = source.criteria[name](start, end, as_of)
        parent = PARENT.get(code)
        if parent in conds:
            cond = and_(conds[parent], cond)
        conds[code] = cond
    return conds


def aggregate(conn, source: Source, conds: dict[str, ColumnElement], restriction: ColumnElement | None,
              stratifier: str | None = None, observation: str | None = None,
              observed: str = "measure-population") -> list[dict]:
    """Per stratum (or one row), the count of each population and, with an observation, its sum
    and count over the `observed` population. Rows:
    {"stratum": value or None, "counts": {code: n}, "observation_sum": x, "observation_count": n}."""
    total, strata = aggregate_strata(conn, source, conds, restriction, [stratifier] if stratifier else [],
                                     observation, observed)
    return strata[stratifier] if stratifier else [total]


def aggregate_strata(conn, source: Source, conds: dict[str, ColumnElement], restriction: ColumnElement | None,
                     stratifiers: list[str], observation: str | None = None,
                     observed: str = "measure-population") -> tuple[dict, dict[str, list[dict]]]:
    """A group's totals and every stratifier's strata from one GROUP BY over all the stratifier
    columns at once (one scan of the facts, where a query per stratifier scanned them once
    each): each row is one combination of strata, a few hundred at most whatever the
    population, summed here into each stratifier's strata. Rows as `aggregate`'s; strata in
    value order, unknown (None) last."""
    columns = [source.stratifiers[s]() for s in stratifiers]
    codes = list(conds)
    cols = [func.sum(case((conds[c], 1), else_=0)).label(f"p{i}") for i, c in enumerate(codes)]
    if observation:
        value = source.observations[observation]()
        within = conds.get(observed, literal(True))
        cols.append(func.sum(case((within, value), else_=None)).label("obs_sum"))
        cols.append(func.count(case((and_(within, value.is_not(None)), 1), else_=None)).label("obs_n"))
    base = conds.get("initial-population", or_(*conds.values()))
    labelled = [c.label(f"s{i}") for i, c in enumerate(columns)]
    stmt = select(*labelled, *cols).select_from(source.table).where(base)
    if restriction is not None:
        stmt = stmt.where(restriction)
    if labelled:
        stmt = stmt.group_by(*columns)

    def empty(stratum) -> dict:
        return {"stratum": stratum, "counts": {c: 0 for c in codes}, "observation_sum": None,
                "observation_count": 0}

    def add(into: dict, row) -> None:
        for i, c in enumerate(codes):
            into["counts"][c] += int(row[f"p{i}"] or 0)   # (SUM of no rows is NULL)
        if observation and row["obs_sum"] is not None:
            into["observation_sum"] = float(row["obs_sum"]) + (into["observation_sum"] or 0.0)
        if observation:
            into["observation_count"] += int(row["obs_n"] or 0)

    total = empty(None)
    strata: dict[str, dict] = {s: {} for s in stratifiers}
    for row in conn.execute(stmt).mappings():
        add(total, row)
        for i, s in enumerate(stratifiers):
            value = row[f"s{i}"]
            add(strata[s].setdefault(value, empty(value)), row)
    return total, {s: [found[k] for k in sorted(found, key=lambda v: (v is None, v if v is not None else ""))]
                   for s, found in strata.items()}


def subjects(conn, source: Source, cond: ColumnElement, restriction: ColumnElement | None) -> list[str]:
    """The children (Patient ids) in a population, each once, in id order."""
    stmt = select(source.patient).where(cond, source.patient.is_not(None)).distinct().order_by(source.patient)
    if restriction is not None:
        stmt = stmt.where(restriction)
    return list(conn.execute(stmt).scalars())
