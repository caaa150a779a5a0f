"""The lac-adapter command: schema upgrades, loading files, and serving."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.auth import ADMIN_TOKEN, admin_session
from tests.support.server import free_port

ADMIN_HTTP = admin_session()
DEV_LA = {"Authorization": "Bearer dev-la-token"}  # config/adapter.toml [auth.dev_tokens], `serve --dev`

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "adapter"]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_db_upgrade_creates_then_reports_current(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    first = run("db", "upgrade", "--database", url)
    assert first.returncode == 0, first.stderr
    assert "from version 0 to 7" in first.stdout
    again = run("db", "upgrade", "--database", url)
    assert "already at version 7" in again.stdout


def test_db_upgrade_brings_an_older_schema_forward(tmp_path):
    from datetime import datetime

    from sqlalchemy import inspect

    from adapter.store import database, tables

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = database.make_engine(url)
    with engine.connect().execution_options(write=True) as conn, conn.begin():  # a version-1 database
        database.MIGRATIONS[0][1](conn)
        conn.execute(tables.SchemaVersion.__table__.insert().values(version=1, applied=datetime(2026, 1, 1)))
    engine.dispose()
    refused = run("serve", "--port", "1", "--database", url)
    assert refused.returncode != 0 and "db upgrade" in (refused.stdout + refused.stderr)
    upgraded = run("db", "upgrade", "--database", url)
    assert "from version 1 to 7" in upgraded.stdout
    engine = database.make_engine(url)
    assert {"outbox", "inbound_message", "audit_journal"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_load_is_idempotent_and_bad_file_names_itself(tmp_path):
    url = f"sqlite:///{tmp_path / 'load.sqlite3'}"
    assert run("load", "fixtures/demo", "--database", url).returncode == 0
    assert run("load", "fixtures/demo", "--database", url).returncode == 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceType": "Patient", "gender": 5}')
    result = run("load", str(bad), "--database", url)
    assert result.returncode == 1
    assert "bad.json" in result.stderr and "Patient.gender" in result.stderr


def test_serve_starts_two_workers_on_an_empty_database_with_demo_data(tmp_path):
    port = free_port()
    url = f"sqlite:///{tmp_path / 'serve.sqlite3'}"
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--database", url, "--load", "fixtures/demo",
                             "--workers", "2", "--dev"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = requests.get(f"{base}/Patient", params={"identifier": "https://fhir.nhs.uk/Id/nhs-number|9990000034"},
                                 headers=DEV_LA, timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(proc.stdout.read() if proc.stdout else "server did not start")
                time.sleep(0.2)
        assert r.status_code == 200
        assert json.loads(r.content)["total"] == 1  # the demo LA sees its own child (config dev token)
        assert requests.get(f"{base}/Patient", timeout=5).status_code == 401
        ooa = requests.get(f"{base}/Patient", headers={"Authorization": "Bearer dev-ooa-token"}, timeout=5)
        assert ooa.status_code == 200 and json.loads(ooa.content)["total"] == 0
    finally:
        proc.terminate()
        proc.wait(20)


def test_validate_files_offline():
    good = run("validate", "fixtures/forms/iha-c-completed.json", "fixtures/forms/lac-consent-completed.json",
               "fixtures/demo/demo-caseload.json")
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.count(": ok") == 3
    bad = run("validate", "fixtures/forms/rha-yp-broken.json")
    assert bad.returncode == 1
    expected = json.loads((ROOT / "fixtures/forms/rha-yp-broken.expected.json").read_text())
    for issue in expected:
        assert issue["expression"] in bad.stdout


def test_validate_reports_unreadable_input(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text('<Patient xmlns="http://hl7.org/fhir"><foo value="1"/></Patient>')
    result = run("validate", str(broken))
    assert result.returncode == 1
    assert "broken.xml" in result.stdout and "foo" in result.stdout


def test_map_prints_the_fhir_bundle_offline():
    result = run("map", "fixtures/la-notifications/entered-care.xml")
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    types = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"Patient", "EpisodeOfCare", "Task", "ServiceRequest"} <= types
    tables = run("map", "fixtures/ssda903/header.csv", "fixtures/ssda903/episodes.csv", "fixtures/ssda903/oc2.csv")
    assert tables.returncode == 0, tables.stderr
    assert json.loads(tables.stdout)["type"] == "transaction"


def test_map_names_the_line_of_a_broken_document(tmp_path):
    broken = tmp_path / "form.xml"
    broken.write_text((ROOT / "fixtures/forms-xml/iha-c.xml").read_text().replace('nhsNumber="9990000042"',
                                                                                    'nhsNumber="9990000043"'))
    result = run("map", str(broken))
    assert result.returncode == 1
    assert "line" in result.stderr and "NHS" in result.stderr


def test_import_to_a_running_server_then_export_903(tmp_path):
    from tests.support.server import running_server

    url = f"sqlite:///{tmp_path / 'import.sqlite3'}"
    with running_server(url) as base:
        first = run("import", "fixtures/ssda903", "fixtures/la-notifications/entered-care.xml", "--to", base, "--token", ADMIN_TOKEN)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "3 imported, 0 already there, 0 failed" in first.stdout  # CSV tables, 903 XML, notification
        again = run("import", "fixtures/ssda903", "--to", base, "--token", ADMIN_TOKEN)
        assert "0 imported, 2 already there" in again.stdout
        bad = run("import", "fixtures/la-notifications/legal-status-change.xml", "--to", base, "--token", ADMIN_TOKEN)  # child not held
        assert bad.returncode == 1 and "422" in bad.stdout
    out = tmp_path / "903"
    exported = run("export-903", str(out), "--year", "2026", "--database", url)
    assert exported.returncode == 0, exported.stderr
    header = (out / "header.csv").read_text().splitlines()
    assert header[0] == "CHILD,SEX,DOB,ETHNIC,UPN,MOTHER,MC_DOB"
    assert len(header) > 1


def test_outbox_commands(tmp_path):
    import os

    from adapter.exchange import outbox
    from adapter.store.database import make_engine, prepare
    from tests.support.server import running_server

    url = f"sqlite:///{tmp_path / 'sender.sqlite3'}"
    engine = make_engine(url)
    prepare(engine)
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        outbox.enqueue(conn, destination="OOA", method="POST", path="Patient",
                       body=b'{"resourceType":"Patient","name":[{"family":"Clioutbox"}]}',
                       content_type="application/fhir+json", kind="test")
    engine.dispose()
    listed = run("outbox", "list", "--database", url)
    assert "pending: 1" in listed.stdout and "POST Patient" in listed.stdout
    with running_server(f"sqlite:///{tmp_path / 'receiver.sqlite3'}") as base:
        partners = tmp_path / "partners.toml"
        partners.write_text(f'[self]\nods = "HOME"\n\n[[partner]]\nods = "OOA"\nname = "OOA trust"\n'
                            f'base_url = "{base}"\n'
                            'outbound_auth = { type = "bearer", token_env = "OOA_TOKEN" }\n')
        env = {**os.environ, "ADAPTER_PARTNERS": str(partners), "OOA_TOKEN": ADMIN_TOKEN}
        delivered = subprocess.run([*CLI, "outbox", "deliver", "--once", "--database", url], cwd=ROOT, env=env,
                                   capture_output=True, text=True, timeout=120)
        assert "1 message(s) attempted" in delivered.stdout, delivered.stderr
        assert ADMIN_HTTP.get(f"{base}/Patient", params={"family": "Clioutbox"}).json()["total"] == 1
    assert "delivered: 1" in run("outbox", "list", "--database", url).stdout
    replayed = run("outbox", "replay", "1", "--database", url)
    assert "queued as" in replayed.stdout
    assert "pending: 1" in run("outbox", "list", "--database", url).stdout
    assert "0 message(s) queued again" in run("outbox", "retry", "--database", url).stdout


def test_refresh_holidays_from_a_gov_uk_shaped_file(tmp_path):
    source = tmp_path / "bank-holidays.json"
    source.write_text(json.dumps({"england-and-wales": {"division": "england-and-wales", "events": [
        {"title": "New Year’s Day", "date": "2031-01-01", "notes": "", "bunting": True},
        {"title": "Good Friday", "date": "2031-04-11", "notes": "", "bunting": False}]},
        "scotland": {"division": "scotland", "events": []}}))
    out = tmp_path / "copy.json"
    result = run("refresh-holidays", "--source", str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 England and Wales bank holidays (2031-01-01 to 2031-04-11)" in result.stdout
    from datetime import date

    from adapter.pathway.clocks import load_bank_holidays
    assert load_bank_holidays(out) == {date(2031, 1, 1), date(2031, 4, 11)}
    broken = tmp_path / "broken.json"
    broken.write_text('{"scotland": {}}')
    bad = run("refresh-holidays", "--source", str(broken), "--out", str(out))
    assert bad.returncode == 1 and "england-and-wales" in bad.stderr
