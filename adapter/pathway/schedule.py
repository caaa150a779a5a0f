"""When the next assessment is due: RHA intervals, the care-leaver summary and coverage.

Plain functions of dates and rules (config/pathway.toml); no I/O but reading the rules.
"""

from __future__ import annotations

import calendar
import tomllib
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

RULES_FILE = Path(__file__).resolve().parents[2] / "config" / "pathway.toml"


@dataclass(frozen=True)
class PathwayRules:
    iha_working_days: int
    rha_age_threshold_years: int
    rha_under_threshold_months: int
    rha_over_threshold_months: int
    summary_months_before_18: int
    coverage_to_age: int
    coverage_to_age_with_ehcp: int


@lru_cache(maxsize=4)
def load_rules(path: Path = RULES_FILE) -> PathwayRules:
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    return PathwayRules(
        iha_working_days=int(raw["iha"]["working_days"]),
        rha_age_threshold_years=int(raw["rha"]["age_threshold_years"]),
        rha_under_threshold_months=int(raw["rha"]["under_threshold_months"]),
        rha_over_threshold_months=int(raw["rha"]["over_threshold_months"]),
        summary_months_before_18=int(raw["care_leaver"]["summary_months_before_18"]),
        coverage_to_age=int(raw["care_leaver"]["coverage_to_age"]),
        coverage_to_age_with_ehcp=int(raw["care_leaver"]["coverage_to_age_with_ehcp"]),
    )


def add_months(day: date, months: int) -> date:
    """Calendar months later; the 31st falls back to the month's last day (31 Aug + 6 = 28/29 Feb)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def birthday(birth_date: date, age: int) -> date:
    """The day a person turns `age` (29 February birthdays fall on 28 February)."""
    return add_months(birth_date, 12 * age)


def age_on(birth_date: date, day: date) -> int:
    years = day.year - birth_date.year
    return years - 1 if day < birthday(birth_date, years) else years


def next_rha_due(birth_date: date, last_assessment: date, rules: PathwayRules | None = None) -> date:
    """The review health assessment due date after an assessment on `last_assessment`.

    Six months later if the child will still be under five then; otherwise twelve months
    after the last assessment (the under-five interval no longer applies once they are five).
    """
    rules = rules or load_rules()
    short = add_months(last_assessment, rules.rha_under_threshold_months)
    if short < birthday(birth_date, rules.rha_age_threshold_years):
        return short
    return add_months(last_assessment, rules.rha_over_threshold_months)


def leaving_care_summary_due(birth_date: date, rules: PathwayRules | None = None) -> date:
    rules = rules or load_rules()
    return add_months(birthday(birth_date, 18), -rules.summary_months_before_18)


def care_leaver_coverage_ends(birth_date: date, has_ehcp: bool, rules: PathwayRules | None = None) -> date:
    """The last day of care-leaver health cover: the day before the 21st (or 25th) birthday."""
    rules = rules or load_rules()
    age = rules.coverage_to_age_with_ehcp if has_ehcp else rules.coverage_to_age
    return date.fromordinal(birthday(birth_date, age).toordinal() - 1)
