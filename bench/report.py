"""docs/performance.md from bench/run.py's results.

Each backend's raw results are kept in the document itself (an HTML comment at the end), so
running one backend replaces its own numbers and keeps the other's; the whole page is then
written again from those results. Only the text between the `notes` markers is written by
hand, and it is kept as it is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
ORDER = ["sqlite", "postgresql"]
READ_TARGET_MS = 20.0
INGEST_TARGET = 500.0
RESULT_RE = re.compile(r"<!-- bench-result ([\w-]+) (\{.*?\}) -->", re.S)
NOTES_START, NOTES_END = "<!-- notes:start -->", "<!-- notes:end -->"
DEFAULT_NOTES = "(Hand-written observations go here; bench/run.py keeps this section as it is.)"


def title(key: str) -> str:
    backend, _, workers = key.partition("-workers")
    return NAMES.get(backend, backend) + (f" ({workers} server processes)" if workers else "")


def parse(text: str) -> tuple[dict, str]:
    results = {m.group(1): json.loads(m.group(2)) for m in RESULT_RE.finditer(text)}
    notes = DEFAULT_NOTES
    if NOTES_START in text and NOTES_END in text:
        notes = text.split(NOTES_START, 1)[1].split(NOTES_END, 1)[0].strip("\n")
    return results, notes


def update(path: Path, backend: str, result: dict) -> None:
    text = path.read_text() if path.exists() else ""
    results, notes = parse(text)
    results[backend] = json.loads(json.dumps(result, default=str))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results, notes))


# ---------------------------------------------------------------------------------------

def _f(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)) and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = [_row(header), _row(["---"] * len(header))]
    out += [_row(r) for r in rows]
    return out


def _by_conns(series: list[dict], conns: int) -> dict | None:
    return next((r for r in series if r["connections"] == conns), None)


def _top(series: list[dict]) -> dict:
    return max(series, key=lambda r: r["connections"])


def _search(r: dict, key: str) -> dict | None:
    return next((s for s in r.get("search", []) if s["key"] == key), None)


def _errors(res: dict) -> str:
    e = res["errors"]
    other = e["connect_errors"] + e["read_errors"] + e["write_errors"] + e["timeouts"]
    text = str(res["non_2xx"])
    return text + (f" (+{other} socket/timeouts)" if other else "")


def _cpu(cpu: dict) -> str:
    out = f"{cpu['server_cpu_pct']:.0f}"
    if "postgres_cpu_pct" in cpu:
        out += f" / {cpu['postgres_cpu_pct']:.0f}"
    out += f" / {cpu['wrk_cpu_pct'] + cpu['client_cpu_pct']:.0f}"
    out += f" / {cpu.get('other_cpu_pct', float('nan')):.0f}"
    if "unattributed_cpu_pct" in cpu:
        out += f" / {cpu['unattributed_cpu_pct']:.0f}"
    return out


def _cpu_head(cpu: dict) -> str:
    head = "CPU % server / PostgreSQL / load gen. / other" if "postgres_cpu_pct" in cpu else \
        "CPU % server / load gen. / other"
    return head + (" / unattributed" if "unattributed_cpu_pct" in cpu else "")


def _other_note(cpu: dict) -> str:
    other = cpu.get("other_cpu_pct", 0)
    return (f" (Other work on the machine took {other:.0f}% of a core during this measurement, "
            "which counts against these numbers.)" if other >= 20 else "")


# ---------------------------------------------------------------------------------------

def render(results: dict, notes: str) -> str:
    def order(key: str) -> tuple:
        backend, _, workers = key.partition("-workers")
        return (int(workers or 1), ORDER.index(backend) if backend in ORDER else 99, key)

    # bench/authz.py's results ("authz-<backend>") have a section of their own
    authz = {k: v for k, v in results.items() if k.startswith("authz-")}
    backends = sorted((k for k in results if k not in authz), key=order)
    out: list[str] = [
        "# Performance",
        "",
        "Measured with `bench/run.py` (how to run it and what it needs: `bench/README.md`). This page is",
        "written by that script from its last run on each backend; rerunning one backend replaces that",
        "backend's numbers and keeps the other's. Only the *Notes* section is written by hand.",
        "",
        "Everything runs on one machine: the server (**one uvicorn process**, `lac-adapter serve`), the",
        "database, and the load generators (wrk, and Python client threads for ingest and search) share",
        "the same cores over loopback, so the numbers are a floor for a server with a machine of its own.",
        "",
    ]
    out += _summary(results, backends)
    out += ["", "## Against the targets", "",
            f"Targets on this 2-core machine: read p95 under {READ_TARGET_MS:.0f} ms at 32 clients; ingest of "
            f"typical 1–3 KB resources at {INGEST_TARGET:.0f} resources/s or more through transaction Bundles.", ""]
    for b in backends:
        out += _against(b, results[b]) + [""]
    out += ["## Notes", "", NOTES_START, notes, NOTES_END, ""]
    out += _method(results, backends)
    out += _write_time(results, backends)
    out += _authz_section(authz)
    for b in backends:
        out += _details(b, results[b])
    out += ["", "<!-- Raw results, read back by bench/report.py: do not edit. -->"]
    for b in [*backends, *sorted(authz, key=lambda k: order(k.removeprefix("authz-")))]:
        blob = json.dumps(results[b], sort_keys=True, separators=(",", ":")).replace("--", "-\\u002d")
        out.append(f"<!-- bench-result {b} {blob} -->")
    return "\n".join(out) + "\n"


def _summary(results: dict, backends: list[str]) -> list[str]:
    header = [""] + [title(b) for b in backends]
    rows = []

    def add(label: str, fn):
        cells = []
        for b in backends:
            try:
                cells.append(fn(results[b]))
            except (KeyError, TypeError, ValueError, AttributeError):
                cells.append("–")
        rows.append([label] + cells)

    def levels(r: dict, kind: str, key: str) -> str:
        return " / ".join(_f(x[key], 1 if key != "req_per_s" else 0) for x in r[kind])

    conns = "/".join(str(c) for c in next(iter(results.values()))["settings"]["connections"])
    add("run (UTC)", lambda r: r["machine"]["date"])
    add("resources stored (after ingest / when searched)",
        lambda r: f"{r['ingest']['stored_after']:,} / {sum(r['stored_at_search'].values()):,}")
    add("**ingest**, resources/s (transaction Bundles)", lambda r: f"**{r['ingest']['resources_per_s']:.0f}**")
    add(f"create, req/s at {conns} clients", lambda r: levels(r, "create", "req_per_s"))
    add(f"create p95, ms at {conns} clients", lambda r: levels(r, "create", "p95_ms"))
    add(f"read, req/s at {conns} clients", lambda r: levels(r, "read", "req_per_s"))
    add(f"**read p95**, ms at {conns} clients", lambda r: levels(r, "read", "p95_ms"))
    add("search p95, ms: token / string / Task date / chained / `_include` / count",
        lambda r: " / ".join(_f(_search(r, k)["p95_ms"])
                             for k in ("token", "string", "task_date", "chain", "include", "count")))
    add("server peak RSS (VmHWM), MiB", lambda r: f"{r['server_memory_kb']['VmHWM'] / 1024:.0f}"
        + (f" (sum of {r['server_memory_kb']['processes']} processes)" if r['server_memory_kb'].get('processes', 1) > 1 else ""))
    return ["## Summary", ""] + _table(header, rows)


def _against(backend: str, r: dict) -> list[str]:
    name = title(backend)
    out = [f"**{name}**", ""]
    # -- reads
    read32 = _by_conns(r["read"], 32) or _top(r["read"])
    read1 = _by_conns(r["read"], 1)
    met = read32["p95_ms"] < READ_TARGET_MS
    cpu = read32["cpu"]
    text = (f"- Read p95 at {read32['connections']} clients: **{read32['p95_ms']:.1f} ms** "
            f"({read32['req_per_s']:.0f} req/s) — target under {READ_TARGET_MS:.0f} ms "
            f"**{'met' if met else 'not met'}**.")
    who = "The server process" if r.get("workers", 1) == 1 else f"The {r['workers']} server processes together"
    if not met:
        rps = read32["req_per_s"]
        text += (f" {who} used {cpu['server_cpu_pct']:.0f}% of one core during the run "
                 f"(machine {cpu['machine_busy_pct']:.0f}% busy, wrk {cpu['wrk_cpu_pct']:.0f}% of a core")
        text += f", PostgreSQL {cpu['postgres_cpu_pct']:.0f}%)." if "postgres_cpu_pct" in cpu else ")."
        workers = r.get("workers", 1)
        churn = read32.get("new_db_connections") or 0
        read8 = _by_conns(r["read"], 8)
        if churn > 100:
            text += (f" At {read32['connections']} clients the server opened {churn:,} new PostgreSQL connections in "
                     f"{read32['duration_s']:.0f} s" + (f" ({read8.get('new_db_connections') or 0:,} at 8 clients)" if read8 else "")
                     + ": its connection pool keeps fewer connections than requests run at once, so the extra "
                     "ones are closed and opened again all the time (see Notes). Each is a new PostgreSQL "
                     f"process; the {cpu.get('unattributed_cpu_pct', 0):.0f}% of a core that no living process "
                     "accounts for is mostly that.")
            if read8:
                text += (f" From 8 to {read32['connections']} clients throughput fell from {read8['req_per_s']:.0f} to "
                         f"{rps:.0f} req/s and p95 rose from {read8['p95_ms']:.1f} to {read32['p95_ms']:.1f} ms.")
            text += (f" Even without that, {'one Python process' if workers == 1 else 'the server processes'} "
                     f"serving {rps:.0f} req/s make{'s' if workers == 1 else ''} {read32['connections']} "
                     f"requests in flight wait about {1000 * read32['connections'] / rps:.0f} ms (Little's law).")
        elif workers == 1 and cpu["server_cpu_pct"] >= 85:
            text += (f" Reads are CPU-bound in the single Python server process: it serves about {rps:.0f} "
                     f"reads/s, {1000 / rps:.2f} ms of server time each, and with "
                     f"{read32['connections']} requests in flight each waits behind the others "
                     f"(Little's law: {read32['connections']} / {rps:.0f} req/s ≈ "
                     f"{1000 * read32['connections'] / rps:.0f} ms; measured p50 {read32['p50_ms']:.1f} ms)")
            if read1:
                text += f", while one client alone sees p50 {read1['p50_ms']:.1f} ms"
            text += (". One process runs Python under one GIL, so the second core cannot help it; the "
                     "database is not what limits reads.")
        elif cpu["machine_busy_pct"] >= 90:
            procs = "the server process" if workers == 1 else f"{workers} server processes"
            text += (f" Both cores were busy ({procs}, wrk, the database and other work together): at "
                     f"{rps:.0f} req/s the queue of {read32['connections']} requests in flight alone is "
                     f"{1000 * read32['connections'] / rps:.0f} ms (Little's law).")
        else:
            text += (" The server was not saturating the CPU, so the time goes elsewhere "
                     "(database, locking, or the load generator competing for the 2 cores).")
    text += _other_note(cpu)
    out.append(text)
    # -- ingest
    ing = r["ingest"]
    rate = ing["resources_per_s"]
    met = rate >= INGEST_TARGET
    cpu = ing["cpu"]
    text = (f"- Ingest: **{rate:.0f} resources/s** through transaction Bundles of {ing['bundle_entries']} "
            f"entries (~{ing['mean_resource_bytes']} B of Bundle JSON per resource) from {ing['clients']} clients into a "
            f"store growing to {ing['stored_after']:,} resources — target "
            f"{INGEST_TARGET:.0f}/s **{'met' if met else 'not met'}**. {who} used "
            f"{cpu['server_cpu_pct']:.0f}% of one core (machine {cpu['machine_busy_pct']:.0f}% busy")
    text += f", PostgreSQL {cpu['postgres_cpu_pct']:.0f}% of a core)." if "postgres_cpu_pct" in cpu else ")."
    inproc = r.get("inprocess")
    if inproc and "structure_only" in inproc:
        ms = {k: inproc[k]["ms_per_resource"] for k in ("full", "structure_only", "no_validation",
                                                        "no_validation_no_index")}
        rate = {k: inproc[k]["resources_per_s"] for k in ms}
        full = ms["full"]
        share = lambda a, b: max(0.0, 100 * (ms[a] - ms[b]) / full)  # noqa: E731 (noise can make it < 0)
        text += (f" In process, without HTTP, one thread pushes {rate['full']:.0f} resources/s through the "
                 f"same transaction code ({full:.2f} ms each); {rate['structure_only']:.0f}/s with structural "
                 f"validation only, {rate['no_validation']:.0f}/s without validation, "
                 f"{rate['no_validation_no_index']:.0f}/s without validation and index rows. Of the write "
                 f"path's time, validation takes **{share('full', 'no_validation'):.0f}%** "
                 f"(fhir.resources structural validation {share('structure_only', 'no_validation'):.0f}%, "
                 f"profile handling {share('full', 'structure_only'):.0f}%) and index extraction plus "
                 f"index-row inserts {share('no_validation', 'no_validation_no_index'):.0f}%.")
        vus = inproc.get("validate_us", {})
        if "Patient" in vus and "Observation" in vus:
            text += (f" Structural validation of one Patient takes {vus['Patient']['structure']:.0f} µs and of one "
                     f"Observation {vus['Observation']['structure']:.0f} µs, against a budget of "
                     f"{1e6 / INGEST_TARGET:.0f} µs per resource for {INGEST_TARGET:.0f}/s on one core; a single "
                     f"create also looks its UK Core profile up in the store (not held here), which brings the "
                     f"whole validation to {vus['Patient']['full']:.0f} and {vus['Observation']['full']:.0f} µs "
                     "(within a Bundle the lookup is remembered, so a Bundle pays it once).")
        saved = max(ms["full"] - ms["no_validation"], 0.0)
        http_ms = 1000 / ing["resources_per_s"]
        parts = {"validation": share("full", "no_validation"),
                 "index extraction and index rows": share("no_validation", "no_validation_no_index"),
                 "the rest (Bundle handling, resource and version rows, JSON)":
                     100 * ms["no_validation_no_index"] / full}
        biggest = max(parts, key=parts.get)
        if not met:
            if cpu["server_cpu_pct"] >= 85 and r.get("workers", 1) == 1:
                text += " Ingest is CPU-bound in the one server process (one GIL)."
            estimate = 1000 / (http_ms - saved) if http_ms > saved else float("inf")
            text += (f" Taking validation's {saved:.2f} ms per resource off the {http_ms:.2f} ms measured over "
                     f"HTTP would give roughly {estimate:.0f} resources/s (an estimate, not a measurement)")
            if estimate >= INGEST_TARGET:
                text += ", about enough for the target on its own"
            else:
                text += ", not enough for the target on its own"
            text += (f"; but the largest part of the write path is {biggest} ({parts[biggest]:.0f}%)."
                     if biggest != "validation" else "; validation is the largest part of the write path.")
    text += _other_note(cpu)
    out.append(text)
    return out


def _method(results: dict, backends: list[str]) -> list[str]:
    r = results[backends[0]]
    s = r["settings"]
    return [
        "## How it was measured", "",
        "- **Server**: `lac-adapter serve` as a subprocess, one uvicorn process (its default: one worker, "
        "uvloop, httptools) with the per-client rate limit off (`ADAPTER_RATE_LIMIT_PER_SECOND=0`, the "
        "documented setting for load tests: all load comes from one address), on a fresh database per backend (SQLite file in a temp folder; PostgreSQL "
        "`lac_bench_<random>`, dropped afterwards). Peak RSS is the server process's `VmHWM` (summed over the processes when "
        "a run used `--workers`). Each section below names its own population and settings.",
        f"- **Ingest**: synthetic transaction Bundles of {s['bundle_size']} entries (per child: Patient, "
        "weight and height Observations with UCUM quantities, Task, EpisodeOfCare; references by "
        "`urn:uuid:`; invented names, 999-range NHS numbers with valid check digits; 1–2 KB each), "
        f"POSTed to `/fhir` by {s['ingest_clients']} client threads until the store holds "
        f"{s['resources']:,} resources (this is also the search population). Resources/s is resources "
        "over wall time; latency is per Bundle.",
        f"- **Create / read**: wrk ({{wrk}}) with `bench/wrk/create.lua` (POST a new Patient) and "
        f"`bench/wrk/paths.lua` (GET `Patient/{{id}}` of random ingested ids), {s['duration_s']:g} s per "
        f"level at {', '.join(map(str, s['connections']))} connections (`-t` = min(connections, 2)), "
        "after a short warm-up. Percentiles from wrk's latency histogram.".replace("{wrk}", r["machine"].get("wrk", "wrk")),
        f"- **Search**: one client, sequential, {s['search_runs']} timed runs of each search (after 3 "
        "untimed), fresh random values each run; total and entries are medians over the runs. The "
        "`_total=none` rows repeat a search without the total count, to show what counting costs.",
        "- **In process**: median of many calls of `jsonio.loads`, `validate_structure`, `index_rows` and "
        "`jsonio.dumps` on one typical resource of each type; and Bundles pushed straight through the "
        "router (no HTTP) on a second throwaway database, with validation and index extraction "
        "switched off in the benchmark's own process to show their share.",
        "- **CPU** columns, each in % of one core over the measurement: the server process; PostgreSQL's "
        "processes for the benchmark database (with its shared background processes); the load "
        "generator (wrk, or the benchmark's own client threads); *other*: every other process on the "
        "machine, such as a test suite someone ran at the same time; *unattributed*: busy time no "
        "living process accounts for (kernel networking and interrupts, and processes that ended "
        "within the window, such as PostgreSQL connections opened and closed again). Before each "
        "measurement the script waits (up to `--quiet-wait` s) for the machine to be idle, and it "
        "repeats a wrk run or search (up to `--attempts` times) when *other* took more than "
        "`--max-other` % of a core, keeping the least disturbed attempt.",
        "",
    ]


def _write_time(results: dict, backends: list[str]) -> list[str]:
    latest = max((results[b] for b in backends if results[b].get("micro")),
                 key=lambda r: r["machine"]["date"], default=None)
    out = ["## Where write time goes (in process)", ""]
    if latest:
        out += [f"Median µs per call, one typical resource of each type (run of {latest['machine']['date']}):", ""]
        rows = [[t, c["bytes"], _f(c["parse_us"], 0), f"**{c['validate_us']:.0f}**", _f(c["index_us"], 0),
                 _f(c["serialise_us"], 0)] for t, c in latest["micro"].items()]
        out += _table(["resource", "JSON bytes", "parse (`jsonio.loads`)", "validate (`validate_structure`)",
                       "index extraction (`index_rows`)", "serialise (`jsonio.dumps`)"], rows) + [""]
    rows = []
    for b in backends:
        ip = results[b].get("inprocess")
        if not ip:
            continue
        for mode, label in (("full", "as served (structure + profiles)"),
                            ("structure_only", "structural validation only"),
                            ("no_validation", "without validation"),
                            ("no_validation_no_index", "without validation and index rows")):
            if mode not in ip:
                continue
            rows.append([title(b), label, f"{ip[mode]['resources_per_s']:.0f}",
                         f"{ip[mode]['ms_per_resource']:.2f}", f"{ip[mode]['cpu_ms_per_resource']:.2f}"])
    if rows:
        out += ["Transaction Bundles straight through the router, one thread, no HTTP (parsing the Bundle "
                "and serialising the response included):", ""]
        out += _table(["backend", "write path", "resources/s", "ms per resource (wall)",
                       "ms per resource (this process's CPU)"], rows) + [""]
    rows = []
    for b in backends:
        for rtype, v in (results[b].get("inprocess", {}).get("validate_us") or {}).items():
            rows.append([title(b), rtype, f"{v['structure']:.0f}", f"**{v['full']:.0f}**",
                         "; ".join(v.get("issues", [])) or "none"])
    if rows:
        out += ["The write path's whole validation (`Validator.validate`: structure, then each profile in "
                "`meta.profile` looked up in the store, afresh as for a single create) against structural "
                "validation alone, median µs, for the benchmark's Patient and Observation (which claim UK "
                "Core profiles):", ""]
        out += _table(["backend", "resource", "structure only", "whole validation", "issues reported"], rows) + [""]
    return out


def _search_table(searches: list[dict], before: dict | None = None) -> list[str]:
    rows = []
    for s in searches:
        p95 = f"**{s['p95_ms']:.2f}**"
        if before and s["key"] in before:
            p95 += f" ({before[s['key']]['p95_ms']:.2f})"
        rows.append([s["label"], _f(s["p50_ms"], 2), p95, _f(s["p99_ms"], 2),
                     "–" if s["median_total"] is None else f"{s['median_total']:,.0f}",
                     "–" if s["median_entries"] is None else f"{s['median_entries']:.0f}",
                     ",".join(map(str, s["statuses"]))])
    return _table(["search", "p50 ms", "p95 ms", "p99 ms", "median total", "median entries", "HTTP"], rows)


def _details(backend: str, r: dict) -> list[str]:
    name = title(backend)
    m = r["machine"]
    ing = r["ingest"]
    mem = r["server_memory_kb"]
    out = [f"## {name}", "",
           f"- Run: {m['date']}; `nproc` {m['nproc']}, {m['cpu']}, {m['memory_gib']} GiB memory, "
           f"{m['os']}, Python {m['python']}"
           + (", " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()) if m.get("versions") else "")
           + f"; {m.get('database', name)}; {m.get('wrk', 'wrk')}.",
           "- Stored after ingest: " + ", ".join(f"{v:,} {k}" for k, v in r["stored"].items() if v is not None)
           + f"; database {r['database_bytes_after_ingest'] / 1e6:,.0f} MB after ingest"
           + (f" (of which the WAL file {r['wal_bytes_after_ingest'] / 1e6:,.0f} MB)" if "wal_bytes_after_ingest" in r else "")
           + f", {r['database_bytes'] / 1e6:,.0f} MB at the end"
           + (f" (WAL {r['wal_bytes'] / 1e6:,.0f} MB)" if "wal_bytes" in r else "") + ".",
           f"- Server code: commit {m.get('commit', '?')}"
           + (f" plus {m['uncommitted_server_files']} uncommitted file(s) under adapter/, config/, profiles/ "
              "(work in progress at the time)" if m.get("uncommitted_server_files") else "")
           + f"; {r.get('workers', 1)} server process(es).",
           f"- Server memory: peak RSS {ing['server_memory_kb'].get('VmHWM', 0) / 1024:.0f} MiB after ingest, "
           f"{mem.get('VmHWM', 0) / 1024:.0f} MiB at the end (current {mem.get('VmRSS', 0) / 1024:.0f} MiB, "
           f"{mem.get('Threads', '?')} threads).",
           ]
    if r.get("postgres_analyze"):
        out.append(f"- {r['postgres_analyze'][0].upper()}{r['postgres_analyze'][1:]}.")
    out += ["", "### Ingest (transaction Bundles)", ""]
    bl = ing["bundle_latency"]
    cpu = ing["cpu"]
    cpu_head = _cpu_head(cpu)
    out += _table(["resources", "Bundles × entries", "clients", "wall s", "resources/s",
                   "Bundle p50 ms", "p95 ms", "p99 ms", cpu_head],
                  [[f"{ing['resources']:,}", f"{ing['bundles']} × {ing['bundle_entries']}", ing["clients"],
                    _f(ing["wall_s"]), f"**{ing['resources_per_s']:.0f}**", _f(bl["p50_ms"]), _f(bl["p95_ms"]),
                    _f(bl["p99_ms"]), _cpu(cpu)]])
    if ing.get("new_db_connections") is not None:
        out += ["", f"New PostgreSQL connections opened by the server during ingest: {ing['new_db_connections']:,}."]
    for kind, heading in (("create", "Create (wrk: POST Patient)"), ("read", "Read (wrk: GET Patient/{id})")):
        series = r[kind]
        head = _cpu_head(series[0]["cpu"])
        out += ["", f"### {heading}", ""]
        pgc = series[0].get("new_db_connections") is not None
        out += _table(["clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "requests", "non-2xx", head]
                      + (["new PostgreSQL connections"] if pgc else []),
                      [[x["connections"], f"{x['req_per_s']:.0f}", _f(x["p50_ms"], 2), f"**{x['p95_ms']:.2f}**",
                        _f(x["p99_ms"], 2), _f(x["max_ms"]), f"{x['requests']:,}", _errors(x), _cpu(x["cpu"])]
                       + ([f"{x['new_db_connections']:,}"] if pgc else [])
                       for x in series])
    pop = r.get("stored_at_search", {})
    out += ["", "### Search (one client, sequential)", "",
            "Population: " + ", ".join(f"{v:,} {k}" for k, v in pop.items()) + ".", ""]
    out += _search_table(r["search"])
    if r.get("search_analyzed"):
        before = {s["key"]: s for s in r["search"]}
        out += ["", "### Search again after `ANALYZE` (diagnostic)", "",
                "SQLite gathers no planner statistics unless asked (`ANALYZE`, `PRAGMA optimize`), and the "
                "server never asks. The same searches, after the benchmark ran `ANALYZE` on the database file "
                "(p95 as served in brackets):", ""]
        out += _search_table(r["search_analyzed"], before)
    out.append("")
    return out


# ---------------------------------------------------------------------------------------
# bench/authz.py: authorisation and audit

def _authz_section(authz: dict) -> list[str]:
    if not authz:
        return []
    out = ["## Authorisation and audit", "",
           "Measured with `bench/authz.py` (what it does: its docstring and `bench/README.md`). Every request",
           "carries a bearer token; the **administrator** (`dev-admin-token`) sees every record, so no access",
           "condition is added to its queries; the **LA** (`dev-la-token`, LA-DEMO-1) gets the access condition",
           "(`store/access_sql.py`) on every read and search. Both ask about the LA's own children (each with",
           "an EpisodeOfCare managed by the LA and an information-sharing Consent, so the Observation is",
           "visible to the LA), in a store that also holds as many children of another LA; both get the same",
           "answers. Over HTTP: wrk against `lac-adapter serve --dev` (one process); in process: `router.handle`",
           "without HTTP, with the real audit trail and with a no-op trail in its place.", ""]
    for key in sorted(authz, key=lambda k: ORDER.index(k[6:]) if k[6:] in ORDER else 99):
        out += authz_tables(authz[key], heading="###") + [""]
    return out


def _pp(res: dict) -> str:
    return f"{_f(res['p50_ms'], 2)} / {_f(res['p95_ms'], 2)}"


def _delta(a: float, b: float) -> str:
    d = b - a
    pct = f" ({100 * d / a:+.0f}%)" if a else ""
    return f"{d:+.2f}{pct}"


def authz_tables(r: dict, heading: str = "##") -> list[str]:
    """Markdown for one backend's bench/authz.py result (also printed by the script)."""
    m = r.get("machine", {})
    s = r.get("settings", {})
    name = NAMES.get(r.get("backend"), r.get("backend"))
    out = [f"{heading} {name}", "",
           f"{m.get('date', '?')}; {m.get('nproc', '?')} cores ({m.get('cpu', '?')}), {m.get('memory_gib', '?')} GiB; "
           f"{m.get('database', '?')}; Python {m.get('python', '?')}; {m.get('wrk', '?')}; commit {m.get('commit', '?')}"
           + (f" + {m['uncommitted_server_files']} uncommitted server files" if m.get("uncommitted_server_files") else "")
           + ".", ""]
    if r.get("http"):
        out += [f"Over HTTP: {s.get('children')} children of the LA + {s.get('other_children')} of another LA "
                f"({5 * (s.get('children', 0) + s.get('other_children', 0)):,} resources); wrk "
                f"{_f(s.get('duration_s'), 0)} s per run. Latency p50 / p95 in ms; Δ = LA − administrator. *Then storing "
                "audit*: how long the server kept working after the run ended (its background batches storing the "
                "run's queued read AuditEvents; the next run waits for it).", ""]
        rows = []
        for row in r["http"]:
            a, b = row["admin"], row["la"]
            other = max(a["cpu"].get("other_cpu_pct", 0), b["cpu"].get("other_cpu_pct", 0))
            errs = a["non_2xx"] + b["non_2xx"] + sum(a["errors"].values()) + sum(b["errors"].values())
            rows.append([row["label"], row["connections"],
                         _f(a["req_per_s"], 0), _f(b["req_per_s"], 0),
                         f"{100 * (b['req_per_s'] - a['req_per_s']) / a['req_per_s']:+.0f}%" if a["req_per_s"] else "–",
                         _pp(a), _pp(b), _delta(a["p50_ms"], b["p50_ms"]), _delta(a["p95_ms"], b["p95_ms"]),
                         f"{_f(a['cpu']['server_cpu_pct'], 0)} / {_f(b['cpu']['server_cpu_pct'], 0)}",
                         f"{a.get('drain', {}).get('s', 0):.1f} / {b.get('drain', {}).get('s', 0):.1f}",
                         f"{other:.0f}%" + (f"; {errs} errors/non-2xx" if errs else "")])
        others = [x["cpu"].get("other_cpu_pct", 0) for row in r["http"] for x in (row["admin"], row["la"])]
        if others and max(others) > 25:
            out += [f"**Disturbed**: other work on the machine (e.g. a test suite) took {min(others):.0f}–"
                    f"{max(others):.0f}% of a core during these runs (column *other*), so absolute numbers are "
                    "lower than on a quiet machine; each administrator/LA pair ran back to back.", ""]
        out += _table(["interaction", "clients", "req/s admin", "req/s LA", "Δ req/s", "admin p50 / p95",
                       "LA p50 / p95", "Δ p50 ms", "Δ p95 ms", "server CPU % admin / LA",
                       "then storing audit, s admin / LA", "other"], rows)
        out.append("")
    ip = r.get("inprocess")
    if ip and ip.get("rows"):
        out += [f"In process (no HTTP; {ip.get('children')} + {ip.get('other_children')} children; "
                f"{ip.get('runs')} timed calls per cell, creates half that; the four cells take turns call by call). "
                "p50 ms per call; *authorisation* = LA − administrator without audit; *audit* = with the real "
                "trail − with the no-op trail (for reads and searches: queueing the event); *batch* = the "
                "background store of queued read events, `flush()` time / events.", ""]
        rows = []
        for row in ip["rows"]:
            an, ln, aa, la = (row[k]["p50_ms"] for k in ("admin_noaudit", "la_noaudit", "admin_audited", "la_audited"))
            batch = row.get("flush_ms_per_event")
            rows.append([row["label"], _f(an, 3), _f(ln, 3), _f(aa, 3), _f(la, 3),
                         _delta(an, ln), f"{aa - an:+.3f} / {la - ln:+.3f}",
                         "–" if batch is None else _f(batch, 3),
                         f"{row['la_audited']['p95_ms']:.2f}"])
        out += _table(["interaction", "admin, no audit", "LA, no audit", "admin, audited", "LA, audited",
                       "authorisation (LA − admin)", "audit (admin / LA)", "batch ms per read event",
                       "LA audited p95"], rows)
        plans = [p for p in ip.get("plans", {}).get("read_observation_la") or [] if "access_" in p.get("sql", "")]
        if plans and plans[-1].get("plan"):
            what = "EXPLAIN QUERY PLAN" if r.get("backend") == "sqlite" else "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)"
            out += ["", f"The LA's read of an Observation runs this access check after the read ({what}, "
                        "as captured in process; the other plans are in the raw results):", "", "```",
                    *plans[-1]["plan"].splitlines(), "```"]
    return out


if __name__ == "__main__":  # re-render the page from the results stored in it
    import sys

    page = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "docs" / "performance.md"
    stored, kept_notes = parse(page.read_text())
    page.write_text(render(stored, kept_notes))
    print(f"re-rendered {page} ({', '.join(stored)})")
