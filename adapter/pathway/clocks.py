"""Working-day clocks: the IHA is due 20 working days after the child enters care.

Working days exclude Saturdays, Sundays and England & Wales bank holidays. The holidays
come from an offline copy of GOV.UK's `bank-holidays.json` (division `england-and-wales`)
at config/bank-holidays-england-and-wales.json, read once; replacing that file with a fresh
download from https://www.gov.uk/bank-holidays.json (same shape) refreshes it.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

from ..config import PROJECT_ROOT

BANK_HOLIDAYS_FILE = PROJECT_ROOT / "config" / "bank-holidays-england-and-wales.json"
DIVISION = "england-and-wales"


def is_working_day(day: date, holidays: frozenset[date]) -> bool:
    return day.weekday() < 5 and day not in holidays


def add_working_days(start: date, days: int, holidays: frozenset[date]) -> date:
    """The date `days` working days after `start` (day 1 is the first working day after it).

    `start` itself never counts, whatever day it is; `days = 0` returns `start`. Negative
    counts go backwards the same way.
    """
    step = 1 if days >= 0 else -1
    remaining = abs(days)
    day = start
    while remaining:
        day += timedelta(days=step)
        if is_working_day(day, holidays):
            remaining -= 1
    return day


def working_days_between(a: date, b: date, holidays: frozenset[date]) -> int:
    """Working days after `a` up to and including `b`: add_working_days(a, n) == b when b is
    a working day. Negative when b is before a; 0 when equal."""
    if b < a:
        return -working_days_between(b, a, holidays)
    count = 0
    day = a
    while day < b:
        day += timedelta(days=1)
        if is_working_day(day, holidays):
            count += 1
    return count


def load_bank_holidays(path: Path, division: str = DIVISION) -> frozenset[date]:
    """The dates of one division of a GOV.UK bank-holidays.json file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    events = data[division]["events"]
    return frozenset(date.fromisoformat(e["date"]) for e in events)


@lru_cache(maxsize=1)
def bank_holidays() -> frozenset[date]:
    """England & Wales bank holidays from config/bank-holidays-england-and-wales.json (read once)."""
    return load_bank_holidays(BANK_HOLIDAYS_FILE)


# -- building the offline copy -------------------------------------------------------------

_GOV_UK_TITLES = {  # the PyPI package's names -> the titles GOV.UK uses
    "New Year's Day": "New Year’s Day",
    "May Day": "Early May bank holiday",
    "Spring Bank Holiday": "Spring bank holiday",
    "Late Summer Bank Holiday": "Summer bank holiday",
}
_NO_BUNTING = ("Good Friday", "State Funeral")


def gov_uk_from_holidays_package(first_year: int, last_year: int) -> dict:
    """A GOV.UK-shaped bank-holidays document for England & Wales, built from the PyPI
    package `holidays` (imported here only; it is not a runtime dependency).

    Like GOV.UK, it lists the days off: a holiday falling at a weekend appears only as its
    weekday substitute, titled with the holiday's name and noted "Substitute day".
    Used offline (no internet) to build config/bank-holidays-england-and-wales.json:

        python -c 'import json; from adapter.pathway.clocks import gov_uk_from_holidays_package as g; \
            print(json.dumps(g(2018, 2030), indent=2, ensure_ascii=False))' \
            > config/bank-holidays-england-and-wales.json
    """
    import holidays  # noqa: PLC0415  (build-time only)

    cal = holidays.country_holidays("GB", subdiv="ENG", years=range(first_year, last_year + 1))
    events = []
    for day, names in sorted(cal.items()):
        if day.weekday() >= 5:
            continue  # GOV.UK lists the substitute weekday instead
        for name in names.split("; "):
            substitute = name.endswith(" (observed)")
            base = name.removesuffix(" (observed)")
            title = _GOV_UK_TITLES.get(base, base)
            events.append({"title": title, "date": day.isoformat(),
                           "notes": "Substitute day" if substitute else "",
                           "bunting": not any(k in base for k in _NO_BUNTING)})
            break  # one event per day off
    return {
        "source": ("Offline copy in the shape of https://www.gov.uk/bank-holidays.json, built without "
                   f"internet access from the PyPI package 'holidays' {holidays.__version__} "
                   f"(country GB, subdivision ENG), years {first_year}-{last_year}, by "
                   "adapter.pathway.clocks.gov_uk_from_holidays_package. Replace this file with "
                   "the GOV.UK download to refresh it; only 'england-and-wales' is read."),
        DIVISION: {"division": DIVISION, "events": events},
    }
