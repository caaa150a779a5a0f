"""The annual summary as Markdown and as a self-contained HTML page (no external resources),
one table per section of the commissioner's annual report."""

from __future__ import annotations

from html import escape

from .annual import AnnualSummary

SECTIONS = {
    "Children": "Children with an initial or review health assessment due in the year (each child once "
                "per line), by assessment, placement and age band on the due date.",
    "Measures": "Each published Measure over the whole year, against its target.",
    "Months and quarters": "The same Measures per month and per quarter of the financial year.",
    "Reasons for delay": "Late initial health assessments due in the year, by the pathway segment that caused "
                         "the breach, with the working days spent in each segment.",
}


def cell(value) -> str:
    """A table cell: empty for nothing, yes/no for a boolean, else the value as it is."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def markdown(summary: AnnualSummary) -> str:
    lines = [f"# Looked-after children's health assessments: annual summary {summary.label}", "",
             f"Financial year {summary.start.isoformat()} to {summary.end.isoformat()}; clocks still running "
             f"judged as of {summary.as_of.isoformat()}.", ""]
    for title, rows, columns in summary.tables():
        lines += [f"## {title}", "", SECTIONS[title], ""]
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in rows:
            lines.append("| " + " | ".join(cell(row.get(c)).replace("|", "\\|") for c in columns) + " |")
        lines.append("")
    return "\n".join(lines)


def html(summary: AnnualSummary) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>Annual summary {escape(summary.label)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
             "th,td{border:1px solid #999;padding:.25em .5em;text-align:left}th{background:#eee}</style>",
             "</head><body>",
             f"<h1>Looked-after children's health assessments: annual summary {escape(summary.label)}</h1>",
             f"<p>Financial year {summary.start.isoformat()} to {summary.end.isoformat()}; clocks still running "
             f"judged as of {summary.as_of.isoformat()}.</p>"]
    for title, rows, columns in summary.tables():
        parts += [f"<h2>{escape(title)}</h2>", f"<p>{escape(SECTIONS[title])}</p>", "<table><thead><tr>",
                  "".join(f"<th>{escape(c)}</th>" for c in columns), "</tr></thead><tbody>"]
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{escape(cell(row.get(c)))}</td>" for c in columns) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts)
