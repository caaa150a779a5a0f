"""How long `$evaluate-measure` takes for every published Measure over a large population.

    /path/to/venv/bin/python bench/measures.py                                  # 100,000 children, both backends
    /path/to/venv/bin/python bench/measures.py --backend sqlite --children 10000 --runs 3

For each backend: a throwaway database with the adapter's schema (`create_app`, which also
publishes profiles/measures/), the assessment facts and access rows of `--children` children
written in bulk (bench/kpi_population.py: the generator's stories, the rows the write path
would keep; loading them through the server would take hours), planner statistics refreshed as
the server does at start, then `Measure/[id]/$evaluate-measure?periodStart=&periodEnd=` for
every Measure in profiles/measures/ (so Measures added later are timed too; kpi_population.py
fills every facts table: kpi_assessment and kpi_oc2; OC2 rows fall on 31 March, so a month
without one times that Measure over no rows: `--month 2026-03`), through the
router in process (no HTTP), as the administrator (no restriction) and as the LA (LA-DEMO-1,
its access condition on every query), `--runs` timed runs each after one untimed. Printed
per Measure and caller: median wall and CPU (this process) ms, and the first group's initial
population (the LA sees its own children only); then the sum over all Measures, against the
target (issue 7: every measure for a month in under 5 s). Machine load (loadavg and the share
of both cores busy) is printed with each backend's timings: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import kpi_population  # noqa: E402
import run  # noqa: E402
from run import log  # noqa: E402

MEASURES = ROOT / "profiles" / "measures"
CHUNK = 1000          # children per worker task (and per INSERT batch)
TARGET_S = 5.0


def _busy() -> tuple[float, float]:
    """(busy, total) jiffies of the machine, from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [float(x) for x in fh.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure_ids() -> list[str]:
    return sorted(json.loads(p.read_text())["id"] for p in MEASURES.glob("Measure-*.json"))


def populate(engine, children: int, seed: int, workers: int) -> dict[str, int]:
    """Write the facts and access rows of `children` children; rows written per table."""
    from adapter.store.tables import assessment_fact_table
    from adapter.synth.settings import load_settings

    tables = assessment_fact_table.metadata.tables
    settings = load_settings()
    counts: dict[str, int] = {}
    chunks = [range(i, min(i + CHUNK, children)) for i in range(0, children, CHUNK)]
    with multiprocessing.get_context("fork").Pool(workers, kpi_population.init_worker, (seed, settings)) as pool:
        for rows in pool.imap(kpi_population.rows_of, chunks):
            with engine.begin() as conn:
                for name, batch in rows.items():
                    if batch:
                        conn.execute(tables[name].insert(), batch)
                        counts[name] = counts.get(name, 0) + len(batch)
    return counts


def _callers():
    from adapter.security.caller import Caller

    scopes = frozenset({"system/*.rs"})
    return {"admin": Caller(client_id="bench-admin", organisation="LAC-ADMIN", role="administrator", scopes=scopes),
            "la": Caller(client_id="bench-la", organisation=kpi_population.HOME_LA_ORG, role="local-authority",
                         serves=frozenset({kpi_population.HOME_LA_ORG, "991"}), scopes=scopes)}


def time_measures(router, start: date, end: date, runs: int) -> list[dict]:
    from adapter.rest.messages import FhirRequest

    params = [("periodStart", start.isoformat()), ("periodEnd", end.isoformat())]
    out = []
    for mid in measure_ids():
        req = FhirRequest("GET", ["Measure", mid, "$evaluate-measure"], params=params)
        row: dict = {"measure": mid}
        for who, caller in _callers().items():
            walls, cpus = [], []
            for i in range(runs + 1):
                c0, w0 = time.process_time(), time.perf_counter()
                resp = router.handle(caller, req, "http://127.0.0.1/fhir")
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                if resp.status != 200:   # reported, and the other Measures still timed
                    log(f"{mid} as {who}: {resp.status} {json.dumps(resp.resource)[:500]}")
                    break
                if i:
                    walls.append(wall * 1000)
                    cpus.append(cpu * 1000)
            if resp.status != 200:
                row[who] = {"wall_ms": None, "cpu_ms": None, "max_ms": None, "initial_population": None,
                            "error": resp.status}
                continue
            group = (resp.resource.get("group") or [{}])[0]
            initial = next((p["count"] for p in group.get("population") or []
                            if p["code"]["coding"][0]["code"] == "initial-population"), None)
            row[who] = {"wall_ms": round(statistics.median(walls), 1), "cpu_ms": round(statistics.median(cpus), 1),
                        "max_ms": round(max(walls), 1), "initial_population": initial}
        out.append(row)
    return out


def bench_backend(backend: str, admin_url: str, children: int, seed: int, workers: int, start: date, end: date,
                  runs: int) -> dict:
    from adapter.api.app import create_app
    from adapter.config import load_settings
    from adapter.store.database import refresh_statistics

    with run.database(backend, admin_url, suffix="_measures") as db:
        app = create_app(load_settings(database_url=db["url"]))
        router, engine = app.state.router, app.state.engine
        log(f"{backend}: writing the facts of {children:,} children")
        t0 = time.perf_counter()
        counts = populate(engine, children, seed, workers)
        populated = time.perf_counter() - t0
        refresh_statistics(engine)   # as the server does at start (and every 5,000 writes)
        log(f"{backend}: {counts} in {populated:.1f} s; timing {len(measure_ids())} Measures")
        load0, (busy0, total0) = _load(), _busy()
        rows = time_measures(router, start, end, runs)
        busy1, total1 = _busy()
        result = {"backend": backend, "children": children, "rows": counts, "populate_s": round(populated, 1),
                  "period": [start.isoformat(), end.isoformat()], "runs": runs, "measures": rows,
                  "loadavg_before": load0, "loadavg_after": _load(),
                  "machine_busy_pct": round(100 * (busy1 - busy0) / max(total1 - total0, 1), 1),
                  "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                  "database": db["url"].split(":", 1)[0]}
        for who in ("admin", "la"):
            result[f"total_{who}_ms"] = round(sum(r[who]["wall_ms"] or 0 for r in rows), 1)
        router.trail.close()  # store the evaluations' audit events before the database is dropped
        engine.dispose()
        return result


def print_result(r: dict) -> None:
    print(f"\n{r['backend']}: {r['children']:,} children, {r['rows'].get('kpi_assessment', 0):,} facts rows, "
          f"period {r['period'][0]}..{r['period'][1]}, median of {r['runs']} runs; loadavg {r['loadavg_before']} -> "
          f"{r['loadavg_after']}, machine {r['machine_busy_pct']}% busy ({r['date']})")
    print("| Measure | admin wall ms | admin CPU ms | admin initial pop. | LA wall ms | LA CPU ms | LA initial pop. |")
    print("|---|---|---|---|---|---|---|")
    for m in r["measures"]:
        a, la = m["admin"], m["la"]
        print(f"| `{m['measure']}` | {a['wall_ms']} | {a['cpu_ms']} | {a['initial_population']} | {la['wall_ms']} | "
              f"{la['cpu_ms']} | {la['initial_population']} |")
    for who in ("admin", "la"):
        total = r[f"total_{who}_ms"] / 1000
        print(f"all Measures as {who}: {total:.2f} s (target {TARGET_S:.0f} s: {'met' if total < TARGET_S else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--month", default="2026-10", help="the period, a month YYYY-MM (default 2026-10)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="processes drawing the children (0: one per CPU)")
    parser.add_argument("--postgres-admin-url", default=os.environ.get(
        "ADAPTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from adapter.rest.measure_ops import parse_period_date

    start = parse_period_date(args.month, "month", end=False)
    end = parse_period_date(args.month, "month", end=True)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        result = bench_backend(backend, args.postgres_admin_url, args.children, args.seed,
                               args.workers or os.cpu_count() or 1, start, end, args.runs)
        print_result(result)
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
