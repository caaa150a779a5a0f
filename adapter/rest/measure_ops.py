"""Measure/[id]/$evaluate-measure (FHIR R4 Measure-evaluate-measure) over the assessment facts.

    GET [base]/Measure/[id]/$evaluate-measure?periodStart=2026-10-01&periodEnd=2026-10-31
        [&reportType=population|subject-list|subject][&patient=Patient/x]

- periodStart / periodEnd (required): dates (YYYY, YYYY-MM or YYYY-MM-DD; a partial start is
  its first day, a partial end its last). Also as a POSTed Parameters resource.
- reportType: `population` (default; MeasureReport.type summary), `subject-list` (adds each
  population's children as contained List resources, referenced from subjectResults), or
  `subject` with `patient` (type individual). `summary` is accepted for population.
- patient (or subject): limit to one child.
- Type level (`Measure/$evaluate-measure`) takes `measure` (the id or canonical url).

Only children the caller may see are counted or listed: every query carries the store's
restriction on Patient ids (Transaction.restriction). Children listed are recorded as
disclosed in the AuditEvent of the request.

The reasons for delay are the IHA Measure's group `delay-reasons`: late IHAs stratified by the
segment that caused the breach, with each segment's total and mean working days as the group
extension lac-delay-segment, and (subject-list) each child's segments on its List entry
(extension lac-delay-cause).
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime

from sqlalchemy import literal

from ..fhir.errors import FhirError, bad_request
from ..kpi import delay as kpi_delay
from ..kpi import measures as kpi_measures
from ..kpi.rules import load_kpi_rules
from ..store import facts_sql, measure_sql
from ..store.repository import Transaction
from .messages import FhirRequest, FhirResponse

REPORT_TYPES = {"population": "summary", "summary": "summary", "subject-list": "subject-list",
                "subject": "individual", "individual": "individual"}


def parse_period_date(value: str | None, name: str, end: bool) -> date:
    """A period boundary: YYYY, YYYY-MM or YYYY-MM-DD (a dateTime is cut to its date)."""
    if not value:
        raise bad_request(f"{name} is required (a date such as 2026-10-01)", [name], code="required")
    text = value.strip()[:10]
    try:
        if len(text) == 4:
            return date(int(text), 12, 31) if end else date(int(text), 1, 1)
        if len(text) == 7:
            year, month = int(text[:4]), int(text[5:7])
            return date(year, month, calendar.monthrange(year, month)[1] if end else 1)
        return date.fromisoformat(text)
    except ValueError:
        raise bad_request(f"{name} '{value[:40]}' is not a date (YYYY, YYYY-MM or YYYY-MM-DD)", [name]) from None


def _parameters(req: FhirRequest) -> dict[str, str]:
    params = {k: v for k, v in req.params}
    body = req.body
    if req.method == "POST" and isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            value = next((v for k, v in p.items() if k.startswith("value")), None)
            if p.get("name") and isinstance(value, (str, int)):
                params.setdefault(p["name"], str(value))
    return params


def _measure(router, tx: Transaction, target: list[str], params: dict[str, str]) -> dict:
    if len(target) == 2:
        return tx.read("Measure", target[1]).resource()
    wanted = params.get("measure")
    if not wanted:
        raise bad_request("Measure/$evaluate-measure needs the measure parameter (an id or canonical URL), "
                          "or use Measure/[id]/$evaluate-measure", ["measure"], code="required")
    if "/" not in wanted:
        return tx.read("Measure", wanted).resource()
    url, _, version = wanted.partition("|")
    pairs = [("url", url)] + ([("version", version)] if version else [])
    found = tx.search(router.parser.parse("Measure", pairs)).matches
    if not found:
        raise FhirError(404, "not-found", f"no Measure with url {wanted}")
    return found[0].resource()


def evaluate_measure(router, tx: Transaction, req: FhirRequest, base: str, target: list[str]) -> FhirResponse:
    if req.method not in ("GET", "POST") or target[:1] != ["Measure"] or len(target) > 2:
        raise bad_request("$evaluate-measure is GET Measure/[id]/$evaluate-measure?periodStart=&periodEnd=")
    params = _parameters(req)
    start = parse_period_date(params.get("periodStart"), "periodStart", end=False)
    end = parse_period_date(params.get("periodEnd"), "periodEnd", end=True)
    if end < start:
        raise bad_request("periodEnd is before periodStart", ["periodEnd"])
    patient = params.get("patient") or params.get("subject")
    report_type = REPORT_TYPES.get(params.get("reportType") or ("subject" if patient else "population"))
    if report_type is None:
        raise bad_request(f"reportType '{params.get('reportType')}' is not one of population, subject-list, subject",
                          ["reportType"])
    if report_type == "individual" and not patient:
        raise bad_request("reportType subject needs the patient parameter", ["patient"], code="required")
    measure = _measure(router, tx, target, params)
    try:
        definitions = kpi_measures.group_definitions(measure)
    except ValueError as exc:
        raise FhirError(422, "not-supported", f"Measure/{measure.get('id')}: {exc}") from None
    patient_id = None
    if patient:
        patient_id = patient.rsplit("Patient/", 1)[-1]
        tx.read("Patient", patient_id)  # 404 when the caller may not see the child
        patient = f"Patient/{patient_id}"

    def restrict(column):
        """The caller's restriction on a facts table's Patient id column (and the one child asked for)."""
        restriction = tx.restriction("Patient", literal("Patient"), column)
        if patient_id is None:
            return restriction
        return column == patient_id if restriction is None else (restriction & (column == patient_id))

    now = datetime.now(UTC)
    tx.settle_facts()  # inside a transaction Bundle, after its writes
    results = evaluate(tx.conn, definitions, start, end, now.date(), restrict, report_type == "subject-list")
    if report_type == "subject-list":
        for result in results:
            for ids in result.subjects.values():
                for pid in ids:
                    tx._disclosed.setdefault(("Patient", pid), None)  # the audit names who was listed
    generated = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    report = kpi_measures.measure_report(measure, results, start, end, report_type, generated, patient)
    return FhirResponse(200, resource=report)


def evaluate(conn, definitions: list[kpi_measures.GroupDefinition], start: date, end: date, as_of: date,
             restrict=None, with_subjects: bool = False) -> list[kpi_measures.GroupResult]:
    """Every group of a Measure, set-based over its facts table (also used by the monthly report).
    `restrict(patient column)` gives the caller's restriction (None: every child)."""
    results = []
    for d in definitions:
        try:
            source = measure_sql.source_of([name for _, name in d.populations])
            conds = measure_sql.population_conditions(source, d.populations, start, end, as_of)
        except KeyError as exc:
            raise FhirError(422, "not-supported", f"group {d.id}: unknown criteria {exc}") from None
        except ValueError as exc:
            raise FhirError(422, "not-supported", f"group {d.id}: {exc}") from None
        restriction = restrict(source.patient) if restrict else None
        if d.delay:
            results.append(_delay_group(conn, d, conds, as_of, restriction, with_subjects))
            continue
        if d.observation and d.observation not in source.observations:
            raise FhirError(422, "not-supported", f"group {d.id}: unknown measure-observation {d.observation!r}")
        for expression in d.stratifiers:
            if expression not in source.stratifiers:
                raise FhirError(422, "not-supported", f"group {d.id}: unknown stratifier {expression!r}")
        row, strata = measure_sql.aggregate_strata(conn, source, conds, restriction, d.stratifiers, d.observation)
        result = kpi_measures.GroupResult(d, row["counts"], (row["observation_sum"], row["observation_count"]),
                                          strata=strata)
        if with_subjects:
            result.subjects = {code: measure_sql.subjects(conn, source, cond, restriction)
                               for code, cond in conds.items()}
        results.append(result)
    return results


def _delay_group(conn, d, conds, as_of: date, restriction, with_subjects: bool) -> kpi_measures.GroupResult:
    """Late IHAs: each one's segments (kpi/delay.py), counted by the segment that caused the breach."""
    rules = load_kpi_rules()
    late = facts_sql.rows(conn, conds["initial-population"], restriction)
    delays = [(row, kpi_delay.delay_segments(row, as_of, rules)) for row in late]
    known = [(row, dl) for row, dl in delays if dl is not None]
    summary = kpi_delay.summarise([dl for _, dl in known])
    strata = [{"stratum": segment, "counts": {"initial-population": n}} for segment, n in summary["caused"].items()]
    if len(known) < len(late):
        strata.append({"stratum": None, "counts": {"initial-population": len(late) - len(known)}})
    result = kpi_measures.GroupResult(d, {"initial-population": len(late)}, strata={kpi_measures.BREACH_SEGMENT: strata},
                                      extensions=kpi_measures.delay_extensions(summary))
    if with_subjects:
        result.subjects = {"initial-population": sorted({row["patient_id"] for row in late if row["patient_id"]})}
        for row, dl in known:
            if row["patient_id"]:
                result.entry_extensions.setdefault(row["patient_id"], kpi_measures.delay_entry_extension(dl))
    return result
