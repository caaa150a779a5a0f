"""The `lac-adapter` command: serve the FHIR API, manage the database, load data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .config import load_settings

app = typer.Typer(help="lac-fhir-adapter: FHIR R4 adapter for looked-after children's health.",
                  no_args_is_help=True)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")

DatabaseOption = typer.Option(None, "--database", help="SQLAlchemy URL, e.g. sqlite:///var/a.db or "
                                                       "postgresql+psycopg://host/db (default: config file)")


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
          port: int = typer.Option(8080, help="TCP port."),
          database: Optional[str] = DatabaseOption,
          load: list[Path] = typer.Option([], "--load", help="Load FHIR Bundles/resources from this file "
                                                             "or folder before serving (repeatable)."),
          workers: int = typer.Option(1, min=1, help="Server processes; on N cores, N serves N times the "
                                                    "reads (each process has its own connection pool).")) -> None:
    """Start the FHIR server; the FHIR base is http://HOST:PORT/fhir."""
    import os

    import uvicorn

    from .api.app import create_app

    settings = load_settings(database_url=database)
    fhir_app = create_app(settings)
    for path in load:
        _load_into(fhir_app.state.router, path)
    typer.echo(f"FHIR base: http://{host}:{port}/fhir   database: {_safe_url(settings.database_url)}"
               f"   workers: {workers}")
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
    for path in paths:
        _load_into(fhir_app.state.router, path)


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


@db_app.command("upgrade")
def db_upgrade(database: Optional[str] = DatabaseOption) -> None:
    """Create or upgrade the database schema to this version of the adapter."""
    from .store.database import make_engine, upgrade

    settings = load_settings(database_url=database)
    engine = make_engine(settings.database_url)
    before, after = upgrade(engine)
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
