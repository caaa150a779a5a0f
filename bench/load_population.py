"""Generate and load a synthetic population end to end, and how much memory the adapter needs.

    /path/to/venv/bin/python bench/load_population.py                     # 1,000 then 3,000 children, SQLite
    /path/to/venv/bin/python bench/load_population.py --children 10000 --backend postgresql

For each size: `lac-adapter fixtures generate` into a temporary folder, `lac-adapter serve --dev`
on a throwaway database (SQLite file, or a new PostgreSQL database), then `lac-adapter fixtures
load DIR --target ... --workers W`, timed. Printed: generation seconds, load seconds,
Bundles/s and resources/s end to end (resources = the NDJSON count, what a plain server holds),
and the adapter's peak resident memory (VmHWM of the server process, which must stay flat as the
population grows: loading streams, the server keeps nothing per child in memory). While loading,
the server's resident memory (VmRSS, VmHWM), its CPU time and the machine's load average are
sampled at checkpoints (every `--checkpoint` children, counted from the loader's journal), so a
growing footprint shows as it grows. Results go to docs/performance.md by hand (Notes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "adapter"]
PG_ADMIN = os.environ.get("ADAPTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_mb(pid: int, field: str = "VmHWM") -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def vm_hwm_mb(pid: int) -> float:
    return vm_mb(pid, "VmHWM")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """Every half second: children done (the loader's journal); at each checkpoint, the server's
    memory and CPU and the machine's load average."""

    def __init__(self, pid: int, journal_glob: Path, every: int, started: float):
        super().__init__(daemon=True)
        self.pid, self.folder, self.every, self.started = pid, journal_glob, every, started
        self.points: list[dict] = []
        self.stop = threading.Event()
        self.cpu0 = cpu_s(pid)

    def done(self) -> int:
        return sum(len(p.read_bytes().splitlines()) for p in self.folder.glob(".load-*.done"))

    def sample(self, done: int) -> None:
        self.points.append({"children": done, "s": round(time.perf_counter() - self.started, 1),
                            "rss_mb": round(vm_mb(self.pid, "VmRSS"), 1), "hwm_mb": round(vm_hwm_mb(self.pid), 1),
                            "server_cpu_s": round(cpu_s(self.pid) - self.cpu0, 1),
                            "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3])})
        print(json.dumps({"checkpoint": self.points[-1]}), flush=True)   # as it goes: a long run can be cut short

    def run(self) -> None:
        mark = self.every
        while not self.stop.wait(0.5):
            done = self.done()
            if done >= mark:
                self.sample(done)
                mark = (done // self.every + 1) * self.every


def database(backend: str, folder: Path) -> tuple[str, callable]:
    if backend == "sqlite":
        return f"sqlite:///{folder / 'bench.sqlite3'}", lambda: None
    import psycopg

    name = f"lac_load_{uuid.uuid4().hex[:8]}"
    admin = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", drop


def run(children: int, backend: str, workers: int, seed: int, checkpoint: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="lac-load-bench-"))
    population = folder / "population"
    started = time.perf_counter()
    subprocess.run([*CLI, "fixtures", "generate", "--children", str(children), "--seed", str(seed),
                    "--out", str(population)], cwd=ROOT, check=True, capture_output=True)
    generated = time.perf_counter() - started
    manifest = json.loads((population / "manifest.json").read_text())
    url, drop = database(backend, folder)
    port = free_port()
    env = {**os.environ, "ADAPTER_RATE_LIMIT_PER_SECOND": "0"}
    server = subprocess.Popen([*CLI, "serve", "--dev", "--port", str(port), "--database", url, "--no-deliver"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        import requests

        for _ in range(300):
            try:
                if requests.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        rss_idle = vm_hwm_mb(server.pid)
        started = time.perf_counter()
        sampler = Sampler(server.pid, population, checkpoint or max(children // 10, 1), started)
        sampler.start()
        load = subprocess.run([*CLI, "fixtures", "load", str(population), "--target", base,
                               "--token", "dev-admin-token", "--workers", str(workers)],
                              cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        sampler.sample(sampler.done())
        if load.returncode != 0:
            raise SystemExit(f"load failed: {load.stdout[-2000:]}")
        resources = sum(manifest["resources"].values()) if isinstance(manifest.get("resources"), dict) else 0
        return {"children": children, "backend": backend, "workers": workers,
                "generate_s": round(generated, 1), "load_s": round(seconds, 1),
                "bundles": manifest["bundles"], "bundles_per_s": round(manifest["bundles"] / seconds, 1),
                "resources": resources, "resources_per_s": round(resources / seconds, 1),
                "server_cpu_ms_per_bundle": round(1000 * sampler.points[-1]["server_cpu_s"] / manifest["bundles"], 1),
                "server_peak_rss_mb": round(vm_hwm_mb(server.pid), 1), "server_rss_at_start_mb": round(rss_idle, 1),
                "checkpoints": sampler.points}
    finally:
        server.terminate()
        server.wait(30)
        drop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, nargs="*", default=[1000, 3000])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--checkpoint", type=int, default=0, help="sample the server every N children "
                                                                   "(default: a tenth of the population)")
    args = parser.parse_args()
    for n in args.children:
        print(json.dumps(run(n, args.backend, args.workers, args.seed, args.checkpoint)), flush=True)


if __name__ == "__main__":
    main()
