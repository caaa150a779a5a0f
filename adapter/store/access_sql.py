"""Access control in the store: the rows that record who may see what, and the SQL
condition every read goes through.

On each write, `AccessControl.record` keeps three facts about the resource, in the same
transaction: which children it is about (its Patient compartment), which organisation wrote
it, and which organisations it grants access to a child (config/access.toml). A child's
information-sharing decision is recomputed from its Consents (adapter/consent) whenever a
Consent, the Patient or an EpisodeOfCare of the child changes.

`AccessControl.condition` turns those rows into one SQL condition for a caller, which the
repository adds to reads, searches (so counts and pages are computed after filtering),
chained and `_has` sub-queries, includes and history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone

from sqlalchemy import and_, delete, exists, false, literal, or_, select, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql import ColumnElement

from ..fhir import jsonio
from ..fhir import search_params as sp
from ..security.access import AccessPolicy, caller_organisations, ods_identifier, ods_of
from ..security.caller import Caller
from .statements import delete_of, insert_ignore, insert_rows
from .tables import author_table, compartment_table, consent_state_table, grant_table, resource_table

R = resource_table
CP = compartment_table
AU = author_table
G = grant_table
CS = consent_state_table


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class SharingChange:
    patient_id: str
    was_permitted: bool
    permitted: bool


class AccessControl:
    def __init__(self, policy: AccessPolicy):
        self.policy = policy

    # -- the read side ---------------------------------------------------------------------
    def condition(self, caller: Caller, type_col: ColumnElement, id_col: ColumnElement,
                  rtype: str | None) -> ColumnElement | None:
        """Rows (type_col, id_col) the caller may see; None when the caller sees everything.

        Correlated EXISTS on the access rows' keys, so that checking a row costs a few index
        look-ups whatever the size of the caller's caseload (an IN-list of everything the
        caller may see grew with it: bench/authz.py)."""
        if caller.unrestricted:
            return None
        if not caller.organisation:
            return false()
        policy = self.policy
        orgs = sorted(caller_organisations(caller))
        now = utcnow()
        type_expr = literal(rtype) if rtype is not None else type_col
        if rtype is not None and policy.shared(rtype):
            return true()
        gated_types = sorted(policy.gated_types)
        if rtype is not None:
            gated = true() if policy.gated(rtype) else None
        else:
            gated = type_col.in_(gated_types)

        def granted(patient_col) -> ColumnElement:
            return exists().where(G.c.organisation.in_(orgs), G.c.patient_id == patient_col)

        def consented(patient_col) -> ColumnElement:
            return exists().where(CS.c.patient_id == patient_col, CS.c.permitted == true(),
                                  or_(CS.c.valid_until.is_(None), CS.c.valid_until > now))

        def sees(patient_col) -> ColumnElement:
            if gated is None:
                return granted(patient_col)
            return and_(granted(patient_col), or_(~gated, consented(patient_col)) if rtype is None
                        else consented(patient_col))

        authored = exists().where(AU.c.res_type == type_expr, AU.c.res_id == id_col,
                                  AU.c.organisation == caller.organisation)
        mine = CP.alias("cp_mine")
        other = CP.alias("cp_other")
        # about a child the caller may see ...
        about = exists().where(mine.c.res_type == type_expr, mine.c.res_id == id_col, sees(mine.c.patient_id))
        # ... and about no child it may not (a Group, an AuditEvent or a Provenance about several
        # children must not reveal the others)
        none_hidden = ~exists().where(other.c.res_type == type_expr, other.c.res_id == id_col,
                                      ~sees(other.c.patient_id))
        visible = or_(authored, and_(about, none_hidden))
        if rtype is None:
            visible = or_(type_col.in_(sorted(policy.shared_types)), visible)
        return visible

    # -- the write side --------------------------------------------------------------------
    def record(self, conn, caller: Caller, body: dict, reference_rows: list[dict],
               deleted: bool = False, new: bool = False) -> list[str]:
        """Keep the access rows of a resource just written; returns the children it is about.

        A deletion keeps compartment and authorship (the tombstone stays visible to those who
        saw the resource, as 410 Gone) and withdraws the grants the resource gave. `new`: the
        resource was just created, so it has no rows to replace.
        """
        rtype, rid = body["resourceType"], body["id"]
        patients: list[str] = []
        if not deleted:
            patients = self.patients_of(rtype, rid, reference_rows)
            via = self.policy.compartment_from_targets.get(rtype)
            if via:
                targets = {(r["target_type"], r["target_id"]) for r in reference_rows
                           if r["param"] == via and r.get("target_type") and r.get("target_id")}
                patients = sorted(set(patients) | patients_of_keys(conn, targets))
            if not new:
                conn.execute(delete_of(CP), {"t": rtype, "i": rid})
            if patients:
                insert_rows(conn, CP, [{"res_type": rtype, "res_id": rid, "patient_id": p} for p in patients])
        if caller.organisation and rtype not in self.policy.server_written_types:
            self._author(conn, rtype, rid, caller.organisation)
        rule = self.policy.grants.get(rtype)
        if rule is not None:
            if not new:
                conn.execute(delete(G).where(G.c.source_type == rtype, G.c.source_id == rid))
            if not deleted and rule.active(body):
                rows = self._grants(conn, rule, body, reference_rows, rid)
                if rows:
                    insert_rows(conn, G, rows)
        return patients

    def patients_of(self, rtype: str, rid: str, reference_rows: list[dict]) -> list[str]:
        params = set(self.policy.compartment_params(rtype))
        found = {rid} if rtype == "Patient" else set()
        for row in reference_rows:
            if row["param"] in params and row.get("target_type") == "Patient" and row.get("target_id"):
                found.add(row["target_id"])
        return sorted(found)

    @staticmethod
    def _author(conn, rtype: str, rid: str, organisation: str) -> None:
        conn.execute(insert_ignore(AU, conn.dialect.name), {"res_type": rtype, "res_id": rid,
                                                             "organisation": organisation})

    def _grants(self, conn, rule, body: dict, reference_rows: list[dict], rid: str) -> list[dict]:
        patients = sorted({r["target_id"] for r in reference_rows
                           if r["param"] == rule.patient and r.get("target_type") == "Patient" and r.get("target_id")})
        if not patients:
            return []
        orgs: set[str] = set()
        for code in rule.organisations:
            expression = _expressions(body["resourceType"]).get(code)
            if expression is None:
                continue
            for node in sp.evaluate(expression, body):
                ods = ods_of(node, lambda org_id: organisation_ods(conn, org_id))
                if ods:
                    orgs.add(ods)
        return [{"source_type": rule.type, "source_id": rid, "patient_id": p, "organisation": o}
                for p in patients for o in sorted(orgs)]

    # -- consent ---------------------------------------------------------------------------
    def refresh_consent(self, conn, patient_id: str) -> SharingChange:
        """Recompute a child's information-sharing decision from its stored Consents."""
        from ..consent import rules as consent_rules

        if conn.dialect.name == "postgresql":
            # one decision at a time per child: a concurrent Consent write waits, then sees ours
            conn.execute(select(R.c.res_id).where(R.c.res_type == "Patient", R.c.res_id == patient_id)
                         .with_for_update())
        before = conn.execute(select(CS).where(CS.c.patient_id == patient_id)).first()
        was = bool(before.permitted) if before is not None and _still_valid(before.valid_until) else False
        consents = _compartment_resources(conn, "Consent", patient_id)
        facts = consent_rules.child_facts_from(*child_records(conn, patient_id))
        decision = consent_rules.sharing_decision(consents, facts, datetime.now(timezone.utc))
        values = {"permitted": bool(decision.permitted), "valid_until": _as_datetime(decision.valid_until),
                  "consent_id": decision.consent_id, "reason": decision.reason[:1000]}
        upsert = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(CS)
        conn.execute(upsert.values(patient_id=patient_id, **values)
                     .on_conflict_do_update(index_elements=[CS.c.patient_id], set_=values))
        now_permitted = bool(decision.permitted) and _still_valid(_as_datetime(decision.valid_until))
        return SharingChange(patient_id, was, now_permitted)

    def sharing_permitted(self, conn, patient_id: str) -> bool:
        row = conn.execute(select(CS).where(CS.c.patient_id == patient_id)).first()
        return row is not None and bool(row.permitted) and _still_valid(row.valid_until)


# -- helpers ---------------------------------------------------------------------------------
_EXPRESSIONS: dict[str, dict[str, str]] = {}


def _expressions(rtype: str) -> dict[str, str]:
    if rtype not in _EXPRESSIONS:
        from ..fhir.search_params import SearchRegistry

        registry = SearchRegistry([rtype])
        _EXPRESSIONS[rtype] = {code: p.expression for code, p in registry.params(rtype).items() if p.expression}
    return _EXPRESSIONS[rtype]


ODS_MEMO = "lac_ods_of_organisation"  # conn.info key: {Organization id: ODS code}, per transaction


def organisation_ods(conn, org_id: str) -> str | None:
    """The ODS code of a stored Organization. Remembered for the rest of the transaction
    (`Transaction` starts the memo and forgets an Organization it writes): a Bundle's grants
    and facts name the same few organisations hundreds of times."""
    memo = conn.info.get(ODS_MEMO)
    if memo is not None and org_id in memo:
        return memo[org_id]
    content = conn.execute(select(R.c.content).where(R.c.res_type == "Organization", R.c.res_id == org_id,
                                                     R.c.deleted == false())).scalar()
    ods = ods_identifier(jsonio.loads_stored(content)) if content else None
    if memo is not None:
        memo[org_id] = ods
    return ods


def _resource(conn, rtype: str, rid: str) -> dict | None:
    content = conn.execute(select(R.c.content).where(R.c.res_type == rtype, R.c.res_id == rid,
                                                     R.c.deleted == false())).scalar()
    return jsonio.loads_stored(content) if content else None


def child_records(conn, patient_id: str) -> tuple[dict, list[dict]]:
    """A child's Patient and EpisodeOfCare resources, whoever may see them (for the rules that
    decide about the child, never returned to a caller)."""
    return (_resource(conn, "Patient", patient_id) or {},
            _compartment_resources(conn, "EpisodeOfCare", patient_id))


def _compartment_resources(conn, rtype: str, patient_id: str) -> list[dict]:
    """A child's resources of a type. The ids first, then the rows by primary key with the ids
    spelled out: as one query with a subquery, PostgreSQL planned it from a growing store's stale
    statistics as a scan of every resource of the type (ms per write, run on every write that
    refreshes the facts)."""
    ids = list(conn.execute(select(CP.c.res_id).where(CP.c.res_type == rtype,
                                                       CP.c.patient_id == patient_id)).scalars())
    if not ids:
        return []
    rows = conn.execute(select(R.c.content).where(R.c.res_type == rtype, R.c.res_id.in_(ids),
                                                  R.c.deleted == false())).scalars()
    return [jsonio.loads_stored(c) for c in rows if c]


def patients_by_key(conn, keys) -> dict[tuple[str, str], set[str]]:
    """For each (type, id), the children it is about: one query per 500 keys, for a batch.

    Written as `res_type = t AND res_id IN (...)` per type: SQLite does not look a row value
    `(res_type, res_id) IN (VALUES ...)` up in the primary key but scans the whole table, which
    made every Provenance and audited write slower as the store grew (bench/load_population.py)."""
    out: dict[tuple[str, str], set[str]] = {k: ({k[1]} if k[0] == "Patient" else set()) for k in keys}
    others = sorted(k for k in out if k[0] != "Patient")
    for start in range(0, len(others), 500):
        by_type: dict[str, list[str]] = {}
        for rtype, rid in others[start:start + 500]:
            by_type.setdefault(rtype, []).append(rid)
        for rtype, rid, pid in conn.execute(select(CP.c.res_type, CP.c.res_id, CP.c.patient_id).where(
                or_(*[and_(CP.c.res_type == t, CP.c.res_id.in_(ids)) for t, ids in by_type.items()]))):
            out[(rtype, rid)].add(pid)
    return out


def patients_of_keys(conn, keys) -> set[str]:
    """The children a set of (type, id) resources are about, from the compartment rows."""
    return set().union(*patients_by_key(conn, set(keys)).values())


def authors_of(conn, rtype: str, rid: str) -> list[str]:
    return sorted(conn.execute(select(AU.c.organisation).where(AU.c.res_type == rtype, AU.c.res_id == rid)).scalars())


def _as_datetime(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return None


def _still_valid(until: datetime | None) -> bool:
    return until is None or until > utcnow()
