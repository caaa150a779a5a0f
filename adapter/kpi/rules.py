"""Assessment facts: what the commissioning measures need to know about one IHA/RHA Task.

Plain functions of FHIR resources (as dicts), dates and rules (config/kpi.toml,
config/pathway.toml); no SQL and no HTTP. adapter/store/facts_sql.py stores what
`assessment_facts` returns, in the transaction of the write that changed it.

Step dates come from the Task's history: a step's date is the date of the first version
showing it (its `businessStatus` code, or `status` for accepted/completed). A version's date
is its `Task.lastModified` (FHIR: when the task was last modified; the business time of the
step, which may be earlier than the write, so writers keep it current), else the server's
`meta.lastUpdated`; a first version without it falls back to `authoredOn`. Instants are read as dates in England
(Europe/London).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from ..pathway.clocks import add_working_days, bank_holidays, working_days_between
from ..pathway.schedule import add_months, age_on

KPI_FILE = Path(__file__).resolve().parents[2] / "config" / "kpi.toml"
PARTNERS_FILE = Path(__file__).resolve().parents[2] / "config" / "partners.toml"
LONDON = ZoneInfo("Europe/London")
BUSINESS_STATUS = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-task-business-status"
ASSESSMENT_TYPES = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-assessment-type"
PLACEMENT_URL = "https://lac-fhir-adapter.example/fhir/StructureDefinition/lac-placement"
LOOKED_AFTER = ("http://snomed.info/sct", "764841000000100")
CONSENT_PURPOSE = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-consent-purpose"
GRANTOR_URL = "https://lac-fhir-adapter.example/fhir/StructureDefinition/lac-consent-grantor"
GRANTOR = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-consent-grantor"
QUALITY_AUDIT = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-quality-audit"
MEASURED = ("iha", "rha")
NOT_COUNTED = frozenset({"cancelled", "rejected", "entered-in-error", "draft"})  # never in a denominator
SEGMENTS = ("notification", "consent", "referral", "scheduling", "did-not-attend", "report")
IN_AREA, OUT_OF_AREA, PLACED_IN, UNKNOWN = "in-area", "out-of-area", "placed-in", "unknown"


@dataclass(frozen=True)
class KpiRules:
    home_las: frozenset[str]
    age_bands: tuple[tuple[int, str], ...]
    allowances: dict[str, int] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    iha_working_days: int = 20
    own_consent_from_age: int = 16
    health_plan_return_wd: int = 5                              # [health_plan] return_working_days
    tariffs: dict[str, float] = field(default_factory=dict)     # [tariff.amounts]: assessment -> amount
    tariff_currency: str = "GBP"
    tariff_needs_audit_pass: bool = True                        # [tariff] paid_only_if_audit_passed
    sdq_bands: tuple[tuple[int, str], ...] = ()                 # [oc2] sdq_bands: (lowest score, label)


def rules_from_dict(raw: dict, served: tuple[str, ...] = (), iha_working_days: int = 20) -> KpiRules:
    home = raw.get("local_authorities", {}).get("home") or list(served)
    bands = tuple((int(low), str(label)) for low, label in raw.get("age_bands", {}).get("bands", []))
    allowances = {k: int(v) for k, v in raw.get("iha_delay", {}).get("allowance_working_days", {}).items()}
    unknown = set(allowances) - set(SEGMENTS)
    if unknown:
        raise ValueError(f"config/kpi.toml: unknown delay segments {sorted(unknown)}")
    tariff = raw.get("tariff", {})
    unknown = set(tariff.get("amounts", {})) - set(MEASURED)
    if unknown:
        raise ValueError(f"config/kpi.toml: tariff for unknown assessments {sorted(unknown)}")
    return KpiRules(frozenset(str(h) for h in home), tuple(sorted(bands)),
                    {s: allowances.get(s, 0) for s in SEGMENTS},
                    {k: float(v) for k, v in raw.get("targets", {}).items()}, iha_working_days,
                    int(raw.get("consent", {}).get("own_consent_from_age", 16)),
                    int(raw.get("health_plan", {}).get("return_working_days", 5)),
                    {k: float(v) for k, v in tariff.get("amounts", {}).items()},
                    str(tariff.get("currency", "GBP")), bool(tariff.get("paid_only_if_audit_passed", True)),
                    tuple(sorted((int(low), str(label)) for low, label in raw.get("oc2", {}).get("sdq_bands", []))))


@lru_cache(maxsize=4)
def load_kpi_rules(path: Path = KPI_FILE) -> KpiRules:
    from ..pathway.schedule import load_rules

    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    served: tuple[str, ...] = ()
    if PARTNERS_FILE.exists():
        with open(PARTNERS_FILE, "rb") as fh:
            served = tuple(tomllib.load(fh).get("self", {}).get("serves", ()))
    return rules_from_dict(raw, served, load_rules().iha_working_days)


# -- small readers -------------------------------------------------------------------------

def as_date(value) -> date | None:
    """A FHIR date or dateTime/instant as a date in England; None when absent or partial."""
    if isinstance(value, datetime):
        return (value.astimezone(LONDON) if value.tzinfo else value).date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value)  # Python 3.11+ reads "Z"
    except ValueError:
        return None
    return (moment.astimezone(LONDON) if moment.tzinfo else moment).date()


def codes(concept: dict | None, system: str) -> list[str]:
    return [c.get("code") for c in (concept or {}).get("coding") or [] if c.get("system") == system and c.get("code")]


def assessment_type(task: dict) -> str | None:
    found = [c for c in codes(task.get("code"), ASSESSMENT_TYPES) if c in MEASURED]
    return found[0] if found else None


def placement(episode: dict | None) -> tuple[str | None, bool | None]:
    for ext in (episode or {}).get("extension") or []:
        if ext.get("url") == PLACEMENT_URL:
            subs = {e.get("url"): e for e in ext.get("extension") or []}
            out = (subs.get("outOfArea") or {}).get("valueBoolean")
            return (subs.get("postcodeDistrict") or {}).get("valueString"), out if isinstance(out, bool) else None
    return None, None


# -- the domain rules ----------------------------------------------------------------------

def age_band(birth_date: date | None, on: date | None, rules: KpiRules) -> str | None:
    """The configured age band of a child on a day (None when either date is unknown)."""
    if birth_date is None or on is None:
        return None
    age = age_on(birth_date, on)
    label = None
    for low, name in rules.age_bands:
        if age >= low:
            label = name
    return label


def placement_segment(la: str | None, episode: dict | None, rules: KpiRules,
                      home_districts: frozenset[str] | None = None, provider: str | None = None,
                      ooa_providers: frozenset[str] | None = None) -> str:
    """in-area, out-of-area or placed-in (by another LA), or unknown.

    A child whose responsible LA is not one of ours was placed in by another LA, wherever the
    placement is. Otherwise an assessment requested from an out-of-area provider (the
    [out_of_area] table of config/routing.toml) is out of area, even if the child has moved
    back since; else the episode's lac-placement `outOfArea` flag decides, and without it the
    postcode district against the home-area list of config/routing.toml.
    """
    if la is not None and la not in rules.home_las:
        return PLACED_IN
    if home_districts is None or ooa_providers is None:
        from ..pathway.routing import load_routing

        routing = load_routing()
        home_districts = routing.home_districts if home_districts is None else home_districts
        ooa_providers = frozenset(routing.out_of_area.values()) if ooa_providers is None else ooa_providers
    if provider is not None and provider in ooa_providers:
        return OUT_OF_AREA
    district, out = placement(episode)
    if out is None and district:
        out = district.strip().upper().replace(" ", "") not in home_districts
    if out is None:
        return UNKNOWN if la is None else IN_AREA
    return OUT_OF_AREA if out else IN_AREA


def choose_episode(episodes: list[dict], on: date | None) -> dict | None:
    """The looked-after episode current on `on` (started by then, not ended before), else the
    latest one started by then, else the earliest; episodes of other types only when there is
    no looked-after one."""
    def looked_after(e: dict) -> bool:
        return any(c.get("system") == LOOKED_AFTER[0] and c.get("code") == LOOKED_AFTER[1]
                   for cc in e.get("type") or [] for c in cc.get("coding") or [])

    pool = [e for e in episodes if looked_after(e) and e.get("status") != "entered-in-error"] or \
        [e for e in episodes if e.get("status") != "entered-in-error"]
    if not pool:
        return None

    def start(e: dict) -> date:
        return as_date((e.get("period") or {}).get("start")) or date.min

    def end(e: dict) -> date:
        return as_date((e.get("period") or {}).get("end")) or date.max

    pool.sort(key=lambda e: (start(e), e.get("id") or ""))
    if on is None:
        return pool[-1]
    current = [e for e in pool if start(e) <= on <= end(e)]
    if current:
        return current[-1]
    started = [e for e in pool if start(e) <= on]
    return started[-1] if started else pool[0]


def _young_person_granted(consent: dict) -> bool:
    return any(e.get("url") == GRANTOR_URL and (e.get("valueCoding") or {}).get("system") == GRANTOR
               and (e.get("valueCoding") or {}).get("code") == "young-person"
               for e in consent.get("extension") or [])


def _for_assessment(consent: dict) -> bool:
    return any(p.get("system") == CONSENT_PURPOSE and p.get("code") == "assessment"
               for p in (consent.get("provision") or {}).get("purpose") or [])


def _consent_day(consent: dict) -> date | None:
    return as_date(consent.get("dateTime")) or as_date(((consent.get("provision") or {}).get("period") or {}).get("start"))


def assessment_consent_date(consents: list[dict], since: date | None, own: bool = False) -> date | None:
    """When consent to the assessment was given: the earliest permitting Consent (active, or
    inactive since) for the purpose `assessment`, dated (dateTime, else provision.period.start)
    on or after `since` (the day the child entered care). A refusal is not consent. With
    `own`, only a consent the young person gave themself (lac-consent-grantor young-person)."""
    found = []
    for consent in consents:
        if own and not _young_person_granted(consent):
            continue
        provision = consent.get("provision") or {}
        if consent.get("status") not in ("active", "inactive") or provision.get("type", "permit") != "permit":
            continue
        if not _for_assessment(consent):
            continue
        day = _consent_day(consent)
        if day is not None and (since is None or day >= since):
            found.append(day)
    return min(found) if found else None


def own_consent_offered(consents: list[dict], since: date | None) -> date | None:
    """When a young person was first offered the chance to consent for themself: the earliest
    Consent to an assessment with the young person as grantor, in any status but
    entered-in-error (proposed or rejected: offered but not signed; a refusal was offered too),
    dated (dateTime, else provision.period.start, else when it was stored) on or after `since`
    (their 16th birthday)."""
    found = []
    for consent in consents:
        if consent.get("status") == "entered-in-error" or not _young_person_granted(consent) \
                or not _for_assessment(consent):
            continue
        day = _consent_day(consent) or as_date((consent.get("meta") or {}).get("lastUpdated"))
        if day is not None and (since is None or day >= since):
            found.append(day)
    return min(found) if found else None


@dataclass
class Steps:
    """The first date each pathway step was recorded in a Task's history."""

    first: dict[str, date] = field(default_factory=dict)  # step code -> date
    did_not_attend: int = 0   # versions that newly recorded a did-not-attend
    status: str | None = None
    execution_end: date | None = None

    def get(self, code: str) -> date | None:
        return self.first.get(code)


def version_date(version: dict, previous: dict | None) -> date | None:
    """When a Task version's change happened (see the module docstring)."""
    modified = as_date(version.get("lastModified"))
    if modified is not None:
        return modified
    if previous is None and version.get("authoredOn"):
        return as_date(version["authoredOn"])
    return as_date((version.get("meta") or {}).get("lastUpdated"))


def task_steps(versions: list[dict]) -> Steps:
    """Step dates from a Task's versions, oldest first (deleted versions left out)."""
    steps = Steps()
    previous: dict | None = None
    for version in versions:
        when = version_date(version, previous)
        business = codes(version.get("businessStatus"), BUSINESS_STATUS)
        before = codes((previous or {}).get("businessStatus"), BUSINESS_STATUS)
        for code in business:
            if when is not None:
                steps.first.setdefault(code, when)
            if code == "did-not-attend" and code not in before:
                steps.did_not_attend += 1
        status = version.get("status")
        if status in ("accepted", "completed") and when is not None:
            steps.first.setdefault("status-" + status, when)
        steps.status = status
        end = as_date((version.get("executionPeriod") or {}).get("end"))
        if status == "completed" and end is not None and steps.execution_end is None:
            steps.execution_end = end
        previous = version
    if previous is None and versions:
        steps.status = versions[-1].get("status")
    return steps


def _first(*days: date | None) -> date | None:
    present = [d for d in days if d is not None]
    return min(present) if present else None


def assessment_facts(versions: list[dict], patient: dict | None, episodes: list[dict], provider: str | None,
                     la_of, rules: KpiRules, holidays: frozenset[date] | None = None,
                     consents: list[dict] = ()) -> dict | None:
    """One row of assessment facts for an IHA/RHA Task, or None for any other Task.

    `versions`: the Task's versions, oldest first; `patient` and `episodes` the child's;
    `provider` the owner's ODS code; `la_of(episode)` the responsible LA's code.

    - due: IHA, 20 working days (config/pathway.toml) after entering care (the episode's
      start), else Task.restriction.period.end; RHA, Task.restriction.period.end.
    - requested: the first of request-sent, accepted, appointment-booked (each implies the
      request had gone); turnaround_wd counts working days from it (else from the
      notification: placed-in requests start there) to done.
    - done (the clock stops): the report and health plan returned, i.e. the first of
      report-sent and the Task completed.
    - assessed: assessment-done, else the completed Task's executionPeriod.end, else done.
    - consent: consent-received, or for an IHA the child's consent to the assessment given
      since entering care (`consents`: the child's Consents), whichever came first.
    - own_consent: the young person's own consent to an assessment, given from their 16th
      birthday (config/kpi.toml); offered_consent: when they were first offered it (a Consent
      of theirs in any status); age_at_due: their age in years on the due date.
    - response_id: the QuestionnaireResponse the Task returned (its quality audit is joined by
      the store); plan_return_wd: working days from the assessment (as recorded: assessment-done or
      the completed Task's executionPeriod.end) to the report and health plan returned.
    """
    if not versions:
        return None
    task = versions[-1]
    kind = assessment_type(task)
    if kind is None:
        return None
    holidays = bank_holidays() if holidays is None else holidays
    steps = task_steps(versions)
    authored = as_date(task.get("authoredOn")) or version_date(versions[0], None)
    restriction_end = as_date(((task.get("restriction") or {}).get("period") or {}).get("end"))
    episode = choose_episode(episodes, authored if kind == "iha" else (restriction_end or authored))
    entered = as_date(((episode or {}).get("period") or {}).get("start")) if kind == "iha" else None
    if kind == "iha" and entered is not None:
        due = add_working_days(entered, rules.iha_working_days, holidays)
    else:
        due = restriction_end
    notified = steps.get("notification-received") or version_date(versions[0], None)
    completed = steps.get("status-completed")
    done = _first(steps.get("report-sent"), completed)
    seen = steps.get("assessment-done") or steps.execution_end  # the assessment itself, as recorded
    assessed = seen or done
    requested = _first(steps.get("request-sent"), steps.get("accepted"), steps.get("status-accepted"),
                       steps.get("appointment-booked"))
    accepted = _first(steps.get("accepted"), steps.get("status-accepted"))
    la = la_of(episode) if episode else None
    born = as_date((patient or {}).get("birthDate"))
    age = age_on(born, due) if born and due else None
    own_from = add_months(born, 12 * rules.own_consent_from_age) if born else None
    asked = requested or notified  # placed-in and planned requests start at the notification
    turnaround = working_days_between(asked, done, holidays) if asked and done else None
    return {
        "assessment": kind, "status": steps.status or task.get("status"), "la": la, "provider": provider,
        "placement": placement_segment(la, episode, rules, provider=provider), "age_band": age_band(born, due or authored, rules),
        "birth_date": born, "entered_care": entered, "due": due, "notified": notified,
        "consent": _first(steps.get("consent-received"),
                          assessment_consent_date(list(consents), entered) if kind == "iha" and entered else None),
        "requested": requested, "accepted": accepted,
        "appointment": steps.get("appointment-booked"), "did_not_attend": steps.get("did-not-attend"),
        "dna_count": steps.did_not_attend, "assessed": assessed, "reported": steps.get("report-sent"),
        "quality_assured": steps.get("quality-assured"), "completed": completed, "done": done,
        "turnaround_wd": turnaround,
        "age_at_due": age,
        "own_consent": assessment_consent_date(list(consents), own_from, own=True) if own_from else None,
        "offered_consent": own_consent_offered(list(consents), own_from) if own_from else None,
        "response_id": response_of(task),
        "plan_return_wd": working_days_between(seen, done, holidays) if seen and done else None,
        "counted": (steps.status or task.get("status")) not in NOT_COUNTED,
    }


def response_of(task: dict) -> str | None:
    """The id of the QuestionnaireResponse (the assessment report) among a Task's outputs."""
    for output in task.get("output") or []:
        reference = (output.get("valueReference") or {}).get("reference") or ""
        if reference.startswith("QuestionnaireResponse/"):
            return reference.split("/")[1] or None
    return None


def is_quality_audit(observation: dict) -> bool:
    return any(c.get("system") == QUALITY_AUDIT and c.get("code") == "assessment-quality-audit"
               for c in (observation.get("code") or {}).get("coding") or [])


def audit_outcome(observations: list[dict], pass_mark: int) -> tuple[int | None, bool | None]:
    """(score, passed) of the latest quality audit among these Observations
    (lac-quality-audit#assessment-quality-audit; passed: score >= the checklist's pass mark);
    (None, None) when there is none."""
    audits = [o for o in observations if o.get("status") in ("final", "amended", "corrected")
              and isinstance((o.get("valueQuantity") or {}).get("value"), (int, float)) and is_quality_audit(o)]
    if not audits:
        return None, None
    latest = max(audits, key=lambda o: (str(o.get("effectiveDateTime") or ""),
                                        str((o.get("meta") or {}).get("lastUpdated") or "")))
    score = round(latest["valueQuantity"]["value"])
    return score, score >= pass_mark


def on_time(done: date | None, due: date | None) -> bool:
    """Done on or before the due date (a clock still running is not on time)."""
    return done is not None and due is not None and done <= due


def working_days(a: date, b: date, holidays: frozenset[date] | None = None) -> int:
    return working_days_between(a, b, bank_holidays() if holidays is None else holidays)
