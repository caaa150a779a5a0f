"""The people and their histories, as plain dataclasses.

`make_child(index, seed, settings)` draws one child's whole story from its own
random.Random (seeded by the population seed and the child's index), so a child never
depends on the others: the population streams, and any child can be regenerated alone.
Nothing reads the clock: the reference date is `settings.as_of` and nothing is dated after it.
Working days come from adapter/pathway/clocks.py, RHA intervals from adapter/pathway/schedule.py.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from ..pathway.clocks import add_working_days, bank_holidays
from ..pathway.schedule import add_months, age_on, birthday, load_rules, next_rha_due
from .settings import Settings, weighted

IN_AREA_PROVIDER = "RD3"   # the notification mapping's in-area IHA provider (our hospital trust)


@dataclass
class Authority:
    code: str
    name: str
    prefix: str


@dataclass
class Person:
    given: str
    family: str
    phone: str | None = None
    email: str | None = None


@dataclass
class Placement:
    start: date
    type: str
    provider: str
    district: str
    out_of_area: bool             # from the responsible LA's point of view
    health_ods: str | None        # the placement area's health provider, when out of area


@dataclass
class ConsentDecision:
    date: date
    decision: str                 # given | refused | withdrawn
    purposes: tuple[str, ...]
    grantor: str                  # lac-consent-grantor
    capacity: str | None
    legal_basis: str
    grantor_name: Person | None
    relationship: str | None      # v3 RoleCode (MTH, FTH, ...)
    with_notification: bool       # carried by the EnteredCare notification


@dataclass
class Health:
    """What an assessment records that the SSDA903 OC2 table also carries (Part D)."""
    sdq: int
    immunisations: bool
    teeth: bool
    substance_misuse: bool
    intervention_received: bool


@dataclass
class Assessment:
    kind: str                     # iha | rha
    form: str                     # iha-c, iha-yp, rha-c, rha-yp
    date: date
    due: date
    previous: date | None
    legal_status: str
    placement: Placement
    health: Health
    next_due: date
    number: int                   # 0 for the IHA, 1.. for RHAs
    carer_report: str | None      # cr-c | cr-yp | None


@dataclass
class Event:
    """One LA notification: kind is the event element's name."""
    kind: str                     # EnteredCare, PlacementChange, LegalStatusChange, Consent, LeftCare, BecameCareLeaver
    date: date                    # the event's own Date
    sent: date                    # when the LA sent it
    legal_status: str | None = None
    placement: Placement | None = None
    consent: ConsentDecision | None = None
    reason: str | None = None


@dataclass
class Episode:
    """One SSDA903 episode: a new one starts at every change of legal status or placement."""
    start: date
    legal_status: str
    placement: Placement
    rne: str
    end: date | None = None
    rec: str | None = None


@dataclass
class Child:
    index: int
    status: str                   # looked-after | care-leaver | placed-in
    nhs: str
    la: Authority                 # the responsible (and placing) authority
    la_child_id: str
    given: str
    family: str
    sex: str                      # FHIR administrative gender
    birth: date
    entered: date
    category_of_need: str
    social_worker: Person
    legal_statuses: list[tuple[date, str]] = field(default_factory=list)
    placements: list[Placement] = field(default_factory=list)
    consents: list[ConsentDecision] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    assessments: list[Assessment] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)
    left: date | None = None
    left_reason: str | None = None
    ehcp: bool = False
    as_of: date | None = None     # the reference date: nothing is dated after it
    notified: date | None = None
    consent_for_iha: date | None = None
    iha_due: date | None = None
    iha_in_time: bool | None = None
    iha_delay_reason: str | None = None

    @property
    def placed_in(self) -> bool:
        return self.status == "placed-in"

    def legal_status_on(self, day: date) -> str:
        current = self.legal_statuses[0][1]
        for start, code in self.legal_statuses:
            if start <= day:
                current = code
        return current

    def placement_on(self, day: date) -> Placement:
        current = self.placements[0]
        for p in self.placements:
            if p.start <= day:
                current = p
        return current


# -- identities ---------------------------------------------------------------------------

def nhs_number(nine: int) -> str | None:
    """The NHS number with these first nine digits, or None when no check digit exists."""
    digits = str(nine)
    check = 11 - sum(int(d) * w for d, w in zip(digits, range(10, 1, -1))) % 11
    if check == 11:
        check = 0
    return None if check == 10 else digits + str(check)


def nhs_for_index(first: int, index: int) -> str:
    """A valid 999-range NHS number unique to `index`, from the nine-digit prefixes first + 2*index
    and the next one: of two consecutive prefixes at most one lacks a check digit (their weighted
    sums differ by 2, or by 7 across a carry, never by 0 mod 11). From 999100000 that is enough
    for about 449,950 children; the prototype marker (emit_fhir) uses the range's last prefixes."""
    base = first + 2 * index
    for prefix in (base, base + 1):
        number = nhs_number(prefix)
        if number is not None:
            if not number.startswith("999") or prefix > 999_999_900:
                raise ValueError(f"child {index + 1}: no NHS number left in the 999 test range "
                                 f"(population too large for nhs_first = {first})")
            return number
    raise AssertionError("unreachable")  # pragma: no cover


def _person(rng: random.Random, names: dict, family: str | None = None, female: bool | None = None) -> Person:
    female = rng.random() < 0.5 if female is None else female
    given = rng.choice(names["given_female"] if female else names["given_male"])
    return Person(given, family or rng.choice(names["family_heads"]) + rng.choice(names["family_tails"]))


# -- the story ------------------------------------------------------------------------------

class _Story:
    def __init__(self, rng: random.Random, settings: Settings):
        self.rng = rng
        self.s = settings
        self.holidays = bank_holidays()
        self.as_of = settings.as_of

    def wd(self, day: date, n: int) -> date:
        return add_working_days(day, n, self.holidays)

    def between(self, low: date, high: date) -> date:
        span = (high - low).days
        return low + timedelta(days=self.rng.randint(0, max(span, 0)))


def make_child(index: int, seed: int, settings: Settings) -> Child:
    rng = random.Random(f"lac-synth/{seed}/{index}")
    st = _Story(rng, settings)
    s = settings
    pop, care, names = s["population"], s["care"], s["names"]
    as_of = s.as_of

    roll = rng.random() * (pop["looked_after"] + pop["care_leaver"] + pop["placed_in"])
    status = "looked-after" if roll < pop["looked_after"] else \
        "care-leaver" if roll < pop["looked_after"] + pop["care_leaver"] else "placed-in"
    home = Authority(**pop["home_la"])
    la = Authority(**rng.choice(pop["placing_las"])) if status == "placed-in" else home

    # birth and entering care
    ehcp = False
    if status == "care-leaver":
        ehcp = rng.random() < s["ages"]["ehcp"]
        age = weighted(rng, s["ages"]["care_leaver_age"])
        if age >= 21 and not ehcp:
            age = rng.choice((18, 19, 20))
        birth = as_of - timedelta(days=age * 365 + rng.randint(0, 364) + age // 4)
        while age_on(birth, as_of) != age:  # leap-year drift
            birth += timedelta(days=1 if age_on(birth, as_of) > age else -1)
        entered_age = weighted(rng, s["ages"]["care_leaver_entered"])
        entered = st.between(birthday(birth, entered_age), birthday(birth, entered_age + 1) - timedelta(days=1))
    else:
        age = weighted(rng, s["ages"]["looked_after"])
        birth = as_of - timedelta(days=age * 365 + rng.randint(0, 364) + age // 4)
        while age_on(birth, as_of) != age:
            birth += timedelta(days=1 if age_on(birth, as_of) > age else -1)
        years = rng.expovariate(1 / care["years_in_care_mean"])
        entered = as_of - timedelta(days=int(years * 365.25) + 10)
        if entered <= birth:
            entered = birth + timedelta(days=rng.randint(0, max((as_of - birth).days - 30, 0)))
    entered = min(entered, as_of - timedelta(days=30))
    entered = max(entered, birth)

    female = rng.random() < s["ages"]["female"]
    who = _person(rng, names, female=female)
    sw = _person(rng, names)
    sw.given = rng.choice(names["social_worker_given"])
    domain = la.name.split()[0].lower() + "-" + la.name.split()[1].lower()
    sw.email = f"{sw.given.lower()}.{sw.family.lower()}@{domain}.example"
    sw.phone = f"01632 96{rng.randint(0, 9999):04d}"
    child = Child(index=index, status=status, nhs=nhs_for_index(int(pop["nhs_first"]), index), la=la,
                  la_child_id=f"{la.prefix}-C-{index + 1:06d}", given=who.given, family=who.family,
                  sex="female" if female else "male", birth=birth, entered=entered,
                  category_of_need=weighted(rng, care["category_of_need"]), social_worker=sw, ehcp=ehcp, as_of=as_of)

    end = birthday(birth, 18) if status == "care-leaver" else as_of   # the care period ends (or now)
    if status == "care-leaver":
        child.left = end
        child.left_reason = weighted(rng, care["leaving_reason"])
    _legal_statuses(child, st, end)
    _placements(child, st, end)
    _consents_and_iha(child, st)
    if child.left is not None:   # a young person who left care days after entering it: no later consent
        child.consents = [c for c in child.consents if c.date < child.left]
    _reviews(child, st, end)
    _episodes(child)
    _events(child, st)
    return child


def _legal_statuses(child: Child, st: _Story, end: date) -> None:
    care, rng = st.s["care"], st.rng
    code = weighted(rng, care["entry_legal_status"])
    child.legal_statuses = [(child.entered, code)]
    low, high = care["c1_to_c2_months"]

    def later(months_low: int, months_high: int) -> date:
        return add_months(child.entered, rng.randint(months_low, months_high)) + timedelta(days=rng.randint(0, 27))

    if code in ("L1", "L2"):
        low_days, high_days = care["l1_days" if code == "L1" else "l2_days"]
        code = "C1" if rng.random() < care["emergency_to_c1"] else "V2"
        child.legal_statuses.append((child.entered + timedelta(days=rng.randint(low_days, high_days)), code))
    elif code == "V2" and rng.random() < care["v2_to_c1"]:
        child.legal_statuses.append((later(1, 6), "C1"))
        code = "C1"
    if code == "C1" and rng.random() < care["c1_to_c2"]:
        start = child.legal_statuses[-1][0]
        child.legal_statuses.append((max(later(low, high), start + timedelta(days=30)), "C2"))
    child.legal_statuses = [(d, c) for d, c in child.legal_statuses if d < end and d <= st.as_of] \
        or child.legal_statuses[:1]


def _placement(child: Child, st: _Story, start: date, previous: Placement | None = None) -> Placement:
    """A placement that keeps to the DfE rules the judge checks (see config/synthetic.toml)."""
    care, rng = st.s["care"], st.rng
    kind = weighted(rng, care["placement_type"])
    if (kind == "P1" and child.legal_status_on(start) in ("V2", "L1", "L2")) or (kind == "K3" and age_on(child.birth, start) < 16) \
            or (kind == "A4" and (previous is None or not previous.type.startswith("U"))):
        kind = "U6"
    provider = "PR0" if kind == "P1" else weighted(rng, care["placement_provider"])
    if child.placed_in:   # placed in our area by another LA: out of area for them, our provider
        district, out, ods = rng.choice(care["in_area_districts"]), True, IN_AREA_PROVIDER
    elif rng.random() < care["out_of_area"]:
        district, out, ods = rng.choice(care["out_of_area_districts"]), True, rng.choice(care["out_of_area_providers"])
    else:
        district, out, ods = rng.choice(care["in_area_districts"]), False, None
    if provider == "PR1" and (out or kind in ("K2", "R1")):   # own provision: fostering, in area only
        provider = "PR4"
    placement = Placement(start, kind, provider, district, out, ods)
    if previous is not None and (previous.type, previous.district) == (kind, district):
        placement.district = next(d for d in care["in_area_districts" if not out or child.placed_in
                                                   else "out_of_area_districts"] if d != district)
    return placement


def _placements(child: Child, st: _Story, end: date) -> None:
    rng = st.rng
    child.placements = [_placement(child, st, child.entered)]
    years = (end - child.entered).days / 365.25
    moves = _poisson(rng, st.s["care"]["moves_per_year"] * years)
    days = sorted({rng.randint(14, max((end - child.entered).days - 1, 15)) for _ in range(moves)})
    for offset in days:
        start = child.entered + timedelta(days=offset)
        if start < end and start <= st.as_of and start > child.placements[-1].start:
            child.placements.append(_placement(child, st, start, child.placements[-1]))


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _grantor(child: Child, st: _Story, day: date, decision: str, purposes: tuple[str, ...],
             with_notification: bool) -> ConsentDecision:
    c, rng = st.s["consent"], st.rng
    age = age_on(child.birth, day)
    own = Person(child.given, child.family)
    if age >= c["own_consent_from_age"]:
        return ConsentDecision(day, decision, purposes, "young-person", "presumed-16-17", "young-person-own-consent",
                               own, None, with_notification)
    if age >= 12 and rng.random() < c["gillick_competent_12_15"]:
        return ConsentDecision(day, decision, purposes, "young-person", "gillick-competent", "young-person-own-consent",
                               own, None, with_notification)
    ls = child.legal_status_on(day)
    basis = "section-20-agreement" if ls in ("V2", "V3", "V4") else "care-order" if ls in ("C1", "C2") \
        else "placement-order" if ls == "E1" else "parental-responsibility"  # a basis that fits a parent
    relationship = rng.choice(("MTH", "MTH", "MTH", "FTH", "GRMTH"))
    parent = _person(rng, st.s["names"], family=child.family, female=relationship != "FTH")
    return ConsentDecision(day, decision, purposes, "parent-with-pr", "not-competent", basis, parent, relationship,
                           with_notification)


def _consents_and_iha(child: Child, st: _Story) -> None:
    c, iha, rng = st.s["consent"], st.s["iha"], st.rng
    both = ("assessment", "information-sharing")
    child.iha_due = st.wd(child.entered, load_rules().iha_working_days)
    child.notified = st.wd(child.entered, weighted(rng, c["notification_delay_working_days"]))
    with_notification = rng.random() < c["with_notification"]
    given_day = child.notified if with_notification else \
        st.wd(child.notified, weighted(rng, c["late_consent_working_days"]))
    refused = rng.random() < c["refused_first"]
    if refused:
        child.consents.append(_grantor(child, st, given_day, "refused", both, with_notification))
        low, high = c["refusal_to_consent_working_days"]
        given_day = st.wd(given_day, rng.randint(low, high))
        with_notification = False
    child.consents.append(_grantor(child, st, given_day, "given", both, with_notification))
    child.consent_for_iha = given_day
    iha_day = st.wd(given_day, weighted(rng, iha["wait_working_days"]))
    child.iha_in_time = iha_day <= child.iha_due
    if not child.iha_in_time:
        consent_late = given_day > st.wd(child.entered, 10)
        if refused:
            child.iha_delay_reason = "consent-refused"
        elif consent_late:
            child.iha_delay_reason = "late-notification" if with_notification else "consent-late"
        elif rng.random() < iha["child_not_brought"]:
            child.iha_delay_reason = "child-not-brought"
        else:
            child.iha_delay_reason = "appointment-capacity"
    if rng.random() < c["withdrawn_sharing"]:
        day = st.wd(given_day, rng.randint(20, 120))
        if day <= st.as_of and (child.left is None or day < child.left):
            child.consents.append(_grantor(child, st, day, "withdrawn", ("information-sharing",), False))
    child._iha_day = iha_day  # type: ignore[attr-defined]


def _health(child: Child, st: _Story, day: date) -> Health:
    h, rng = st.s["health"], st.rng
    sdq = max(0, min(40, round(rng.gauss(h["sdq_mean"], h["sdq_sd"]))))
    misuse = age_on(child.birth, day) >= 13 and rng.random() < h["substance_misuse_from_13"]
    return Health(sdq, rng.random() < h["immunisations_up_to_date"], rng.random() < h["teeth_checked"],
                  misuse, misuse and rng.random() < h["intervention_received"])


def _reviews(child: Child, st: _Story, end: date) -> None:
    rng, r = st.rng, st.s["rha"]
    iha_day: date = child._iha_day  # type: ignore[attr-defined]
    last_day = min(st.as_of, end - timedelta(days=1))
    if iha_day > last_day:
        return
    due = child.iha_due
    previous = None
    day, kind, number = iha_day, "iha", 0
    while day <= last_day:
        age = age_on(child.birth, day)
        form = f"{kind}-{'c' if age < 10 else 'yp'}"
        nxt = next_rha_due(child.birth, day)
        cr = None
        if age >= 2 and rng.random() < r["carer_report"]:
            cr = "cr-c" if age < 10 else "cr-yp"
        child.assessments.append(Assessment(kind, form, day, due, previous, child.legal_status_on(day),
                                            child.placement_on(day), _health(child, st, day), nxt, number, cr))
        previous, due, kind, number = day, nxt, "rha", number + 1
        day = nxt + timedelta(days=weighted(rng, r["offset_days"]))
        day = max(day, previous + timedelta(days=30))


def _episodes(child: Child) -> None:
    """SSDA903 episodes: a new one at each legal status change or placement move."""
    changes: dict[date, set[str]] = {}
    for day, _ in child.legal_statuses[1:]:
        changes.setdefault(day, set()).add("L")
    for p in child.placements[1:]:
        changes.setdefault(p.start, set()).add("P")
    episodes = [Episode(child.entered, child.legal_statuses[0][1], child.placements[0], "S")]
    for day in sorted(changes):
        kinds = changes[day]
        rne = "B" if kinds == {"L", "P"} else "L" if kinds == {"L"} else "P"
        episodes[-1].end, episodes[-1].rec = day, "X1"
        episodes.append(Episode(day, child.legal_status_on(day), child.placement_on(day), rne))
    if child.left is not None:
        episodes[-1].end, episodes[-1].rec = child.left, child.left_reason
    child.episodes = episodes


def _events(child: Child, st: _Story) -> None:
    """The LA's notifications, in the order they are sent; none after the reference date."""
    events: list[Event] = []
    first = child.consents[0] if child.consents and child.consents[0].with_notification else None
    events.append(Event("EnteredCare", child.entered, child.notified, child.legal_statuses[0][1],
                        child.placements[0], first))
    for decision in child.consents:
        if decision is not first:
            events.append(Event("Consent", decision.date, decision.date, consent=decision))
    for day, code in child.legal_statuses[1:]:
        events.append(Event("LegalStatusChange", day, day, legal_status=code))
    for p in child.placements[1:]:
        events.append(Event("PlacementChange", p.start, p.start, placement=p))
    if child.left is not None:
        events.append(Event("LeftCare", child.left, child.left, reason=child.left_reason))
        events.append(Event("BecameCareLeaver", child.left, child.left))
    order = {"EnteredCare": 0, "LegalStatusChange": 1, "PlacementChange": 2, "Consent": 3, "LeftCare": 4,
             "BecameCareLeaver": 5}
    # the EnteredCare notification comes first: nothing can change an episode health has not been
    # told of (a change the LA knew of earlier is sent with or after it); none after the reference date
    entered = events.pop(0)
    for e in events:
        e.sent = max(e.sent, entered.sent)
    events.sort(key=lambda e: (e.sent, order[e.kind]))
    child.events = [e for e in [entered, *events] if e.sent <= st.as_of] if entered.sent <= st.as_of else []
