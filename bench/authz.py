#!/usr/bin/env python3
"""What authorisation and audit cost per request, on SQLite and PostgreSQL.

Run by hand (never by the test suite), from the project root:

    python bench/authz.py [--backend sqlite|postgresql|both] [--children 2000] [--duration 5]

1. Over HTTP: the real server (`lac-adapter serve --dev`, a subprocess) on a throwaway database
   holding --children children looked after by LA-DEMO-1 (each a Patient, an EpisodeOfCare
   managed by the LA, a body-weight Observation, a RelatedPerson and an information-sharing
   Consent) and --other-children looked after by LA-OTHER-2 (so the access condition has records
   to leave out). wrk runs read Patient/{id}, read Observation/{id}, Observation?subject=Patient/{id}
   and create Observation at 1 and 8 connections, once as the administrator (`dev-admin-token`:
   no access condition) and once as the LA (`dev-la-token`: the access condition on every query),
   always about the LA's own children, so both callers get the same answers.
2. In process (no HTTP): the same interactions through `router.handle` on a second throwaway
   database, as administrator and as LA, each with the real AuditTrail and with a no-op trail in
   its place (in this process only): the difference is the cost of the audit record (for writes:
   the AuditEvent and Provenance in the write's transaction; for reads: putting the event on the
   queue, plus the background batch, measured as the time of `flush()` of the queued events
   divided by their number).

Results go to docs/performance.md, section "Authorisation and audit" (one result per backend,
kept in the page; the other sections and the hand-written notes are kept). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
import run  # noqa: E402
from run import log  # noqa: E402

ADMIN_TOKEN = "dev-admin-token"   # config/adapter.toml: LAC-ADMIN, administrator
LA_TOKEN = "dev-la-token"         # config/adapter.toml: LA-DEMO-1, local-authority, system/*.cruds
LA = "LA-DEMO-1"
OTHER_LA = "LA-OTHER-2"
LA_SYSTEM = "https://lac-fhir-adapter.example/fhir/Id/local-authority"
NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
BASE = "https://lac-fhir-adapter.example/fhir/"
CHILDREN_PER_BUNDLE = 20
INTERACTIONS = [
    ("read_patient", "read `Patient/{id}`"),
    ("read_observation", "read `Observation/{id}`"),
    ("search", "search `Observation?subject=Patient/{id}`"),
    ("create", "create `Observation`"),
]


# ---------------------------------------------------------------------------------------
# the population

def nhs_numbers(start: int):
    """Valid 999-range NHS numbers (modulus 11) from the nine-digit `start` on."""
    n = start
    while True:
        stem = str(n)
        check = 11 - sum(int(d) * w for d, w in zip(stem, range(10, 1, -1))) % 11
        check = 0 if check == 11 else check
        if check != 10:
            yield stem + str(check)
        n += 1


def org_bundle() -> dict:
    entries = []
    for code in (LA, OTHER_LA):
        entries.append({"resource": {"resourceType": "Organization", "name": f"Bench {code}",
                                     "identifier": [{"system": LA_SYSTEM, "value": code}]},
                        "request": {"method": "POST", "url": "Organization",
                                    "ifNoneExist": f"identifier={LA_SYSTEM}|{code}"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def observation(patient_ref: str, rng: random.Random) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
            "subject": {"reference": patient_ref},
            "effectiveDateTime": f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}",
            "valueQuantity": {"value": rng.randint(12, 80), "unit": "kg", "system": "http://unitsofmeasure.org",
                              "code": "kg"}}


def consent(patient_ref: str, performer_ref: str) -> dict:
    """An information-sharing Consent given by a parent (the shape of tests/security/population.py)."""
    when = "2026-09-01"
    return {
        "resourceType": "Consent",
        "meta": {"profile": [BASE + "StructureDefinition/lac-consent"]},
        "extension": [{"url": BASE + "StructureDefinition/lac-consent-grantor",
                       "valueCoding": {"system": BASE + "CodeSystem/lac-consent-grantor", "code": "parent-with-pr"}}],
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient_ref},
        "dateTime": when,
        "performer": [{"reference": performer_ref}],
        "provision": {"type": "permit", "period": {"start": when},
                      "purpose": [{"system": BASE + "CodeSystem/lac-consent-purpose", "code": "information-sharing"}]},
    }


PER_CHILD = ("Patient", "EpisodeOfCare", "Observation", "RelatedPerson", "Consent")


def child_bundles(n: int, la_org_id: str, nhs, rng: random.Random, tag: str) -> list[dict]:
    """Transaction Bundles of CHILDREN_PER_BUNDLE children each (PER_CHILD resources a child)."""
    bundles = []
    for start in range(0, n, CHILDREN_PER_BUNDLE):
        entries = []
        for _ in range(min(CHILDREN_PER_BUNDLE, n - start)):
            ids = {t: f"urn:uuid:{uuid.uuid4()}" for t in PER_CHILD}
            pref = ids["Patient"]
            resources = {
                "Patient": {"resourceType": "Patient", "identifier": [{"system": NHS_SYSTEM, "value": next(nhs)}],
                            "name": [{"family": f"Authz{tag}{rng.randrange(10**6)}", "given": ["Sam"]}],
                            "gender": rng.choice(["female", "male"]),
                            "birthDate": f"20{rng.randint(10, 20)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"},
                "EpisodeOfCare": {"resourceType": "EpisodeOfCare", "status": "active", "patient": {"reference": pref},
                                  "managingOrganization": {"reference": f"Organization/{la_org_id}"}},
                "Observation": observation(pref, rng),
                "RelatedPerson": {"resourceType": "RelatedPerson", "patient": {"reference": pref},
                                  "name": [{"family": "Parent"}]},
                "Consent": consent(pref, ids["RelatedPerson"]),
            }
            for rtype in PER_CHILD:
                entries.append({"fullUrl": ids[rtype], "resource": resources[rtype],
                                "request": {"method": "POST", "url": rtype}})
        bundles.append({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return bundles


def _id_of(location: str, rtype: str) -> str:
    part = location.split(f"{rtype}/", 1)[1]
    return part.split("/", 1)[0]


def ids_from_response(resp: dict) -> list[dict[str, str]]:
    """{type: id} per child, from a transaction-response Bundle (entries in request order)."""
    out = []
    entries = resp["entry"]
    for i in range(0, len(entries), len(PER_CHILD)):
        out.append({t: _id_of(entries[i + k]["response"]["location"], t) for k, t in enumerate(PER_CHILD)})
    return out


# ---------------------------------------------------------------------------------------
# 1. over HTTP

def load_http(server: run.Server, children: int, others: int, clients: int = 3) -> tuple[list[dict], list[dict]]:
    client = run.Client(server.port, token=ADMIN_TOKEN)
    status, data = client.request("POST", "/fhir", run.dumps(org_bundle()))
    if status != 200:
        raise RuntimeError(f"organisation bundle failed: {status} {data[:500]!r}")
    orgs = [_id_of(e["response"]["location"], "Organization") for e in json.loads(data)["entry"]]
    client.close()
    rng = random.Random(20261123)
    nhs = nhs_numbers(999_700_000)
    work = [(True, b) for b in child_bundles(children, orgs[0], nhs, rng, "A")]
    work += [(False, b) for b in child_bundles(others, orgs[1], nhs, rng, "B")]
    local = threading.local()

    def post(item: tuple[bool, dict]) -> tuple[bool, list[dict]]:
        mine, bundle = item
        if not hasattr(local, "client"):
            local.client = run.Client(server.port, token=ADMIN_TOKEN)
        status, data = local.client.request("POST", "/fhir", run.dumps(bundle))
        if status != 200:
            raise RuntimeError(f"population bundle failed: {status} {data[:800]!r}")
        return mine, ids_from_response(json.loads(data))

    t0 = time.perf_counter()
    ours, theirs = [], []
    pool = ThreadPoolExecutor(clients)
    try:
        for mine, ids in pool.map(post, work):
            (ours if mine else theirs).extend(ids)
    finally:  # on an error or Ctrl-C/kill, do not post the Bundles still queued
        pool.shutdown(wait=True, cancel_futures=True)
    n = (len(ours) + len(theirs)) * len(PER_CHILD)
    log(f"loaded {len(ours)} + {len(theirs)} children ({n} resources) in {time.perf_counter() - t0:.0f} s")
    return ours, theirs


def check_access(server: run.Server, ours: list[dict], theirs: list[dict]) -> dict:
    """The LA sees its own children's records (the consent makes the Observation visible) and not
    the other LA's: the restricted runs below answer like the administrator's."""
    la = run.Client(server.port, token=LA_TOKEN)
    out = {
        "la_reads_own_patient": la.request("GET", f"/fhir/Patient/{ours[0]['Patient']}")[0],
        "la_reads_own_observation": la.request("GET", f"/fhir/Observation/{ours[0]['Observation']}")[0],
        "la_reads_other_la_patient": la.request("GET", f"/fhir/Patient/{theirs[0]['Patient']}")[0] if theirs else None,
    }
    status, body = la.get_json(f"/fhir/Observation?subject=Patient/{ours[0]['Patient']}")
    out["la_search_own_entries"] = len(body.get("entry", [])) if status == 200 else f"HTTP {status}"
    status, body = la.get_json("/fhir/Patient?_summary=count")
    out["la_patient_count"] = body.get("total") if status == 200 else f"HTTP {status}"
    la.close()
    ok = (out["la_reads_own_patient"] == 200 and out["la_reads_own_observation"] == 200
          and out["la_reads_other_la_patient"] in (404, None) and out["la_search_own_entries"] == 1)
    out["ok"] = ok
    log(f"access check: {out}")
    if not ok:
        raise RuntimeError(f"the LA does not see what it should: {out}")
    return out


def drain(server: run.Server, pg_db: str | None, idle_pct: float = 10.0, limit_s: float = 300.0) -> dict:
    """Wait until the server (and its PostgreSQL backends) stop working after a run: seconds
    waited and the CPU seconds the server spent meanwhile (storing queued audit events)."""
    def cpu() -> float:
        total = sum(run.tree_cpu_seconds(server.pid).values())
        if pg_db:
            total += sum(run.proc_cpu_seconds(p) for p in run.postgres_pids(pg_db))
        return total

    t0, c0 = time.monotonic(), cpu()
    while time.monotonic() - t0 < limit_s:
        a = cpu()
        time.sleep(0.5)
        if 100 * (cpu() - a) / 0.5 < idle_pct:
            break
    waited = time.monotonic() - t0
    return {"s": round(max(0.0, waited - 0.5), 2), "cpu_s": round(cpu() - c0, 2)}


def http_series(server: run.Server, workdir: Path, ours: list[dict], levels: list[int], duration: float,
                warmup: float, pg_db: str | None) -> list[dict]:
    files = {
        "read_patient": [f"Patient/{c['Patient']}" for c in ours],
        "read_observation": [f"Observation/{c['Observation']}" for c in ours],
        "search": [f"Observation?subject=Patient/{c['Patient']}" for c in ours],
        "create": [c["Patient"] for c in ours],
    }
    paths = {}
    for key, lines in files.items():
        paths[key] = workdir / f"{key}.txt"
        paths[key].write_text("\n".join(lines) + "\n")

    def wrk(key: str, token: str, conns: int, seconds: float) -> dict:
        if key == "create":
            res = run.run_wrk(server, "create_observation.lua", "/fhir/Observation", conns, seconds,
                              [str(paths[key])], pg_db, token=token)
        else:
            res = run.run_wrk(server, "paths.lua", "/fhir", conns, seconds, [str(paths[key])], pg_db, token=token)
        # The read events of the run are still queued in the server: let its background batches
        # store them before the next run (and say how long that took: the audit trail's backlog).
        res["drain"] = drain(server, pg_db)
        return res

    if warmup > 0:
        for key, _label in INTERACTIONS:
            for token in (ADMIN_TOKEN, LA_TOKEN):
                wrk(key, token, 4, warmup)
    out = []
    for key, label in INTERACTIONS:
        for i, conns in enumerate(levels):
            row = {"key": key, "label": label, "connections": conns}
            # alternate which caller goes first, so drift does not always fall on the same one
            order = [("admin", ADMIN_TOKEN), ("la", LA_TOKEN)]
            if i % 2:
                order.reverse()
            for who, token in order:
                res = run.measured(lambda k=key, t=token, c=conns: wrk(k, t, c, duration), f"{key} {who} c={conns}")
                if res["non_2xx"] or any(res["errors"].values()):
                    log(f"  WARNING: {key} {who} c={conns}: {res['non_2xx']} non-2xx answers, errors {res['errors']}")
                row[who] = res
            a, b = row["admin"], row["la"]
            log(f"  {key} c={conns}: admin {a['req_per_s']:.0f} req/s p50 {a['p50_ms']:.2f} p95 {a['p95_ms']:.2f} ms"
                f" (then {a['drain']['s']:.1f} s storing audit) | LA {b['req_per_s']:.0f} req/s p50 {b['p50_ms']:.2f}"
                f" p95 {b['p95_ms']:.2f} ms (then {b['drain']['s']:.1f} s)")
            out.append(row)
    return out


# ---------------------------------------------------------------------------------------
# 2. in process

class NoAudit:
    """Stands in for AuditTrail (bench only): the same methods, recording nothing."""

    def record_write(self, tx, event) -> None:
        pass

    def record_later(self, event) -> None:
        pass

    def flush(self) -> int:
        return 0

    def close(self) -> None:
        pass


def _pcts(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": run.percentile(ms, 50), "p95_ms": run.percentile(ms, 95),
            "mean_ms": statistics.fmean(ms)}


def inprocess(backend: str, admin_url: str, children: int, others: int, runs: int) -> dict:
    from adapter.api.app import create_app
    from adapter.config import load_settings
    from adapter.fhir import jsonio
    from adapter.rest.audit import AuditTrail
    from adapter.rest.messages import FhirRequest
    from adapter.security.caller import Caller

    scopes = frozenset({"system/*.cruds"})
    callers = {"admin": Caller(client_id="bench-admin", organisation="LAC-ADMIN", role="administrator", scopes=scopes),
               "la": Caller(client_id="bench-la", organisation=LA, role="local-authority", scopes=scopes)}
    base = "http://127.0.0.1/fhir"
    out: dict = {"children": children, "other_children": others, "runs": runs}
    with run.database(backend, admin_url, suffix="_authz") as db:
        app = create_app(load_settings(database_url=db["url"]))
        router = app.state.router
        served_trail = router.trail
        try:
            resp = router.handle(callers["admin"], FhirRequest("POST", [], body=org_bundle()), base)
            assert resp.status == 200, resp.status
            orgs = [_id_of(e["response"]["location"], "Organization") for e in resp.resource["entry"]]
            rng = random.Random(7)
            nhs = nhs_numbers(999_600_000)
            ours = []
            t0 = time.perf_counter()
            for mine, org in ((True, orgs[0]), (False, orgs[1])):
                for bundle in child_bundles(children if mine else others, org, nhs, rng, "I"):
                    body = jsonio.loads(run.dumps(bundle))
                    resp = router.handle(callers["admin"], FhirRequest("POST", [], body=body), base)
                    assert resp.status == 200, resp.status
                    if mine:
                        ours.extend(ids_from_response(resp.resource))
            served_trail.flush()
            log(f"  in-process population: {children} + {others} children in {time.perf_counter() - t0:.0f} s")
            if "analyze" in db:
                db["analyze"]()  # as the served database gets (PRAGMA optimize / ANALYZE at start, autovacuum)

            # the real trail, its background thread off so that the batch cost can be timed apart
            audited = AuditTrail(router.repo)
            audited._ensure_thread = lambda: None  # this instance only: flush() is called below
            trails = {"noaudit": NoAudit(), "audited": audited}
            combos = [(who, t) for who in callers for t in trails]

            def request(key: str) -> FhirRequest:
                child = rng.choice(ours)
                if key == "read_patient":
                    return FhirRequest("GET", ["Patient", child["Patient"]])
                if key == "read_observation":
                    return FhirRequest("GET", ["Observation", child["Observation"]])
                if key == "search":
                    return FhirRequest("GET", ["Observation"], params=[("subject", f"Patient/{child['Patient']}")])
                body = jsonio.loads(run.dumps(observation(f"Patient/{child['Patient']}", rng)))
                return FhirRequest("POST", ["Observation"], body=body, content_type="application/fhir+json")

            run.settle()
            for key, label in INTERACTIONS:
                times: dict[tuple[str, str], list[float]] = {c: [] for c in combos}
                cpu: dict[tuple[str, str], float] = {c: 0.0 for c in combos}
                flush_s, flushed = 0.0, 0
                n = runs if key != "create" else max(runs // 2, 1)
                for i in range(n + 10):  # the first 10 rounds warm up
                    order = combos if i % 2 == 0 else combos[::-1]
                    for who, t in order:
                        req = request(key)
                        router.trail = trails[t]
                        c0, t0 = time.process_time(), time.perf_counter()
                        resp = router.handle(callers[who], req, base)
                        if resp.resource is not None:
                            jsonio.dumps(resp.resource)
                        dt, dc = time.perf_counter() - t0, time.process_time() - c0
                        router.trail = served_trail
                        if resp.status not in (200, 201):
                            raise RuntimeError(f"{key} as {who}: HTTP {resp.status}")
                        if i >= 10:
                            times[(who, t)].append(dt)
                            cpu[(who, t)] += dc
                    if i % 50 == 49 or i == n + 9:
                        t0 = time.perf_counter()
                        stored = audited.flush()
                        if i >= 10:
                            flush_s += time.perf_counter() - t0
                            flushed += stored
                row = {"key": key, "label": label, "n": n}
                for (who, t), ts in times.items():
                    row[f"{who}_{t}"] = _pcts(ts) | {"cpu_ms": 1000 * cpu[(who, t)] / len(ts)}
                if key != "create":
                    row["flush_ms_per_event"] = 1000 * flush_s / flushed if flushed else None
                    row["flushed_events"] = flushed
                out.setdefault("rows", []).append(row)
                log(f"  in-process {key}: " + ", ".join(f"{c} p50 {row[c]['p50_ms']:.2f} ms" for c in
                                                       ("admin_noaudit", "la_noaudit", "admin_audited", "la_audited"))
                    + (f", batch {row['flush_ms_per_event']:.3f} ms/event" if row.get("flush_ms_per_event") else ""))
            out["plans"] = query_plans(backend, router, callers, ours, base)
        finally:
            router.trail = served_trail
            served_trail.close()
            app.state.engine.dispose()
    return out


def query_plans(backend: str, router, callers: dict, ours: list[dict], base: str) -> dict:
    """The SQL of the LA's search and read, captured as they run, and the database's plan of it."""
    from sqlalchemy import event

    from adapter.rest.messages import FhirRequest

    engine = router.repo.engine if hasattr(router.repo, "engine") else None
    if engine is None:
        return {"error": "no engine on the repository"}
    captured: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            captured.append((statement, parameters))

    out = {}
    child = ours[len(ours) // 2]
    for key, req in (("read_patient", FhirRequest("GET", ["Patient", child["Patient"]])),
                     ("search", FhirRequest("GET", ["Observation"], params=[("subject", f"Patient/{child['Patient']}")])),
                     ("read_observation", FhirRequest("GET", ["Observation", child["Observation"]]))):
        for who in ("admin", "la"):
            captured.clear()
            event.listen(engine, "before_cursor_execute", grab)
            try:
                router.handle(callers[who], req, base)
            finally:
                event.remove(engine, "before_cursor_execute", grab)
            stmts = list(captured)
            plans = []
            for statement, params in stmts:
                explain = ("EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) ")
                try:
                    with engine.connect() as conn:
                        raw = conn.connection.dbapi_connection if hasattr(conn.connection, "dbapi_connection") \
                            else conn.connection
                        cur = raw.cursor()
                        cur.execute(explain + statement, params)
                        rows = cur.fetchall()
                        cur.close()
                        conn.rollback()
                    if backend == "sqlite":
                        plan = "\n".join(f"{r[0]}|{r[1]}| {r[3]}" for r in rows)
                    else:
                        plan = "\n".join(r[0] for r in rows)
                except Exception as exc:  # a diagnostic: say what failed and go on
                    plan = f"(EXPLAIN failed: {type(exc).__name__}: {exc})"
                plans.append({"sql": statement, "params": repr(params)[:500], "plan": plan})
            out[f"{key}_{who}"] = plans
    return out


# ---------------------------------------------------------------------------------------

def run_backend(backend: str, args: argparse.Namespace) -> dict:
    log(f"=== {backend} ===")
    result: dict = {"backend": backend, "machine": run.machine_facts(),
                    "settings": {"children": args.children, "other_children": args.other_children,
                                 "duration_s": args.duration, "connections": args.connections,
                                 "inprocess_children": args.inprocess_children, "runs": args.runs,
                                 "tokens": {"admin": ADMIN_TOKEN, "la": LA_TOKEN}}}
    if backend == "sqlite":
        result["machine"]["database"] = f"SQLite {run.sqlite_version()} (WAL), file on local disk"
    else:
        import psycopg

        with psycopg.connect(run._libpq(args.postgres_admin_url)) as c:
            result["machine"]["database"] = c.execute("SELECT version()").fetchone()[0].split(" on ")[0]
    workdir = Path(tempfile.mkdtemp(prefix="lac_bench_authz_"))
    try:
        if not args.skip_http:
            with run.database(backend, args.postgres_admin_url) as db:
                pg_db = db.get("name")
                run.PG_SESSIONS[0] = None
                server = run.Server(db["url"], workdir / "server.log")
                server.start()
                log(f"server pid {server.pid} at {server.url}")
                try:
                    ours, theirs = load_http(server, args.children, args.other_children)
                    if db.get("autovacuum") and db["autovacuum"]() != "on":
                        db["analyze"]()
                        result["postgres_analyze"] = "autovacuum is off: ANALYZE after loading"
                    result["access_check"] = check_access(server, ours, theirs)
                    result["http"] = http_series(server, workdir, ours, args.connections, args.duration,
                                                 args.warmup, pg_db)
                finally:
                    server.stop()
        if args.runs > 0:
            log("in process ...")
            result["inprocess"] = inprocess(backend, args.postgres_admin_url, args.inprocess_children,
                                            args.inprocess_children, args.runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--children", type=int, default=2000, help="children of LA-DEMO-1 (the LA's caseload)")
    parser.add_argument("--other-children", type=int, default=2000, help="children of another LA")
    parser.add_argument("--duration", type=float, default=5, help="seconds of each wrk run")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of wrk warm-up per interaction and caller")
    parser.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--inprocess-children", type=int, default=2000,
                        help="children of each LA in the in-process database; default 2000")
    parser.add_argument("--runs", type=int, default=300,
                        help="in-process timed calls per interaction, caller and trail (creates: half); 0: skip")
    parser.add_argument("--skip-http", action="store_true", help="only the in-process measurement")
    parser.add_argument("--postgres-admin-url", default=run.DEFAULT_PG_ADMIN)
    parser.add_argument("--quiet-wait", type=float, default=300)
    parser.add_argument("--quiet-threshold", type=float, default=20)
    parser.add_argument("--max-other", type=float, default=25)
    parser.add_argument("--attempts", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/performance.md")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run.QUIET.update(limit_s=args.quiet_wait, threshold_pct=args.quiet_threshold)
    run.RETRY.update(attempts=max(1, args.attempts), max_other_pct=args.max_other)
    if not args.skip_http and not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        res = run_backend(backend, args)
        for line in report.authz_tables(res):
            print(line)
        if args.json:
            path = args.json if len(backends) == 1 else args.json.with_name(f"{args.json.stem}-{backend}.json")
            path.write_text(json.dumps(res, indent=1, default=str))
        if not args.no_report:
            report.update(args.output, f"authz-{backend}", res)
            log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
