"""`lac-adapter report annual`: the commissioner's annual summary (adapter/kpi/annual.py).

    lac-adapter report annual --year 2026 [--out DIR] [--database URL] [--as-of DATE]

The financial year starting 1 April of --year (2026 or 2026-27: April 2026 to March 2027).
Writes `lac-annual-2026-27-{children,measures,periods,delay}.csv`, `lac-annual-2026-27.xlsx` (one
sheet per table), `lac-annual-2026-27.md` and `lac-annual-2026-27.html`. Every published
Measure of profiles/measures/ is included. The database is read directly, as the system.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import typer

from .cli_report import load_measures, report_app, write_csv, write_xlsx
from .config import load_settings

CSV_NAMES = {"Children": "children", "Measures": "measures", "Months and quarters": "periods",
             "Reasons for delay": "delay"}


@report_app.command("annual")
def annual(year: str = typer.Option(..., "--year", help="Financial year starting in April: 2026 or 2026-27."),
           out: Path = typer.Option(Path("."), "--out", help="Folder for the files."),
           database: str | None = typer.Option(None, "--database", help="SQLAlchemy URL (default: the "
                                                  "configured database)."),
           as_of: str | None = typer.Option(None, "--as-of", help="Judge clocks still running as of this "
                                               "date (default: today).")) -> None:
    """The annual summary: children, Measures against target, per month and quarter, reasons for delay."""
    from .kpi import annual as kpi_annual
    from .kpi import annual_render
    from .store.database import make_engine, prepare

    try:
        start_year = kpi_annual.parse_year(year)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    today = date.fromisoformat(as_of) if as_of else datetime.now(UTC).date()
    engine = make_engine(load_settings(database_url=database).database_url)
    prepare(engine)
    try:
        with engine.connect() as conn:
            summary = kpi_annual.annual_summary(conn, load_measures(), start_year, today)
            conn.rollback()
    finally:
        engine.dispose()
    out.mkdir(parents=True, exist_ok=True)
    stem = f"lac-annual-{summary.label}"
    for title, rows, columns in summary.tables():
        write_csv(out / f"{stem}-{CSV_NAMES[title]}.csv", rows, columns)
    write_xlsx(out / f"{stem}.xlsx", [(title[:31], rows, columns) for title, rows, columns in summary.tables()])
    (out / f"{stem}.md").write_text(annual_render.markdown(summary), encoding="utf-8")
    (out / f"{stem}.html").write_text(annual_render.html(summary), encoding="utf-8")
    typer.echo(f"wrote {stem}-*.csv, {stem}.xlsx, {stem}.md and {stem}.html to {out}")
