"""Working-day clocks, with hand-computed cases (England & Wales bank holidays)."""

from datetime import date

import pytest

from adapter.pathway.clocks import (
    BANK_HOLIDAYS_FILE,
    add_working_days,
    bank_holidays,
    is_working_day,
    load_bank_holidays,
    working_days_between,
)

NONE: frozenset[date] = frozenset()


def test_offline_copy_has_the_gov_uk_shape_and_says_where_it_came_from():
    import json

    data = json.loads(BANK_HOLIDAYS_FILE.read_text(encoding="utf-8"))
    division = data["england-and-wales"]
    assert division["division"] == "england-and-wales"
    assert set(division["events"][0]) == {"title", "date", "notes", "bunting"}
    assert "holidays" in data["source"] and "gov.uk" in data["source"]
    years = {e["date"][:4] for e in division["events"]}
    assert years == {str(y) for y in range(2018, 2031)}


def test_bank_holidays_are_the_days_off_in_england_and_wales():
    hols = bank_holidays()
    assert bank_holidays() is hols  # loaded once
    assert date(2026, 12, 25) in hols and date(2026, 12, 28) in hols   # Boxing Day substitute
    assert date(2026, 12, 26) not in hols                               # a Saturday: not listed
    assert date(2027, 12, 27) in hols and date(2027, 12, 28) in hols   # both substitutes
    assert date(2022, 9, 19) in hols                                    # one-off: state funeral
    assert date(2023, 5, 8) in hols                                     # one-off: coronation
    assert date(2020, 5, 8) in hols and date(2020, 5, 4) not in hols    # early May moved (VE day)
    assert date(2027, 3, 26) in hols and date(2027, 3, 29) in hols      # Good Friday, Easter Monday
    assert date(2026, 8, 31) in hols                                    # summer bank holiday
    assert all(d.weekday() < 5 for d in hols)


def test_load_reads_only_the_named_division(tmp_path):
    path = tmp_path / "bh.json"
    path.write_text('{"england-and-wales": {"division": "england-and-wales", "events": '
                    '[{"title": "X", "date": "2030-01-01", "notes": "", "bunting": true}]}, '
                    '"scotland": {"division": "scotland", "events": '
                    '[{"title": "Y", "date": "2030-01-02", "notes": "", "bunting": true}]}}')
    assert load_bank_holidays(path) == frozenset({date(2030, 1, 1)})


def test_entering_care_on_friday_18_december_2026():
    # Dec 21-24 (4), 25 and 28 off, 29-31 (7), 1 Jan off, 4-8 Jan (12), 11-15 (17), 18-20 (20)
    assert add_working_days(date(2026, 12, 18), 20, bank_holidays()) == date(2027, 1, 20)
    # without bank holidays it would be three working days earlier
    assert add_working_days(date(2026, 12, 18), 20, NONE) == date(2027, 1, 15)


def test_easter_2027():
    # Wed 24 Mar: Thu 25 (1), Good Friday and Easter Monday off, Tue 30 .. Fri 2 Apr (5)
    assert add_working_days(date(2027, 3, 24), 5, bank_holidays()) == date(2027, 4, 2)


@pytest.mark.parametrize("start, days, expected", [
    (date(2026, 6, 1), 1, date(2026, 6, 2)),     # Monday -> Tuesday: the start does not count
    (date(2026, 6, 5), 1, date(2026, 6, 8)),     # Friday -> Monday
    (date(2026, 6, 6), 1, date(2026, 6, 8)),     # Saturday -> Monday
    (date(2026, 6, 7), 5, date(2026, 6, 12)),    # Sunday + 5 -> Friday
    (date(2026, 6, 1), 20, date(2026, 6, 29)),   # four plain weeks
    (date(2026, 6, 3), 0, date(2026, 6, 3)),
    (date(2026, 6, 8), -1, date(2026, 6, 5)),    # backwards over a weekend
])
def test_add_working_days_plain_weeks(start, days, expected):
    assert add_working_days(start, days, NONE) == expected


def test_summer_bank_holiday_2026():
    # Fri 28 Aug 2026 + 1: Mon 31 Aug is the summer bank holiday
    assert add_working_days(date(2026, 8, 28), 1, bank_holidays()) == date(2026, 9, 1)


def test_working_days_between_is_the_inverse_of_add():
    hols = bank_holidays()
    start = date(2026, 12, 18)
    for n in range(0, 45):
        assert working_days_between(start, add_working_days(start, n, hols), hols) == n
    assert working_days_between(date(2027, 1, 20), date(2026, 12, 18), hols) == -20
    assert working_days_between(date(2026, 12, 24), date(2026, 12, 28), hols) == 0  # 25, 26, 27, 28 all off
    assert working_days_between(date(2026, 6, 5), date(2026, 6, 7), NONE) == 0


def test_is_working_day():
    assert not is_working_day(date(2026, 12, 25), bank_holidays())
    assert not is_working_day(date(2026, 12, 26), NONE)
    assert is_working_day(date(2026, 12, 29), bank_holidays())
