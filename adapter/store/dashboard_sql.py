"""Queries over the assessment facts for the dashboard and the annual summary.

Like every facts query (facts_sql.py), each takes the caller's restriction on Patient ids
(a function of the patient column giving `Transaction.restriction("Patient", literal("Patient"), column)`; None for the
system), so a list or a count only ever includes children the caller may see.
"""

from __future__ import annotations

from collections.abc import Callable

from datetime import date

from sqlalchemy import and_, func, select
from sqlalchemy.sql import ColumnElement

from .facts_sql import F


Restrict = Callable[[ColumnElement], "ColumnElement | None"]  # a patient column -> the caller's condition


def _restricted(stmt, restrict: Restrict | None):
    condition = restrict(F.c.patient_id) if restrict is not None else None
    return stmt.where(condition) if condition is not None else stmt


def open_assessments(conn, until: date, restrict: Restrict | None, limit: int = 500) -> list[dict]:
    """Counted IHAs/RHAs not yet done whose due date is on or before `until`, soonest due
    first (the overdue at the top): the children whose assessment is due or overdue."""
    stmt = select(F.c.task_id, F.c.patient_id, F.c.assessment, F.c.status, F.c.due, F.c.provider, F.c.la,
                  F.c.placement).where(F.c.counted.is_(True), F.c.done.is_(None), F.c.due.is_not(None),
                                       F.c.due <= until, F.c.patient_id.is_not(None))
    stmt = _restricted(stmt, restrict).order_by(F.c.due, F.c.patient_id, F.c.task_id).limit(limit)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def children_due(conn, start: date, end: date, restrict: Restrict | None,
                 by: str | None = None) -> dict[str | None, int]:
    """Distinct children with a counted IHA/RHA due in the period, in total (key None) or per
    value of a facts column (`placement`, `age_band`, `assessment`)."""
    cond = and_(F.c.counted.is_(True), F.c.due >= start, F.c.due <= end, F.c.patient_id.is_not(None))
    count = func.count(F.c.patient_id.distinct())
    if by is None:
        return {None: int(conn.execute(_restricted(select(count).where(cond), restrict)).scalar_one() or 0)}
    column = F.c[by]
    stmt = _restricted(select(column, count).where(cond), restrict).group_by(column).order_by(column)
    return {value: int(n) for value, n in conn.execute(stmt)}
