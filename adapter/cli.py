"""The `lac-adapter` command: serve the FHIR API, manage the database, load data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import cli_annual  # noqa: F401 - registers `report annual` on report_app
from .cli_fixtures import fixtures_app
from .cli_report import report_app
from .config import load_settings

app = typer.Typer(help="lac-fhir-adapter: FHIR R4 adapter for looked-after children's health.",
                  no_args_is_help=True)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
outbox_app = typer.Typer(help="Messages to partners: inspect, retry, replay, deliver.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
app.add_typer(fixtures_app, name="fixtures")
app.add_typer(report_app, name="report")

TokenOption = typer.Option(None, "--token", envvar="LAC_ADAPTER_TOKEN", show_default=False,
                           help="Bearer access token for the server (from its /auth/token, or a "
                                "`serve --dev` static token); default: env LAC_ADAPTER_TOKEN.")
DatabaseOption = typer.Option(None, "--database", help="SQLAlchemy URL, e.g. sqlite:///var/a.db or "
                                                       "postgresql+psycopg://host/db (default: config file)")


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
          port: int = typer.Option(8080, help="TCP port."),
          database: Optional[str] = DatabaseOption,
          load: list[Path] = typer.Option([], "--load", help="Load FHIR Bundles/resources from this file "
                                                             "or folder before serving (repeatable)."),
          workers: int = typer.Option(1, min=1, help="Server processes; on N cores, N serves N times the "
                                                    "reads (each process has its own connection pool)."),
          deliver: bool = typer.Option(True, help="Also run an outbox delivery worker in this process."),
          dev: bool = typer.Option(False, "--dev", help="Development only: also accept the static bearer "
                                                        "tokens of [auth.dev_tokens] (local demos).")) -> None:
    """Start the FHIR server; the FHIR base is http://HOST:PORT/fhir."""
    import os
    from dataclasses import replace

    import uvicorn

    from .api.app import create_app

    settings = load_settings(database_url=database)
    if dev:
        settings = replace(settings, dev_mode=True)
        os.environ["ADAPTER_DEV_MODE"] = "1"  # read by each worker process (app_from_environment)
        typer.secho("DEVELOPMENT MODE: static bearer tokens are accepted. Never use --dev with real data.",
                    fg="red", bold=True, err=True)
        for token in settings.dev_tokens:
            typer.secho(f"  Authorization: Bearer {token.token}   ({token.organisation}, "
                        f"{token.role or 'role from the partner registry'}, {' '.join(token.scopes)})",
                        fg="red", err=True)
    fhir_app = create_app(settings)
    for path in load:
        _load_into(fhir_app.state.router, path)
    typer.echo(f"FHIR base: http://{host}:{port}/fhir   database: {_safe_url(settings.database_url)}"
               f"   workers: {workers}")
    if deliver:
        from .exchange.partners import load_registry
        from .exchange.worker import start_background

        start_background(fhir_app.state.engine, load_registry())
    if workers == 1:
        uvicorn.run(fhir_app, host=host, port=port, log_level="info", access_log=False)
        return
    fhir_app.state.engine.dispose()
    os.environ["ADAPTER_DATABASE_URL"] = settings.database_url  # read by each worker's settings
    uvicorn.run("adapter.api.app:app_from_environment", factory=True, host=host, port=port,
                workers=workers, log_level="info", access_log=False)


@app.command("load")
def load_cmd(paths: list[Path] = typer.Argument(..., help="Files or folders of FHIR JSON/XML."),
             database: Optional[str] = DatabaseOption) -> None:
    """Load FHIR resources or Bundles straight into the database (each file one transaction)."""
    from .api.app import create_app

    fhir_app = create_app(load_settings(database_url=database))
    try:
        for path in paths:
            _load_into(fhir_app.state.router, path)
    finally:
        fhir_app.state.router.trail.close()  # store queued audit events (refused files) before exit


def _load_into(router, path: Path) -> None:
    from .fhir import jsonio
    from .fhir.errors import FhirError
    from .rest.messages import FhirRequest
    from .security.caller import SYSTEM

    files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".xml")) if path.is_dir() else [path]
    if not files:
        typer.secho(f"{path}: no .json or .xml files", fg="red", err=True)
        raise typer.Exit(2)
    for file in files:
        try:
            data = file.read_bytes()
            if file.suffix == ".xml":
                from .fhir import xml as fhir_xml

                resource = fhir_xml.parse_resource(data)
            else:
                resource = jsonio.loads_resource(data)
            if resource["resourceType"] == "Bundle" and resource.get("type") in ("transaction", "batch"):
                req = FhirRequest("POST", [], body=resource)
            elif resource.get("id"):
                req = FhirRequest("PUT", [resource["resourceType"], resource["id"]], body=resource)
            else:
                req = FhirRequest("POST", [resource["resourceType"]], body=resource)
            router.handle(SYSTEM, req, "urn:lac-adapter:load")
        except FhirError as err:
            typer.secho(f"{file}: {err.status} {err.diagnostics}", fg="red", err=True)
            raise typer.Exit(1)
        except OSError as err:
            typer.secho(f"{file}: {err}", fg="red", err=True)
            raise typer.Exit(1)
        typer.echo(f"loaded {file}")


@app.command("validate")
def validate_cmd(files: list[Path] = typer.Argument(..., help="FHIR resources (JSON or XML) to check."),
                 profile: Optional[str] = typer.Option(None, help="Also validate against this profile URL.")) -> None:
    """Validate files offline against the R4 model, their profiles and Questionnaires."""
    from .fhir import jsonio
    from .fhir.errors import FhirError
    from .validation.conformance import CanonicalIndex, published_resources
    from .validation.terminology import Terminology, default_terminology
    from .validation.validator import Validator, errors

    parsed: list[tuple[Path, dict]] = []
    failed = False
    for file in files:
        try:
            data = file.read_bytes()
            if file.suffix.lower() == ".xml":
                from .fhir import xml as fhir_xml

                parsed.append((file, fhir_xml.parse_resource(data)))
            else:
                parsed.append((file, jsonio.loads_resource(data)))
        except (FhirError, OSError) as err:
            typer.secho(f"{file}: error: {getattr(err, 'diagnostics', err)}", fg="red")
            failed = True
    given = [r for _, r in parsed]
    index = CanonicalIndex(published_resources() + given)
    terminology = default_terminology()
    if any(r.get("resourceType") in ("CodeSystem", "ValueSet") for r in given):
        terminology = Terminology([*published_resources(), *given])
    validator = Validator(terminology)
    for file, resource in parsed:
        issues = validator.validate(resource, index.resolve, profile)
        if not issues:
            typer.echo(f"{file}: ok")
        for issue in issues:
            where = f" at {', '.join(issue.expression)}" if issue.expression else ""
            colour = {"error": "red", "fatal": "red", "warning": "yellow"}.get(issue.severity)
            typer.secho(f"{file}: {issue.severity}{where}: {issue.diagnostics}", fg=colour)
        failed = failed or bool(errors(issues))
    if failed:
        raise typer.Exit(1)


@app.command("map")
def map_cmd(files: list[Path] = typer.Argument(..., help="A form or notification XML, or SSDA903 XML/CSV tables "
                                                         "(several CSVs are one return).")) -> None:
    """Map partner documents to FHIR offline and print the transaction Bundle."""
    from .fhir import jsonio
    from .fhir.errors import FhirError

    try:
        doc = _map_files(files)
    except FhirError as err:
        for issue in err.issues:
            typer.secho(f"error: {issue.diagnostics}", fg="red", err=True)
        raise typer.Exit(1)
    except OSError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(1)
    for location in doc.unconsumed:
        typer.secho(f"warning: not mapped: {location}", fg="yellow", err=True)
    typer.echo(jsonio.dumps(doc.bundle, pretty=True).decode())


def _map_files(files: list[Path]):
    from .mapping import documents

    if len(files) > 1 or files[0].is_dir():
        tables = _csv_tables(files)
        from .mapping.ssda903 import map_903

        return map_903(tables)
    raw = files[0].read_bytes()
    return documents.MAPPERS[documents.detect(raw)](raw, None)


def _csv_tables(paths: list[Path]) -> dict[str, bytes]:
    files = [p for path in paths for p in (sorted(path.glob("*.csv")) if path.is_dir() else [path])]
    return {p.name: p.read_bytes() for p in files}


@app.command("import")
def import_cmd(paths: list[Path] = typer.Argument(..., help="Documents, or folders of them (a folder of .csv "
                                                            "tables is one SSDA903 return)."),
               to: str = typer.Option(..., "--to", help="FHIR base URL of a lac-fhir-adapter server."),
               token: Optional[str] = TokenOption) -> None:
    """Send partner documents to a running adapter, with a progress bar and a summary."""
    import io
    import zipfile

    import requests
    from rich.progress import Progress

    from .mapping import documents

    uploads: list[tuple[str, str, bytes, str]] = []  # (label, operation, body, content type)
    for path in paths:
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        csvs = [p for p in candidates if p.suffix.lower() == ".csv"]
        if csvs:
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                for p in csvs:
                    archive.write(p, p.name)
            uploads.append((f"{path} (SSDA903 tables)", "$import-903", buffer.getvalue(), "application/zip"))
        for p in candidates:
            if p.suffix.lower() == ".xml":
                raw = p.read_bytes()
                try:
                    kind = documents.detect(raw)
                except Exception as exc:  # noqa: BLE001 - reported per file below
                    uploads.append((str(p), "", b"", str(exc)))
                    continue
                uploads.append((str(p), documents.OPERATION_OF[kind], raw, "application/xml"))
    failures: list[str] = []
    imported = repeated = 0
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    with Progress(transient=True) as progress:
        task = progress.add_task("importing", total=len(uploads))
        for label, operation, body, content_type in uploads:
            progress.advance(task)
            if not operation:
                failures.append(f"{label}: {content_type}")
                continue
            try:
                r = session.post(f"{to.rstrip('/')}/{operation}", data=body,
                                 headers={"Content-Type": content_type, "Accept": "application/fhir+json"}, timeout=120)
            except requests.RequestException as exc:
                failures.append(f"{label}: {exc}")
                continue
            if r.status_code == 201:
                imported += 1
            elif r.status_code == 200:
                repeated += 1
            else:
                failures.append(f"{label}: HTTP {r.status_code}: {_diagnostics(r)}")
    typer.echo(f"{imported} imported, {repeated} already there, {len(failures)} failed")
    for failure in failures:
        typer.secho(f"  {failure}", fg="red")
    if failures:
        raise typer.Exit(1)


def _diagnostics(response) -> str:
    try:
        return "; ".join(i.get("diagnostics", "") for i in response.json().get("issue", []))
    except ValueError:
        return response.text[:200]


@app.command("export-903")
def export_903_cmd(out: Path = typer.Argument(..., help="Folder for header.csv, episodes.csv, oc2.csv."),
                   year: int = typer.Option(..., help="Collection year ending 31 March of this year, e.g. 2026."),
                   database: Optional[str] = DatabaseOption) -> None:
    """Write the SSDA903 tables for the children held in the database."""
    from .api.app import create_app
    from .mapping.ssda903 import export_903
    from .security.caller import SYSTEM

    router = create_app(load_settings(database_url=database)).state.router
    resources: list[dict] = []
    with router.repo.transaction(SYSTEM, write=False) as tx:
        for rtype in ("Patient", "EpisodeOfCare", "Observation"):
            offset = 0
            while True:
                query = router.parser.parse(rtype, [("_count", "500"), ("_offset", str(offset)), ("_sort", "_id")])
                page = tx.search(query).matches
                resources.extend(s.resource() for s in page)
                if len(page) < 500:
                    break
                offset += 500
    tables = export_903(resources, year)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (out / name).write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out / name} ({text.count(chr(10)) - 1} rows)")


def _engine(database: Optional[str]):
    from .store.database import make_engine, prepare

    engine = make_engine(load_settings(database_url=database).database_url)
    prepare(engine)
    return engine


@outbox_app.command("list")
def outbox_list(status: Optional[str] = typer.Option(None, help="pending, delivering, delivered, dead or cancelled"),
                limit: int = typer.Option(50, help="How many, newest first."),
                database: Optional[str] = DatabaseOption) -> None:
    """Show outbox messages and counts by status."""
    from .exchange import outbox

    engine = _engine(database)
    with engine.connect() as conn:
        counts = outbox.counts(conn)
        rows = outbox.messages(conn, status, limit)
    typer.echo("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "the outbox is empty")
    for m in rows:
        detail = f"HTTP {m.last_status}" if m.last_status else (m.last_error or "")
        typer.echo(f"{m.id:>6} {m.status:<10} {m.destination:<10} {m.method} {m.path:<30} "
                   f"attempts={m.attempts} {m.message_id} {detail[:80]}")


@outbox_app.command("retry")
def outbox_retry(ids: list[int] = typer.Argument(None, help="Message numbers; default: every dead message."),
                 database: Optional[str] = DatabaseOption) -> None:
    """Make dead-lettered (or the given) messages due again now."""
    from .exchange import outbox

    engine = _engine(database)
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        n = outbox.retry(conn, ids or None)
    typer.echo(f"{n} message(s) queued again")


@outbox_app.command("replay")
def outbox_replay(message: str = typer.Argument(..., help="Message number or X-Request-Id."),
                  database: Optional[str] = DatabaseOption) -> None:
    """Send a message again as a new message (new X-Request-Id, same correlation id)."""
    from .exchange import outbox

    engine = _engine(database)
    try:
        with engine.connect().execution_options(write=True) as conn, conn.begin():
            new_id = outbox.replay(conn, message)
    except KeyError:
        typer.secho(f"no message {message}", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"queued as {new_id}")


@outbox_app.command("deliver")
def outbox_deliver(once: bool = typer.Option(False, help="Deliver what is due now, then stop."),
                   database: Optional[str] = DatabaseOption) -> None:
    """Run a delivery worker (several may run at once, on one or many machines)."""
    import threading

    from .exchange.partners import load_registry
    from .exchange.worker import DeliveryWorker

    worker = DeliveryWorker(_engine(database), load_registry())
    if once:
        n = worker.run_once(limit=1000)
        typer.echo(f"{n} message(s) attempted")
        return
    stop = threading.Event()
    try:
        worker.run(stop)
    except KeyboardInterrupt:
        stop.set()


GOV_UK_BANK_HOLIDAYS = "https://www.gov.uk/bank-holidays.json"


@app.command("refresh-holidays")
def refresh_holidays(source: str = typer.Option(GOV_UK_BANK_HOLIDAYS, help="URL or file of GOV.UK bank-holidays.json."),
                     out: Optional[Path] = typer.Option(None, help="Where to write (default: the copy the clock reads).")) -> None:
    """Refresh the offline copy of the England and Wales bank holidays the working-day clock uses."""
    import json
    from datetime import date

    import requests

    from .pathway.clocks import BANK_HOLIDAYS_FILE, DIVISION

    try:
        if source.startswith(("http://", "https://")):
            response = requests.get(source, timeout=30)
            response.raise_for_status()
            data = response.json()
        else:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        events = data[DIVISION]["events"]
        dates = sorted(date.fromisoformat(e["date"]) for e in events)
    except (requests.RequestException, OSError, ValueError, KeyError, TypeError) as exc:
        typer.secho(f"{source}: not a GOV.UK bank-holidays.json with a {DIVISION} division: {exc}",
                    fg="red", err=True)
        raise typer.Exit(1)
    target = out or BANK_HOLIDAYS_FILE
    kept = {DIVISION: data[DIVISION], "source": f"Refreshed from {source}"}
    target.write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    typer.echo(f"wrote {len(dates)} England and Wales bank holidays ({dates[0]} to {dates[-1]}) to {target}")


@db_app.command("upgrade")
def db_upgrade(database: Optional[str] = DatabaseOption) -> None:
    """Create or upgrade the database schema to this version of the adapter."""
    from .store.database import make_engine, upgrade

    settings = load_settings(database_url=database)
    engine = make_engine(settings.database_url)
    before, after = upgrade(engine)
    if 0 < before < 3 <= after:  # resources stored before access control need their access rows
        from .fhir.search_params import SearchRegistry
        from .store.repository import Repository

        count = Repository(engine, SearchRegistry(settings.resource_types), settings.base_url).rebuild_access()
        typer.echo(f"access rows built for {count} stored resources")
    if 0 < before < 6 <= after:  # resources stored before the commissioning facts (v5, v6) need their rows
        from .store.facts_sql import rebuild_facts
        from .store.oc2_sql import rebuild_oc2

        with engine.connect().execution_options(write=True) as conn, conn.begin():
            typer.echo(f"assessment facts built for {rebuild_facts(conn)} stored Tasks")
            typer.echo(f"OC2 facts built for {rebuild_oc2(conn)} stored children")
    engine.dispose()
    if before == after:
        typer.echo(f"schema already at version {after}")
    else:
        typer.echo(f"schema upgraded from version {before} to {after}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    app(prog_name="lac-adapter")
