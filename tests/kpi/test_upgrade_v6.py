"""`lac-adapter db upgrade` from schema 5: kpi_assessment is made again with the columns of
schema 6 and rebuilt, and kpi_oc2 is built from the stored children (SQLite and PostgreSQL)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from sqlalchemy import Column, MetaData, Table, select, text
from typer.testing import CliRunner

from adapter.cli import app
from tests.kpi.population import ASSESSMENT, BS, LOOKED_AFTER
from tests.support.server import postgres_database, require_postgres, sqlite_database

SCHEMA_6_COLUMNS = {"offered_consent", "response_id", "audit_score", "audit_passed", "plan_return_wd"}
BASE = "https://lac-fhir-adapter.example/fhir/"


@contextmanager
def fresh_database(backend: str, tmp_path):
    if backend == "sqlite":
        with sqlite_database(tmp_path) as url:
            yield url
    else:
        require_postgres()
        with postgres_database() as url:
            yield url


def as_schema_5(engine) -> None:
    """Make a schema-6 database look like schema 5: the old kpi_assessment, no kpi_oc2."""
    from adapter.store.tables import assessment_fact_table

    old = Table("kpi_assessment", MetaData(), *[Column(c.name, c.type, primary_key=c.primary_key)
                                                for c in assessment_fact_table.columns if c.name not in SCHEMA_6_COLUMNS])
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE kpi_oc2"))
        conn.execute(text("DROP TABLE kpi_assessment"))
        conn.execute(text("DROP TABLE audit_journal"))  # schema 7
        old.create(conn)
        conn.execute(text("DELETE FROM schema_version WHERE version >= 6"))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_from_schema_5_rebuilds_the_facts_with_the_new_measures(backend, tmp_path):
    from adapter.config import load_settings
    from adapter.fhir.search_params import SearchRegistry
    from adapter.security.caller import SYSTEM
    from adapter.store import facts_sql, oc2_sql
    from adapter.store.database import current_version, make_engine, upgrade
    from adapter.store.repository import Repository

    with fresh_database(backend, tmp_path) as url:
        settings = load_settings(database_url=url)
        engine = make_engine(url)
        upgrade(engine)
        repo = Repository(engine, SearchRegistry(settings.resource_types), settings.base_url)
        with repo.transaction(SYSTEM) as tx:
            la = tx.create({"resourceType": "Organization", "identifier": [
                {"system": BASE + "Id/local-authority", "value": "LA-DEMO-1"}]})
            patient = tx.create({"resourceType": "Patient", "birthDate": "2006-01-01"})
            ref = {"reference": f"Patient/{patient.res_id}"}
            tx.create({"resourceType": "EpisodeOfCare", "status": "active", "type": [LOOKED_AFTER], "patient": ref,
                       "managingOrganization": {"reference": f"Organization/{la.res_id}"},
                       "period": {"start": "2021-01-04"}})
            tx.create({"resourceType": "Consent", "status": "proposed", "dateTime": "2022-08-01", "patient": ref,
                       "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                             "code": "treatment"}]},
                       "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                       "extension": [{"url": BASE + "StructureDefinition/lac-consent-grantor",
                                      "valueCoding": {"system": BASE + "CodeSystem/lac-consent-grantor",
                                                      "code": "young-person"}}],
                       "provision": {"type": "permit", "purpose": [{"system": BASE + "CodeSystem/lac-consent-purpose",
                                                                    "code": "assessment"}]}})
            tx.create({"resourceType": "Task", "status": "in-progress", "intent": "order",
                       "code": {"coding": [{"system": ASSESSMENT, "code": "rha"}]}, "for": ref,
                       "lastModified": "2022-08-10", "restriction": {"period": {"end": "2022-08-31"}},
                       "businessStatus": {"coding": [{"system": BS, "code": "report-sent"}]}})
            tx.create({"resourceType": "Observation", "status": "final", "effectiveDateTime": "2022-03-31",
                       "code": {"coding": [{"system": BASE + "CodeSystem/lac-observation",
                                            "code": "immunisations-up-to-date"}]},
                       "subject": ref, "valueBoolean": True})
        as_schema_5(engine)
        with engine.connect() as conn:
            assert current_version(conn) == 5
        engine.dispose()

        result = CliRunner().invoke(app, ["db", "upgrade", "--database", url])
        assert result.exit_code == 0, result.output
        assert "assessment facts built for 1 stored Tasks" in result.output
        assert "OC2 facts built for 1 stored children" in result.output
        assert "schema upgraded from version 5 to 7" in result.output
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                facts = conn.execute(select(facts_sql.F)).mappings().one()
                assert facts["offered_consent"].isoformat() == "2022-08-01" and facts["own_consent"] is None
                oc2 = {r["year"]: r for r in conn.execute(select(oc2_sql.O)).mappings()}
                assert sorted(oc2) == list(range(2022, 2024))   # 31 March 2022 and 2023; 18 on 1 Jan 2024
                assert oc2[2022]["immunisations"] is True and oc2[2023]["immunisations"] is None
                assert oc2[2022]["la"] == "LA-DEMO-1" and oc2[2022]["age_band"] == "16-17"
        finally:
            engine.dispose()
        again = CliRunner().invoke(app, ["db", "upgrade", "--database", url])
        assert again.exit_code == 0 and "schema already at version 7" in again.output
