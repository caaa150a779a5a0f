"""The judge of our SSDA903 output: the DfE rules as csc-validator-be-903 implements them.

The package pins old numpy/pandas, so it lives in its own virtual environment,
`.cache/venv-903` (made once with the machine's `python3 -m venv`, then reused), and runs
in a subprocess. `judge(folder, year)` validates the CSV tables in `folder` with the
ruleset of that collection year and returns every rule failure, one dict per failing row.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VENV = PROJECT_ROOT / ".cache" / "venv-903"
PACKAGE = "csc-validator-be-903==0.1.17"  # installs on Python 3.11 (numpy 1.24, pandas 1.5)
_READY = VENV / ".installed"

# Run inside the judge's venv: lac_validator's own API (LacValidator + the year's registry),
# the same calls its CLI `run-offline` makes, with the rule failures returned as JSON.
_RUNNER = r"""
import json, logging, sys, importlib
from pathlib import Path
logging.disable(logging.CRITICAL)
from lac_validator.lac_validator import LacValidator
from lac_validator.types import UploadedFile

folder, collection_year, la_code, ruleset = sys.argv[1:5]
files = [UploadedFile(name=p.name, description="This year", file_content=p.read_bytes())
         for p in sorted(Path(folder).glob("*.csv"))]
registry = importlib.import_module(f"lac_validator.rules.{ruleset}").registry
v = LacValidator(metadata={"collectionYear": collection_year, "localAuthority": la_code},
                 files=files, registry=registry, selected_rules=None)
failures = []
for table, df in v.ds_results.items():
    if table == "metadata":
        continue
    for col in [c for c in df.columns if str(c).startswith("ERR_")]:
        code = col[4:]
        for idx in df.index[df[col] == True]:
            rule = registry[code]
            failures.append({"rule": code, "table": table, "row": int(idx),
                             "child": None if "CHILD" not in df.columns else str(df.at[idx, "CHILD"]),
                             "fields": sorted(rule.affected_fields or []), "message": rule.message})
print(json.dumps({"failures": failures, "crashed": sorted(map(str, v.fails)),
                  "skipped": sorted(map(str, v.skips)), "ran": sorted(map(str, v.dones))}))
"""


@dataclass
class Judgement:
    failures: list[dict] = field(default_factory=list)   # rule, table, row, child, fields, message
    crashed: list[str] = field(default_factory=list)     # rules that raised on our data
    skipped: list[str] = field(default_factory=list)     # rules whose tables were not given
    ran: list[str] = field(default_factory=list)

    def rules(self) -> set[str]:
        return {f["rule"] for f in self.failures}


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv() -> Path:
    """The judge's interpreter, installing csc-validator-be-903 on first use (locked)."""
    if _READY.exists():
        return _python()
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "venv-903.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _READY.exists():
            return _python()
        if VENV.exists():
            shutil.rmtree(VENV)
        base = shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PACKAGE],
                       check=True)
        _READY.write_text(PACKAGE + "\n")
    return _python()


def judge(folder: Path, year: int, la_code: str = "E06000059", ruleset: str | None = None) -> Judgement:
    """Validate the CSVs in `folder` as the return for the year ending 31 March `year`."""
    python = ensure_venv()
    ruleset = ruleset or f"lac{year - 1}_{str(year)[2:]}"
    proc = subprocess.run([str(python), "-c", _RUNNER, str(folder), str(year), la_code, ruleset],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"csc-validator-be-903 failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return Judgement(**out)
