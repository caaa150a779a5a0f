"""Assessment facts of a synthetic population, straight from the generator's stories.

Loading 100,000 children through the server takes hours (bench/load_population.py), so
bench/measures.py writes the rows the write path would keep (kpi_assessment, and the access
rows an LA caller's restriction reads) in bulk instead. Each child is
`adapter.synth.population.make_child(index, seed)`, the same story `lac-adapter fixtures
generate` writes, so the distributions are config/synthetic.toml's (caseload shares, entry
dates, consent delays, IHA waits, RHA schedule and offsets, placements out of area):

- one `iha` row per child whose IHA fell due by the reference date; one `rha` row per review
  held; and the next review the pathway plans after the last one (open, `done` empty) while the
  child is still looked after;
- `due`: the IHA's 20 working days after entering care, the review's due date from the
  schedule; `done` (report returned) is the assessment date, as the story's own in-time flag
  has it; an IHA not yet held is open (late once its due date passed);
- dates of the steps: notified and consent from the story (IHA), the request the working day
  after consent (IHA) or when the previous assessment was held (RHA), the appointment and
  assessment on the assessment date, quality assurance of 9 in 10 reports;
- `la`: the responsible LA's code; `provider`: our IHA provider (RD3) or review team (RDY) in
  area, the placement area's provider out of area; `placement`: placed-in, out-of-area or
  in-area as in the story; `own_consent` (and `offered_consent`): the young person's own
  consent given from 16; the report's quality audit scored 100 (passing) for about 6 in 7
  reports, else 80; the health plan returned with the report (`plan_return_wd` 0);
- `kpi_oc2`: one row per child and 31 March on which the home LA's SSDA903 return
  (adapter/synth/emit_903.py, the exporter's cohort rule) has an OC2 row for them, its flags,
  SDQ score or reason as that return has them; children placed in by other LAs are in their own
  LA's return, not here;
- access rows: each Patient in its own compartment, granted to its responsible LA (the grant an
  EpisodeOfCare gives), and written by it when it is the home LA (its notifications create the
  child). Patient is not a consent-gated type, so consent rows do not change what it sees.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from adapter.kpi import rules as kpi
from adapter.pathway.clocks import add_working_days, bank_holidays, working_days_between
from adapter.pathway.schedule import add_months, age_on
from adapter.synth.emit_903 import _oc2 as oc2_return_rows
from adapter.synth.population import IN_AREA_PROVIDER, Child, make_child
from adapter.synth.settings import Settings

_NS = uuid.UUID("0f6c3b8e-5a55-4c1e-9a3e-6b7f0d2c9e11")
RHA_PROVIDER = "RDY"      # the community LAC health team (config/partners.toml)
HOME_LA_ORG = "LA-DEMO-1"  # the home LA's organisation (dev-la-token), which serves LA 991


def _id(kind: str, index: int, n: int = 0) -> str:
    return str(uuid.uuid5(_NS, f"{kind}/{index}/{n}"))


def patient_id(index: int) -> str:
    return _id("Patient", index)


def _placement(child: Child, on: date) -> tuple[str, str | None]:
    if child.placed_in:
        return kpi.PLACED_IN, None
    placement = child.placement_on(on)
    if placement is not None and placement.out_of_area:
        return kpi.OUT_OF_AREA, placement.health_ods
    return "in-area", None


def _own_consent(child: Child, rules: kpi.KpiRules) -> date | None:
    own_from = add_months(child.birth, 12 * rules.own_consent_from_age)
    return next((c.date for c in child.consents if c.decision == "given" and c.grantor == "young-person"
                 and "assessment" in c.purposes and c.date >= own_from), None)


def child_rows(child: Child, rules: kpi.KpiRules, holidays: frozenset[date]) -> dict[str, list[dict]]:
    """{table name: rows} for one child."""
    pid = patient_id(child.index)
    as_of = child.as_of
    own = _own_consent(child, rules)
    facts: list[dict] = []

    def row(n: int, kind: str, due: date, notified: date, requested: date | None, held: date | None,
            provider: str | None, placement: str, **extra) -> dict:
        done = held if held is not None and held <= as_of else None
        audit = 100 if (child.index + n) % 7 else 80   # about 6 reports in 7 pass the quality audit
        return {"task_id": _id("Task", child.index, n), "patient_id": pid, "assessment": kind,
                "status": "completed" if done else "in-progress", "counted": True, "la": child.la.code,
                "provider": provider, "placement": placement, "age_band": kpi.age_band(child.birth, due, rules),
                "birth_date": child.birth, "due": due, "notified": notified, "requested": requested,
                "accepted": requested, "appointment": done, "did_not_attend": None, "dna_count": 0,
                "assessed": done, "reported": done, "completed": done, "done": done,
                "quality_assured": done if done and (child.index + n) % 10 else None,
                "turnaround_wd": working_days_between(requested or notified, done, holidays) if done else None,
                "age_at_due": age_on(child.birth, due), "own_consent": own if own and own <= due else None,
                "entered_care": None, "consent": None,
                "offered_consent": own if own and own <= due else None,
                "response_id": _id("QuestionnaireResponse", child.index, n) if done else None,
                "audit_score": audit if done else None, "audit_passed": audit == 100 if done else None,
                "plan_return_wd": 0 if done else None, **extra}

    if child.iha_due is not None and child.notified is not None and child.notified <= as_of:
        placement, ooa = _placement(child, child.entered)
        iha = child.assessments[0] if child.assessments else None
        consent = child.consent_for_iha if child.consent_for_iha and child.consent_for_iha <= as_of else None
        requested = add_working_days(consent, 1, holidays) if consent else None
        requested = requested if requested and requested <= as_of else None
        extra = {"entered_care": child.entered, "consent": consent}
        if child.iha_delay_reason == "child-not-brought" and iha is not None:
            extra.update(did_not_attend=iha.date - timedelta(days=14), dna_count=1)
        facts.append(row(0, "iha", child.iha_due, child.notified, requested, iha.date if iha else None,
                         ooa or IN_AREA_PROVIDER, placement, **extra))
    previous = child.assessments[0].date if child.assessments else None
    for a in child.assessments[1:]:
        placement, ooa = _placement(child, a.date)
        facts.append(row(a.number, "rha", a.due, previous, previous, a.date, ooa or RHA_PROVIDER, placement))
        previous = a.date
    if child.assessments and child.left is None:
        last = child.assessments[-1]
        placement, ooa = _placement(child, as_of)
        facts.append(row(last.number + 1, "rha", last.next_due, last.date, last.date, None,
                         ooa or RHA_PROVIDER, placement))
    oc2 = [] if child.placed_in else oc2_rows(child, rules)
    access = {
        "access_compartment": [{"res_type": "Patient", "res_id": pid, "patient_id": pid}],
        "access_grant": [{"source_type": "EpisodeOfCare", "source_id": _id("EpisodeOfCare", child.index),
                          "patient_id": pid, "organisation": child.la.code}],
        "access_author": [] if child.placed_in else [{"res_type": "Patient", "res_id": pid,
                                                      "organisation": HOME_LA_ORG}],
    }
    return {"kpi_assessment": facts, "kpi_oc2": oc2, **access}


OC2_FLAGS = {"immunisations": "IMMUNISATIONS", "teeth_check": "TEETH_CHECK",
             "health_assessment": "HEALTH_ASSESSMENT", "health_check": "HEALTH_CHECK",
             "substance_misuse": "SUBSTANCE_MISUSE"}


def oc2_rows(child: Child, rules: kpi.KpiRules) -> list[dict]:
    """The child's kpi_oc2 rows: the OC2 rows of the home LA's return for each 31 March from
    the one after entering care up to the reference date."""
    out = []
    for year in range(child.entered.year + 1, child.as_of.year + 1):
        census = date(year, 3, 31)
        if census > child.as_of:
            break
        for r in oc2_return_rows(child, year):
            placement, _ = _placement(child, census)
            out.append({"patient_id": patient_id(child.index), "year": year, "census": census,
                        "la": child.la.code, "placement": placement,
                        "age_band": kpi.age_band(child.birth, census, rules), "birth_date": child.birth,
                        "health_check_applies": "HEALTH_CHECK" in r,
                        "sdq_applies": "SDQ_SCORE" in r or "SDQ_REASON" in r,
                        **{column: r[item] == "1" if item in r else None for column, item in OC2_FLAGS.items()},
                        "sdq_score": int(r["SDQ_SCORE"]) if r.get("SDQ_SCORE") else None,
                        "sdq_reason": r.get("SDQ_REASON") or None})
    return out


_STATE: dict = {}


def init_worker(seed: int, settings: Settings) -> None:
    _STATE.update(seed=seed, settings=settings, rules=kpi.load_kpi_rules(), holidays=bank_holidays())


def rows_of(indexes: range) -> dict[str, list[dict]]:
    """The rows of children `indexes` (in a worker set up by init_worker)."""
    out: dict[str, list[dict]] = {}
    for index in indexes:
        child = make_child(index, _STATE["seed"], _STATE["settings"])
        for table, rows in child_rows(child, _STATE["rules"], _STATE["holidays"]).items():
            out.setdefault(table, []).extend(rows)
    return out
