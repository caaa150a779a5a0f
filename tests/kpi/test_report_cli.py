"""`lac-adapter report monthly` (CSV + XLSX) and `db upgrade` building the facts of existing Tasks."""

from __future__ import annotations

import csv
import zipfile

from sqlalchemy import delete, select, text
from typer.testing import CliRunner

from adapter.cli import app
from tests.kpi.population import (
    ASSESSMENT,
    BS,
    LOOKED_AFTER,
    assessment,
    child,
    episode,
    iha_steps,
    organisation,
)


def test_monthly_dataset_has_the_measures_and_the_children_behind_them(fhir, tag, database_url, tmp_path):
    la, rd3 = organisation(fhir, tag, "LA-DEMO-1", la=True), organisation(fhir, tag, "RD3")
    k1, k2 = child(fhir, tag, "2013-03-03"), child(fhir, tag, "2013-04-04")
    for c in (k1, k2):
        episode(fhir, tag, c, la, "2021-10-15")                  # IHA due Friday 12 November 2021
    assessment(fhir, tag, k1, rd3, "iha", iha_steps("2021-10-18", "2021-11-12"))
    assessment(fhir, tag, k2, rd3, "iha", iha_steps("2021-11-01", "2021-11-19"))   # the LA told health on day 11

    result = CliRunner().invoke(app, ["report", "monthly", "--month", "2021-11", "--out", str(tmp_path),
                                      "--database", database_url, "--as-of", "2026-11-01"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "lac-kpi-2021-11-measures.csv", encoding="utf-8") as fh:
        measures = list(csv.DictReader(fh))
    iha = next(r for r in measures if r["measure"] == "iha-within-20-working-days" and r["group"] == "iha"
               and not r["stratifier"])
    assert (iha["denominator"], iha["numerator"], iha["score"], iha["target"]) == ("2", "1", "0.5", "0.85")
    cause = next(r for r in measures if r["group"] == "delay-reasons" and r["stratum"] == "notification")
    assert cause["initial_population"] == "1"
    assert {r["measure"] for r in measures} == {"iha-within-20-working-days", "rha-by-due-date", "out-of-area-requests",
                                                "young-people-own-consent", "assessments-quality-assured",
                                                "assessments-passing-quality-audit", "health-plans-returned-in-time",
                                                "out-of-area-tariff", "oc2-health-outcomes"}
    tariff = next(r for r in measures if r["measure"] == "out-of-area-tariff" and r["group"] == "payable"
                  and not r["stratifier"])
    assert (tariff["score"], tariff["unit"]) == ("0.0", "GBP")

    with open(tmp_path / "lac-kpi-2021-11-children.csv", encoding="utf-8") as fh:
        children = {r["patient_id"]: r for r in csv.DictReader(fh) if r["patient_id"] in (k1, k2)}
    assert children[k1]["due"] == "2021-11-12" and children[k1]["on_time"] == "True" and not children[k1]["delay_cause"]
    late = children[k2]
    assert (late["on_time"], late["late"], late["delay_cause"], late["delay_total_wd"]) == ("False", "True", "notification", "25")
    assert (late["wd_notification"], late["wd_scheduling"], late["wd_report"]) == ("11", "14", "0")

    with zipfile.ZipFile(tmp_path / "lac-kpi-2021-11.xlsx") as book:
        names = book.namelist()
        workbook = book.read("xl/workbook.xml").decode()
    assert "xl/worksheets/sheet1.xml" in names and "xl/worksheets/sheet2.xml" in names
    assert 'name="Measures"' in workbook and 'name="Children"' in workbook


def test_bad_month_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["report", "monthly", "--month", "2021-13", "--out", str(tmp_path),
                                      "--database", f"sqlite:///{tmp_path}/x.sqlite3"])
    assert result.exit_code != 0 and "not a month" in result.output


def test_db_upgrade_builds_the_facts_of_tasks_stored_before_them(tmp_path):
    from adapter.config import load_settings
    from adapter.fhir.search_params import SearchRegistry
    from adapter.security.caller import SYSTEM
    from adapter.store import facts_sql
    from adapter.store.database import make_engine, upgrade
    from adapter.store.repository import Repository

    url = f"sqlite:///{tmp_path}/old.sqlite3"
    settings = load_settings(database_url=url)
    engine = make_engine(url)
    upgrade(engine)
    repo = Repository(engine, SearchRegistry(settings.resource_types), settings.base_url)
    with repo.transaction(SYSTEM) as tx:
        la = tx.create({"resourceType": "Organization", "identifier": [
            {"system": "https://lac-fhir-adapter.example/fhir/Id/local-authority", "value": "LA-DEMO-1"}]})
        patient = tx.create({"resourceType": "Patient", "birthDate": "2015-01-01"})
        tx.create({"resourceType": "EpisodeOfCare", "status": "active", "type": [LOOKED_AFTER],
                   "patient": {"reference": f"Patient/{patient.res_id}"},
                   "managingOrganization": {"reference": f"Organization/{la.res_id}"}, "period": {"start": "2021-04-30"}})
        task = tx.create({"resourceType": "Task", "status": "requested", "intent": "order",
                          "code": {"coding": [{"system": ASSESSMENT, "code": "iha"}]},
                          "for": {"reference": f"Patient/{patient.res_id}"}, "lastModified": "2021-05-04",
                          "businessStatus": {"coding": [{"system": BS, "code": "notification-received"}]}})
    with engine.begin() as conn:  # as a database of schema 4 would be: no facts table
        conn.execute(delete(facts_sql.F))
        conn.execute(text("DROP TABLE kpi_assessment"))
        conn.execute(text("DROP TABLE kpi_oc2"))
        conn.execute(text("DELETE FROM schema_version WHERE version >= 5"))
    engine.dispose()

    result = CliRunner().invoke(app, ["db", "upgrade", "--database", url])
    assert result.exit_code == 0, result.output
    assert "assessment facts built for 1 stored Tasks" in result.output
    engine = make_engine(url)
    with engine.connect() as conn:
        row = conn.execute(select(facts_sql.F).where(facts_sql.F.c.task_id == task.res_id)).mappings().one()
    engine.dispose()
    assert (str(row["due"]), row["la"], row["placement"], str(row["notified"])) == \
        ("2021-06-01", "LA-DEMO-1", "in-area", "2021-05-04")
