"""Consent rules for looked-after children (DOMAIN.md section 3) as plain functions.

No HTTP, no SQL, no state but the rules read from config/consent.toml (or a file a test
names). Consents are FHIR R4 Consent resources as dicts, in the shape of the lac-consent
profile: the grantor kind in extension lac-consent-grantor, the young person's capacity in
extension lac-consent-capacity, the purpose in provision.purpose (lac-consent-purpose), the
legal basis in policyRule (lac-consent-legal-basis).

- `grantor_problems`: why the grantor may not give (or refuse) this consent; empty = valid.
- `sharing_decision`: whether, at a moment, the child's consents permit a purpose.
- `gated_types`: the resource types that need the information-sharing consent.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

CONSENT_FILE = Path(__file__).resolve().parents[2] / "config" / "consent.toml"

BASE = "https://lac-fhir-adapter.example/fhir/"
GRANTOR_URL = BASE + "StructureDefinition/lac-consent-grantor"
CAPACITY_URL = BASE + "StructureDefinition/lac-consent-capacity"
LEGAL_STATUS_URL = BASE + "StructureDefinition/lac-legal-status"
GRANTOR_SYSTEM = BASE + "CodeSystem/lac-consent-grantor"
CAPACITY_SYSTEM = BASE + "CodeSystem/lac-consent-capacity"
PURPOSE_SYSTEM = BASE + "CodeSystem/lac-consent-purpose"
LEGAL_BASIS_SYSTEM = BASE + "CodeSystem/lac-consent-legal-basis"
LEGAL_STATUS_SYSTEM = BASE + "CodeSystem/ssda903-legal-status"

INFORMATION_SHARING = "information-sharing"  # lac-consent-purpose; also config purposes.default

GRANTOR_AT = f"Consent.extension('{GRANTOR_URL}')"
CAPACITY_AT = f"Consent.extension('{CAPACITY_URL}')"
NO_LEGAL_STATUS = "none"  # the config row used when the legal status is not known


# ---------------------------------------------------------------------------------------------
# The rules


@dataclass(frozen=True)
class ConsentRules:
    timezone: ZoneInfo
    own_consent_from: int
    adult_from: int
    pr_consents_lapse_at_adult: bool
    purposes: Mapping[str, str]  # config name -> lac-consent-purpose code
    default_purpose: str
    competent_under_age: frozenset[str]
    cannot_decide: frozenset[str]
    accepted_without_birth_date: frozenset[str]
    young_person: str
    holders_of_pr: frozenset[str]
    rank: Mapping[str, int]  # grantor code -> rank; its keys are the grantor kinds known
    performer_types: Mapping[str, frozenset[str]]
    legal_basis: Mapping[str, frozenset[str]]
    legal_status: Mapping[str, frozenset[str]]  # LS code (or "none") -> grantors allowed
    gated: frozenset[str]


def rules_from_dict(raw: dict) -> ConsentRules:
    ages, purposes, capacity, grantors = raw["ages"], raw["purposes"], raw["capacity"], raw["grantors"]
    named = {k: v for k, v in purposes.items() if k != "default"}
    default = purposes.get("default", named.get("information_sharing", INFORMATION_SHARING))
    rank = {str(k): int(v) for k, v in grantors["rank"].items()}
    rules = ConsentRules(
        timezone=ZoneInfo(raw.get("timezone", "Europe/London")),
        own_consent_from=int(ages["own_consent_from"]),
        adult_from=int(ages["adult_from"]),
        pr_consents_lapse_at_adult=bool(ages.get("pr_consents_lapse_at_adult", True)),
        purposes=named,
        default_purpose=default,
        competent_under_age=frozenset(capacity["competent_under_age"]),
        cannot_decide=frozenset(capacity["cannot_decide"]),
        accepted_without_birth_date=frozenset(capacity["accepted_without_birth_date"]),
        young_person=grantors["young_person"],
        holders_of_pr=frozenset(grantors["holders_of_pr"]),
        rank=rank,
        performer_types={k: frozenset(v) for k, v in grantors.get("performer_types", {}).items()},
        legal_basis={k: frozenset(v) for k, v in raw.get("legal_basis", {}).items()},
        legal_status={k: frozenset(v) for k, v in raw["legal_status"].items()},
        gated=frozenset(raw["gating"]["information_sharing"]),
    )
    unknown = {g for allowed in (*rules.legal_status.values(), *rules.legal_basis.values(),
                                 rules.holders_of_pr, {rules.young_person}) for g in allowed} - set(rank)
    if unknown:
        raise ValueError(f"consent rules: grantor kinds without a rank: {sorted(unknown)}")
    return rules


@lru_cache(maxsize=8)
def load_rules(path: Path | str = CONSENT_FILE) -> ConsentRules:
    with open(path, "rb") as fh:
        return rules_from_dict(tomllib.load(fh))


def gated_types(rules: ConsentRules | None = None) -> frozenset[str]:
    """Resource types ("assessment content") that flow to a partner only under an
    information-sharing consent."""
    return (rules or load_rules()).gated


# ---------------------------------------------------------------------------------------------
# Facts about the child


@dataclass(frozen=True)
class ChildFacts:
    """What the rules need to know about the child.

    `legal_status` is the SSDA903 LS code (None when not known / not looked after). When
    `legal_status_history` is given ((from-date, LS code or None), ...), the status on a
    Consent's date is taken from it instead: the latest entry starting on or before that date,
    or the earliest entry for a date before them all.
    """

    birth_date: date | None
    legal_status: str | None = None
    legal_status_history: tuple[tuple[date, str | None], ...] = field(default=())

    def legal_status_on(self, day: date | None) -> str | None:
        if not self.legal_status_history:
            return self.legal_status
        history = sorted(self.legal_status_history, key=lambda entry: entry[0])
        if day is None:
            return history[-1][1]
        current = history[0][1]
        for start, code in history:
            if start <= day:
                current = code
        return current


def child_facts_from(patient: dict | None, episodes: Iterable[dict] = ()) -> ChildFacts:
    """ChildFacts from a Patient and its EpisodeOfCares (legal status in extension
    lac-legal-status, from each episode's period.start); entered-in-error episodes are skipped."""
    birth = (patient or {}).get("birthDate")
    birth_date = date.fromisoformat(birth) if isinstance(birth, str) and len(birth) == 10 else None
    history: list[tuple[date, str | None]] = []
    for episode in episodes:
        if episode.get("status") == "entered-in-error":
            continue
        start = _parse((episode.get("period") or {}).get("start"))
        for ext in episode.get("extension") or ():
            if ext.get("url") == LEGAL_STATUS_URL and start is not None:
                history.append((start.value if type(start.value) is date else start.value.date(),
                                (ext.get("valueCoding") or {}).get("code")))
    history.sort(key=lambda entry: entry[0])
    return ChildFacts(birth_date, history[-1][1] if history else None, tuple(history))


def age_on(birth_date: date, day: date) -> int:
    """Completed years on `day` (someone born on 29 February is a year older on 1 March)."""
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


def birthday(birth_date: date, years: int) -> date:
    try:
        return birth_date.replace(year=birth_date.year + years)
    except ValueError:  # 29 February in a year that has none
        return date(birth_date.year + years, 3, 1)


# ---------------------------------------------------------------------------------------------
# FHIR dates as intervals


@dataclass(frozen=True)
class _When:
    low: datetime  # first instant covered (aware)
    high: datetime  # first instant after (aware)
    value: date | datetime  # as written, for reports and valid_until


_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")
_MIN = datetime.min.replace(tzinfo=UTC)


def _parse(text, tz: ZoneInfo | None = None) -> _When | None:
    """A FHIR date or dateTime as the interval it covers; None when absent or malformed."""
    if not isinstance(text, str):
        return None
    tz = tz or ZoneInfo("Europe/London")
    match = _PARTIAL.match(text)
    try:
        if match:
            year, month, day = int(match[1]), int(match[2] or 1), int(match[3] or 1)
            first = date(year, month, day)
            if match[3]:
                after = first + timedelta(days=1)
            elif match[2]:
                after = date(year + (month == 12), month % 12 + 1, 1)
            else:
                after = date(year + 1, 1, 1)
            return _When(_start_of(first, tz), _start_of(after, tz), first)
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=tz)
    return _When(aware, aware + timedelta(microseconds=1), moment)


def _start_of(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def _local_day(when: _When, tz: ZoneInfo) -> date:
    if type(when.value) is date:
        return when.value
    return when.low.astimezone(tz).date()


def _moment(on: date | datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The query interval: a whole day for a date, one instant for a datetime."""
    if isinstance(on, datetime):
        aware = on if on.tzinfo else on.replace(tzinfo=tz)
        return aware, aware + timedelta(microseconds=1)
    return _start_of(on, tz), _start_of(on + timedelta(days=1), tz)


# ---------------------------------------------------------------------------------------------
# Reading a Consent


def _extension_code(consent: dict, url: str) -> tuple[bool, str | None, str | None]:
    """(present, system, code) of a Coding extension."""
    for ext in consent.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == url:
            coding = ext.get("valueCoding") or {}
            return True, coding.get("system"), coding.get("code")
    return False, None, None


def grantor_of(consent: dict) -> str | None:
    present, system, code = _extension_code(consent, GRANTOR_URL)
    return code if present and system in (None, GRANTOR_SYSTEM) else None


def capacity_of(consent: dict) -> str | None:
    present, system, code = _extension_code(consent, CAPACITY_URL)
    return code if present and system in (None, CAPACITY_SYSTEM) else None


def purposes_of(consent: dict) -> set[str]:
    provision = consent.get("provision") or {}
    return {c.get("code") for c in provision.get("purpose") or ()
            if isinstance(c, dict) and c.get("system") in (None, PURPOSE_SYSTEM)}


def _legal_bases(consent: dict) -> list[str]:
    rule = consent.get("policyRule") or {}
    return [c.get("code") for c in rule.get("coding") or ()
            if isinstance(c, dict) and c.get("system") == LEGAL_BASIS_SYSTEM and c.get("code")]


def _decided(consent: dict, tz: ZoneInfo) -> _When | None:
    """When the decision was made: Consent.dateTime, else provision.period.start."""
    return _parse(consent.get("dateTime"), tz) or _parse(_period(consent).get("start"), tz)


def _period(consent: dict) -> dict:
    return (consent.get("provision") or {}).get("period") or {}


def _reference_type(ref: dict) -> str | None:
    if ref.get("type"):
        return ref["type"]
    reference = ref.get("reference") or ""
    if reference.startswith(("urn:", "#")) or not reference:
        return None
    head = re.split(r"[/?]", reference.split("/_history/")[0].rstrip("/").rsplit("/fhir/", 1)[-1])[0]
    return head if head[:1].isupper() else None


def _label(consent: dict) -> str:
    return f"Consent/{consent['id']}" if consent.get("id") else "a Consent without id"


# ---------------------------------------------------------------------------------------------
# Grantor


def grantor_problems(consent: dict, child: ChildFacts,
                     rules: ConsentRules | None = None) -> list[tuple[str, str]]:
    """(location, message) for each reason the grantor may not give (or refuse) this consent.

    Checked at the Consent's date (dateTime, else provision.period.start): a grantor kind is
    recorded and known; a performer is recorded and of the right type; the grantor may decide
    under the child's legal status; a young person is 16-17 (or 18+) and not recorded as lacking
    capacity, or under 16 with a recorded competence assessment (gillick-competent); a person
    with parental responsibility decides only for a child under 18; the legal basis
    (policyRule) fits the grantor. An empty list means the grantor could consent.
    """
    rules = rules or load_rules()
    tz = rules.timezone
    problems: list[tuple[str, str]] = []

    def add(where: str, message: str) -> None:
        problems.append((where, message))

    present, system, grantor = _extension_code(consent, GRANTOR_URL)
    if not present or not grantor:
        add(GRANTOR_AT,
            "no grantor recorded: who gave or refused consent must be "
            "recorded (extension lac-consent-grantor)")
        grantor = None
    elif system not in (None, GRANTOR_SYSTEM) or grantor not in rules.rank:
        add(GRANTOR_AT + ".value", f"unknown grantor {system}|{grantor}")
        grantor = None

    decided = _decided(consent, tz)
    day = _local_day(decided, tz) if decided else None
    if day is None:
        add("Consent.dateTime", "no date: the grantor's age and standing cannot be checked")

    performers = consent.get("performer") or []
    if not performers:
        add("Consent.performer", "no performer: who consented must be recorded")
    elif grantor in rules.performer_types:
        allowed = rules.performer_types[grantor]
        for i, ref in enumerate(performers):
            kind = _reference_type(ref) if isinstance(ref, dict) else None
            if kind is not None and kind not in allowed:
                add(f"Consent.performer[{i}]",
                    f"the performer is a {kind} but grantor '{grantor}' must be a "
                    f"{' or '.join(sorted(allowed))}")

    if grantor is None:
        return problems

    status = child.legal_status_on(day)
    allowed = rules.legal_status.get(status or NO_LEGAL_STATUS)
    if allowed is None:
        add(GRANTOR_AT,
            f"legal status {status!r} on {day} is not in the consent "
            "rules: who may consent is not known")
    elif grantor not in allowed:
        what = f"legal status {status}" if status else "no known legal status"
        add(GRANTOR_AT,
            f"grantor '{grantor}' may not consent under {what}"
            f"{f' (on {day})' if day else ''}; who may: "
            f"{', '.join(sorted(allowed))}")

    capacity = capacity_of(consent)
    capacity_at = CAPACITY_AT if capacity else GRANTOR_AT
    age = age_on(child.birth_date, day) if child.birth_date and day else None
    if age is not None and age < 0:
        add("Consent.dateTime",
            f"the Consent ({day}) is dated before the child's "
            f"birth ({child.birth_date})")
    elif grantor == rules.young_person:
        if capacity in rules.cannot_decide:
            add(CAPACITY_AT,
                f"capacity recorded as '{capacity}': the young person "
                "cannot decide for themselves; a person with parental "
                "responsibility decides")
        elif age is None:
            if day is not None and capacity not in rules.accepted_without_birth_date:
                add(capacity_at,
                    "the child's birth date is not known, so the young "
                    "person's own decision needs capacity recorded as one "
                    f"of {', '.join(sorted(rules.accepted_without_birth_date))}")
        elif age < rules.own_consent_from and capacity not in rules.competent_under_age:
            add(capacity_at,
                f"the child was {age} on {day}: under "
                f"{rules.own_consent_from} their own decision needs a "
                "recorded competence assessment (capacity "
                f"{' or '.join(sorted(rules.competent_under_age))}), "
                f"not {capacity or 'none recorded'}")
    elif grantor in rules.holders_of_pr and age is not None and age >= rules.adult_from:
        add(GRANTOR_AT,
            f"the young person was {age} on {day}: parental "
            f"responsibility has ended, so '{grantor}' cannot consent; "
            "only the young person can")

    for i, basis in enumerate(_legal_bases(consent)):
        fits = rules.legal_basis.get(basis)
        if fits is not None and grantor not in fits:
            add(f"Consent.policyRule.coding[{i}]",
                f"legal basis '{basis}' does not fit grantor '{grantor}' (it fits "
                f"{', '.join(sorted(fits))})")
    return problems


# ---------------------------------------------------------------------------------------------
# Sharing decision


@dataclass(frozen=True)
class Decision:
    permitted: bool
    reason: str  # for a person
    consent_id: str | None = None  # the Consent that decided
    valid_until: date | datetime | None = None  # when the deciding Consent stops applying


@dataclass(frozen=True)
class _Candidate:
    consent: dict
    grantor: str
    rank: int
    permit: bool
    withdrawn: bool
    decided: _When
    ends: _When | None  # the first of provision.period.end and the lapse of PR at 18
    order: tuple


_IGNORED = {"rejected", "entered-in-error", "draft", "proposed"}


def sharing_decision(consents: Iterable[dict], child: ChildFacts, on: date | datetime,
                     purpose: str | None = None, rules: ConsentRules | None = None) -> Decision:
    """Whether the child's consents permit `purpose` (default: information sharing) `on` a day
    (any moment of it) or at an instant.

    Only Consents for that purpose (provision.purpose) whose grantor could consent
    (grantor_problems empty) count. status active: provision.type permit or deny; inactive: a
    withdrawal, never a permit (read as deny); rejected, entered-in-error, draft, proposed: do
    not count. A Consent applies from its date (dateTime, and provision.period.start) until
    provision.period.end (a withdrawal has no end); one given by a person with parental
    responsibility stops at the child's 18th birthday (ages.pr_consents_lapse_at_adult).
    Of the applicable decisions the highest grantor rank wins (court, then the young person,
    then those with parental responsibility), and within a rank the newest (dateTime; then
    meta.lastUpdated; a refusal before a permit on a tie). No applicable decision: not
    permitted. valid_until is the last day (or instant) the deciding Consent applies, if known.
    """
    rules = rules or load_rules()
    tz = rules.timezone
    purpose = purpose or rules.default_purpose
    q_low, q_high = _moment(on, tz)
    adult_day = (birthday(child.birth_date, rules.adult_from)
                 if child.birth_date and rules.pr_consents_lapse_at_adult else None)
    # a consent by a person with parental responsibility applies up to the day before the
    # 18th birthday (reported as its last day, like an inclusive provision.period.end)
    lapse = (_When(_start_of(adult_day, tz), _start_of(adult_day, tz), adult_day - timedelta(days=1))
             if adult_day else None)

    candidates: list[_Candidate] = []
    ignored: list[str] = []
    for consent in consents:
        if not isinstance(consent, dict) or consent.get("resourceType", "Consent") != "Consent":
            continue
        if purpose not in purposes_of(consent):
            continue
        label, status = _label(consent), consent.get("status")
        if status in _IGNORED or status not in ("active", "inactive"):
            ignored.append(f"{label} is {status}")
            continue
        withdrawn = status == "inactive"
        kind = (consent.get("provision") or {}).get("type")
        if not withdrawn and kind not in ("permit", "deny"):
            ignored.append(f"{label} has no provision.type")
            continue
        problems = grantor_problems(consent, child, rules)
        if problems:
            ignored.append(f"{label} has an invalid grantor ({problems[0][1]})")
            continue
        grantor = grantor_of(consent)
        decided = _decided(consent, tz)
        period = _period(consent)
        start = _parse(period.get("start"), tz)
        ends = None if withdrawn else _parse(period.get("end"), tz)
        if grantor in rules.holders_of_pr and lapse and (ends is None or lapse.high < ends.high):
            ends = lapse
        if decided.low >= q_high or (start and start.low >= q_high):
            ignored.append(f"{label} is not in force yet")
            continue
        if ends is not None and ends.high <= q_low:
            ignored.append(f"{label} has ended ({ends.value})")
            continue
        updated = _parse((consent.get("meta") or {}).get("lastUpdated"), tz)
        permit = not withdrawn and kind == "permit"
        candidates.append(_Candidate(consent, grantor, rules.rank[grantor], permit, withdrawn,
                                     decided, ends,
                                     (decided.low, updated.low if updated else _MIN, not permit)))

    if not candidates:
        why = f" ({'; '.join(ignored)})" if ignored else ""
        return Decision(False, f"not permitted: no applicable {purpose} consent{why}")

    top = max(c.rank for c in candidates)
    winner = max((c for c in candidates if c.rank == top), key=lambda c: c.order)
    what = ("withdrawn" if winner.withdrawn else "given" if winner.permit else "refused")
    reason = (f"{'permitted' if winner.permit else 'not permitted'}: {purpose} consent {what} by "
              f"{winner.grantor} on {winner.decided.value} ({_label(winner.consent)})")
    overruled = [c for c in candidates if c.rank < top and c.permit != winner.permit
                 and c.order > winner.order]
    if overruled:
        newest = max(overruled, key=lambda c: c.order)
        reason += (f"; it prevails over the later decision of {newest.grantor} on "
                   f"{newest.decided.value} ({_label(newest.consent)})")
    return Decision(winner.permit, reason, winner.consent.get("id"),
                    winner.ends.value if winner.ends else None)
