#!/usr/bin/env python3
"""Benchmarks of the FHIR server over HTTP on loopback, on SQLite and PostgreSQL.

Run by hand (never by the test suite), from the project root:

    python bench/run.py [--backend sqlite|postgresql|both] [--resources 100000] [--duration 10]

For each backend it starts the real server (`lac-adapter serve`) as a subprocess on a
throwaway database, then measures:

1. ingest: transaction Bundles of synthetic 1-3 KB resources POSTed by a few client
   threads until the store holds --resources resources (resources/s, bundle latency);
2. create: wrk POSTing Patients at 1, 8 and 32 connections (req/s, p50/p95/p99);
3. read: wrk GETting Patient/{id} of random existing ids at 1, 8 and 32 connections;
4. search: sequential searches over the stored population (p50/p95/p99);
5. in-process costs: JSON parsing, fhir.resources validation, index extraction, and the
   transaction write path with and without validation (no HTTP).

Results go to docs/performance.md (one section per backend; the other backend's last
results are kept). See bench/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import queue
import random
import re
import resource as rusage
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
import synth  # noqa: E402

WRK_DIR = HERE / "wrk"
JSON_CT = "application/fhir+json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_PG_ADMIN = os.environ.get("ADAPTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# The server runs with `serve --dev` and every FHIR request authenticates with this static token of
# config/adapter.toml [auth.dev_tokens]: an administrator, who sees every record (no access SQL).
ADMIN_TOKEN = "dev-admin-token"


def auth_header(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------
# statistics

def percentile(values: list[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of a non-empty list."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def summary_ms(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms), "mean_ms": statistics.fmean(ms)}


# ---------------------------------------------------------------------------------------
# machine and process facts

def machine_facts() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    date_u = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    facts = {"date": date_u, "nproc": nproc, "cpu": cpu, "memory_gib": round(mem_kb / 1024 / 1024, 1),
             "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
             "wrk": wrk_version[0].split("[")[0].strip() if wrk_version else "?"}
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT).stdout.strip()  # noqa: E731
    facts["commit"] = git("rev-parse", "--short", "HEAD") or "?"
    dirty = [l for l in git("status", "--porcelain", "--", "adapter", "config", "profiles").splitlines() if l]
    facts["uncommitted_server_files"] = len(dirty)
    try:
        import fhir.resources
        import sqlalchemy
        import uvicorn

        facts["versions"] = {"uvicorn": uvicorn.__version__, "fhir.resources": fhir.resources.__version__,
                             "sqlalchemy": sqlalchemy.__version__}
    except ImportError:
        pass
    return facts


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def proc_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (the uvicorn supervisor and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, pending = [], [root]
    while pending:
        pid = pending.pop()
        out.append(pid)
        pending.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(root: int) -> dict[int, float]:
    return {pid: proc_cpu_seconds(pid) for pid in process_tree(root)}


def tree_memory(root: int) -> dict:
    """VmHWM/VmRSS (kB) summed over the server's processes, and their count."""
    total = {"VmHWM": 0, "VmRSS": 0, "Threads": 0, "processes": 0}
    for pid in process_tree(root):
        st = proc_status(pid)
        for key in ("VmHWM", "VmRSS", "Threads"):
            total[key] += st.get(key, 0)
        total["processes"] += 1
    return total


def proc_status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmHWM:", "VmRSS:", "Threads:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


_PG_BACKEND = re.compile(r"^postgres: (?:\S+: )?(\S+) (\S+) (\S+\(\d+\)|\[local\])")


def postgres_pids(database: str) -> list[int]:
    """PostgreSQL's processes working for `database`, and its shared background processes
    (not the backends of other databases, such as a test suite running at the same time)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as fh:
                if fh.read().strip() != "postgres":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                title = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # backends are titled "postgres: [CLUSTER: ]USER DATABASE HOST(PORT) STATE"
        match = _PG_BACKEND.match(title)
        if match is None or match.group(2) == database:
            pids.append(int(entry))
    return pids


def others_cpu_seconds(exclude: set[int]) -> dict[int, float]:
    """CPU seconds of every process on the machine except `exclude` and PostgreSQL's."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in exclude:
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == "postgres":
                        continue
            except OSError:
                continue
            out[int(entry)] = proc_cpu_seconds(int(entry))
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return total - idle, total


class CpuMeter:
    """CPU use over a time window, in % of one core: the server process, PostgreSQL's processes
    for the benchmark database, the load generator (wrk, or this process's client threads), and
    everything else on the machine ("other": e.g. a test suite someone runs meanwhile)."""

    def __init__(self, server_pid: int, pg_database: str | None):
        self.server_pid = server_pid
        self.pg_database = pg_database

    def _pg(self) -> dict[int, float]:
        if not self.pg_database:
            return {}
        return {pid: proc_cpu_seconds(pid) for pid in postgres_pids(self.pg_database)}

    def __enter__(self) -> "CpuMeter":
        self.t0 = time.monotonic()
        self.server0 = tree_cpu_seconds(self.server_pid)
        self.self0 = time.process_time()
        self.children0 = rusage.getrusage(rusage.RUSAGE_CHILDREN)
        self.machine0 = machine_cpu()
        self.pg0 = self._pg()
        self.others0 = others_cpu_seconds(self._ours())
        return self

    def _ours(self) -> set[int]:
        return set(process_tree(self.server_pid)) | set(process_tree(os.getpid()))

    def __exit__(self, *exc) -> None:
        wall = max(time.monotonic() - self.t0, 1e-9)
        server = sum(cpu - self.server0.get(pid, 0.0) for pid, cpu in tree_cpu_seconds(self.server_pid).items())
        ch1 = rusage.getrusage(rusage.RUSAGE_CHILDREN)
        wrk = (ch1.ru_utime + ch1.ru_stime) - (self.children0.ru_utime + self.children0.ru_stime)
        client = time.process_time() - self.self0
        busy1, total1 = machine_cpu()
        busy = (busy1 - self.machine0[0]) / max(total1 - self.machine0[1], 1)
        pg = sum(cpu - self.pg0.get(pid, 0.0) for pid, cpu in self._pg().items())
        cores = os.cpu_count() or 1
        pct = lambda seconds: round(100 * seconds / wall, 1)  # noqa: E731
        self.result = {
            "wall_s": round(wall, 3),
            "server_cpu_pct": pct(server),
            "client_cpu_pct": pct(client),
            "wrk_cpu_pct": pct(wrk),
            "machine_busy_pct": round(100 * busy, 1),  # of all cores
        }
        if self.pg_database:
            self.result["postgres_cpu_pct"] = pct(pg)
        others = sum(cpu - self.others0.get(pid, 0.0) for pid, cpu in others_cpu_seconds(self._ours()).items())
        self.result["other_cpu_pct"] = pct(max(others, 0.0))
        # whatever no process accounts for: kernel work (loopback networking, interrupts) and
        # processes that ended within the window (e.g. PostgreSQL connections opened and closed)
        known = server + client + wrk + pg + others
        self.result["unattributed_cpu_pct"] = max(0.0, round(100 * busy * cores - 100 * known / wall, 1))


QUIET = {"limit_s": 300.0, "threshold_pct": 20.0}
PG_SESSIONS: list = [None]  # a function counting connections opened to the benchmark database


RETRY = {"attempts": 3, "max_other_pct": 25.0}


def measured(fn: Callable[[], dict], label: str) -> dict:
    """Run a measurement; if other work on the machine took more than RETRY['max_other_pct'] % of
    a core during it, run it again (up to RETRY['attempts'] times) and keep the least disturbed."""
    best = None
    for attempt in range(1, RETRY["attempts"] + 1):
        settle()
        res = fn()
        res["attempt"] = attempt
        other = res["cpu"].get("other_cpu_pct", 0.0)
        if best is None or other < best["cpu"].get("other_cpu_pct", 0.0):
            best = res
        if other <= RETRY["max_other_pct"]:
            break
        if attempt < RETRY["attempts"]:
            log(f"  other work took {other:.0f}% of a core during {label}; measuring again")
    return best


def settle() -> float:
    return wait_until_quiet(QUIET["limit_s"], QUIET["threshold_pct"]) if QUIET["limit_s"] > 0 else float("nan")


def wait_until_quiet(limit_s: float, threshold_pct: float) -> float:
    """Wait (up to limit_s) until the machine is less than threshold_pct busy over 2 s, so
    that someone else's work (a test run, a build) does not share the benchmark's cores.
    Returns the busy % last seen."""
    deadline = time.monotonic() + limit_s
    said = False
    while True:
        b0, t0 = machine_cpu()
        time.sleep(2)
        b1, t1 = machine_cpu()
        busy = 100 * (b1 - b0) / max(t1 - t0, 1)
        if busy < threshold_pct or time.monotonic() >= deadline:
            if said:
                log(f"  machine now {busy:.0f}% busy; going on")
            return busy
        if not said:
            log(f"  machine {busy:.0f}% busy with other work; waiting for it to calm down "
                f"(up to {limit_s:.0f} s) ...")
            said = True


# ---------------------------------------------------------------------------------------
# databases and the server

def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def database(backend: str, admin_url: str, suffix: str = "") -> Iterator[dict]:
    """A throwaway database: {'url', 'size' (callable, bytes)}; removed afterwards."""
    if backend == "sqlite":
        tmp = Path(tempfile.mkdtemp(prefix="lac_bench_"))
        path = tmp / f"bench{suffix}.sqlite3"

        def size() -> int:
            return sum(p.stat().st_size for p in tmp.glob(f"bench{suffix}.sqlite3*"))

        def wal() -> int:
            wal_path = tmp / f"bench{suffix}.sqlite3-wal"
            return wal_path.stat().st_size if wal_path.exists() else 0

        def analyze() -> str:
            import sqlite3

            with sqlite3.connect(path, timeout=60) as conn:
                conn.execute("ANALYZE")
            return "ANALYZE"

        try:
            yield {"url": f"sqlite:///{path}", "size": size, "wal": wal, "analyze": analyze}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    import psycopg

    name = f"lac_bench_{uuid.uuid4().hex[:10]}{suffix}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rpartition("/")[0]

    def size() -> int:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as c:
            return c.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0]

    def analyze() -> str:
        with psycopg.connect(f"{_libpq(base)}/{name}", autocommit=True) as c:
            c.execute("ANALYZE")
        return "ANALYZE"

    def sessions() -> int:
        """Connections ever opened to the benchmark database (pg_stat_database.sessions)."""
        time.sleep(1.1)  # statistics are flushed about once a second
        with psycopg.connect(_libpq(admin_url), autocommit=True) as c:
            c.execute("SELECT pg_stat_clear_snapshot()")
            return int(c.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s",
                                 (name,)).fetchone()[0])

    def autovacuum() -> str:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as c:
            return c.execute("SHOW autovacuum").fetchone()[0]

    try:
        yield {"url": f"{base}/{name}", "size": size, "name": name, "analyze": analyze, "autovacuum": autovacuum,
               "sessions": sessions}
    finally:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lac_adapter_command() -> str:
    beside = Path(sys.executable).parent / "lac-adapter"
    found = str(beside) if beside.exists() else shutil.which("lac-adapter")
    if not found:
        sys.exit("lac-adapter not found: run with the project's virtualenv python (pip install -e .)")
    return found


class Server:
    """`lac-adapter serve` as a subprocess on a free loopback port."""

    def __init__(self, database_url: str, log_path: Path, workers: int = 1, env: dict | None = None):
        self.database_url = database_url
        self.env = env or {}
        self.workers = workers
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_path(self) -> str:
        return "/fhir"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self, timeout: float = 120) -> None:
        # --dev: accept the static bearer tokens of config/adapter.toml (ADMIN_TOKEN and the partners')
        cmd = [lac_adapter_command(), "serve", "--dev", "--host", "127.0.0.1", "--port", str(self.port),
               "--database", self.database_url]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        self._log = open(self.log_path, "ab")
        # All the load comes from one address: switch the per-client rate limit off (the
        # documented setting for load tests), or most requests would be answered 429.
        env = dict(os.environ, ADAPTER_RATE_LIMIT_PER_SECOND="0", **self.env)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + self.log_tail())
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/fhir/metadata", headers={"Accept": JSON_CT})
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer /fhir/metadata within {timeout} s")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


# ---------------------------------------------------------------------------------------
# HTTP helpers

class Client:
    """One keep-alive HTTP/1.1 connection to the server, authenticating with `token`."""

    def __init__(self, port: int, timeout: float = 600, token: str = ADMIN_TOKEN):
        self.port = port
        self.timeout = timeout
        self.token = token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, bytes]:
        hdrs = {"Accept": JSON_CT, **auth_header(self.token)}
        if body is not None:
            hdrs["Content-Type"] = JSON_CT
        hdrs.update(headers or {})
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # the server closed an idle keep-alive connection: reconnect once
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> tuple[int, Any]:
        status, data = self.request("GET", path)
        return status, json.loads(data) if data else None

    def close(self) -> None:
        self.conn.close()


def dumps(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


# ---------------------------------------------------------------------------------------
# 1. ingest through transaction Bundles

def ingest(server: Server, target: int, bundle_size: int, clients: int, pg_db: str | None) -> dict:
    """POST transaction Bundles until the store holds `target` resources."""
    import orjson

    client = Client(server.port)
    setup = synth.Population().setup_bundle()
    status, data = client.request("POST", "/fhir", dumps(setup))
    if status != 200:
        raise RuntimeError(f"setup bundle failed: {status} {data[:500]!r}")
    stored = len(setup["entry"])

    log(f"generating bundles for {target - stored} resources ...")
    gen = synth.Generator(seed=20240601)
    bundles: list[tuple[list[str], bytes, int]] = []
    planned = stored
    t0 = time.perf_counter()
    while planned < target:
        size = min(bundle_size, max(synth.Generator.GROUP_SIZE, target - planned))
        nhs, bundle = gen.bundle(size)
        bundles.append((nhs, dumps(bundle), len(bundle["entry"])))
        planned += len(bundle["entry"])
    gen_s = time.perf_counter() - t0
    bytes_total = sum(len(b[1]) for b in bundles)
    log(f"{len(bundles)} bundles, {planned - stored} resources, {bytes_total / 1e6:.1f} MB "
        f"(generated in {gen_s:.1f} s); posting with {clients} clients ...")

    work: queue.Queue = queue.Queue()
    for item in bundles:
        work.put(item)
    latencies: list[float] = []
    patients: list[tuple[str, str]] = []  # (nhs number, Patient id)
    errors: list[str] = []
    lock = threading.Lock()
    done_resources = [0]
    stop = threading.Event()

    def worker() -> None:
        c = Client(server.port)
        try:
            while not stop.is_set():
                try:
                    nhs, body, n = work.get_nowait()
                except queue.Empty:
                    return
                t = time.perf_counter()
                try:
                    status, data = c.request("POST", "/fhir", body)
                except OSError as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    stop.set()
                    return
                dt = time.perf_counter() - t
                if status != 200:
                    with lock:
                        errors.append(f"HTTP {status}: {data[:300]!r}")
                    stop.set()
                    return
                out = orjson.loads(data)
                ids = [_patient_id(e["response"]["location"]) for e in out["entry"][::synth.Generator.GROUP_SIZE]]
                with lock:
                    latencies.append(dt)
                    patients.extend(zip(nhs, ids))
                    done_resources[0] += n
        finally:
            c.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    settle()
    last_report = [time.monotonic()]
    sessions0 = PG_SESSIONS[0]() if PG_SESSIONS[0] else None
    with CpuMeter(server.pid, pg_db) as meter:
        start = time.perf_counter()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
            if time.monotonic() - last_report[0] > 30:
                last_report[0] = time.monotonic()
                el = time.perf_counter() - start
                log(f"  ingest: {done_resources[0]} resources in {el:.0f} s "
                    f"({done_resources[0] / el:.0f}/s)")
        wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"ingest failed: {errors[0]}\nserver log:\n{server.log_tail()}")
    ingested = done_resources[0]
    stored += ingested
    result = {
        "bundles": len(latencies), "bundle_entries": bundle_size, "clients": clients,
        "resources": ingested, "wall_s": round(wall, 2),
        "resources_per_s": ingested / wall,
        "bundle_latency": summary_ms(latencies),
        "mean_resource_bytes": round(bytes_total / max(planned - len(setup["entry"]), 1)),
        "cpu": meter.result,
        "new_db_connections": PG_SESSIONS[0]() - sessions0 if PG_SESSIONS[0] else None,
        "stored_after": stored,
    }
    client.close()
    return result, patients


def _patient_id(location: str) -> str:
    """The id in a Location such as `http://host/fhir/Patient/<id>/_history/1`."""
    match = re.search(r"(?:^|/)Patient/([A-Za-z0-9\-.]+)", location)
    if not match:
        raise RuntimeError(f"unexpected Patient location {location!r}")
    return match.group(1)


def stored_counts(server: Server, types: list[str]) -> dict[str, int]:
    c = Client(server.port)
    out = {}
    for t in types:
        status, body = c.get_json(f"/fhir/{t}?_summary=count")
        out[t] = body.get("total") if status == 200 else None
    c.close()
    return out


# ---------------------------------------------------------------------------------------
# 2 and 3. wrk: create and read

def run_wrk(server: Server, script: str, path: str, connections: int, duration: float,
            script_args: list[str], pg_db: str | None, token: str = ADMIN_TOKEN) -> dict:
    threads = min(connections, 2)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--timeout", "30s",
           "-H", f"Authorization: Bearer {token}",
           "-s", str(WRK_DIR / script), f"http://127.0.0.1:{server.port}{path}"]
    if script_args:
        cmd += ["--", *script_args]
    sessions0 = PG_SESSIONS[0]() if PG_SESSIONS[0] else None
    with CpuMeter(server.pid, pg_db) as meter:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    new_sessions = PG_SESSIONS[0]() - sessions0 if PG_SESSIONS[0] else None
    line = next((l for l in proc.stdout.splitlines() if l.startswith("BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    raw = json.loads(line[len("BENCH "):])
    seconds = raw["duration_us"] / 1e6
    errors = {k: raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")}
    return {
        "connections": connections, "threads": threads, "duration_s": round(seconds, 2),
        "requests": raw["requests"], "req_per_s": raw["requests"] / seconds,
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000, "mean_ms": raw["mean_us"] / 1000, "max_ms": raw["max_us"] / 1000,
        "errors": errors, "non_2xx": raw["status_errors"], "cpu": meter.result,
        "new_db_connections": new_sessions,
    }


WRK_SCRIPTS = {"create": "create.lua", "read": "paths.lua"}  # read: GET Patient/<id> of ids drawn at random


def wrk_series(server: Server, kind: str, levels: list[int], duration: float, warmup: float,
               ids_file: Path | None, pg_db: str | None) -> list[dict]:
    out = []
    script = WRK_SCRIPTS[kind]
    # disjoint 999-range NHS number blocks for each create run (threads take 100000 each)
    create_starts = iter(range(999_300_000, 999_900_000, 200_000))
    if warmup > 0:
        args = [str(ids_file)] if kind == "read" else ["999100000"]
        run_wrk(server, script, "/fhir/Patient", 8, warmup, args, pg_db)
    for conns in levels:
        start = next(create_starts)
        # each attempt of a create run gets its own block of NHS numbers
        starts = iter(range(start, start + 200_000, 40_000))
        res = measured(lambda: run_wrk(server, script, "/fhir/Patient", conns, duration,
                                       [str(ids_file)] if kind == "read" else [str(next(starts))], pg_db),
                       f"{kind} c={conns}")
        if res["non_2xx"] or any(res["errors"].values()):
            log(f"  WARNING: {kind} c={conns} had {res['non_2xx']} non-2xx answers, errors {res['errors']}")
        log(f"  {kind} c={conns}: {res['req_per_s']:.0f} req/s, p50 {res['p50_ms']:.1f} ms, "
            f"p95 {res['p95_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, non-2xx {res['non_2xx']}, "
            f"server CPU {res['cpu']['server_cpu_pct']:.0f}%")
        out.append(res)
    return out


# ---------------------------------------------------------------------------------------
# 4. search

def search_cases(patients: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str, Callable[[], str]]]:
    """(key, description, function giving a fresh query path) for each search measured."""
    nhs = synth.NHS_SYSTEM
    prefixes = synth.family_prefixes()

    def pick() -> tuple[str, str]:
        return rng.choice(patients)

    def month() -> tuple[str, str]:
        start = date(2015, 1, 1) + timedelta(days=rng.randrange(0, 9 * 365))
        first = start.replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
        return first.isoformat(), nxt.isoformat()

    def q(rtype: str, params: list[tuple[str, str]]) -> str:
        return f"/fhir/{rtype}?{urlencode(params)}"

    def date_range(extra: list) -> str:
        lo, hi = month()
        return q("Observation", [("date", f"ge{lo}"), ("date", f"lt{hi}"), ("_count", "20")] + extra)

    def task_date() -> str:
        lo, hi = month()
        return q("Task", [("authored-on", f"ge{lo}"), ("authored-on", f"lt{hi}"), ("_count", "20")])

    return [
        ("token", "`Patient?identifier=…nhs-number|<n>` (token)",
         lambda: q("Patient", [("identifier", f"{nhs}|{pick()[0]}")])),
        ("string", "`Patient?family=<4-letter prefix>` (string prefix)",
         lambda: q("Patient", [("family", rng.choice(prefixes))])),
        ("date", "`Observation?date=ge<month>&date=lt<next month>&_count=20` (date range)",
         lambda: date_range([])),
        ("task_date", "`Task?authored-on=ge<month>&authored-on=lt<next month>&_count=20` (date range)",
         lambda: task_date()),
        ("chain", "`Task?patient.identifier=…nhs-number|<n>` (chained)",
         lambda: q("Task", [("patient.identifier", f"{nhs}|{pick()[0]}")])),
        ("reference", "`Observation?subject=Patient/<id>` (reference)",
         lambda: q("Observation", [("subject", f"Patient/{pick()[1]}")])),
        ("include", "`Task?_include=Task:patient&status=requested&_count=20`",
         lambda: q("Task", [("_include", "Task:patient"), ("status", "requested"), ("_count", "20")])),
        ("count", "`Observation?code=http://loinc.org|29463-7&_summary=count` (_total)",
         lambda: q("Observation", [("code", f"{synth.LOINC}|{synth.WEIGHT_LOINC}"), ("_summary", "count")])),
        # diagnostics: the same multi-match searches without the total count
        ("string_nototal", "as `family` prefix, with `_total=none`",
         lambda: q("Patient", [("family", rng.choice(prefixes)), ("_total", "none")])),
        ("date_nototal", "as date range, with `_total=none`",
         lambda: date_range([("_total", "none")])),
        ("include_nototal", "as `_include`, with `_total=none`",
         lambda: q("Task", [("_include", "Task:patient"), ("status", "requested"), ("_count", "20"),
                            ("_total", "none")])),
    ]


def run_searches(server: Server, patients: list[tuple[str, str]], runs: int, warmup: int,
                 pg_db: str | None) -> list[dict]:
    rng = random.Random(7)
    client = Client(server.port)
    out = []
    def one(key: str, label: str, make: Callable[[], str]) -> dict:
        for _ in range(warmup):
            client.request("GET", make())
        times, totals, entries, statuses = [], [], [], set()
        with CpuMeter(server.pid, pg_db) as meter:
            for _ in range(runs):
                path = make()
                t = time.perf_counter()
                status, data = client.request("GET", path)
                times.append(time.perf_counter() - t)
                statuses.add(status)
                if status == 200:
                    body = json.loads(data)
                    if "total" in body:
                        totals.append(body["total"])
                    entries.append(sum(1 for e in body.get("entry", []) if e.get("search", {}).get("mode") != "outcome"))
        return {"key": key, "label": label, "statuses": sorted(statuses), **summary_ms(times),
                "median_total": statistics.median(totals) if totals else None,
                "median_entries": statistics.median(entries) if entries else None,
                "example": path, "cpu": meter.result}

    for key, label, make in search_cases(patients, rng):
        res = measured(lambda: one(key, label, make), f"search {key}")
        log(f"  search {key}: p50 {res['p50_ms']:.1f} ms, p95 {res['p95_ms']:.1f} ms, "
            f"p99 {res['p99_ms']:.1f} ms, total~{res['median_total']}, entries~{res['median_entries']}, "
            f"status {res['statuses']}")
        out.append(res)
    client.close()
    return out


# ---------------------------------------------------------------------------------------
# 5. in-process costs

def _median_us(fn: Callable[[], Any], runs: int) -> float:
    for _ in range(min(50, runs)):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1000


def micro_costs(runs: int = 1000) -> dict:
    """Median µs per call of JSON parsing, validation, index extraction, JSON writing."""
    from adapter.config import load_settings
    from adapter.fhir import jsonio
    from adapter.fhir.search_params import SearchRegistry
    from adapter.store.indexing import index_rows
    from adapter.validation.structure import validate_structure

    registry = SearchRegistry(load_settings().resource_types)
    gen = synth.Generator(seed=99, nhs_start=999_950_000)
    _nhs, entries = gen.group()  # Patient, weight and height Observations, Task, EpisodeOfCare
    out = {}
    for entry in (entries[0], entries[1], entries[3], entries[4]):
        resource = jsonio.loads(jsonio.dumps(entry["resource"]))
        for field in ("subject", "for", "patient"):  # as stored: urn:uuid resolved to a Patient
            if field in resource:
                resource[field] = {"reference": "Patient/bench-1"}
        data = jsonio.dumps(resource)
        stored = dict(resource, id="bench-1", meta={"versionId": "1", "lastUpdated": "2024-01-01T00:00:00.000000Z"})
        out[resource["resourceType"]] = {
            "bytes": len(data),
            "parse_us": _median_us(lambda: jsonio.loads(data), runs),
            "validate_us": _median_us(lambda: validate_structure(resource), runs),
            "index_us": _median_us(lambda: index_rows(registry, stored), runs),
            "serialise_us": _median_us(lambda: jsonio.dumps(stored), runs),
        }
    return out


def inprocess_write(backend: str, admin_url: str, bundles_per_mode: int, bundle_size: int) -> dict:
    """Transaction Bundles through the router without HTTP: resources/s as served, with
    structural validation only, without validation, and without validation and index rows.
    The switches are made in this process only (on the router's validator instance and the
    repository module's index function); the server's code is not changed."""
    import adapter.store.repository as repo_mod
    from adapter.api.app import create_app
    from adapter.config import load_settings
    from adapter.fhir import jsonio
    from adapter.fhir.errors import FhirError
    from adapter.rest.messages import FhirRequest
    from adapter.security.caller import SYSTEM
    from adapter.validation.structure import validate_structure

    def structure_only(resource, *_a, **_k):
        try:
            validate_structure(resource)
        except FhirError as err:
            return list(err.issues)
        return []

    modes = {
        "full": {},
        "structure_only": {"validate": structure_only},
        "no_validation": {"validate": lambda *_a, **_k: []},
        "no_validation_no_index": {"validate": lambda *_a, **_k: [], "index": True},
    }
    out: dict = {}
    with database(backend, admin_url, suffix="_inproc") as db:
        app = create_app(load_settings(database_url=db["url"]))
        router = app.state.router
        validator = router.validator
        base = "http://127.0.0.1/fhir"
        router.handle(SYSTEM, FhirRequest("POST", [], body=synth.Population().setup_bundle()), base)
        gen = synth.Generator(seed=5, nhs_start=999_960_000)
        orig_index = repo_mod.index_rows
        # warm up (first-use compilation of models and expressions)
        router.handle(SYSTEM, FhirRequest("POST", [], body=jsonio.loads(dumps(gen.bundle(bundle_size)[1]))), base)
        # The modes take turns, one Bundle each, so that drift and other work on the machine
        # spread evenly over them rather than falling on one.
        payloads = {mode: [dumps(gen.bundle(bundle_size)[1]) for _ in range(bundles_per_mode)] for mode in modes}
        totals = {mode: [0, 0.0, 0.0] for mode in modes}  # resources, wall s, cpu s
        settle()
        try:
            for i in range(bundles_per_mode):
                for mode, switch in modes.items():
                    validator.__dict__.pop("validate", None)
                    if "validate" in switch:
                        validator.validate = switch["validate"]
                    repo_mod.index_rows = (lambda *a, **k: {}) if switch.get("index") else orig_index
                    cpu0, t0 = time.process_time(), time.perf_counter()
                    body = jsonio.loads(payloads[mode][i])
                    resp = router.handle(SYSTEM, FhirRequest("POST", [], body=body), base)
                    jsonio.dumps(resp.resource)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                    assert resp.status == 200, resp.status
                    totals[mode][0] += len(body["entry"])
                    totals[mode][1] += wall
                    totals[mode][2] += cpu
            for mode, (n, wall, cpu) in totals.items():
                out[mode] = {"resources": n, "resources_per_s": n / wall, "ms_per_resource": 1000 * wall / n,
                             "cpu_ms_per_resource": 1000 * cpu / n}
                log(f"  in-process {mode}: {n / wall:.0f} resources/s")
        finally:
            validator.__dict__.pop("validate", None)
            repo_mod.index_rows = orig_index
        # the whole validation of one resource as the write path runs it (structure, then the
        # profiles in meta.profile, looked up in the store), against structure alone
        _nhs, entries = synth.Generator(seed=99, nhs_start=999_950_000).group()
        out["validate_us"] = {}
        with router.repo.transaction(SYSTEM, write=False, base_url=base) as tx:
            resolve = router.resolver(tx)
            for entry in entries[:2]:
                res = jsonio.loads(dumps(entry["resource"]))
                for field in ("subject",):
                    if field in res:
                        res[field] = {"reference": "Patient/bench-1"}
                memo = getattr(tx, "memo", None)

                def first_in_transaction() -> None:
                    # as a single create validates: nothing remembered from earlier lookups
                    if memo is not None:
                        memo.clear()
                    validator.validate(res, router.resolver(tx))

                out["validate_us"][res["resourceType"]] = {
                    "full": _median_us(first_in_transaction, 300),
                    "full_repeated": _median_us(lambda: validator.validate(res, resolve), 300),
                    "structure": _median_us(lambda: validate_structure(res), 300),
                    "issues": [f"{i.severity}: {i.diagnostics}" for i in validator.validate(res, resolve)][:3],
                }
        app.state.engine.dispose()
    return out


# ---------------------------------------------------------------------------------------
# one backend

def run_backend(backend: str, args: argparse.Namespace) -> dict:
    log(f"=== {backend} ===")
    result: dict = {"backend": backend, "workers": args.workers, "machine": machine_facts(),
                    "settings": {"resources": args.resources, "duration_s": args.duration,
                                 "bundle_size": args.bundle_size, "ingest_clients": args.ingest_clients,
                                 "search_runs": args.search_runs, "connections": args.connections,
                                 "server_env": {"ADAPTER_RATE_LIMIT_PER_SECOND": "0"},
                                 "auth": f"serve --dev, bearer {ADMIN_TOKEN} (administrator: no access condition)"}}
    if backend == "sqlite":
        result["machine"]["database"] = f"SQLite {sqlite_version()} (WAL, synchronous=NORMAL), file on local disk"
    pg = backend == "postgresql"
    workdir = Path(tempfile.mkdtemp(prefix="lac_bench_run_"))
    try:
        with database(backend, args.postgres_admin_url) as db:
            if pg:
                import psycopg

                with psycopg.connect(_libpq(args.postgres_admin_url)) as c:
                    result["machine"]["database"] = c.execute("SELECT version()").fetchone()[0].split(" on ")[0]
            pg_db = db.get("name")
            PG_SESSIONS[0] = db.get("sessions")  # None on SQLite
            server = Server(db["url"], workdir / "server.log", args.workers)
            server.start()
            log(f"server pid {server.pid} at {server.url}")
            try:
                log("ingest ...")
                result["ingest"], patients = ingest(server, args.resources, args.bundle_size,
                                                    args.ingest_clients, pg_db)
                result["ingest"]["server_memory_kb"] = tree_memory(server.pid)
                ing = result["ingest"]
                log(f"ingest: {ing['resources_per_s']:.0f} resources/s, bundle p50 "
                    f"{ing['bundle_latency']['p50_ms']:.0f} ms p95 {ing['bundle_latency']['p95_ms']:.0f} ms; "
                    f"server CPU {ing['cpu']['server_cpu_pct']:.0f}%, peak RSS "
                    f"{ing['server_memory_kb'].get('VmHWM', 0) / 1024:.0f} MiB")
                result["stored"] = stored_counts(server, ["Patient", "Observation", "Task", "EpisodeOfCare",
                                                          "Organization", "Practitioner"])
                result["database_bytes_after_ingest"] = db["size"]()
                if "wal" in db:
                    result["wal_bytes_after_ingest"] = db["wal"]()
                if pg and db["autovacuum"]() != "on":
                    # A default PostgreSQL analyses the new tables within a minute or so of a bulk
                    # load (autovacuum); this one has autovacuum off, so do what it would have done.
                    db["analyze"]()
                    result["postgres_analyze"] = ("autovacuum is off on this PostgreSQL: the benchmark ran "
                                                  "ANALYZE after ingest, as autovacuum would have")
                    log("ran ANALYZE (autovacuum is off on this PostgreSQL)")
                log(f"stored: {result['stored']}, database {result['database_bytes_after_ingest'] / 1e6:.0f} MB")

                ids_file = workdir / "patient-ids.txt"
                ids_file.write_text("\n".join(pid for _, pid in patients) + "\n")
                log("create (wrk) ...")
                result["create"] = wrk_series(server, "create", args.connections, args.duration,
                                              args.warmup, None, pg_db)
                log("read (wrk) ...")
                result["read"] = wrk_series(server, "read", args.connections, args.duration,
                                            args.warmup, ids_file, pg_db)
                log("search ...")
                result["search"] = run_searches(server, patients, args.search_runs, 3, pg_db)
                if not pg:
                    # SQLite never gathers planner statistics by itself and the server does not
                    # ask it to; measure the searches again with statistics, as a diagnostic.
                    log("search again after ANALYZE (diagnostic) ...")
                    db["analyze"]()
                    result["search_analyzed"] = run_searches(server, patients, args.search_runs, 3, pg_db)
                result["stored_at_search"] = stored_counts(server, ["Patient", "Observation", "Task", "EpisodeOfCare",
                                                                    "Organization", "Practitioner"])
                result["server_memory_kb"] = tree_memory(server.pid)
                result["database_bytes"] = db["size"]()
                if "wal" in db:
                    result["wal_bytes"] = db["wal"]()
            finally:
                server.stop()
        if args.inprocess_bundles > 0:
            log("in-process write path ...")
            result["inprocess"] = inprocess_write(backend, args.postgres_admin_url, args.inprocess_bundles,
                                                  args.bundle_size)
        log("in-process costs (validation, parsing, indexing) ...")
        result["micro"] = micro_costs(args.micro_runs)
        for rtype, c in result["micro"].items():
            log(f"  {rtype} ({c['bytes']} B): parse {c['parse_us']:.0f} µs, validate {c['validate_us']:.0f} µs, "
                f"index {c['index_us']:.0f} µs, serialise {c['serialise_us']:.0f} µs")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--resources", type=int, default=100_000,
                        help="resources to ingest (the search population); default 100000")
    parser.add_argument("--duration", type=float, default=10, help="seconds of each wrk run; default 10")
    parser.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32],
                        help="wrk connection counts, comma-separated; default 1,8,32")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of wrk warm-up before each series")
    parser.add_argument("--bundle-size", type=int, default=100, help="entries per transaction Bundle")
    parser.add_argument("--ingest-clients", type=int, default=3, help="concurrent ingest clients (threads)")
    parser.add_argument("--search-runs", type=int, default=50, help="measured runs of each search")
    parser.add_argument("--inprocess-bundles", type=int, default=20,
                        help="bundles per mode of the in-process write-path measurement (0: skip)")
    parser.add_argument("--micro-runs", type=int, default=1000, help="runs of each in-process micro measurement")
    parser.add_argument("--postgres-admin-url", default=DEFAULT_PG_ADMIN,
                        help="PostgreSQL database to connect to for creating/dropping the throwaway one")
    parser.add_argument("--quiet-wait", type=float, default=300,
                        help="before each measurement wait up to this many seconds for the machine to be "
                             "idle (other work sharing the cores skews results); 0: do not wait")
    parser.add_argument("--quiet-threshold", type=float, default=20,
                        help="%% busy (of all cores) under which the machine counts as idle")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes (`lac-adapter serve --workers`); default 1. Results of a run "
                             "with N > 1 are reported under their own heading")
    parser.add_argument("--max-other", type=float, default=25,
                        help="repeat a wrk run or search (up to --attempts times) when other work on the "
                             "machine took more than this %% of a core during it")
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/performance.md")
    args = parser.parse_args(argv)

    # stop cleanly (server stopped, throwaway database dropped) on Ctrl-C or kill, also when
    # started in the background, where SIGINT arrives ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    QUIET.update(limit_s=args.quiet_wait, threshold_pct=args.quiet_threshold)
    RETRY.update(attempts=max(1, args.attempts), max_other_pct=args.max_other)
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = {}
    for backend in backends:
        results[backend] = run_backend(backend, args)
        if args.json:
            path = args.json if len(backends) == 1 else args.json.with_name(f"{args.json.stem}-{backend}.json")
            path.write_text(json.dumps(results[backend], indent=1, default=str))
        if not args.no_report:
            key = backend if args.workers == 1 else f"{backend}-workers{args.workers}"
            report.update(args.output, key, results[backend])
            log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
