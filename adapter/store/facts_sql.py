"""Assessment facts in SQL: the kpi_assessment table, kept up to date on every write, and the
set-based queries the measures run over it.

Write side: `record_facts` is called by `Transaction._record_access` (adapter/store/
repository.py) for every resource written or deleted, in the same transaction, right after
the access rows. A Task write recomputes its own row; a Patient or EpisodeOfCare write
recomputes the rows of the child's Tasks (birth date, responsible LA, placement, entered-care
date), and so does a Consent (the date consent to the IHA was given). The row itself is a plain function of the resources (adapter/kpi/rules.py).

Read side: every query takes the caller's restriction on Patient ids
(`Transaction.restriction("Patient", literal("Patient"), PATIENT_ID)`), so counts and lists
only ever include children the caller may see. Aggregates are GROUP BY queries; no loop over
rows in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date

from sqlalchemy import and_, case, delete, false, func, insert, literal, or_, select
from sqlalchemy.sql import ColumnElement

from ..fhir import jsonio
from ..fhir.references import local_id
from ..kpi import rules as kpi
from ..security.access import ods_of
from .access_sql import _compartment_resources, _resource, organisation_ods
from .tables import (
    assessment_fact_table,
    compartment_table,
    resource_table,
    version_table,
)

F = assessment_fact_table
R = resource_table
V = version_table
CP = compartment_table
PATIENT_ID = F.c.patient_id
RELATED = ("Task", "Patient", "EpisodeOfCare", "Consent")


# -- write side ----------------------------------------------------------------------------

def record_facts(conn, body: dict, reference_rows: list[dict], deleted: bool = False) -> None:
    """Keep the facts that depend on a resource just written (or deleted) up to date."""
    rtype = body["resourceType"]
    if rtype not in RELATED:
        return
    rid = body["id"]
    if rtype == "Task":
        if deleted or kpi.assessment_type(body) is None:
            conn.execute(delete(F).where(F.c.task_id == rid))
        else:
            refresh_task(conn, rid)
        return
    if rtype == "Patient":
        patients = {rid}
    else:
        patients = {r["target_id"] for r in reference_rows
                    if r["param"] == "patient" and r.get("target_type") == "Patient" and r.get("target_id")}
        if deleted:
            patients |= set(conn.execute(select(CP.c.patient_id).where(
                CP.c.res_type == rtype, CP.c.res_id == rid)).scalars())
    for task_id in tasks_of(conn, patients):
        refresh_task(conn, task_id)


def tasks_of(conn, patients: Iterable[str]) -> list[str]:
    """The assessment Tasks about these children: those with facts, and any other Task of theirs
    (a Task stored before its child's episode gets its row when the episode arrives)."""
    patients = sorted(set(patients))
    if not patients:
        return []
    known = set(conn.execute(select(F.c.task_id).where(F.c.patient_id.in_(patients))).scalars())
    others = set(conn.execute(select(CP.c.res_id).where(CP.c.res_type == "Task",
                                                         CP.c.patient_id.in_(patients))).scalars())
    return sorted(known | others)


def refresh_task(conn, task_id: str) -> None:
    """Recompute one Task's facts row from its versions, its child and the child's episodes."""
    current = conn.execute(select(R.c.deleted, R.c.content).where(
        R.c.res_type == "Task", R.c.res_id == task_id)).first()
    conn.execute(delete(F).where(F.c.task_id == task_id))
    if current is None or current.deleted or not current.content \
            or kpi.assessment_type(jsonio.loads(current.content)) is None:
        return  # (the versions are read only for assessment Tasks)
    contents = conn.execute(select(V.c.content).where(
        V.c.res_type == "Task", V.c.res_id == task_id, V.c.deleted == false()).order_by(V.c.version_id)).scalars()
    versions = [jsonio.loads(c) for c in contents if c]
    if not versions or kpi.assessment_type(versions[-1]) is None:
        return
    task = versions[-1]
    patient_id = local_id((task.get("for") or {}).get("reference"), "Patient")
    patient = _resource(conn, "Patient", patient_id) if patient_id else None
    episodes = _compartment_resources(conn, "EpisodeOfCare", patient_id) if patient_id else []
    consents = _compartment_resources(conn, "Consent", patient_id) if patient_id else []

    def ods(reference) -> str | None:
        return ods_of(reference, lambda org_id: organisation_ods(conn, org_id))

    facts = kpi.assessment_facts(versions, patient, episodes, ods(task.get("owner")),
                                 lambda episode: ods(episode.get("managingOrganization")), kpi.load_kpi_rules(),
                                 consents=consents)
    if facts is None:
        return
    conn.execute(insert(F).values(task_id=task_id, patient_id=patient_id, **facts))


def rebuild_facts(conn, batch: int = 500) -> int:
    """Give every stored Task its facts row (databases upgraded to schema 4)."""
    done, last = 0, ""
    while True:
        ids = conn.execute(select(R.c.res_id).where(R.c.res_type == "Task", R.c.deleted == false(),
                                                    R.c.res_id > last).order_by(R.c.res_id).limit(batch)).scalars().all()
        if not ids:
            return done
        for task_id in ids:
            refresh_task(conn, task_id)
            done += 1
        last = ids[-1]


# -- read side: the measures' definitions --------------------------------------------------

Criterion = Callable[[date, date, date], ColumnElement]  # (period start, period end, as of) -> condition


def _due_in(kind: str) -> Criterion:
    return lambda start, end, as_of: and_(F.c.assessment == kind, F.c.counted.is_(True),
                                          F.c.due >= start, F.c.due <= end)


def _requested_in(where: str) -> Criterion:
    asked = func.coalesce(F.c.requested, F.c.notified)  # placed-in requests start at the notification
    return lambda start, end, as_of: and_(F.c.placement == where, F.c.counted.is_(True),
                                          asked >= start, asked <= end)


def _late(start: date, end: date, as_of: date) -> ColumnElement:
    return or_(F.c.done > F.c.due, and_(F.c.done.is_(None), F.c.due < as_of))


# Population criteria by name (Measure.group.population.criteria.expression, language
# text/x-lac-kpi). A population is also limited to the population it is part of: numerator
# within denominator within initial-population; measure-population within initial-population.
CRITERIA: dict[str, Criterion] = {
    "iha-due-in-period": _due_in("iha"),
    "rha-due-in-period": _due_in("rha"),
    "done-by-due": lambda start, end, as_of: and_(F.c.done.is_not(None), F.c.done <= F.c.due),
    "iha-late-in-period": lambda start, end, as_of: and_(_due_in("iha")(start, end, as_of), _late(start, end, as_of)),
    "ooa-sent-in-period": _requested_in(kpi.OUT_OF_AREA),
    "placed-in-received-in-period": _requested_in(kpi.PLACED_IN),
    "returned": lambda start, end, as_of: F.c.done.is_not(None),
    "aged-16-plus-due-in-period": lambda start, end, as_of: and_(
        F.c.counted.is_(True), F.c.due >= start, F.c.due <= end,
        F.c.age_at_due >= kpi.load_kpi_rules().own_consent_from_age),
    "own-consent": lambda start, end, as_of: F.c.own_consent.is_not(None),
    "returned-in-period": lambda start, end, as_of: and_(F.c.counted.is_(True), F.c.done >= start, F.c.done <= end),
    "quality-assured": lambda start, end, as_of: F.c.quality_assured.is_not(None),
}
# Observations (measure-observation criteria) and stratifiers (stratifier.criteria): columns.
OBSERVATIONS = {"turnaround-working-days": F.c.turnaround_wd}
STRATIFIERS = {"la": F.c.la, "provider": F.c.provider, "placement": F.c.placement, "age-band": F.c.age_band}
PARENT = {"denominator": "initial-population", "numerator": "denominator",
          "denominator-exclusion": "denominator", "numerator-exclusion": "numerator",
          "measure-population": "initial-population"}


def population_conditions(populations: list[tuple[str, str]], start: date, end: date,
                          as_of: date) -> dict[str, ColumnElement]:
    """{population code: SQL condition} for (code, criteria name) pairs, each within its parent."""
    conds: dict[str, ColumnElement] = {}
    for code, name in populations:
        if name not in CRITERIA:
            raise KeyError(name)
        cond = CRITERIA[name](start, end, as_of)
        parent = PARENT.get(code)
        if parent in conds:
            cond = and_(conds[parent], cond)
        conds[code] = cond
    return conds


def aggregate(conn, conds: dict[str, ColumnElement], restriction: ColumnElement | None,
              stratifier: str | None = None, observation: str | None = None,
              observed: str = "measure-population") -> list[dict]:
    """Per stratum (or one row), the count of each population and, with an observation, its sum
    and count over the `observed` population. Rows:
    {"stratum": value or None, "counts": {code: n}, "observation_sum": x, "observation_count": n}."""
    total, strata = aggregate_strata(conn, conds, restriction, [stratifier] if stratifier else [], observation,
                                     observed)
    return strata[stratifier] if stratifier else [total]


def aggregate_strata(conn, conds: dict[str, ColumnElement], restriction: ColumnElement | None,
                     stratifiers: list[str], observation: str | None = None,
                     observed: str = "measure-population") -> tuple[dict, dict[str, list[dict]]]:
    """A group's totals and every stratifier's strata from one GROUP BY over all the stratifier
    columns at once (one scan of the facts, where a query per stratifier scanned them once
    each): each row is one combination of strata, a few hundred at most whatever the
    population, summed here into each stratifier's strata. Rows as `aggregate`'s; strata in
    value order, unknown (None) last."""
    columns = [STRATIFIERS[s] for s in stratifiers]
    codes = list(conds)
    cols = [func.sum(case((conds[c], 1), else_=0)).label(f"p{i}") for i, c in enumerate(codes)]
    if observation:
        value = OBSERVATIONS[observation]
        within = conds.get(observed, literal(True))
        cols.append(func.sum(case((within, value), else_=None)).label("obs_sum"))
        cols.append(func.count(case((and_(within, value.is_not(None)), 1), else_=None)).label("obs_n"))
    base = conds.get("initial-population", or_(*conds.values()))
    labelled = [c.label(f"s{i}") for i, c in enumerate(columns)]
    stmt = select(*labelled, *cols).select_from(F).where(base)
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
            into["observation_sum"] = row["obs_sum"] + (into["observation_sum"] or 0)
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


def subjects(conn, cond: ColumnElement, restriction: ColumnElement | None) -> list[str]:
    """The children (Patient ids) in a population, each once, in id order."""
    stmt = select(F.c.patient_id).where(cond, F.c.patient_id.is_not(None)).distinct().order_by(F.c.patient_id)
    if restriction is not None:
        stmt = stmt.where(restriction)
    return list(conn.execute(stmt).scalars())


def rows(conn, cond: ColumnElement, restriction: ColumnElement | None) -> list[dict]:
    """The facts rows matching a condition (per-child detail: the late IHAs, the monthly dataset)."""
    stmt = select(F).where(cond).order_by(F.c.assessment, F.c.due, F.c.patient_id, F.c.task_id)
    if restriction is not None:
        stmt = stmt.where(restriction)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def period_rows(conn, start: date, end: date, restriction: ColumnElement | None) -> list[dict]:
    """Every counted assessment due in the period, returned in it, or (out of area / placed in)
    requested in it: the rows behind every measure of the period."""
    cond = and_(F.c.counted.is_(True), or_(and_(F.c.due >= start, F.c.due <= end),
                                           and_(F.c.done >= start, F.c.done <= end),
                                           and_(F.c.placement.in_([kpi.OUT_OF_AREA, kpi.PLACED_IN]),
                                                func.coalesce(F.c.requested, F.c.notified) >= start,
                                                func.coalesce(F.c.requested, F.c.notified) <= end)))
    return rows(conn, cond, restriction)
