"""`lac-adapter fixtures load DIR --target URL` with a generated population: complete, concurrent,
resumable after being killed half-way without duplicates, with a summary of what failed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapter.config import PROJECT_ROOT
from adapter.synth.load import journal_path
from tests.support.auth import ADMIN_TOKEN, admin_session
from tests.support.server import running_server

CHILDREN = 24
# Consents are left out of the comparison with the NDJSON: this server also extracts Consents from
# completed consent forms (QuestionnaireResponse/$extract on submit), which a plain server does not.
COUNTED = ("Patient", "EpisodeOfCare", "QuestionnaireResponse", "Task", "ServiceRequest", "RelatedPerson")


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("population") / "pop"
    run = subprocess.run([sys.executable, "-m", "adapter", "fixtures", "generate", "--children", str(CHILDREN),
                          "--seed", "11", "--out", str(out), "--workers", "1"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return out


def load(population: Path, base: str, token: str = ADMIN_TOKEN, wait: bool = True):
    args = [sys.executable, "-m", "adapter", "fixtures", "load", str(population), "--target", base,
            "--token", token, "--workers", "3"]
    if not wait:
        return subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(args, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)


def expected_counts(population: Path) -> dict[str, int]:
    return {t: sum(1 for line in (population / "fhir" / "ndjson" / f"{t}.ndjson").read_text().splitlines() if line)
            for t in COUNTED}


def server_counts(base: str, types=COUNTED) -> dict[str, int]:
    http = admin_session()
    return {t: http.get(f"{base}/{t}", params={"_summary": "count"}).json()["total"] for t in types}


def test_killed_half_way_then_resumed_loads_everything_once(population, tmp_path):
    with running_server(f"sqlite:///{tmp_path / 'target.sqlite3'}") as base:
        journal = journal_path(population, base)
        first = load(population, base, wait=False)
        deadline = time.monotonic() + 120
        while not (journal.exists() and len(journal.read_text().splitlines()) >= 3):
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "no child finished"
            time.sleep(0.05)
        first.kill()
        first.wait(10)
        done = len(journal.read_text().splitlines())
        assert 3 <= done < CHILDREN
        second = load(population, base)
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"{CHILDREN} children:" in second.stdout and "0 failed" in second.stdout
        assert f"{done} done by an earlier run" in second.stdout
        assert server_counts(base) == expected_counts(population)  # complete, and nothing twice
        third = load(population, base)
        assert f"{CHILDREN} done by an earlier run" in third.stdout
        everything = server_counts(base, (*COUNTED, "Consent", "Observation", "CarePlan"))
        journal.unlink()  # without the journal every Bundle is sent again: still nothing twice
        fourth = load(population, base)
        assert fourth.returncode == 0 and "0 failed" in fourth.stdout, fourth.stdout
        assert server_counts(base, (*COUNTED, "Consent", "Observation", "CarePlan")) == everything


def test_failures_are_summarised_by_reason_and_the_exit_code_says_so(population, tmp_path):
    with running_server(f"sqlite:///{tmp_path / 'target.sqlite3'}") as base:
        refused = load(population, base, token="not-a-valid-token")
        assert refused.returncode == 1
        assert f"0 loaded, 0 already there, 0 done by an earlier run, {CHILDREN} failed" in refused.stdout
        assert f"{CHILDREN} failed: HTTP 401" in refused.stdout
        assert "run the same command again" in refused.stdout
        assert not journal_path(population, base).exists() or not journal_path(population, base).read_text()


def test_a_population_needs_a_target(population):
    run = subprocess.run([sys.executable, "-m", "adapter", "fixtures", "load", str(population)],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--target" in run.stderr
