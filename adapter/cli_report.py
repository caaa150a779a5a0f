"""`lac-adapter report monthly`: the commissioner's monthly dataset, as CSV and XLSX.

    lac-adapter report monthly --month 2026-10 [--out DIR] [--database URL]

writes, for the calendar month:
- `lac-kpi-YYYY-MM-measures.csv`: every Measure of profiles/measures/ evaluated for the month
  (as `$evaluate-measure` does): one row per group, then per stratum of each stratifier, with
  the population counts, the score and the target; the IHA Measure's `delay-reasons` group gives
  the late IHAs by the segment that caused the breach;
- `lac-kpi-YYYY-MM-children.csv`: the per-child rows behind them (every assessment due in the
  month, and out-of-area / placed-in requests made in it) with the step dates, whether done by
  the due date, and for a late IHA its delay segments and the segment that caused the breach;
- `lac-kpi-YYYY-MM.xlsx`: both tables, one sheet each.
The database is read directly, as the system (every child is counted).
"""

from __future__ import annotations

import calendar
import csv
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path

import typer

from .config import PROJECT_ROOT, load_settings

report_app = typer.Typer(help="Commissioning reports: the monthly KPI dataset and the annual summary.", no_args_is_help=True)
MEASURES_DIR = PROJECT_ROOT / "profiles" / "measures"
MEASURE_COLUMNS = ["measure", "title", "group", "stratifier", "stratum", "initial_population", "denominator",
                   "numerator", "measure_population", "score", "unit", "target"]
FACT_COLUMNS = ["patient_id", "task_id", "assessment", "status", "la", "provider", "placement", "age_band",
                "birth_date", "entered_care", "due", "notified", "consent", "requested", "accepted", "appointment",
                "did_not_attend", "dna_count", "assessed", "reported", "quality_assured", "completed", "done",
                "turnaround_wd", "age_at_due", "own_consent", "offered_consent", "audit_score", "audit_passed",
                "plan_return_wd"]


def month_bounds(month: str) -> tuple[date, date]:
    try:
        year, mon = int(month[:4]), int(month[5:7])
        if len(month) != 7 or month[4] != "-":
            raise ValueError
        return date(year, mon, 1), date(year, mon, calendar.monthrange(year, mon)[1])
    except ValueError:
        raise typer.BadParameter(f"'{month}' is not a month like 2026-10") from None


def load_measures(folder: Path = MEASURES_DIR) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("Measure-*.json"))]


def measure_rows(conn, measures: list[dict], start: date, end: date, as_of: date) -> list[dict]:
    """Flat rows of every Measure's evaluation (groups, then their strata)."""
    from .kpi import measures as kpi_measures
    from .rest.measure_ops import evaluate

    out = []
    for measure in measures:
        definitions = kpi_measures.group_definitions(measure)
        results = evaluate(conn, definitions, start, end, as_of)
        report = kpi_measures.measure_report(measure, results, start, end, "summary", "", None)
        target = next((e.get("valueDecimal") for e in measure.get("extension") or []
                       if e.get("url", "").endswith("lac-measure-target")), None)

        def row(group: str, stratifier: str, stratum: str, populations: list[dict], score,
                measure: dict = measure, target=target) -> dict:
            counts = {p["code"]["coding"][0]["code"]: p["count"] for p in populations}
            return {"measure": measure["id"], "title": measure.get("title", ""), "group": group,
                    "stratifier": stratifier, "stratum": stratum,
                    "initial_population": counts.get("initial-population"), "denominator": counts.get("denominator"),
                    "numerator": counts.get("numerator"), "measure_population": counts.get("measure-population"),
                    "score": (score or {}).get("value"), "unit": (score or {}).get("unit"), "target": target}

        for group in report["group"]:
            out.append(row(group["id"], "", "", group["population"], group.get("measureScore")))
            for stratifier in group.get("stratifier", []):
                for stratum in stratifier["stratum"]:
                    out.append(row(group["id"], stratifier["code"][0]["text"], stratum["value"]["text"],
                                   stratum["population"], stratum.get("measureScore")))
    return out


def child_rows(conn, start: date, end: date, as_of: date) -> list[dict]:
    """The facts rows of the month, with on-time/late and (late IHAs) the delay segments."""
    from .kpi import delay as kpi_delay
    from .kpi.rules import SEGMENTS, load_kpi_rules, on_time
    from .store import facts_sql

    rules = load_kpi_rules()
    out = []
    for facts in facts_sql.period_rows(conn, start, end, None):
        row = {k: facts.get(k) for k in FACT_COLUMNS}
        row["on_time"] = on_time(facts["done"], facts["due"]) if facts["due"] else None
        row["late"] = kpi_delay.is_late(facts, as_of) if facts["due"] else None
        found = kpi_delay.delay_segments(facts, as_of, rules) \
            if facts["assessment"] == "iha" and row["late"] else None
        row["delay_cause"] = found.cause if found else None
        row["delay_total_wd"] = found.total if found else None
        for segment in SEGMENTS:
            row[f"wd_{segment}"] = found.segments[segment] if found else None
        out.append(row)
    return out


def _cell(value):
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else _cell(row.get(c))) for c in columns})
    path.write_text(buffer.getvalue(), encoding="utf-8")


def write_xlsx(path: Path, sheets: list[tuple[str, list[dict], list[str]]]) -> None:
    import xlsxwriter

    workbook = xlsxwriter.Workbook(str(path))
    bold = workbook.add_format({"bold": True})
    for name, rows, columns in sheets:
        sheet = workbook.add_worksheet(name)
        sheet.write_row(0, 0, columns, bold)
        for r, row in enumerate(rows, start=1):
            for c, column in enumerate(columns):
                value = _cell(row.get(column))
                if value is None:
                    continue
                if isinstance(value, bool):
                    sheet.write_boolean(r, c, value)
                else:
                    sheet.write(r, c, value)
        sheet.freeze_panes(1, 0)
    workbook.close()


@report_app.command("monthly")
def monthly(month: str = typer.Option(..., "--month", help="The calendar month, e.g. 2026-10."),
            out: Path = typer.Option(Path("."), "--out", help="Folder for the CSV and XLSX files."),
            database: str | None = typer.Option(None, "--database", help="SQLAlchemy URL (default: the "
                                                   "configured database)."),
            as_of: str | None = typer.Option(None, "--as-of", help="Judge clocks still running as of this "
                                                "date (default: today).")) -> None:
    """The monthly KPI dataset for the commissioner: measures and the per-child rows behind them."""
    from .store.database import make_engine, prepare

    start, end = month_bounds(month)
    today = date.fromisoformat(as_of) if as_of else datetime.now(UTC).date()
    engine = make_engine(load_settings(database_url=database).database_url)
    prepare(engine)
    try:
        with engine.connect() as conn:
            measures = measure_rows(conn, load_measures(), start, end, today)
            children = child_rows(conn, start, end, today)
            conn.rollback()
    finally:
        engine.dispose()
    out.mkdir(parents=True, exist_ok=True)
    child_columns = FACT_COLUMNS + ["on_time", "late", "delay_cause", "delay_total_wd"] + \
        [f"wd_{s}" for s in ("notification", "consent", "referral", "scheduling", "did-not-attend", "report")]
    stem = f"lac-kpi-{month}"
    write_csv(out / f"{stem}-measures.csv", measures, MEASURE_COLUMNS)
    write_csv(out / f"{stem}-children.csv", children, child_columns)
    write_xlsx(out / f"{stem}.xlsx", [("Measures", measures, MEASURE_COLUMNS), ("Children", children, child_columns)])
    typer.echo(f"wrote {out / (stem + '-measures.csv')} ({len(measures)} rows), "
               f"{out / (stem + '-children.csv')} ({len(children)} rows) and {out / (stem + '.xlsx')}")
