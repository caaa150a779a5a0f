"""What assessment comes next for a looked-after child, when it is due and who does it.

Plain functions of FHIR resources (as dicts), a date and rules (config/pathway.toml and
config/routing.toml); no I/O but reading the rules. adapter/rest/pathway_hooks.py stores
what they plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from .routing import Route, RoutingRules, load_routing, provider_for
from .schedule import (
    PathwayRules,
    birthday,
    care_leaver_coverage_ends,
    leaving_care_summary_due,
    load_rules,
    next_rha_due,
)

SD = "https://lac-fhir-adapter.example/fhir/StructureDefinition/"
PLACEMENT_URL = SD + "lac-placement"
EHCP_URL = SD + "lac-ehcp"
EPISODE_TYPES = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-episode-type"
LOOKED_AFTER = ("http://snomed.info/sct", "764841000000100")
ASSESSMENT_TYPES = "https://lac-fhir-adapter.example/fhir/CodeSystem/lac-assessment-type"
RHA = "rha"
SUMMARY = "leaving-care-summary"


@dataclass(frozen=True)
class PlanningRules:
    pathway: PathwayRules
    routing: RoutingRules


def load_planning_rules() -> PlanningRules:
    return PlanningRules(load_rules(), load_routing())


@dataclass(frozen=True)
class PlannedTask:
    assessment: str  # code in lac-assessment-type: "rha" or "leaving-care-summary"
    due: date
    route: Route
    basis: str  # why this assessment, on this date


def _date(value) -> date | None:
    """A FHIR date/dateTime (or a date) as a date; None when absent or only a year/month."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def completed_on(task_or_date) -> date | None:
    """When a completed assessment took place: a date as is, or a Task's executionPeriod.end,
    else its lastModified, else meta.lastUpdated, else authoredOn."""
    if task_or_date is None or isinstance(task_or_date, (date, str)):
        return _date(task_or_date)
    for value in ((task_or_date.get("executionPeriod") or {}).get("end"), task_or_date.get("lastModified"),
                  (task_or_date.get("meta") or {}).get("lastUpdated"), task_or_date.get("authoredOn")):
        found = _date(value)
        if found:
            return found
    return None


def assessment_code(task: dict | None) -> str | None:
    if not isinstance(task, dict):
        return None
    for coding in (task.get("code") or {}).get("coding") or []:
        if coding.get("system") == ASSESSMENT_TYPES:
            return coding.get("code")
    return None


def _has_coding(concepts, system: str, code: str) -> bool:
    return any(c.get("system") == system and c.get("code") == code
               for cc in concepts or [] for c in (cc or {}).get("coding") or [])


def is_looked_after(episode: dict) -> bool:
    return _has_coding(episode.get("type"), *LOOKED_AFTER)


def is_care_leaver(episode: dict) -> bool:
    return _has_coding(episode.get("type"), EPISODE_TYPES, "care-leaver")


def placement(episode: dict | None) -> tuple[str | None, bool | None]:
    """(postcodeDistrict, outOfArea) from the episode's lac-placement extension."""
    for ext in (episode or {}).get("extension") or []:
        if ext.get("url") == PLACEMENT_URL:
            subs = {e.get("url"): e for e in ext.get("extension") or []}
            district = (subs.get("postcodeDistrict") or {}).get("valueString")
            out = (subs.get("outOfArea") or {}).get("valueBoolean")
            return district, out if isinstance(out, bool) else None
    return None, None


def has_ehcp(episode: dict | None) -> bool:
    return any(e.get("url") == EHCP_URL and e.get("valueBoolean") is True
               for e in (episode or {}).get("extension") or [])


def next_assessment(patient: dict, episode: dict | None, last_completed, today: date,
                    rules: PlanningRules | None = None, summary_exists: bool = False) -> PlannedTask | None:
    """The next assessment to plan after `last_completed` (a completed Task or its date), or None.

    - Looked-after episode active: the next RHA (schedule.next_rha_due from the last assessment),
      unless it would fall on or after the leaving-care summary date and no summary exists
      (`summary_exists` False): then the leaving-care health summary, due 3 months before 18
      (today when that is past). No RHA on or after the 18th birthday.
    - Care-leaver episode active: the leaving-care summary when none exists, while covered.
    - No episode, or a finished one: nothing.
    Nothing either without a full birth date or a last assessment date (the IHA is planned
    by the LA notification, not here).
    """
    rules = rules or load_planning_rules()
    born = _date(patient.get("birthDate"))
    if born is None or not episode or episode.get("status") != "active":
        return None
    district, out_of_area = placement(episode)
    summary_due = leaving_care_summary_due(born, rules.pathway)

    def summary(basis: str) -> PlannedTask | None:
        if summary_exists:
            return None
        return PlannedTask(SUMMARY, max(summary_due, today),
                           provider_for(SUMMARY, district, out_of_area, rules.routing), basis)

    if is_care_leaver(episode) and not is_looked_after(episode):
        if today > care_leaver_coverage_ends(born, has_ehcp(episode), rules.pathway):
            return None
        return summary(f"care leaver: leaving-care health summary due {summary_due.isoformat()} "
                       f"(3 months before the 18th birthday)")
    if not is_looked_after(episode):
        return None
    last = completed_on(last_completed)
    if last is None:
        return None
    rha_due = next_rha_due(born, last, rules.pathway)
    if rha_due >= summary_due and not summary_exists:
        return summary(f"next RHA ({rha_due.isoformat()}) would fall on or after the leaving-care summary date "
                       f"{summary_due.isoformat()}: leaving-care health summary instead")
    if rha_due >= birthday(born, 18):
        return None  # looked-after children's RHAs end at 18
    five = birthday(born, rules.pathway.rha_age_threshold_years)
    interval = (rules.pathway.rha_under_threshold_months if rha_due < five
                else rules.pathway.rha_over_threshold_months)
    return PlannedTask(RHA, rha_due, provider_for(RHA, district, out_of_area, rules.routing),
                       f"RHA {interval} months after the assessment of {last.isoformat()}")
