"""Assessment facts in SQL: the kpi_assessment table, kept up to date on every write, and the
measure criteria over it.

Write side: `PendingFacts.note` is called by `Transaction._record_access` (adapter/store/
repository.py) for every resource written or deleted, right after the access rows, and the
rows it marks stale are recomputed once, in the same transaction, before it commits. A Task
write recomputes its own row; a Patient or EpisodeOfCare write recomputes the rows of the child's Tasks (birth date, responsible LA, placement, entered-care
date) and the child's OC2 rows (oc2_sql), and so does a Consent (consent to the IHA, the young
person's own consent offered or signed). A quality audit Observation recomputes the rows of its
subject's Tasks (the audit of the report a Task returned); an OC2 item Observation the child's
OC2 rows. The row itself is a plain function of the resources (adapter/kpi/rules.py).

Read side: criteria, stratifiers and observations by name, counted by
adapter/store/measure_sql.py with the caller's restriction on Patient ids, so counts and lists
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
from ..kpi.quality import default_checklist
from ..security.access import ods_of
from .access_sql import _compartment_resources, _resource, organisation_ods
from . import oc2_sql
from .tables import (
    assessment_fact_table,
    compartment_table,
    reference_index_table,
    resource_table,
    version_table,
)

F = assessment_fact_table
R = resource_table
V = version_table
CP = compartment_table
PATIENT_ID = F.c.patient_id
IX = reference_index_table
RELATED = ("Task", "Patient", "EpisodeOfCare", "Consent", "Observation")


# -- write side ----------------------------------------------------------------------------

class PendingFacts:
    """The facts rows a transaction's writes have made stale, brought up to date once, just
    before the transaction commits (or before a Measure is evaluated inside it).

    A child's Bundle writes its Patient, episode, Consent and Tasks one after another; each of
    those writes makes the same Task and OC2 rows stale, and recomputing them at every write
    re-read the child's records three or four times per Bundle. The rows are plain functions
    of the stored resources, so computing them once from the final state gives the same rows."""

    def __init__(self) -> None:
        self.tasks: set[str] = set()     # Tasks whose row is recomputed (or removed)
        self.children: set[str] = set()  # children whose Tasks' rows are recomputed
        self.oc2: set[str] = set()       # children whose OC2 rows are recomputed

    def __bool__(self) -> bool:
        return bool(self.tasks or self.children or self.oc2)

    def note(self, conn, body: dict, reference_rows: list[dict], deleted: bool = False) -> None:
        """Remember what a resource just written (or deleted) makes stale."""
        rtype = body["resourceType"]
        if rtype not in RELATED:
            return
        rid = body["id"]
        if rtype == "Observation":  # a quality audit (the Tasks' facts) or an OC2 item (the child's OC2 rows)
            audit, oc2 = deleted or kpi.is_quality_audit(body), deleted or oc2_sql.concerns(body)
            if not (audit or oc2):
                return
            patients = _patients(conn, rtype, rid, reference_rows, deleted)
            if oc2:
                self.oc2 |= patients
            if audit:
                self.children |= patients
            return
        if rtype == "Task":
            self.tasks.add(rid)
            return
        patients = _patients(conn, rtype, rid, reference_rows, deleted)
        self.children |= patients
        if rtype in ("Patient", "EpisodeOfCare"):
            self.oc2 |= patients

    def settle(self, conn) -> None:
        """Recompute every stale row from what is stored now."""
        children, oc2, tasks = self.children, self.oc2, self.tasks
        self.children, self.oc2, self.tasks = set(), set(), set()
        for patient_id in sorted(oc2):
            oc2_sql.refresh_child(conn, patient_id)
        for task_id in sorted(tasks | set(tasks_of(conn, children))):
            refresh_task(conn, task_id)


def _patients(conn, rtype: str, rid: str, reference_rows: list[dict], deleted: bool) -> set[str]:
    """The children a resource just written (or deleted) is about."""
    if rtype == "Patient":
        return {rid}
    patients = {r["target_id"] for r in reference_rows
                if r["param"] == "patient" and r.get("target_type") == "Patient" and r.get("target_id")}
    if deleted:
        patients |= set(conn.execute(select(CP.c.patient_id).where(
            CP.c.res_type == rtype, CP.c.res_id == rid)).scalars())
    return patients


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
            or kpi.assessment_type(jsonio.loads_stored(current.content)) is None:
        return  # (the versions are read only for assessment Tasks)
    contents = conn.execute(select(V.c.content).where(
        V.c.res_type == "Task", V.c.res_id == task_id, V.c.deleted == false()).order_by(V.c.version_id)).scalars()
    versions = [jsonio.loads_stored(c) for c in contents if c]
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
    facts["audit_score"], facts["audit_passed"] = audit_of(conn, facts["response_id"])
    conn.execute(insert(F).values(task_id=task_id, patient_id=patient_id, **facts))


def audit_of(conn, response_id: str | None) -> tuple[int | None, bool | None]:
    """(score, passed) of the quality audit of an assessment's QuestionnaireResponse: the
    audit Observations whose focus it is (found by the reference index)."""
    if not response_id:
        return None, None
    ids = select(IX.c.res_id).where(IX.c.res_type == "Observation", IX.c.param == "focus",
                                    IX.c.target_type == "QuestionnaireResponse", IX.c.target_id == response_id)
    contents = conn.execute(select(R.c.content).where(R.c.res_type == "Observation", R.c.res_id.in_(ids),
                                                      R.c.deleted == false())).scalars()
    return kpi.audit_outcome([jsonio.loads_stored(c) for c in contents if c], default_checklist().pass_mark)


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


def _tariff() -> ColumnElement:
    """The tariff of an assessment (config/kpi.toml [tariff.amounts]), as a CASE on its kind."""
    amounts = kpi.load_kpi_rules().tariffs
    if not amounts:
        return literal(None)
    return case(*[(F.c.assessment == kind, literal(amount)) for kind, amount in sorted(amounts.items())], else_=None)


def _payable(start: date, end: date, as_of: date) -> ColumnElement:
    """The tariff is owed: the report returned and (config/kpi.toml) the quality audit passed."""
    returned = F.c.done.is_not(None)
    return and_(returned, F.c.audit_passed.is_(True)) if kpi.load_kpi_rules().tariff_needs_audit_pass else returned


CRITERIA.update({
    "own-consent-offered": lambda start, end, as_of: F.c.offered_consent.is_not(None),
    "audited": lambda start, end, as_of: F.c.audit_score.is_not(None),
    "audit-passed": lambda start, end, as_of: F.c.audit_passed.is_(True),
    "returned-in-period-assessment-recorded": lambda start, end, as_of: and_(
        CRITERIA["returned-in-period"](start, end, as_of), F.c.plan_return_wd.is_not(None)),
    "health-plan-in-time": lambda start, end, as_of: F.c.plan_return_wd <= kpi.load_kpi_rules().health_plan_return_wd,
    "tariff-payable": _payable,
})
# Observations (measure-observation criteria) and stratifiers (stratifier.criteria): expressions.
OBSERVATIONS = {"turnaround-working-days": lambda: F.c.turnaround_wd, "tariff": _tariff}
STRATIFIERS = {"la": lambda: F.c.la, "provider": lambda: F.c.provider, "placement": lambda: F.c.placement,
               "age-band": lambda: F.c.age_band}


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
