"""The dashboard's HTML: one self-contained page (a style element and inline SVG; no script,
no external resource: the adapter's CSP for HTML allows inline styles and nothing else)."""

from __future__ import annotations

from html import escape

from . import svg

STYLE = """
body{font-family:Arial,Helvetica,sans-serif;margin:0;color:#212b32;background:#f0f4f5}
header{background:#005eb8;color:#fff;padding:.8em 1.5em;display:flex;justify-content:space-between;align-items:center}
header h1{font-size:1.3em;margin:0}header form{display:inline;margin-left:1em}
main{padding:1em 1.5em}section{background:#fff;padding:1em;margin-bottom:1.2em;border-radius:4px}
h2{font-size:1.1em;margin-top:0}table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #d8dde0;padding:.35em .5em;text-align:left;font-size:.92em}
th{background:#e8edee}td.num{text-align:right}.met{color:#007f3b;font-weight:bold}
.missed{color:#d5281b;font-weight:bold}.overdue{color:#d5281b}.charts{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;border:1px solid #d8dde0;padding:.4em}figcaption{font-size:.85em;max-width:380px}
.note{color:#425563;font-size:.85em}button,input{font-size:1em}
"""


def fmt_score(score, scoring: str | None, unit: str | None = None) -> str:
    if score is None:
        return "–"
    if scoring == "proportion":
        return f"{score * 100:.1f}%"
    return f"{score} {unit or ''}".strip()


def _count(value) -> str:
    return "" if value is None else str(value)


def page(data: dict) -> str:
    caller = data.get("caller") or {}
    role = f"({caller['role']})" if caller.get("role") else None
    who = escape(" ".join(filter(None, [caller.get("organisation"), role])))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>LAC health assessments: {escape(data['month'])}</title>", f"<style>{STYLE}</style></head><body>",
             "<header><h1>Looked-after children: health assessments</h1><div>",
             f'<span class="who">Signed in: {who}</span>',
             '<form method="get" action="/dashboard"><label>Month <input type="month" name="month" '
             f'value="{escape(data["month"])}"></label> <button type="submit">Show</button></form>',
             '<form method="post" action="/dashboard/sign-out"><button type="submit">Sign out</button></form>',
             "</div></header><main>",
             f'<p class="note">Month {escape(data["period"]["start"])} to {escape(data["period"]["end"])}; clocks '
             f'still running judged as of {escape(data["asOf"])}. Only children your organisation may see are '
             "counted or listed.</p>"]
    parts += _kpis(data)
    parts += _trends(data)
    parts += _due(data)
    parts += _delay(data)
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _kpis(data: dict) -> list[str]:
    out = [f'<section id="kpis"><h2>This month ({escape(svg.month_label(data["month"]))}) against target</h2>',
           "<table><thead><tr><th>Measure</th><th>Group</th><th>Denominator</th><th>Numerator</th>"
           "<th>Score</th><th>Target</th><th>Status</th></tr></thead><tbody>"]
    for measure in data["measures"]:
        for g in measure["groups"]:
            counts = g["populations"]
            denominator = counts.get("denominator", counts.get("initial-population"))
            numerator = counts.get("numerator", counts.get("measure-population"))
            status = "" if g["met"] is None else ('<span class="met">met</span>' if g["met"]
                                                  else '<span class="missed">below target</span>')
            target = fmt_score(g["target"], "proportion") if g["target"] is not None else ""
            out.append(f'<tr class="kpi" data-kpi="{escape(measure["id"])}/{escape(g["group"])}">'
                       f'<td>{escape(measure["title"])}</td><td>{escape(g["group"])}</td>'
                       f'<td class="num denominator">{_count(denominator)}</td>'
                       f'<td class="num numerator">{_count(numerator)}</td>'
                       f'<td class="num score">{escape(fmt_score(g["score"], measure["scoring"], g.get("unit")))}</td>'
                       f'<td class="num target">{target}</td><td class="status">{status}</td></tr>')
    out.append("</tbody></table></section>")
    return out


def _trends(data: dict) -> list[str]:
    out = ['<section id="trends"><h2>Twelve-month trends</h2><div class="charts">']
    for measure in data["measures"]:
        percent = measure["scoring"] == "proportion"
        for g in measure["groups"]:
            title = f"{measure['title']}: {g['group']}"
            points = [(p["month"], p["score"]) for p in g["trend"]]
            caption = "score per month" + (", target dashed" if g["target"] is not None else "") + \
                ("" if percent else f" ({g.get('unit') or 'mean'})")
            out.append(f'<figure data-kpi="{escape(measure["id"])}/{escape(g["group"])}">'
                       f"{svg.line_chart(points, g['target'], percent, title)}"
                       f"<figcaption>{escape(title)}: {escape(caption)}</figcaption></figure>")
    out.append("</div></section>")
    return out


def _due(data: dict) -> list[str]:
    out = [f'<section id="due"><h2>Assessments due or overdue ({len(data["due"])})</h2>',
           f'<p class="note">Open IHAs and RHAs overdue or due within {data["dueWithinDays"]} days of '
           f'{escape(data["asOf"])}, most overdue first.</p>',
           "<table><thead><tr><th>Name</th><th>NHS number</th><th>Assessment</th><th>Due</th>"
           "<th>Days overdue</th><th>Provider</th></tr></thead><tbody>"]
    for row in data["due"]:
        days = row["daysOverdue"]
        shown = str(days) if days > 0 else f"due in {-days}" if days < 0 else "due today"
        out.append(f'<tr class="due-row" data-patient="{escape(row["patient"])}"><td class="name">'
                   f'{escape(row["name"])}</td><td class="nhs">{escape(row["nhsNumber"] or "")}</td>'
                   f'<td class="assessment">{escape(row["assessment"].upper())}</td>'
                   f'<td class="due">{escape(row["due"])}</td>'
                   f'<td class="num days{" overdue" if days > 0 else ""}">{escape(shown)}</td>'
                   f'<td class="provider">{escape(row["provider"] or "")}</td></tr>')
    if not data["due"]:
        out.append('<tr><td colspan="6">No open assessment is due or overdue.</td></tr>')
    out.append("</tbody></table></section>")
    return out


def _delay(data: dict) -> list[str]:
    period = data["delay"]["period"]
    out = ['<section id="delay"><h2>Reasons for delay</h2>',
           f'<p class="note">Late initial health assessments due {escape(period["start"])} to '
           f'{escape(period["end"])}: the pathway segment that caused each breach (over its allowance by most), '
           "and the working days spent in each segment.</p>"]
    for group in data["delay"]["groups"]:
        segments = group["segments"]
        out.append(f'<p class="late">Late: <strong>{group["late"]}</strong></p>')
        out.append(svg.bar_chart([(s["segment"], s["caused"]) for s in segments], "Late IHAs by cause"))
        out.append("<table><thead><tr><th>Segment</th><th>Caused</th><th>Total working days</th>"
                   "<th>Mean working days</th><th>Allowance</th></tr></thead><tbody>")
        for s in segments:
            out.append(f'<tr class="segment" data-segment="{escape(s["segment"])}"><td>{escape(s["segment"])}</td>'
                       f'<td class="num caused">{s["caused"]}</td><td class="num">{_count(s["totalWorkingDays"])}</td>'
                       f'<td class="num">{_count(s["meanWorkingDays"])}</td>'
                       f'<td class="num">{_count(s["allowance"])}</td></tr>')
        out.append("</tbody></table>")
    out.append("</section>")
    return out


def sign_in(message: str | None = None) -> str:
    """The sign-in form: paste an access token (a bearer token of the API, or a dev token)."""
    note = f'<p class="missed" role="alert">{escape(message)}</p>' if message else ""
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>Sign in: LAC dashboard</title>",
        f"<style>{STYLE}</style></head><body>",
        "<header><h1>Looked-after children: health assessments</h1></header><main><section>",
        "<h2>Sign in</h2>", note,
        "<p>Paste an access token of the FHIR API (from the token endpoint, or a development token of "
        "<code>serve --dev</code>). It is kept in a cookie only this site can read, until you sign out.</p>",
        '<form method="post" action="/dashboard/sign-in"><label>Access token '
        '<input type="password" name="token" id="token" autocomplete="off" size="50" required></label> '
        '<button type="submit" id="sign-in">Sign in</button></form>',
        "</section></main></body></html>"])
