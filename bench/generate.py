"""How fast `lac-adapter fixtures generate` writes a synthetic population, and in how much memory.

    /path/to/venv/bin/python bench/generate.py                       # 1,000 and 10,000 children
    /path/to/venv/bin/python bench/generate.py --children 100000     # one size
    /path/to/venv/bin/python bench/generate.py --children 1000 --exact --workers 1

For each size it generates into a temporary folder (deleted afterwards; --keep keeps it) and
prints children/s, Bundles/s, resources/s (the NDJSON resources), the output size, and the
peak RSS of the parent process and of the largest worker (`VmHWM` via getrusage). It also
reports the CPU others took meanwhile (the machine is shared), so a slow run can be told from
a busy machine. Results go to the lead's docs/performance.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapter.synth import writer


def _cpu_busy() -> float:
    """Busy jiffies of the whole machine (all but idle and iowait), from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [float(x) for x in fh.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run(children: int, seed: int, workers: int, exact: bool, documents: bool, keep: bool) -> dict:
    root = Path(tempfile.mkdtemp(prefix="lac-synth-bench-"))
    out = root / "population"
    busy0 = _cpu_busy()
    own0 = os.times()
    started = time.perf_counter()
    manifest = writer.generate(writer.Options(children, seed, out, workers=workers, exact=exact, documents=documents))
    seconds = time.perf_counter() - started
    own1 = os.times()
    busy1 = _cpu_busy()
    ours = (own1.user - own0.user + own1.system - own0.system + own1.children_user - own0.children_user
            + own1.children_system - own0.children_system)
    ticks = os.sysconf("SC_CLK_TCK")
    machine_busy = (busy1 - busy0) / ticks
    resources = sum(manifest["resources"].values())
    result = {
        "children": children, "workers": manifest["run"]["workers"], "exact": exact, "documents": documents,
        "seconds": round(seconds, 1),
        "children_per_s": round(children / seconds, 1),
        "bundles_per_s": round(manifest["bundles"] / seconds, 1),
        "resources_per_s": round(resources / seconds, 1),
        "bundles": manifest["bundles"], "resources": resources,
        "output_mb": round(_size(out) / 1e6, 1),
        "peak_rss_parent_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "cpu_ours_s": round(ours, 1),
        "cpu_parent_s": round(own1.user - own0.user + own1.system - own0.system, 1),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "cpu_others_s": round(max(machine_busy - ours, 0.0), 1),
        "mapping": manifest["run"],
        "iha_share_in_time": manifest["iha"]["shareInTime"],
    }
    if keep:
        result["folder"] = str(out)
    else:
        shutil.rmtree(root)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, action="append", help="population size (repeatable; "
                                                                       "default 1000 and 10000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: one per CPU)")
    parser.add_argument("--exact", action="store_true", help="map every document with the mappers")
    parser.add_argument("--no-documents", action="store_true", help="skip children/*.zip")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    for n in args.children or [1000, 10000]:
        result = run(n, args.seed, args.workers, args.exact, not args.no_documents, args.keep)
        results.append(result)
        print(f"{n:>7} children: {result['seconds']:>7.1f} s  {result['children_per_s']:>6.1f} children/s  "
              f"{result['bundles_per_s']:>7.1f} Bundles/s  {result['resources_per_s']:>7.1f} resources/s  "
              f"{result['output_mb']:>8.1f} MB  peak RSS parent {result['peak_rss_parent_mb']} MB, "
              f"worker {result['peak_rss_worker_mb']} MB  (CPU ours {result['cpu_ours_s']} s, of which the parent "
              f"{result['cpu_parent_s']} s; others {result['cpu_others_s']} s; loadavg after {result['loadavg']})",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
