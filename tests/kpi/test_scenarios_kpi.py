"""The assessment facts of the six curated scenarios (fixtures/scenarios), loaded as partners'
documents with `lac-adapter fixtures load`, and the October 2026 monthly dataset over them.

No Task is completed by the scenarios' documents: every IHA is still open. October 2026 has
no bank holiday, and neither have September and November.
"""

from __future__ import annotations

import csv
from datetime import date

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from adapter.cli import app
from adapter.store import facts_sql
from adapter.store.database import make_engine

NHS = "https://fhir.nhs.uk/Id/nhs-number"


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('kpi-scenarios') / 'x.sqlite3'}"
    result = CliRunner().invoke(app, ["fixtures", "load", "--database", url])
    assert result.exit_code == 0, result.output
    return url


def facts_by_birth(url: str) -> dict[str, dict]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(facts_sql.F)).mappings()]
    engine.dispose()
    return {str(r["birth_date"]): r for r in rows}


def test_every_scenario_iha_has_its_facts(scenarios):
    rows = facts_by_birth(scenarios)
    isla, noah, amara = rows["2025-04-22"], rows["2017-07-19"], rows["2014-01-26"]
    ezra, lily = rows["2010-05-03"], rows["2019-11-30"]
    assert (isla["placement"], isla["la"], isla["provider"], isla["due"], isla["consent"]) == \
        ("in-area", "991", "RD3", date(2026, 10, 12), date(2026, 9, 15))
    # requested from the out-of-area provider ZZ901, still out of area after moving back in area
    assert (noah["placement"], noah["provider"], noah["due"]) == ("out-of-area", "ZZ901", date(2026, 6, 29))
    assert (amara["placement"], amara["la"], amara["provider"], amara["entered_care"], amara["due"]) == \
        ("placed-in", "992", "RD3", date(2026, 7, 6), date(2026, 8, 3))
    assert (ezra["age_band"], ezra["consent"]) == ("16-17", date(2026, 9, 30))     # his own consent
    assert lily["consent"] == date(2026, 10, 21)                                    # refused, then given
    assert all(r["assessment"] == "iha" and r["done"] is None for r in rows.values())


def test_october_2026_dataset(scenarios, tmp_path):
    result = CliRunner().invoke(app, ["report", "monthly", "--month", "2026-10", "--out", str(tmp_path),
                                      "--database", scenarios, "--as-of", "2026-11-20"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "lac-kpi-2026-10-measures.csv", encoding="utf-8") as fh:
        measures = list(csv.DictReader(fh))
    iha = next(r for r in measures if r["group"] == "iha" and not r["stratifier"])
    assert (iha["denominator"], iha["numerator"], iha["score"]) == ("2", "0", "0.0")
    causes = {r["stratum"]: r["initial_population"] for r in measures if r["stratifier"] == "breach-segment"}
    assert causes["referral"] == "2"   # consent came, but no request has gone to the provider yet
    with open(tmp_path / "lac-kpi-2026-10-children.csv", encoding="utf-8") as fh:
        children = {r["birth_date"]: r for r in csv.DictReader(fh)}
    isla = children["2025-04-22"]
    # 14 Sep -> 20 Nov 2026: 49 working days; consent the next day, then waiting for the referral
    assert (isla["delay_total_wd"], isla["wd_notification"], isla["wd_consent"], isla["wd_referral"]) == \
        ("49", "0", "1", "48")
    assert children["2010-05-03"]["delay_total_wd"] == "39"
