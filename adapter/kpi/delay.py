"""Reasons for delay of initial health assessments: where the 20 working days went.

Plain functions of a row of assessment facts (adapter/kpi/rules.py), dates and the
allowances of config/kpi.toml; no SQL.

The clock runs from entering care to the report and health plan being returned (`done`),
or to `as_of` while it is still running. It is cut at the steps the Task history records,
each point being the step's date, or the point before when the step is not recorded, and
never before the point before nor after the end:

    entered care ─notification─ notified ─consent─ consent received ─referral─ request sent
      ─scheduling─ first missed appointment (or the assessment) ─did-not-attend─ the assessment
      ─report─ report returned

So the segments' working days always add up to the working days from entering care to the
end. A segment after the last recorded step of a clock still running covers the wait at that
step: an IHA still waiting for consent has its days since the notification in `consent`.

**The segment that caused the breach** of a late IHA is the segment whose working days exceed
its allowance by most (ties: the earliest in the pathway). Allowances add up to the 20-day
limit, so a late IHA always has a segment over its allowance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from .rules import SEGMENTS, KpiRules, working_days


@dataclass(frozen=True)
class Delay:
    segments: dict[str, int]   # segment -> working days
    total: int                 # working days from entering care to the end
    end: date                  # done, or as_of for a clock still running
    cause: str                 # the segment that caused the breach
    excess: int                # working days of `cause` over its allowance
    running: bool              # the clock has not stopped yet


def points(facts: dict, as_of: date) -> list[tuple[str, date]]:
    """The cut points (segment ending there, date), in pathway order; see the module docstring."""
    end = facts.get("done") or as_of
    raw = [("notification", facts.get("notified")), ("consent", facts.get("consent")),
           ("referral", facts.get("requested")),
           ("scheduling", facts.get("did_not_attend") or facts.get("assessed")),
           ("did-not-attend", facts.get("assessed")), ("report", facts.get("done"))]
    cut: list[tuple[str, date]] = []
    last = facts["entered_care"]
    running = facts.get("done") is None
    known = [i for i, (_, d) in enumerate(raw) if d is not None]
    last_known = known[-1] if known else -1
    for i, (segment, day) in enumerate(raw):
        if day is None and running and i == last_known + 1:
            day = end  # the step being waited for
        point = min(max(day if day is not None else last, last), end)
        cut.append((segment, point))
        last = point
    return cut


def delay_segments(facts: dict, as_of: date, rules: KpiRules, holidays: frozenset[date] | None = None) -> Delay | None:
    """The segments of an IHA's clock, and the one that caused its breach; None without an
    entered-care date."""
    start = facts.get("entered_care")
    if start is None:
        return None
    segments: dict[str, int] = {}
    last = start
    for segment, point in points(facts, as_of):
        segments[segment] = working_days(last, point, holidays)
        last = point
    over = [(segments[s] - rules.allowances.get(s, 0), -i, s) for i, s in enumerate(SEGMENTS)]
    excess, _, cause = max(over)
    end = facts.get("done") or as_of
    return Delay(segments, working_days(start, end, holidays), end, cause, excess, facts.get("done") is None)


def is_late(facts: dict, as_of: date) -> bool:
    """Done after the due date, or not done and the due date has passed by `as_of`."""
    due = facts.get("due")
    if due is None:
        return False
    done = facts.get("done")
    return done > due if done is not None else as_of > due


def summarise(delays: list[Delay]) -> dict:
    """Across late IHAs: how many each segment caused, and each segment's total and mean days."""
    count = len(delays)
    caused = {s: sum(1 for d in delays if d.cause == s) for s in SEGMENTS}
    totals = {s: sum(d.segments[s] for d in delays) for s in SEGMENTS}
    means = {s: round(totals[s] / count, 1) if count else None for s in SEGMENTS}
    return {"late": count, "caused": caused, "total_days": totals, "mean_days": means}
