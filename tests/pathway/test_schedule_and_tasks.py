"""Pathway rules as plain functions: RHA due dates, care-leaver dates, Task steps."""

from __future__ import annotations

from datetime import date

import pytest

from adapter.pathway.schedule import (
    add_months,
    age_on,
    care_leaver_coverage_ends,
    leaving_care_summary_due,
    next_rha_due,
)
from adapter.pathway.tasks import missing_outputs, transition_problem


@pytest.mark.parametrize("start,months,expected", [
    (date(2026, 1, 31), 1, date(2026, 2, 28)),
    (date(2027, 8, 31), 6, date(2028, 2, 29)),    # leap year
    (date(2026, 11, 22), 12, date(2027, 11, 22)),
    (date(2026, 3, 31), -3, date(2025, 12, 31)),
])
def test_add_months(start, months, expected):
    assert add_months(start, months) == expected


def test_age_with_a_leap_day_birthday():
    born = date(2012, 2, 29)
    assert age_on(born, date(2030, 2, 27)) == 17
    assert age_on(born, date(2030, 2, 28)) == 18


def test_rha_every_six_months_under_five():
    assert next_rha_due(date(2023, 5, 1), date(2026, 1, 10)) == date(2026, 7, 10)


def test_rha_every_twelve_months_from_five():
    assert next_rha_due(date(2018, 5, 1), date(2026, 1, 10)) == date(2027, 1, 10)


def test_rha_for_a_child_turning_five_before_the_six_month_date():
    born = date(2021, 4, 1)          # five on 1 April 2026
    assert next_rha_due(born, date(2025, 11, 1)) == date(2026, 11, 1)   # 1 May 2026 would be after
    assert next_rha_due(born, date(2025, 9, 30)) == date(2026, 3, 30)   # still four on 30 March


def test_care_leaver_dates():
    born = date(2009, 11, 30)
    assert leaving_care_summary_due(born) == date(2027, 8, 30)
    assert care_leaver_coverage_ends(born, has_ehcp=False) == date(2030, 11, 29)
    assert care_leaver_coverage_ends(born, has_ehcp=True) == date(2034, 11, 29)


@pytest.mark.parametrize("old,new", [("requested", "received"), ("received", "accepted"), ("requested", "rejected"),
                                     ("accepted", "in-progress"), ("in-progress", "completed"),
                                     ("in-progress", "failed"), ("requested", "cancelled"),
                                     ("completed", "entered-in-error"), (None, "requested")])
def test_valid_task_steps(old, new):
    assert transition_problem(old, new) is None


@pytest.mark.parametrize("old,new", [("requested", "completed"), ("completed", "in-progress"),
                                     ("rejected", "accepted"), ("received", "in-progress")])
def test_invalid_task_steps_say_why(old, new):
    problem = transition_problem(old, new)
    assert problem and old in problem and new in problem


def test_unknown_status():
    assert "not a Task status" in transition_problem("requested", "finished")


def test_completion_needs_response_and_plan():
    task = {"output": [{"type": {"text": "assessment"}, "valueReference": {"reference": "QuestionnaireResponse/1"}}]}
    assert missing_outputs(task) == ["CarePlan"]
    task["output"].append({"type": {"text": "plan"}, "valueReference": {"reference": "CarePlan/2"}})
    assert missing_outputs(task) == []
