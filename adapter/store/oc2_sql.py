"""SSDA903 OC2 outcomes in SQL: the kpi_oc2 table (one row per child in the cohort and census
year), kept up to date on every write, and the measure criteria over it.

Write side: `refresh_child` is called from facts_sql.PendingFacts (inside
`Transaction._record_access`, the write's own transaction) when a child's Patient,
EpisodeOfCare or OC2 Observation is written or deleted; the row is a plain function of those
resources (adapter/kpi/oc2.py, which applies the SSDA903 export's own cohort rules).

Read side: criteria by name (Measure population criteria, language text/x-lac-kpi) and
stratifiers, as conditions on the table; the measures count them with GROUP BY
(adapter/store/measure_sql.py), under the caller's restriction on Patient ids.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import and_, case, delete, false, insert, literal, select
from sqlalchemy.sql import ColumnElement

from ..fhir import jsonio
from ..kpi import oc2 as kpi_oc2
from ..kpi import rules as kpi
from ..security.access import ods_of
from .access_sql import _compartment_resources, _resource, organisation_ods
from .tables import INDEX_TABLES, compartment_table, oc2_fact_table, resource_table

O = oc2_fact_table
R = resource_table
T = INDEX_TABLES["token"]
CP = compartment_table
PATIENT_ID = O.c.patient_id


# -- write side ----------------------------------------------------------------------------

def concerns(observation: dict) -> bool:
    """Whether an Observation is one of the OC2 items (its writes change the child's rows)."""
    return kpi_oc2.is_oc2_item(observation)


def refresh_child(conn, patient_id: str) -> None:
    """Recompute a child's OC2 rows from their Patient, episodes and Observations."""
    conn.execute(delete(O).where(O.c.patient_id == patient_id))
    patient = _resource(conn, "Patient", patient_id)
    if patient is None:
        return
    episodes = _compartment_resources(conn, "EpisodeOfCare", patient_id)
    if not episodes:
        return
    observations = oc2_observations(conn, patient_id)

    def la_of(episode: dict) -> str | None:
        return ods_of(episode.get("managingOrganization"), lambda org_id: organisation_ods(conn, org_id))

    rows = kpi_oc2.oc2_facts(patient, episodes, observations, la_of, kpi.load_kpi_rules())
    if rows:
        conn.execute(insert(O), [dict(row, patient_id=patient_id) for row in rows])


def oc2_observations(conn, patient_id: str) -> list[dict]:
    """The child's OC2 item Observations, picked by the token index of their code (not every
    Observation of the child: vital signs and answers extracted from forms are many)."""
    items = kpi_oc2.item_codes()
    # From the child's side, in steps with the ids spelled out: their Observations (the
    # compartment's index on patient), those with an OC2 code by their own token rows (index on
    # res_type, res_id), then their content. Starting from every OC2-coded Observation of the
    # store made each write of an episode cost as much as the store is large, and one joined
    # query was planned by PostgreSQL from stale statistics as a scan of every Observation's
    # token rows (tens of ms per write while a new store grows).
    theirs = list(conn.execute(select(CP.c.res_id).where(CP.c.res_type == "Observation",
                                                          CP.c.patient_id == patient_id)).scalars())
    if not theirs:
        return []
    coded = list(conn.execute(select(T.c.res_id).where(
        T.c.res_type == "Observation", T.c.res_id.in_(theirs), T.c.param == "code",
        T.c.code.in_(sorted({code for _, code in items}))).distinct()).scalars())
    if not coded:
        return []
    contents = conn.execute(select(R.c.content).where(R.c.res_type == "Observation", R.c.res_id.in_(coded),
                                                      R.c.deleted == false())).scalars()
    return [o for o in (jsonio.loads_stored(c) for c in contents if c) if concerns(o)]


def rebuild_oc2(conn, batch: int = 500) -> int:
    """Give every stored child their OC2 rows (databases upgraded to schema 6)."""
    done, last = 0, ""
    while True:
        ids = conn.execute(select(R.c.res_id).where(R.c.res_type == "Patient", R.c.deleted == false(),
                                                    R.c.res_id > last).order_by(R.c.res_id).limit(batch)).scalars().all()
        if not ids:
            return done
        for patient_id in ids:
            refresh_child(conn, patient_id)
            done += 1
        last = ids[-1]


# -- read side -----------------------------------------------------------------------------

def _in_cohort(start: date, end: date, as_of: date) -> ColumnElement:
    return and_(O.c.census >= start, O.c.census <= end)


def _true(column) -> ColumnElement:
    return column.is_(True)


CRITERIA = {
    "oc2-cohort": _in_cohort,
    "oc2-under-5": lambda start, end, as_of: _true(O.c.health_check_applies),
    "oc2-sdq-age": lambda start, end, as_of: _true(O.c.sdq_applies),
    "oc2-immunisations": lambda start, end, as_of: _true(O.c.immunisations),
    "oc2-teeth-check": lambda start, end, as_of: _true(O.c.teeth_check),
    "oc2-health-assessment": lambda start, end, as_of: _true(O.c.health_assessment),
    "oc2-health-check": lambda start, end, as_of: _true(O.c.health_check),
    "oc2-substance-misuse": lambda start, end, as_of: _true(O.c.substance_misuse),
    "oc2-sdq-scored": lambda start, end, as_of: O.c.sdq_score.is_not(None),
    "oc2-cohort-sdq-scored": lambda start, end, as_of: and_(_in_cohort(start, end, as_of), O.c.sdq_score.is_not(None)),
}


def sdq_band() -> ColumnElement:
    """The SDQ total's band (config/kpi.toml [oc2] sdq_bands), as a CASE over the score."""
    bands = kpi.load_kpi_rules().sdq_bands
    if not bands:
        return literal(None)
    # inline literals: PostgreSQL matches the GROUP BY expression to the selected one by text
    whens = [(O.c.sdq_score >= literal(low, literal_execute=True), literal(label, literal_execute=True))
             for low, label in reversed(bands)]
    return case(*whens, else_=None)


STRATIFIERS = {"la": lambda: O.c.la, "placement": lambda: O.c.placement, "age-band": lambda: O.c.age_band,
               "sdq-band": sdq_band}
