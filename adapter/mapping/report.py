"""A completed form as a printable, standalone HTML5 page (for the social worker and the review).

Everything shown comes from the Questionnaire's structure and the response: the parts are the
Questionnaire's top-level items, the labels its own item texts, the health plan the rows of the
repeating group that extracts to CarePlans (its rows rendered from the CarePlans that SDC
definition-based extraction makes of it, see adapter.mapping.extract), the consent section from
the Consents given or extracted from the consent form's answers. No linkId is known here.

All text is untrusted and escaped; the page has inline CSS only, no scripts, no external assets.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from html import escape
from typing import Any, Iterable

from .extract import DEFINITION_EXTRACT, ExtractionError, extract

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
REGEX = "http://hl7.org/fhir/StructureDefinition/regex"
_TEN_DIGITS = re.compile(r"\[0-9\]\{10\}|\\d\{10\}")

CSS = """
:root { --ink: #1b1b1b; --muted: #505a5f; --rule: #b1b4b6; --band: #f3f2f1; }
* { box-sizing: border-box; }
body { font: 11pt/1.45 Arial, Helvetica, sans-serif; color: var(--ink); margin: 2em auto; max-width: 60em;
       padding: 0 1.5em; }
header.report { border-bottom: 3px solid var(--ink); margin-bottom: 1.2em; }
h1 { font-size: 1.6em; margin: 0 0 .2em; }
h2 { font-size: 1.25em; margin: 1.4em 0 .5em; padding: .2em .4em; background: var(--band);
     border-left: 5px solid var(--ink); }
h3 { font-size: 1.05em; margin: 1em 0 .3em; }
p.meta { color: var(--muted); margin: .2em 0 .8em; }
dl.facts { display: grid; grid-template-columns: minmax(12em, 35%) 1fr; gap: .25em 1em; margin: .3em 0; }
dl.facts dt { font-weight: bold; }
dl.facts dd { margin: 0; white-space: pre-wrap; }
table { border-collapse: collapse; width: 100%; margin: .5em 0 1em; font-size: .95em; }
th, td { border: 1px solid var(--rule); padding: .3em .45em; text-align: left; vertical-align: top; }
th { background: var(--band); }
td { white-space: pre-wrap; }
table.child td { font-size: 1.1em; font-weight: bold; }
.refused { font-weight: bold; }
footer { margin-top: 2em; border-top: 1px solid var(--rule); color: var(--muted); font-size: .85em; }
@page { size: A4; margin: 15mm 12mm; }
@media print {
  body { margin: 0; max-width: none; padding: 0; font-size: 10pt; }
  h2 { break-after: avoid; page-break-after: avoid; }
  h3 { break-after: avoid; page-break-after: avoid; }
  table, tr, dl.facts div { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  section { break-inside: auto; }
  h2, th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


# ---- entry point ------------------------------------------------------------------------------

def render_report(response: dict, questionnaire: dict, patient: dict | None = None,
                  consents: Iterable[dict] = (), extracted: Iterable[dict] = ()) -> str:
    """The printable HTML page for a completed form."""
    extracted = list(extracted)
    consents = list(consents) or [r for r in extracted if r.get("resourceType") == "Consent"]
    derived: list[dict] | None = None

    def from_form() -> list[dict]:
        nonlocal derived
        if derived is None:
            try:
                bundle = extract(response, questionnaire, response_ref="urn:uuid:report")
                derived = [e["resource"] for e in bundle["entry"]]
            except ExtractionError:
                derived = []
        return derived

    if not consents:
        consents = [r for r in from_form() if r.get("resourceType") == "Consent"]
    plans = [r for r in extracted if r.get("resourceType") == "CarePlan"] or \
        [r for r in from_form() if r.get("resourceType") == "CarePlan"]

    title = questionnaire.get("title") or questionnaire.get("name") or "Form"
    authored = response.get("authored")
    child = _child(response, questionnaire, patient)
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}: {_e(child.get('name') or 'child')}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        '<header class="report">',
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Completed {_e(_date(authored) or "(date not recorded)")}'
        f"{' by ' + _e(_ref_text(response.get('author'))) if response.get('author') else ''}"
        f"{' &middot; status ' + _e(response['status']) if response.get('status') else ''}</p>",
        "</header>",
        _child_section(child, authored),
    ]
    out.append(_assessor_section(response))
    plan_rendered = False
    for part in questionnaire.get("item", []):
        html, used_plan = _part(part, response, plans)
        plan_rendered |= used_plan
        out.append(html)
    if plans and not plan_rendered:
        out.append('<section class="plan"><h2>Health plan</h2>' + _plan_table(plans) + "</section>")
    out.append(_consent_section(consents))
    out.append(f'<footer><p>{_e(questionnaire.get("url", ""))}'
               f'{"|" + _e(questionnaire["version"]) if questionnaire.get("version") else ""}'
               f'{" &middot; response " + _e(response["id"]) if response.get("id") else ""}'
               "</p><p>Official sensitive: personal health information about a looked-after child.</p></footer>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


# ---- helpers ----------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _date(value: str | None) -> str | None:
    """'2026-11-18T15:05:00Z' -> '18 November 2026' (partial dates kept as far as given)."""
    if not value:
        return None
    text = str(value)
    try:
        if len(text) >= 10:
            d = date.fromisoformat(text[:10])
            return f"{d.day} {d.strftime('%B %Y')}"
        if len(text) == 7:
            return datetime.strptime(text, "%Y-%m").strftime("%B %Y")
    except ValueError:
        pass
    return text


def format_nhs_number(value: str | None) -> str | None:
    """'9990000034' -> '999 000 0034'; anything else unchanged."""
    if value is None:
        return None
    digits = re.sub(r"\s", "", str(value))
    if re.fullmatch(r"\d{10}", digits):
        return f"{digits[:3]} {digits[3:6]} {digits[6:]}"
    return str(value)


def _age(birth: str | None, on: str | None) -> str | None:
    if not birth or len(birth) < 10:
        return None
    try:
        born = date.fromisoformat(birth[:10])
        at = date.fromisoformat(on[:10]) if on and len(on) >= 10 else date.today()
    except ValueError:
        return None
    months = (at.year - born.year) * 12 + at.month - born.month - (1 if at.day < born.day else 0)
    if months < 0:
        return None
    if months < 24:
        return f"{months} month{'s' if months != 1 else ''}"
    return f"{months // 12} years"


def _ref_text(ref: dict | None) -> str:
    if not ref:
        return ""
    return ref.get("display") or ref.get("reference") or (ref.get("identifier") or {}).get("value") or ""


def _coding_text(coding: dict) -> str:
    return coding.get("display") or coding.get("code") or ""


def _concept_text(cc: dict | None) -> str:
    if not cc:
        return ""
    return cc.get("text") or "; ".join(_coding_text(c) for c in cc.get("coding", []))


def _answer_text(answer: dict) -> str:
    for key, value in answer.items():
        if not key.startswith("value"):
            continue
        kind = key[5:]
        if kind == "Boolean":
            return "Yes" if value else "No"
        if kind == "Coding":
            return _coding_text(value)
        if kind in ("Date", "DateTime"):
            return _date(value) or ""
        if kind == "Quantity":
            number = value.get("value")
            unit = value.get("unit") or value.get("code") or ""
            return f"{'' if number is None else number} {unit}".strip()
        if kind == "Reference":
            return _ref_text(value)
        if kind == "Attachment":
            return value.get("title") or value.get("url") or "(attachment)"
        return str(value)
    return ""


def _response_items(items: list[dict], link_id: str) -> list[dict]:
    return [i for i in items if i.get("linkId") == link_id]


def _children(r_item: dict) -> list[dict]:
    out = list(r_item.get("item", []))
    for answer in r_item.get("answer", []):
        out += answer.get("item", [])
    return out


# ---- child details ----------------------------------------------------------------------------

def _child(response: dict, questionnaire: dict, patient: dict | None) -> dict:
    child: dict[str, str | None] = {"name": None, "nhs": None, "birthDate": None}
    if patient:
        name = (patient.get("name") or [{}])[0]
        child["name"] = name.get("text") or " ".join(
            [*name.get("given", []), name.get("family", "")]).strip() or None
        child["nhs"] = next((i.get("value") for i in patient.get("identifier", [])
                             if i.get("system") == NHS_SYSTEM), None)
        child["birthDate"] = patient.get("birthDate")
    subject = response.get("subject") or {}
    child["name"] = child["name"] or subject.get("display")
    if not child["nhs"] and (subject.get("identifier") or {}).get("system") == NHS_SYSTEM:
        child["nhs"] = subject["identifier"].get("value")
    # The form's own header: the top-level group every form opens with (a string item, a
    # ten-digit item, a date item); used for whatever the Patient did not give.
    header = next((i for i in questionnaire.get("item", []) if i.get("type") == "group"), None)
    if header:
        r_header = next(iter(_response_items(response.get("item", []), header["linkId"])), {})
        for q_item in header.get("item", []):
            answers = [a for r in _response_items(r_header.get("item", []), q_item["linkId"])
                       for a in r.get("answer", [])]
            if not answers:
                continue
            value = next((v for k, v in answers[0].items() if k.startswith("value")), None)
            ten_digits = any(_TEN_DIGITS.search(e.get("valueString", "")) for e in q_item.get("extension", [])
                             if e.get("url") == REGEX)
            if ten_digits:
                child["nhs"] = child["nhs"] or value
            elif q_item.get("type") == "date":
                child["birthDate"] = child["birthDate"] or value
            elif q_item.get("type") == "string" and not child["name"]:
                child["name"] = value
    return child


def _child_section(child: dict, authored: str | None) -> str:
    rows = [("Name", child.get("name") or "(not recorded)"),
            ("NHS number", format_nhs_number(child.get("nhs")) or "(not recorded)"),
            ("Date of birth", _date(child.get("birthDate")) or "(not recorded)")]
    age = _age(child.get("birthDate"), authored)
    if age:
        rows.append(("Age at the form's date", age))
    head = "".join(f'<th scope="col">{_e(k)}</th>' for k, _ in rows)
    cells = "".join(f"<td>{_e(v)}</td>" for _, v in rows)
    return (f'<section class="child"><h2>Child</h2><table class="child"><thead><tr>{head}</tr></thead>'
            f"<tbody><tr>{cells}</tr></tbody></table></section>")


def _assessor_section(response: dict) -> str:
    rows = []
    if response.get("author"):
        rows.append(("Completed by", _ref_text(response["author"])))
    if response.get("source") and response.get("source") != response.get("author"):
        rows.append(("Information from", _ref_text(response["source"])))
    if response.get("authored"):
        rows.append(("Date", _date(response["authored"])))
    if not rows:
        return ""
    return '<section class="assessor"><h2>Form completed by</h2>' + _facts(rows) + "</section>"


def _facts(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in rows)
    return f'<dl class="facts">{body}</dl>'


# ---- the parts --------------------------------------------------------------------------------

def _is_plan(q_item: dict) -> bool:
    """A group that extracts to CarePlans (SDC definitionExtract whose items define CarePlan paths)."""
    if q_item.get("type") != "group":
        return False
    extracting = any(e.get("url") == DEFINITION_EXTRACT for e in q_item.get("extension", []))
    return extracting and any(str(i.get("definition", "")).partition("#")[2].startswith("CarePlan.")
                              for i in q_item.get("item", []))


def _part(part: dict, response: dict, plans: list[dict]) -> tuple[str, bool]:
    r_parts = _response_items(response.get("item", []), part["linkId"])
    if part.get("type") == "display" or not r_parts:
        return "", False
    used_plan = False
    body: list[str] = []
    if part.get("type") == "group":
        for r_part in r_parts:
            html, used = _group_body(part, _children(r_part), plans, depth=3)
            body.append(html)
            used_plan |= used
    else:
        rows = _answer_rows(part, r_parts)
        body.append(_facts(rows) if rows else "")
    content = "".join(body)
    if not content.strip():
        return "", used_plan
    return f"<section><h2>{_e(part.get('text') or part['linkId'])}</h2>{content}</section>", used_plan


def _answer_rows(q_item: dict, r_items: list[dict]) -> list[tuple[str, str]]:
    texts = [_answer_text(a) for r in r_items for a in r.get("answer", [])]
    texts = [t for t in texts if t != ""]
    return [(q_item.get("text") or q_item["linkId"], "; ".join(texts))] if texts else []


def _group_body(group: dict, r_children: list[dict], plans: list[dict], depth: int) -> tuple[str, bool]:
    out: list[str] = []
    facts: list[tuple[str, str]] = []
    used_plan = False

    def flush() -> None:
        if facts:
            out.append(_facts(list(facts)))
            facts.clear()

    for q_item in group.get("item", []):
        kind = q_item.get("type")
        if kind == "display":
            continue
        r_items = _response_items(r_children, q_item["linkId"])
        if not r_items:
            continue
        if kind == "group":
            flush()
            heading = f"<h{min(depth, 6)}>{_e(q_item.get('text') or q_item['linkId'])}</h{min(depth, 6)}>"
            if _is_plan(q_item) and plans:
                out.append(heading + _plan_table(plans))
                used_plan = True
            elif q_item.get("repeats"):
                table = _repeat_table(q_item, r_items)
                if table:
                    out.append(heading + table)
            else:
                inner = []
                for r in r_items:
                    html, used = _group_body(q_item, _children(r), plans, depth + 1)
                    inner.append(html)
                    used_plan |= used
                if "".join(inner).strip():
                    out.append(heading + "".join(inner))
        else:
            facts += _answer_rows(q_item, r_items)
            nested = [c for r in r_items for c in _children(r)]
            if nested and q_item.get("item"):
                flush()
                html, used = _group_body(q_item, nested, plans, depth + 1)
                out.append(html)
                used_plan |= used
    flush()
    return "".join(out), used_plan


def _repeat_table(q_item: dict, r_items: list[dict]) -> str:
    """A repeating group as a table: one row per repeat, one column per answered child item."""
    columns = [c for c in q_item.get("item", []) if c.get("type") not in ("display", "group")]
    rows = []
    for r in r_items:
        children = _children(r)
        rows.append(["; ".join(t for t in (_answer_text(a) for x in _response_items(children, c["linkId"])
                                            for a in x.get("answer", [])) if t) for c in columns])
    keep = [i for i in range(len(columns)) if any(row[i] for row in rows)]
    if not keep:
        return ""
    head = "".join(f'<th scope="col">{_e(columns[i].get("text") or columns[i]["linkId"])}</th>' for i in keep)
    body = "".join("<tr>" + "".join(f"<td>{_e(row[i])}</td>" for i in keep) + "</tr>"
                   for row in rows if any(row[i] for i in keep))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---- health plan ------------------------------------------------------------------------------

PLAN_COLUMNS = ("Health need", "Area of health", "Action", "Who is responsible", "By when", "Outcome")


def _plan_rows(plan: dict) -> list[list[str]]:
    rows = []
    for activity in plan.get("activity", []):
        detail = activity.get("detail", {})
        need = "; ".join(_concept_text(c) for c in detail.get("reasonCode", [])) or \
            "; ".join(_ref_text(r) for r in detail.get("reasonReference", []))
        period = detail.get("scheduledPeriod") or {}
        when = _date(period.get("end")) or detail.get("scheduledString") or _date(period.get("start")) or ""
        outcome = "; ".join(_concept_text(c) for c in activity.get("outcomeCodeableConcept", []))
        rows.append([need, _concept_text(detail.get("code")), detail.get("description", ""),
                     "; ".join(_ref_text(p) for p in detail.get("performer", [])), when,
                     outcome])
    return rows


def _plan_table(plans: list[dict]) -> str:
    head = "".join(f'<th scope="col">{_e(c)}</th>' for c in PLAN_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>"
                   for plan in plans for row in _plan_rows(plan))
    return f'<table class="plan"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ---- consent ----------------------------------------------------------------------------------

def _consent_section(consents: list[dict]) -> str:
    if not consents:
        return ('<section class="consent"><h2>Consent</h2><p>No consent record was supplied with this form; '
                "see the consent answers above.</p></section>")
    head = "".join(f'<th scope="col">{_e(c)}</th>' for c in
                   ("Consent to", "Decision", "Given by", "Basis", "Date"))
    rows = []
    for consent in consents:
        provision = consent.get("provision") or {}
        purpose = "; ".join(_coding_text(c) for c in provision.get("purpose", [])) or \
            "; ".join(_concept_text(c) for c in consent.get("category", []))
        decision = {"permit": "Given", "deny": "Refused"}.get(provision.get("type"), provision.get("type") or "")
        if consent.get("status") in ("inactive", "rejected", "entered-in-error"):
            decision = f"{decision} ({consent['status']})" if decision else consent["status"]
        who = "; ".join(_ref_text(p) for p in consent.get("performer", []))
        roles = [_coding_text(e["valueCoding"]) for e in consent.get("extension", [])
                 if isinstance(e.get("valueCoding"), dict)]
        cls = ' class="refused"' if provision.get("type") == "deny" else ""
        rows.append(f"<tr><td>{_e(purpose)}</td><td{cls}>{_e(decision)}</td><td>{_e(who)}</td>"
                    f"<td>{_e('; '.join(roles))}</td><td>{_e(_date(consent.get('dateTime')) or '')}</td></tr>")
    return (f'<section class="consent"><h2>Consent</h2><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></section>")
