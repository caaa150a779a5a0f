"""Generate and load a synthetic population end to end, and how much memory the adapter needs.

    /path/to/venv/bin/python bench/load_population.py                     # 1,000 then 3,000 children, SQLite
    /path/to/venv/bin/python bench/load_population.py --children 10000 --backend postgresql

For each size: `lac-adapter fixtures generate` into a temporary folder, `lac-adapter serve --dev`
on a throwaway database (SQLite file, or a new PostgreSQL database), then `lac-adapter fixtures
load DIR --target ... --workers W`, timed. Printed: generation seconds, load seconds,
Bundles/s and resources/s end to end (resources = the NDJSON count, what a plain server holds),
and the adapter's peak resident memory (VmHWM of the server process, which must stay flat as the
population grows: loading streams, the server keeps nothing per child in memory). Results go to
docs/performance.md by hand (Notes).
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


def vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


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


def run(children: int, backend: str, workers: int, seed: int) -> dict:
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
        load = subprocess.run([*CLI, "fixtures", "load", str(population), "--target", base,
                               "--token", "dev-admin-token", "--workers", str(workers)],
                              cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if load.returncode != 0:
            raise SystemExit(f"load failed: {load.stdout[-2000:]}")
        resources = sum(manifest["resources"].values()) if isinstance(manifest.get("resources"), dict) else 0
        return {"children": children, "backend": backend, "workers": workers,
                "generate_s": round(generated, 1), "load_s": round(seconds, 1),
                "bundles": manifest["bundles"], "bundles_per_s": round(manifest["bundles"] / seconds, 1),
                "resources": resources, "resources_per_s": round(resources / seconds, 1),
                "server_peak_rss_mb": round(vm_hwm_mb(server.pid), 1), "server_rss_at_start_mb": round(rss_idle, 1)}
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
    args = parser.parse_args()
    for n in args.children:
        print(json.dumps(run(n, args.backend, args.workers, args.seed)), flush=True)


if __name__ == "__main__":
    main()
