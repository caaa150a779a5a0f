"""`lac-adapter fixtures`: the curated scenario set (fixtures/scenarios/) for integration testers.

Each scenario folder holds the partner documents of one synthetic child's story, in the order
they are sent (`notifications/NN-*.xml`, then `forms/*.xml`), and `fhir/NN-*.json`: the FHIR
transaction Bundle each document maps to, built by scripts/build_scenarios.py with the real
mappers and normalised here (`normalise_bundle`) so that the files are stable.

`fixtures load` stores the documents in our own database exactly as the document operations
do (`documents.MAPPERS[kind]` then `rest.ingest.ingest`), or with `--target URL` POSTs the
`fhir/*.json` Bundles to any FHIR R4 server.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qsl

import typer

from .config import PROJECT_ROOT, load_settings
from .fhir import jsonio

fixtures_app = typer.Typer(help="The curated scenario set (fixtures/scenarios): synthetic children's "
                                "stories as partner documents and the FHIR they map to.",
                           no_args_is_help=True)


@fixtures_app.callback()
def _fixtures() -> None:
    """The curated scenario set (fixtures/scenarios): synthetic children's stories."""


DEFAULT_SCENARIOS = PROJECT_ROOT / "fixtures" / "scenarios"
LOAD_BASE = "urn:lac-adapter:load"
_UUID = re.compile(r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NUMBERED = re.compile(r"^[0-9]+-")


# --------------------------------------------------------------------------- the scenario set

@dataclass
class Scenario:
    folder: Path
    documents: list[Path] = field(default_factory=list)   # notifications, then forms, in file order
    bundles: list[Path] = field(default_factory=list)     # fhir/*.json in file order

    @property
    def name(self) -> str:
        return self.folder.name


def scenarios(path: Path) -> list[Scenario]:
    """The scenarios under `path` (a folder of scenario folders), or `path` itself if it is one."""
    folders = [path] if _is_scenario(path) else sorted(p for p in path.iterdir() if p.is_dir() and _is_scenario(p))
    return [Scenario(f, documents_of(f), sorted((f / "fhir").glob("*.json"))) for f in folders]


def _is_scenario(folder: Path) -> bool:
    return any((folder / sub).is_dir() for sub in ("notifications", "forms", "fhir"))


def documents_of(folder: Path) -> list[Path]:
    return sorted((folder / "notifications").glob("*.xml")) + sorted((folder / "forms").glob("*.xml"))


def bundle_name(position: int, document: Path) -> str:
    """fhir/NN-<name>.json for the document at `position` (1-based) in load order."""
    return f"{position:02d}-{_NUMBERED.sub('', document.stem)}.json"


def map_document(raw: bytes):
    """The MappedDocument for a partner document, as the document operations map it."""
    from .mapping import documents

    return documents.MAPPERS[documents.detect(raw)](raw, None)


def stable_uuid(key: str, label: str) -> str:
    digest = hashlib.sha256(f"{key}#{label}".encode("utf-8")).digest()
    return f"urn:uuid:{uuid.UUID(bytes=digest[:16], version=4)}"


def normalise_bundle(bundle: dict, key: str) -> dict:
    """The Bundle with every urn:uuid replaced by a stable one derived from the document
    identifier `key` and the entry index (references rewritten consistently)."""
    names: dict[str, str] = {}
    for index, entry in enumerate(bundle.get("entry") or []):
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and _UUID.fullmatch(full_url) and full_url not in names:
            names[full_url] = stable_uuid(key, f"entry-{index}")
    text = jsonio.dumps(bundle).decode("utf-8")

    def rename(match: re.Match) -> str:
        value = match.group(0)
        if value not in names:
            names[value] = stable_uuid(key, f"other-{len(names)}")
        return names[value]

    return jsonio.loads(_UUID.sub(rename, text))


def document_key(doc) -> str:
    return f"{doc.identifier['system']}|{doc.identifier['value']}"


def bundle_json(bundle: dict) -> str:
    """The committed form of a Bundle: sorted keys, indent 2, decimals as written."""
    import orjson

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return orjson.Fragment(str(value))
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    return orjson.dumps(bundle, default=default, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


# --------------------------------------------------------------------------- loading

@dataclass
class Summary:
    loaded: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@fixtures_app.command("load")
def load_cmd(path: Optional[Path] = typer.Argument(None, help="The scenario set, or one scenario folder "
                                                                "(default: fixtures/scenarios)."),
             target: Optional[str] = typer.Option(None, "--target", help="FHIR base URL of any FHIR R4 server: "
                                                  "POST the scenarios' fhir/*.json transaction Bundles there."),
             database: Optional[str] = typer.Option(None, "--database", help="SQLAlchemy URL of our own database "
                                                    "(default: config file); ignored with --target."),
             token: Optional[str] = typer.Option(None, "--token", envvar="LAC_ADAPTER_TOKEN", show_default=False,
                                                 help="Bearer access token for --target (default: env "
                                                      "LAC_ADAPTER_TOKEN)."),
             workers: int = typer.Option(4, "--workers", min=1, help="Children loaded at once (a generated "
                                                                      "population).")) -> None:
    """Load the scenarios, or a generated population (`fixtures generate`): into our own database
    (scenarios: documents, as the document operations store them), or with --target as FHIR
    transaction Bundles into any FHIR server. A population loads concurrently and resumes after an
    interruption where it stopped, without duplicates."""
    from rich.progress import Progress

    root = path if path is not None else DEFAULT_SCENARIOS
    if not root.is_dir():
        typer.secho(f"{root}: not a folder", fg="red", err=True)
        raise typer.Exit(2)
    from .synth.load import is_population

    if is_population(root):
        _load_population(root, target, token, workers)
        return
    found = scenarios(root)
    items = [(s, f) for s in found for f in (s.bundles if target else s.documents)]
    if not items:
        typer.secho(f"{root}: no scenarios with {'fhir/*.json' if target else 'documents'}", fg="red", err=True)
        raise typer.Exit(2)
    summary = Summary()
    loader = _TargetLoader(target, token) if target else _DatabaseLoader(database)
    with loader, Progress(transient=True) as progress:
        task = progress.add_task("loading scenarios", total=len(items))
        for scenario, file in items:
            label = f"{scenario.name}/{file.parent.name}/{file.name}"
            progress.update(task, description=label)
            try:
                outcome = loader.load(file)
            except Exception as exc:  # noqa: BLE001 - every failure is reported in the summary
                summary.failed.append(f"{label}: {_reason(exc)}")
            else:
                (summary.loaded if outcome else summary.already).append(label)
            progress.advance(task)
    typer.echo(f"{len(found)} scenario(s): {len(summary.loaded)} loaded, {len(summary.already)} already there, "
               f"{len(summary.failed)} failed")
    for failure in summary.failed:
        typer.secho(f"  failed: {failure}", fg="red")
    if summary.failed:
        raise typer.Exit(1)


def _load_population(root: Path, target: str | None, token: str | None, workers: int) -> None:
    from rich.progress import Progress

    from .synth.load import PopulationLoader, count_children

    if not target:
        typer.secho(f"{root} is a generated population: load it with --target URL (this server's FHIR base "
                    "or any FHIR R4 server)", fg="red", err=True)
        raise typer.Exit(2)
    total = count_children(root)
    loader = PopulationLoader(root, target, lambda: _TargetLoader(target, token), workers)
    with Progress(transient=True) as progress:
        task = progress.add_task("loading children", total=total)
        summary = loader.run(on_child=lambda key: progress.advance(task))
    typer.echo(f"{total} children: {summary.loaded} loaded, {summary.already} already there, "
               f"{summary.skipped} done by an earlier run, {len(summary.failed)} failed")
    for reason, n in summary.reasons().most_common():
        typer.secho(f"  {n} failed: {reason}", fg="red")
    for where, reason in summary.failed[:20]:
        typer.secho(f"    e.g. {where}: {reason}", fg="red")
    if summary.failed:
        typer.echo(f"run the same command again to retry the failed children ({loader.journal.name} keeps "
                   "the ones done)")
        raise typer.Exit(1)


def _reason(exc: Exception) -> str:
    from .fhir.errors import FhirError

    if isinstance(exc, FhirError):
        return f"{exc.status} {exc.diagnostics}"
    return f"{type(exc).__name__}: {exc}"


class _DatabaseLoader:
    """Our own database, through the same path as the document operations."""

    def __init__(self, database: str | None):
        from .api.app import create_app

        self.app = create_app(load_settings(database_url=database))
        self.router = self.app.state.router

    def __enter__(self) -> "_DatabaseLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.app.state.engine.dispose()

    def load(self, file: Path) -> bool:
        from .rest.ingest import ingest
        from .security.caller import SYSTEM

        doc = map_document(file.read_bytes())
        return ingest(self.router, SYSTEM, doc, LOAD_BASE).created


class TargetError(Exception):
    pass


class _TargetLoader:
    """Any FHIR R4 server: each fhir/*.json Bundle is one transaction.

    A Bundle is "already there" when the server created nothing (every conditional create
    found its match) and every JSON Patch it carries is already reflected in the target
    resource; such patches are not sent again (a LeftCare patch tests status=active, so
    re-sending it would fail).
    """

    def __init__(self, base: str, token: str | None = None):
        import requests

        self.base = base.rstrip("/")
        self.http = requests.Session()
        self.http.headers.update({"Accept": "application/fhir+json"})
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def __enter__(self) -> "_TargetLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()

    def load(self, file: Path) -> bool:
        return self.load_bytes(file.read_bytes())

    def load_bytes(self, data: bytes) -> bool:
        """POST one transaction Bundle; True if it changed anything, False if it was all there."""
        bundle = jsonio.loads(data)
        entries = bundle.get("entry") or []
        patches = [e for e in entries if (e.get("request") or {}).get("method") == "PATCH"]
        if patches and all(self._patch_applied(e) for e in patches):
            entries = [e for e in entries if e not in patches]
            if not entries:
                return False
            bundle = {**bundle, "entry": entries}
        response = self.http.post(self.base, data=jsonio.dumps(bundle),
                                  headers={"Content-Type": "application/fhir+json"}, timeout=120)
        if response.status_code != 200:
            raise TargetError(f"HTTP {response.status_code}: {_diagnostics(response)}")
        statuses = [str((e.get("response") or {}).get("status", "")) for e in response.json().get("entry") or []]
        methods = [(e.get("request") or {}).get("method") for e in entries]
        created = any(s.startswith("201") for s in statuses)
        return created or any(m in ("PATCH", "PUT", "DELETE") for m in methods)

    def _patch_applied(self, entry: dict) -> bool:
        import base64

        url = entry["request"]["url"]
        rtype, _, query = url.partition("?")
        response = self.http.get(f"{self.base}/{rtype}", params=parse_qsl(query, keep_blank_values=True), timeout=60)
        if response.status_code != 200:
            return False
        matches = [e["resource"] for e in response.json().get("entry") or []
                   if (e.get("search") or {}).get("mode", "match") == "match"]
        if len(matches) != 1:
            return False
        ops = json.loads(base64.b64decode(entry["resource"]["data"]))
        return all(_op_applied(matches[0], op) for op in ops if op.get("op") != "test")


def _op_applied(resource: dict, op: dict) -> bool:
    """Does the resource already show what this JSON Patch operation would write?"""
    import jsonpointer

    path = op.get("path", "")
    name = op.get("op")
    if name in ("add", "replace") and path.endswith("/-"):
        container = jsonpointer.resolve_pointer(resource, path[:-2], None)
        return isinstance(container, list) and op.get("value") in container
    value: Any = jsonpointer.resolve_pointer(resource, path, _ABSENT)
    if name in ("add", "replace"):
        return value == op.get("value")
    if name == "remove":
        return value is _ABSENT
    return False


_ABSENT = object()


def _diagnostics(response) -> str:
    try:
        return "; ".join(i.get("diagnostics", "") for i in response.json().get("issue", [])) or response.text[:300]
    except ValueError:
        return response.text[:300]


# --------------------------------------------------------------------------- generating

@fixtures_app.command("generate")
def generate_cmd(children: int = typer.Option(..., "--children", min=1, help="How many children and care leavers."),
                 seed: int = typer.Option(..., "--seed", help="The random seed: the same seed gives the same bytes."),
                 out: Path = typer.Option(..., "--out", help="The output folder: new, empty, or an earlier "
                                          "population (replaced)."),
                 as_of: Optional[str] = typer.Option(None, "--as-of", help="The reference date YYYY-MM-DD: nothing "
                                                     "is dated after it (default: config/synthetic.toml)."),
                 config: Optional[Path] = typer.Option(None, "--config", help="The distributions "
                                                       "(default: config/synthetic.toml)."),
                 workers: int = typer.Option(0, "--workers", min=0, help="Worker processes (0: one per CPU)."),
                 exact: bool = typer.Option(False, "--exact", help="Map every document with the mappers "
                                            "(slower; the default reuses mapped prototypes, same output)."),
                 documents: bool = typer.Option(True, "--documents/--no-documents", help="Write children/*.zip "
                                                "(the documents and their Bundles), or only children.ndjson, "
                                                "the NDJSON, SSDA903 and manifest.")) -> None:
    """Generate a deterministic synthetic population: every child as LA notifications, form documents,
    SSDA903 rows and FHIR (transaction Bundles and NDJSON). The layout is in OUT/README.md."""
    import time
    from datetime import date

    from rich.progress import Progress

    from .synth.writer import Options, generate

    try:
        reference = date.fromisoformat(as_of) if as_of else None
    except ValueError:
        typer.secho(f"--as-of {as_of}: not a date YYYY-MM-DD", fg="red", err=True)
        raise typer.Exit(2) from None
    started = time.perf_counter()
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task("generating", total=children)
            manifest = generate(Options(children, seed, out, reference, config, workers, documents, exact),
                                progress=lambda done: progress.update(task, completed=done))
    except FileExistsError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    seconds = time.perf_counter() - started
    resources = sum(manifest["resources"].values())
    typer.echo(f"{children} children, {manifest['bundles']} Bundles, {resources} resources in {seconds:.1f} s "
               f"({children / seconds:.0f} children/s) -> {out}")
