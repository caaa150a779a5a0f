"""Bulk Data export (HL7 FHIR Bulk Data Access, asynchronous request pattern).

- Kick-off: `GET [base]/$export`, `[base]/Patient/$export`, `[base]/Group/[id]/$export` with
  `Prefer: respond-async`; parameters `_outputFormat` (NDJSON), `_type`, `_since`. Answers 202
  with `Content-Location` = the status URL.
- Status: `GET [base]/$export-poll-status?_jobId=..` is 202 with `X-Progress` while running and
  200 with the manifest (`transactionTime`, `request`, `requiresAccessToken`, `output`, `error`)
  when done; `DELETE` cancels and removes the files (202).
- Files: `GET [base]/$export-file?_jobId=..&file=N` (application/fhir+ndjson).

An export runs as the client that asked for it, through the store's access rules (a local
authority exports its own children and nothing else), in pages of `PAGE` resources, writing
files of at most `FILE_LINES` resources into the database as it goes: memory stays flat
whatever the size of the export. Only the client that asked may poll, download or cancel; to
anyone else the job does not exist. The export is audited when it completes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import datetime, timezone

from sqlalchemy import delete, func, insert, select, update

from ..fhir.errors import FhirError, bad_request, not_found
from ..security import audit, scopes
from ..security.caller import Caller
from ..store.repository import Repository, Transaction, format_instant
from ..store.tables import export_file_table as F
from ..store.tables import export_job_table as J
from .messages import FhirRequest, FhirResponse
from .operations import since_param, type_param

log = logging.getLogger("lac_adapter.export")
PAGE = 1000
FILE_LINES = 10_000
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
RUNNING = ("accepted", "in-progress")
STALE_SECONDS = 5.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# -- kick-off ---------------------------------------------------------------------------------
def kick_off(router, tx: Transaction, req: FhirRequest, base: str, target: list[str]) -> FhirResponse:
    if req.method != "GET":
        raise FhirError(405, "not-supported", "$export is GET [base]/$export, [base]/Patient/$export or "
                                              "[base]/Group/[id]/$export")
    if "respond-async" not in (req.header("prefer") or ""):
        raise bad_request("$export needs the header Prefer: respond-async (asynchronous request pattern)",
                          ["Prefer"])
    params = dict(req.params)
    fmt = params.get("_outputFormat")
    if fmt and fmt not in OUTPUT_FORMATS:
        raise bad_request(f"_outputFormat '{fmt[:60]}' is not supported; use {NDJSON}", ["_outputFormat"])
    if target == []:
        level, group = "system", None
    elif target == ["Patient"]:
        level, group = "patient", None
    elif len(target) == 2 and target[0] == "Group":
        level, group = "group", tx.read("Group", target[1]).res_id  # a hidden Group is a 404
    else:
        raise bad_request("$export is defined at system, Patient and Group level")
    about_children = [t for t in sorted(router.types) if t == "Patient" or router.policy.compartment_params(t)]
    # the audit trail is exported only when asked for by _type
    default = [t for t in (sorted(router.types) if level == "system" else about_children)
               if t not in router.policy.server_written_types]
    types = type_param(router, params) or default
    if level != "system":
        outside = [t for t in types if t not in about_children]
        if outside:
            raise bad_request(f"_type: {', '.join(outside)} is not about a patient; use a system-level export",
                              ["_type"])
    caller = tx.caller
    if not caller.unrestricted:
        refused = [t for t in types if not scopes.allows(caller.scopes, t, "r")]
        if refused:
            raise FhirError(403, "forbidden", f"the access token's scopes do not allow reading {', '.join(refused)}")
    since = since_param(params)
    job_id = str(uuid.uuid4())
    now = utcnow()
    tx.conn.execute(insert(J).values(
        id=job_id, client_id=caller.client_id, caller=json.dumps(_caller_json(caller)),
        request=f"{base}/{req.url}"[:2000], level=level, group_id=group, types=json.dumps(types), since=since,
        status="accepted", created=now, transaction_time=now))
    router.exporter.start(job_id)
    return FhirResponse(202, headers={"Content-Location": f"{base}/$export-poll-status?_jobId={job_id}"})


# -- status, cancel, files ----------------------------------------------------------------------
def poll_status(router, tx: Transaction, req: FhirRequest, base: str, target: list[str]) -> FhirResponse:
    job = _own_job(tx, req, target)
    if req.method == "DELETE":
        tx.conn.execute(update(J).where(J.c.id == job.id).values(status="cancelled", finished=utcnow()))
        tx.conn.execute(delete(F).where(F.c.job_id == job.id))
        return FhirResponse(202)
    if req.method != "GET":
        raise FhirError(405, "not-supported", "$export-poll-status is GET (status) or DELETE (cancel)")
    if job.status in RUNNING:
        if job.status == "accepted" and (utcnow() - job.created).total_seconds() > STALE_SECONDS:
            router.exporter.start(job.id)  # not taken up (its process ended?): this process runs it
        return FhirResponse(202, headers={"X-Progress": job.progress or job.status, "Retry-After": "1"})
    if job.status == "failed":
        raise FhirError(500, "exception", f"the export failed: {job.error or 'unknown error'}")
    files = tx.conn.execute(select(F.c.seq, F.c.res_type, F.c.count).where(F.c.job_id == job.id)
                            .order_by(F.c.seq)).all()
    manifest = {
        "transactionTime": format_instant(job.transaction_time),
        "request": job.request,
        "requiresAccessToken": True,
        "output": [{"type": f.res_type, "url": f"{base}/$export-file?_jobId={job.id}&file={f.seq}", "count": f.count}
                   for f in files],
        "error": [],
    }
    return FhirResponse(200, content=json.dumps(manifest).encode(), media_type="application/json",
                        headers={"Expires": "never"})


def download(router, tx: Transaction, req: FhirRequest, base: str, target: list[str]) -> FhirResponse:
    if req.method != "GET":
        raise FhirError(405, "not-supported", "$export-file is GET")
    job = _own_job(tx, req, target)
    seq = dict(req.params).get("file", "")
    if not seq.isdigit() or len(seq) > 9:
        raise not_found("no such export file")
    content = tx.conn.execute(select(F.c.content).where(F.c.job_id == job.id, F.c.seq == int(seq))).scalar()
    if content is None:
        raise not_found("no such export file")
    return FhirResponse(200, content=content, media_type=NDJSON)


def _own_job(tx: Transaction, req: FhirRequest, target: list[str]):
    if target:
        raise bad_request("the export status and files are at the system level")
    job_id = dict(req.params).get("_jobId", "")
    job = tx.conn.execute(select(J).where(J.c.id == job_id[:36])).first()
    if job is None or job.client_id != tx.caller.client_id or job.status == "cancelled":
        raise not_found(f"no export job '{job_id[:36]}'")  # another client's job does not exist for you
    return job


# -- running an export --------------------------------------------------------------------------
class Exporter:
    """Runs exports in background threads of the server process that accepted them."""

    def __init__(self, repo: Repository, trail):
        self.repo = repo
        self.trail = trail

    def start(self, job_id: str) -> None:
        threading.Thread(target=self._run, args=(job_id,), name=f"export-{job_id[:8]}", daemon=True).start()

    def _run(self, job_id: str) -> None:
        if not self._claim(job_id):
            return
        engine = self.repo.engine
        with engine.connect() as conn:
            job = conn.execute(select(J).where(J.c.id == job_id)).first()
        caller = _caller_from(json.loads(job.caller))
        if "AuditEvent" in json.loads(job.types):
            self.trail.flush()  # the audit journal's events up to now, as resources
        try:
            patients = self._group_members(caller, job.group_id) if job.level == "group" else None
            exported_patients, sample, seq = set(), [], 0
            for rtype in json.loads(job.types):
                after, lines = "", []
                while True:
                    with self.repo.transaction(caller, write=False) as tx:
                        rows = tx.export_page(rtype, after, PAGE, job.transaction_time, job.since, patients,
                                              job.level != "system")
                    for row in rows:
                        lines.append(row.content)
                        if rtype == "Patient":
                            exported_patients.add(row.res_id)
                        elif len(sample) < audit.MAX_RESOURCE_ENTITIES:
                            sample.append((row.res_type, row.res_id, row.version_id))
                    if len(lines) >= FILE_LINES or (lines and len(rows) < PAGE):
                        seq += 1
                        if not self._write_file(job_id, seq, rtype, lines):
                            return  # cancelled meanwhile
                        lines = []
                    if len(rows) < PAGE:
                        break
                    after = rows[-1].res_id
                self._progress(job_id, f"{rtype} done")
            with engine.connect().execution_options(write=True) as conn, conn.begin():
                done = conn.execute(update(J).where(J.c.id == job_id, J.c.status == "in-progress").values(
                    status="completed", finished=utcnow(), progress="completed")).rowcount
            if done:
                self.trail.record_later(audit.Interaction(
                    caller, "operation", "GET", job.request, 200, operation="$export",
                    outcome_text=f"bulk export {job_id} completed", resources=sample,
                    patients=sorted(exported_patients)))
        except Exception as exc:  # noqa: BLE001 - the job reports it; the server goes on
            log.exception("export %s failed", job_id)
            with engine.connect().execution_options(write=True) as conn, conn.begin():
                conn.execute(update(J).where(J.c.id == job_id).values(
                    status="failed", finished=utcnow(), error=f"{type(exc).__name__}: {exc}"[:2000]))

    def _claim(self, job_id: str) -> bool:
        """Wait for the kick-off to commit, then take the job (once, whichever process asks first)."""
        for _ in range(600):  # up to 30 s for the kick-off's transaction to commit
            with self.repo.engine.connect().execution_options(write=True) as conn, conn.begin():
                taken = conn.execute(update(J).where(J.c.id == job_id, J.c.status == "accepted").values(
                    status="in-progress", progress="started")).rowcount
                exists = conn.execute(select(func.count()).select_from(J).where(J.c.id == job_id)).scalar_one()
            if taken:
                return True
            if exists:
                return False  # taken by another, or cancelled
            time.sleep(0.05)
        return False

    def _write_file(self, job_id: str, seq: int, rtype: str, lines: list[bytes]) -> bool:
        with self.repo.engine.connect().execution_options(write=True) as conn, conn.begin():
            status = conn.execute(select(J.c.status).where(J.c.id == job_id)).scalar()
            if status != "in-progress":
                return False
            conn.execute(insert(F).values(job_id=job_id, seq=seq, res_type=rtype, count=len(lines),
                                          content=b"\n".join(lines) + b"\n"))
            conn.execute(update(J).where(J.c.id == job_id).values(progress=f"{seq} file(s) written"))
        return True

    def _progress(self, job_id: str, text: str) -> None:
        with self.repo.engine.connect().execution_options(write=True) as conn, conn.begin():
            conn.execute(update(J).where(J.c.id == job_id).values(progress=text[:200]))

    def _group_members(self, caller: Caller, group_id: str) -> list[str]:
        with self.repo.transaction(caller, write=False) as tx:
            group = tx.read("Group", group_id).resource()
        members = []
        for member in group.get("member") or []:
            ref = ((member or {}).get("entity") or {}).get("reference") or ""
            if "Patient/" in ref:
                members.append(ref.rsplit("Patient/", 1)[1].split("/", 1)[0])
        return members


def _caller_json(caller: Caller) -> dict:
    return {"client_id": caller.client_id, "organisation": caller.organisation, "role": caller.role,
            "scopes": sorted(caller.scopes), "serves": sorted(caller.serves), "user": caller.user}


def _caller_from(data: dict) -> Caller:
    return Caller(client_id=data["client_id"], organisation=data.get("organisation"), role=data.get("role"),
                  scopes=frozenset(data.get("scopes") or ()), serves=frozenset(data.get("serves") or ()),
                  user=data.get("user"))
