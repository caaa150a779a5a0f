"""The repository: versioned FHIR resources, their history, and search, over SQL.

Every operation runs inside a `Transaction` that knows its caller. Reads of resource
rows (read, vread, search matches, includes, history) all pass through `_visible`,
the one place where access rules apply to what leaves the store.
"""

from __future__ import annotations

import logging
import threading
import uuid6  # UUIDv7 (RFC 9562) until the standard library has it (Python 3.14)
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator

from sqlalchemy import Engine, and_, bindparam, false, func, insert, literal, or_, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..fhir import jsonio
from ..fhir.errors import FhirError, Issue, not_found
from ..fhir.search_params import SearchRegistry
from ..fhir.search_query import Include, SearchQuery
from ..security.caller import Caller
from . import search_sql
from .access_sql import ODS_MEMO, AccessControl
from .facts_sql import PendingFacts
from .indexing import index_rows
from .statements import delete_of, insert_rows, replace_row, row_of
from .tables import INDEX_TABLES, compartment_table, resource_table, version_table

log = logging.getLogger("lac_adapter.store")
R = resource_table
V = version_table
REF = INDEX_TABLES["reference"]
CP = compartment_table
CONSENT_INPUTS = frozenset({"Consent", "Patient", "EpisodeOfCare"})  # a child's sharing decision rests on these
# The statements of a read by id, built once (building a statement cost more than running it).
READ_CURRENT = select(R).where(R.c.res_type == bindparam("rtype"), R.c.res_id == bindparam("rid"))
READ_VERSION = select(V).where(V.c.res_type == bindparam("rtype"), V.c.res_id == bindparam("rid"),
                               V.c.version_id == bindparam("version"))
DISTINCT_INDEX_TABLES = tuple({id(t): t for t in INDEX_TABLES.values()}.values())
MAX_INCLUDED = 1000


def new_id() -> str:
    """A server-assigned resource id: a UUIDv7, which is time-ordered, so a new resource's rows go
    at the end of the primary-key B-trees rather than onto a random page each (storing a batch
    of audit events took half the CPU and half the time with these ids than with random ones)."""
    return str(uuid6.uuid7())


def format_instant(moment: datetime) -> str:
    """FHIR instant in UTC with microseconds, from a naive-UTC datetime."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


@dataclass
class Stored:
    """One stored version of a resource, with the JSON bytes exactly as stored."""

    res_type: str
    res_id: str
    version_id: int
    last_updated: datetime
    content: bytes | None
    deleted: bool = False
    method: str | None = None

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def last_updated_instant(self) -> str:
        return format_instant(self.last_updated)

    @property
    def key(self) -> tuple[str, str]:
        return self.res_type, self.res_id

    def resource(self) -> dict:
        return jsonio.loads_stored(self.content) if self.content is not None else {}


@dataclass
class SearchResult:
    matches: list[Stored]
    included: list[Stored] = field(default_factory=list)
    total: int | None = None
    warnings: list[Issue] = field(default_factory=list)


class Repository:
    STATISTICS_EVERY = 5000  # write transactions between planner statistics refreshes

    def __init__(self, engine: Engine, registry: SearchRegistry, base_url: str | None = None,
                 access: AccessControl | None = None):
        self.engine = engine
        self.registry = registry
        self.base_url = base_url
        if access is None:
            from ..security.access import default_policy

            access = AccessControl(default_policy())
        self.access = access
        self._lock_rows = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time; queueing writers of this process on a lock is fair
        # and prompt, where SQLite's busy handler makes them sleep and retry.
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else None
        self._writes = 0

    @contextmanager
    def transaction(self, caller: Caller, write: bool = True,
                    base_url: str | None = None, snapshot: bool = True) -> Iterator["Transaction"]:
        """One database transaction: everything inside commits together or not at all.

        `base_url` is the FHIR base the caller used: absolute references to it are local.
        `snapshot=False` (reads only): the statements need not see one moment of the database,
        as a read by id (the row, then whether the caller may see it); each then runs on its
        own, without BEGIN and COMMIT (on SQLite a fifth of a read's time; on PostgreSQL two
        round trips of three).
        """
        lock = self._write_lock if write else None
        if lock is not None:
            lock.acquire()
        try:
            options = {"write": write} if write or snapshot else {"write": False, "snapshot": False}
            if options.get("snapshot") is False and self.engine.dialect.name == "postgresql":
                options["isolation_level"] = "AUTOCOMMIT"  # no BEGIN and COMMIT round trips either
            with self.engine.connect().execution_options(**options) as conn:
                try:
                    with conn.begin():
                        tx = Transaction(self, conn, caller, base_url or self.base_url)
                        yield tx
                        if write:
                            tx.before_commit()
                finally:
                    conn.info.pop(ODS_MEMO, None)  # (conn.info outlives the checkout)
        finally:
            if lock is not None:
                lock.release()
        if write:
            self._writes += 1
            if self._writes % self.STATISTICS_EVERY == 0:
                self._refresh_statistics()

    def _refresh_statistics(self) -> None:
        """Best effort, after a commit: a busy database skips this round, never the request."""
        from sqlalchemy.exc import OperationalError

        from .database import refresh_statistics

        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            refresh_statistics(self.engine)
        except OperationalError as exc:
            log.warning("planner statistics not refreshed this time: %s", exc)
        finally:
            if lock is not None:
                lock.release()


    def rebuild_access(self, batch: int = 1000) -> int:
        """Give every stored resource its access rows (compartment, grants) and every child its
        sharing decision: for databases upgraded to schema 3, whose resources predate them.
        Who wrote what before then is not known, so no authorship is recorded."""
        from ..security.caller import SYSTEM

        done = 0
        with self.transaction(SYSTEM, write=True) as tx:
            types = sorted(tx.conn.execute(select(R.c.res_type).distinct()).scalars(),
                           key=lambda t: (t in self.access.policy.compartment_from_targets, t))
            for rtype in types:
                last = ""
                while True:
                    rows = tx.conn.execute(select(R.c.res_id, R.c.content).where(
                        R.c.res_type == rtype, R.c.deleted == false(), R.c.res_id > last)
                        .order_by(R.c.res_id).limit(batch)).all()
                    if not rows:
                        break
                    for rid, content in rows:
                        body = jsonio.loads_stored(content)
                        refs = index_rows(self.registry, body, self.base_url).get(REF, [])
                        self.access.record(tx.conn, SYSTEM, body, refs)
                        done += 1
                    last = rows[-1].res_id
            patients = tx.conn.execute(select(CP.c.patient_id).where(CP.c.res_type == "Consent").distinct())
            tx._refresh_consent(list(patients.scalars()))
        return done


class Transaction:
    def __init__(self, repo: Repository, conn: Connection, caller: Caller, base_url: str | None):
        self.repo = repo
        self.conn = conn
        self.caller = caller
        self.base_url = base_url
        self.memo: dict = {}  # per-transaction caches of the layers above (e.g. canonical lookups)
        self._written_about: set[str] = set()  # children this transaction wrote about
        self.facts = PendingFacts()  # commissioning facts made stale by this transaction's writes
        self._consent_stale: set[str] = set()  # children whose sharing decision awaits recomputing
        conn.info[ODS_MEMO] = {}  # organisations' ODS codes, for this transaction only
        self.written: list[tuple[str, str, int, str]] = []  # (type, id, version, method), for Provenance
        self._disclosed: dict[tuple[str, str], int | None] = {}  # what reads returned, for the audit
        self.audited = False  # the router stored this transaction's AuditEvent inside it

    def disclosed_keys(self) -> list[tuple[str, str, int | None]]:
        return [(t, i, v) for (t, i), v in self._disclosed.items()]

    def _disclose(self, rows: list[Stored]) -> list[Stored]:
        for s in rows:
            self._disclosed.setdefault(s.key, s.version_id)
        return rows

    # -- access ------------------------------------------------------------------
    def restriction(self, rtype: str | None, type_col=R.c.res_type, id_col=R.c.res_id):
        """The SQL condition limiting rows to what the caller may see (None: everything).

        Access and consent rules apply here and nowhere else: searches, counts, chains,
        `_has` and history add this condition; every other path that returns stored
        resources funnels through `_visible`, which uses it too.
        """
        if not self.caller.unrestricted:
            self.settle_consent()  # the condition reads the sharing decisions
        return self.repo.access.condition(self.caller, type_col, id_col, rtype)

    def sharing_permitted(self, patient_id: str) -> bool:
        """Whether the child's information may be shared now, this transaction's writes included."""
        self.settle_consent()
        return self.repo.access.sharing_permitted(self.conn, patient_id)

    def _restrict(self, rtype: str, id_col):
        return self.restriction(rtype, literal(rtype), id_col)

    def _visible(self, rows: list[Stored]) -> list[Stored]:
        """The resources of `rows` that the caller may see."""
        if not rows or self.caller.unrestricted:
            return rows
        by_type: dict[str, set[str]] = {}
        for s in rows:
            by_type.setdefault(s.res_type, set()).add(s.res_id)
        allowed: set[tuple[str, str]] = set()
        for rtype, ids in by_type.items():
            cond = self.restriction(rtype)
            stmt = select(R.c.res_id).where(R.c.res_type == rtype, R.c.res_id.in_(sorted(ids)))
            if cond is not None:
                stmt = stmt.where(cond)
            allowed |= {(rtype, rid) for rid in self.conn.execute(stmt).scalars()}
        return [s for s in rows if s.key in allowed]

    def _visible_disclosed(self, rows: list[Stored]) -> list[Stored]:
        return self._disclose(self._visible(rows))

    def may_see(self, rtype: str, rid: str) -> bool:
        return bool(self._visible([Stored(rtype, rid, 0, datetime.min, None)]))

    def as_caller(self, caller: Caller) -> "Transaction":
        """A view of this transaction for another caller: what it would see, and only that.

        Used where data leaves for someone other than the writer (a subscriber's notification,
        a partner's request), so that the same access and consent rules decide what goes."""
        view = Transaction(self.repo, self.conn, caller, self.base_url)
        view.memo = self.memo
        view._consent_stale = self._consent_stale  # one set: whoever reads first settles it
        return view

    def writes_of(self, rtype: str) -> int:
        """How many writes of a type this transaction has made (criteria that matched nothing
        still match nothing while none has been made)."""
        return sum(1 for written in self.written if written[0] == rtype)

    def authors(self, rtype: str, rid: str) -> list[str]:
        """The organisations that wrote versions of a resource (e.g. a Subscription's owner)."""
        from .access_sql import authors_of

        return authors_of(self.conn, rtype, rid)

    def settle_consent(self) -> None:
        """Recompute the sharing decisions this transaction's writes made stale: before anything
        in it reads them (an access condition, a message's consent check) and before commit.

        A child's Bundle writes its Patient, episodes and Consents one after another; deciding
        once from the final state gives the decision deciding after each write would end on."""
        if self._consent_stale:
            stale = sorted(self._consent_stale)
            self._consent_stale.clear()
            self._refresh_consent(stale)

    def _refresh_consent(self, patient_ids) -> None:
        """Bring children's sharing decisions up to date at once; when sharing stops, so do
        queued messages about the child."""
        for patient_id in sorted(set(patient_ids)):
            change = self.repo.access.refresh_consent(self.conn, patient_id)
            if change.was_permitted and not change.permitted:
                from ..exchange import outbox

                outbox.cancel_for_patient(self.conn, f"Patient/{patient_id}")

    def settle_facts(self) -> None:
        """Bring the commissioning facts up to date with this transaction's writes (at commit,
        and before a Measure is evaluated inside the transaction)."""
        if self.facts:
            self.facts.settle(self.conn)

    def _check_written_about(self, patients: list[str]) -> None:
        """A caller writes only about children it may see, judged at the time of the write
        (completing a request may end the grant that allowed it); a child not stored yet is
        judged at commit, when the transaction has written it."""
        for patient_id in patients:
            exists = self.conn.execute(select(R.c.res_id).where(
                R.c.res_type == "Patient", R.c.res_id == patient_id)).first() is not None
            if not exists:
                self._written_about.add(patient_id)
            elif not self.may_see("Patient", patient_id):
                raise _not_yours(patient_id)

    def before_commit(self) -> None:
        self.settle_consent()
        self.settle_facts()
        for patient_id in sorted(self._written_about):
            if not self.may_see("Patient", patient_id):
                raise _not_yours(patient_id)

    # -- reads -------------------------------------------------------------------
    def read(self, rtype: str, rid: str) -> Stored:
        row = self.conn.execute(READ_CURRENT, {"rtype": rtype, "rid": rid}).first()
        stored = _stored(row) if row is not None else None
        if stored is None or not self._visible([stored]):
            raise not_found(f"{rtype}/{rid} is not known")
        self._disclose([stored])
        if stored.deleted:
            err = FhirError(410, "deleted", f"{rtype}/{rid} was deleted")
            err.stored = stored  # type: ignore[attr-defined]
            raise err
        return stored

    def vread(self, rtype: str, rid: str, version: str) -> Stored:
        if not version.isdigit() or len(version) > 18:
            raise not_found(f"{rtype}/{rid} has no version '{version}'")
        row = self.conn.execute(READ_VERSION, {"rtype": rtype, "rid": rid, "version": int(version)}).first()
        stored = _stored(row) if row is not None else None
        if stored is None or not self._visible([stored]):
            raise not_found(f"{rtype}/{rid} has no version {version}")
        self._disclose([stored])
        if stored.deleted:
            raise FhirError(410, "deleted", f"version {version} of {rtype}/{rid} is a deletion")
        return stored

    def current(self, rtype: str, rid: str) -> Stored | None:
        """The current row, deleted or not, or None; for conditional logic inside writes."""
        row = self.conn.execute(READ_CURRENT, {"rtype": rtype, "rid": rid}).first()
        if row is None:
            return None
        return (self._visible([_stored(row)]) or [None])[0]

    # -- writes ------------------------------------------------------------------
    def create(self, resource: dict, rid: str | None = None) -> Stored:
        """Store a new resource under a fresh id (or one a transaction assigned in advance)."""
        rid = rid or new_id()
        return self._write(resource["resourceType"], rid, resource, "POST", None, must_be_new=True)[0]

    def create_records(self, resources: list[dict]) -> list[Stored]:
        """Store new server-written records (AuditEvents) in bulk: one INSERT per table for the
        whole batch instead of several per resource, which is what made the audit of every read
        cost more than the read itself. Same rows as `create`: current and version rows, index
        rows, and compartment rows (server-written types have no authors and give no grants)."""
        policy = self.repo.access.policy
        if not self.caller.unrestricted or any(
                r["resourceType"] not in policy.server_written_types or r["resourceType"] in policy.grants
                or r["resourceType"] in policy.compartment_from_targets for r in resources):
            raise ValueError("create_records is for server-written records (no grants, no compartment "
                             "from targets), stored by the system")
        current, versions, compartments = [], [], []
        indexed: dict = {}
        stored = []
        for resource in resources:
            rtype, rid, now = resource["resourceType"], new_id(), self._now(None)
            body = _with_meta(resource, rid, 1, format_instant(now))
            content = jsonio.dumps(body)
            row = {"res_type": rtype, "res_id": rid, "version_id": 1, "last_updated": now,
                   "deleted": False, "content": content}
            current.append(row)
            versions.append({**row, "method": "POST"})
            rows = index_rows(self.repo.registry, body, self.base_url)
            for table, table_rows in rows.items():
                indexed.setdefault(table, []).extend(table_rows)
            compartments += [{"res_type": rtype, "res_id": rid, "patient_id": p}
                             for p in self.repo.access.patients_of(rtype, rid, rows.get(REF, []))]
            self.written.append((rtype, rid, 1, "POST"))
            stored.append(Stored(rtype, rid, 1, now, content, method="POST"))
        if not resources:
            return stored
        insert_rows(self.conn, R, current)
        insert_rows(self.conn, V, versions)
        for table, rows in indexed.items():
            insert_rows(self.conn, table, rows)
        insert_rows(self.conn, CP, compartments)
        return stored

    def update(self, rtype: str, rid: str, resource: dict, if_match: int | None = None,
               method: str = "PUT") -> tuple[Stored, bool]:
        """Write a new version (or the first one, update-as-create); returns (stored, created)."""
        return self._write(rtype, rid, resource, method, if_match)

    def delete(self, rtype: str, rid: str, if_match: int | None = None) -> Stored | None:
        """Write a tombstone version; None if there was nothing to delete."""
        current = self._lock(rtype, rid)
        if current is not None and not self.may_see(rtype, rid):
            current = None
        if if_match is not None and (current is None or current.deleted or current.version_id != if_match):
            raise _version_conflict(rtype, rid, if_match, current)
        if current is None or current.deleted:
            return None
        now = self._now(current)
        version = current.version_id + 1
        self.conn.execute(update(R).where(R.c.res_type == rtype, R.c.res_id == rid).values(
            version_id=version, last_updated=now, deleted=True, content=None))
        self.conn.execute(insert(V).values(res_type=rtype, res_id=rid, version_id=version,
                                           last_updated=now, method="DELETE", deleted=True, content=None))
        self._clear_index(rtype, rid)
        self._record_access({"resourceType": rtype, "id": rid}, [], deleted=True)
        self.written.append((rtype, rid, version, "DELETE"))
        return Stored(rtype, rid, version, now, None, deleted=True, method="DELETE")

    def _record_access(self, body: dict, reference_rows: list[dict], deleted: bool = False,
                       new: bool = False) -> None:
        rtype = body["resourceType"]
        if rtype == "Organization":
            self.conn.info[ODS_MEMO].pop(body["id"], None)  # its ODS code may have changed
        patients = self.repo.access.record(self.conn, self.caller, body, reference_rows, deleted, new)
        self.facts.note(self.conn, body, reference_rows, deleted)  # commissioning facts, settled at commit
        if rtype != "Patient" and not self.caller.unrestricted and rtype not in self.repo.access.policy.server_written_types:
            self._check_written_about(patients)  # (the audit trail records what happened, whoever it names)
        if rtype in CONSENT_INPUTS:
            if deleted:
                patients = [r.patient_id for r in self.conn.execute(
                    select(CP.c.patient_id).where(CP.c.res_type == rtype, CP.c.res_id == body["id"]))]
            self._consent_stale.update(patients)  # decided again before it is next read

    def _lock(self, rtype: str, rid: str) -> Stored | None:
        row = self.conn.execute(row_of(R, self.repo._lock_rows), {"t": rtype, "i": rid}).first()
        return _stored(row) if row is not None else None

    @staticmethod
    def _now(previous: Stored | None) -> datetime:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        if previous is not None and now <= previous.last_updated:
            now = previous.last_updated + timedelta(microseconds=1)
        return now

    def _write(self, rtype: str, rid: str, resource: dict, method: str, if_match: int | None,
               must_be_new: bool = False) -> tuple[Stored, bool]:
        current = None if must_be_new else self._lock(rtype, rid)
        if current is not None and not self.may_see(rtype, rid):
            raise not_found(f"{rtype}/{rid} is not known")
        if if_match is not None and (current is None or current.deleted or current.version_id != if_match):
            raise _version_conflict(rtype, rid, if_match, current)
        version = current.version_id + 1 if current else 1
        now = self._now(current)
        body = _with_meta(resource, rid, version, format_instant(now))
        content = jsonio.dumps(body)
        try:
            if current is None:
                insert_rows(self.conn, R, [{"res_type": rtype, "res_id": rid, "version_id": version,
                                            "last_updated": now, "deleted": False, "content": content}])
            else:
                self.conn.execute(replace_row(R), {"t": rtype, "i": rid, "version_id": version,
                                                   "last_updated": now, "deleted": False, "content": content})
            insert_rows(self.conn, V, [{"res_type": rtype, "res_id": rid, "version_id": version,
                                        "last_updated": now, "method": method, "deleted": False,
                                        "content": content}])
        except IntegrityError:
            raise FhirError(409, "conflict", f"{rtype}/{rid} was changed by another request at the "
                                             "same time; retry") from None
        if current is not None:
            self._clear_index(rtype, rid)
        indexed = index_rows(self.repo.registry, body, self.base_url)
        for table, rows in indexed.items():
            insert_rows(self.conn, table, rows)
        self._record_access(body, indexed.get(REF, []), new=current is None)
        resource.clear()
        resource.update(body)
        created = current is None or current.deleted
        self.written.append((rtype, rid, version, method))
        return Stored(rtype, rid, version, now, content, method=method), created

    def _clear_index(self, rtype: str, rid: str) -> None:
        for table in DISTINCT_INDEX_TABLES:
            self.conn.execute(delete_of(table), {"t": rtype, "i": rid})

    # -- search ------------------------------------------------------------------
    def _where(self, query: SearchQuery) -> list:
        """The query's conditions, and the caller's restriction: counts and pages are
        computed over what the caller may see."""
        rtype = query.resource_type
        restriction = self.restriction(rtype)
        if rtype is None:
            conds = [search_sql.system_condition(c, self.base_url) for c in query.clauses]
        else:
            restrict = None if self.caller.unrestricted else self._restrict
            conds = [search_sql.clause_condition(c, rtype, R.c.res_id, self.base_url, restrict)
                     for c in query.clauses]
        return conds + ([restriction] if restriction is not None else [])

    def search(self, query: SearchQuery) -> SearchResult:
        rtype = query.resource_type
        conds = self._where(query)
        result = SearchResult(matches=[], warnings=list(query.warnings))
        want_total = query.total != "none" or query.summary == "count"

        def count() -> int:
            count_stmt = select(func.count()).select_from(R).where(
                R.c.deleted == false(), *([R.c.res_type == rtype] if rtype else []), *conds)
            return self.conn.execute(count_stmt).scalar_one()

        if query.summary == "count" or query.count == 0:
            result.total = count() if want_total else None
            return result
        stmt = search_sql.base_select(rtype).where(*conds)
        order = []
        for code, desc in query.sort:
            if code == "_id":
                col = R.c.res_id
            elif code == "_lastUpdated":
                col = R.c.last_updated
            else:
                col = search_sql.sort_key(rtype, self.repo.registry.get(rtype, code), desc)
            order.append(col.desc() if desc else col.asc())
        order += [R.c.last_updated.asc(), R.c.res_type.asc(), R.c.res_id.asc()]
        stmt = stmt.order_by(*order).limit(query.count).offset(query.offset)
        rows = [Stored(r.res_type, r.res_id, r.version_id, r.last_updated, r.content)
                for r in self.conn.execute(stmt)]
        result.matches = self._disclose(rows)  # already limited to what the caller may see (_where)
        if want_total:
            # A first page that is not full holds every match: no need to count them again.
            short_first_page = query.offset == 0 and len(rows) < (query.count or 0)
            result.total = len(result.matches) if short_first_page else count()
        if query.includes and result.matches:
            result.included = self._includes(result.matches, query.includes)
        return result

    def find(self, query: SearchQuery, limit: int = 2) -> list[Stored]:
        """Matches of a conditional operation's criteria (at most `limit`)."""
        stmt = search_sql.base_select(query.resource_type).where(*self._where(query)).limit(limit)
        return [Stored(r.res_type, r.res_id, r.version_id, r.last_updated, r.content)
                for r in self.conn.execute(stmt)]

    def _includes(self, matches: list[Stored], includes: list[Include]) -> list[Stored]:
        seen = {s.key for s in matches}
        frontier = matches
        included: list[Stored] = []
        first = True
        while frontier and len(included) < MAX_INCLUDED:
            keys: set[tuple[str, str]] = set()
            for inc in includes:
                if not first and not inc.iterate:
                    continue
                keys |= self._reverse_keys(inc, frontier) if inc.reverse else self._forward_keys(inc, frontier)
            new_keys = keys - seen
            seen |= new_keys
            frontier = self._load(sorted(new_keys)[: MAX_INCLUDED - len(included)])
            included.extend(frontier)
            first = False
        return included

    def _forward_keys(self, inc: Include, frontier: list[Stored]) -> set[tuple[str, str]]:
        ids = [s.res_id for s in frontier if s.res_type == inc.source_type]
        if not ids:
            return set()
        stmt = select(REF.c.target_type, REF.c.target_id).where(
            REF.c.res_type == inc.source_type, REF.c.res_id.in_(ids), REF.c.target_id.is_not(None))
        if inc.param:
            stmt = stmt.where(REF.c.param == inc.param)
        if inc.target_type:
            stmt = stmt.where(REF.c.target_type == inc.target_type)
        return {(t, i) for t, i in self.conn.execute(stmt)}

    def _reverse_keys(self, inc: Include, frontier: list[Stored]) -> set[tuple[str, str]]:
        by_type: dict[str, list[str]] = {}
        for s in frontier:
            by_type.setdefault(s.res_type, []).append(s.res_id)
        targets = or_(*[and_(REF.c.target_type == t, REF.c.target_id.in_(ids)) for t, ids in by_type.items()])
        stmt = select(REF.c.res_type, REF.c.res_id).where(REF.c.res_type == inc.source_type, targets)
        if inc.param:
            stmt = stmt.where(REF.c.param == inc.param)
        return {(t, i) for t, i in self.conn.execute(stmt)}

    def _load(self, keys: list[tuple[str, str]]) -> list[Stored]:
        if not keys:
            return []
        by_type: dict[str, list[str]] = {}
        for t, i in keys:
            by_type.setdefault(t, []).append(i)
        stmt = search_sql.base_select(None).where(
            or_(*[and_(R.c.res_type == t, R.c.res_id.in_(ids)) for t, ids in by_type.items()]))
        rows = [Stored(r.res_type, r.res_id, r.version_id, r.last_updated, r.content)
                for r in self.conn.execute(stmt)]
        return self._visible_disclosed(rows)

    # -- a child's record --------------------------------------------------------
    def compartment(self, patient_id: str, types: list[str] | None, since: datetime | None,
                    count: int, offset: int) -> tuple[list[Stored], int]:
        """The current resources about a child (its Patient compartment) that the caller may
        see, oldest change first: for Patient/$everything."""
        about = select(CP.c.res_type, CP.c.res_id).where(CP.c.patient_id == patient_id)
        if types:
            about = about.where(CP.c.res_type.in_(types))
        conds = [R.c.deleted == false(), tuple_(R.c.res_type, R.c.res_id).in_(about)]
        if since:
            conds.append(R.c.last_updated >= since)
        restriction = self.restriction(None)
        if restriction is not None:
            conds.append(restriction)
        total = self.conn.execute(select(func.count()).select_from(R).where(*conds)).scalar_one()
        stmt = search_sql.base_select(None).where(*conds).order_by(
            R.c.last_updated.asc(), R.c.res_type.asc(), R.c.res_id.asc()).limit(count).offset(offset)
        rows = [Stored(r.res_type, r.res_id, r.version_id, r.last_updated, r.content)
                for r in self.conn.execute(stmt)]
        return self._disclose(rows), total

    def export_page(self, rtype: str, after: str, limit: int, until: datetime, since: datetime | None,
                    patients: list[str] | None, patient_level: bool) -> list[Stored]:
        """One page (by id, after `after`) of the current resources of a type that the caller may
        see, as of `until`, for a Bulk Data export. Patient level: only resources about a child
        (the Patient compartment), of the children in `patients` when given (a Group's members)."""
        conds = [R.c.res_type == rtype, R.c.deleted == false(), R.c.res_id > after, R.c.last_updated <= until]
        if since is not None:
            conds.append(R.c.last_updated >= since)
        if patient_level:
            if rtype == "Patient":
                if patients is not None:
                    conds.append(R.c.res_id.in_(patients))
            else:
                about = select(CP.c.res_id).where(CP.c.res_type == rtype)
                if patients is not None:
                    about = about.where(CP.c.patient_id.in_(patients))
                conds.append(R.c.res_id.in_(about))
        restriction = self.restriction(rtype)
        if restriction is not None:
            conds.append(restriction)
        stmt = search_sql.base_select(None).where(*conds).order_by(R.c.res_id).limit(limit)
        return [Stored(r.res_type, r.res_id, r.version_id, r.last_updated, r.content)
                for r in self.conn.execute(stmt)]

    # -- history -----------------------------------------------------------------
    def history(self, rtype: str | None, rid: str | None, since: datetime | None, at: datetime | None,
                count: int, offset: int) -> tuple[list[Stored], int]:
        conds = []
        if rtype:
            conds.append(V.c.res_type == rtype)
        if rid:
            conds.append(V.c.res_id == rid)
        if since:
            conds.append(V.c.last_updated >= since)
        if at:
            conds.append(V.c.last_updated <= at)
        restriction = self.restriction(rtype, V.c.res_type, V.c.res_id)
        if restriction is not None:
            conds.append(restriction)
        total = self.conn.execute(select(func.count()).select_from(V).where(*conds)).scalar_one()
        stmt = select(V).where(*conds).order_by(V.c.seq.desc()).limit(count).offset(offset)
        return self._disclose([_stored(r) for r in self.conn.execute(stmt)]), total


def _not_yours(patient_id: str) -> FhirError:
    return FhirError(403, "forbidden", f"Patient/{patient_id} is not a child your organisation may see, "
                                       "so it may not write about them")


def _stored(row) -> Stored:
    return Stored(row.res_type, row.res_id, row.version_id, row.last_updated, row.content,
                  deleted=bool(row.deleted), method=row.method if "method" in row._fields else None)


def _with_meta(resource: dict, rid: str, version: int, instant: str) -> dict:
    """The resource with id and meta.versionId/lastUpdated set, id and meta first."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = instant
    body = {"resourceType": resource["resourceType"], "id": rid, "meta": meta}
    for key, value in resource.items():
        if key not in body:
            body[key] = value
    return body


def _version_conflict(rtype: str, rid: str, expected: int, current: Stored | None) -> FhirError:
    have = "does not exist" if current is None or current.deleted else f"is at version {current.version_id}"
    return FhirError(412, "conflict", f"If-Match expected version {expected} of {rtype}/{rid}, but it {have}")
