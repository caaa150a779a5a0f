"""`lac-adapter report annual`: the financial year 2018-19 on a database of this module's own
(the report counts every child held), four children with hand-computed values.

- c1, c2 entered care Monday 4 June 2018: IHA due Monday 2 July (20 working days, no bank
  holiday in June). c1's report came back 29 June (on time); c2's 10 July (late: the LA told
  health on 20 June, 12 working days in, 9 over the notification allowance of 3; then 14
  working days to the assessment, 6 over scheduling's 8: the cause is notification).
- c3, 16 on the due date: RHA due 15 November 2018, returned 10 November, quality-assured.
- c4, placed out of area: RHA due 15 February 2019, never returned.
"""

from __future__ import annotations

import csv
import zipfile

import pytest

from typer.testing import CliRunner

from adapter.cli import app
from adapter.cli_report import load_measures
from tests.conftest import Fhir
from tests.kpi.population import assessment, child, episode, iha_steps, organisation
from tests.support.server import postgres_database, require_postgres, running_server

PROVIDER = "ZDB18"  # this module's own provider code


def population(fhir, tag) -> dict[str, str]:
    la, provider = organisation(fhir, tag, "LA-DEMO-1", la=True), organisation(fhir, tag, PROVIDER)
    kids = {"c1": child(fhir, tag, "2010-05-05"), "c2": child(fhir, tag, "2010-05-05"),
            "c3": child(fhir, tag, "2002-03-03"), "c4": child(fhir, tag, "2012-01-01")}
    episode(fhir, tag, kids["c1"], la, "2018-06-04")
    episode(fhir, tag, kids["c2"], la, "2018-06-04")
    episode(fhir, tag, kids["c3"], la, "2017-01-09")
    episode(fhir, tag, kids["c4"], la, "2017-01-09", out_of_area=True)
    assessment(fhir, tag, kids["c1"], provider, "iha", iha_steps("2018-06-05", "2018-06-29"))
    assessment(fhir, tag, kids["c2"], provider, "iha", iha_steps("2018-06-20", "2018-07-10"))
    sent = [("requested", "request-sent", "2018-10-01"), ("accepted", "accepted", "2018-10-02")]
    assessment(fhir, tag, kids["c3"], provider, "rha", sent + [("in-progress", "report-sent", "2018-11-10"),
                                                              ("in-progress", "quality-assured", "2018-11-20")],
               due="2018-11-15")
    assessment(fhir, tag, kids["c4"], provider, "rha", [("requested", "request-sent", "2019-01-07")],
               due="2019-02-15")
    return kids


def _read(path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(params=["sqlite", "postgresql"])
def own_database(request, tmp_path):
    """(client, database URL) of a server on an empty database: the annual summary counts every
    child held, so other modules' children on the shared server must not be there."""
    if request.param == "postgresql":
        require_postgres()
        with postgres_database() as url, running_server(url) as base:
            yield Fhir(base), url
        return
    url = f"sqlite:///{tmp_path / 'annual.sqlite3'}"
    with running_server(url) as base:
        yield Fhir(base), url


def test_annual_summary_of_the_financial_year(own_database, tag, tmp_path):
    fhir, database_url = own_database
    population(fhir, tag)
    result = CliRunner().invoke(app, ["report", "annual", "--year", "2018-19", "--out", str(tmp_path),
                                      "--database", database_url, "--as-of", "2019-06-01"])
    assert result.exit_code == 0, result.output
    stem = tmp_path / "lac-annual-2018-19"

    children = {(r["breakdown"], r["value"]): r["children"] for r in _read(f"{stem}-children.csv")}
    assert children[("all", "")] == "4"
    assert (children[("assessment", "iha")], children[("assessment", "rha")]) == ("2", "2")
    assert (children[("placement", "in-area")], children[("placement", "out-of-area")]) == ("3", "1")
    assert (children[("age-band", "5-9")], children[("age-band", "16-17")]) == ("3", "1")

    measures = {(r["measure"], r["group"]): r for r in _read(f"{stem}-measures.csv")}
    assert {m for m, _ in measures} == {m["id"] for m in load_measures()}  # every published Measure
    iha = measures[("iha-within-20-working-days", "iha")]
    assert (iha["denominator"], iha["numerator"], iha["score"], iha["target"], iha["met"]) == \
        ("2", "1", "0.5", "0.85", "False")
    rha = measures[("rha-by-due-date", "rha")]
    assert (rha["denominator"], rha["numerator"], rha["score"]) == ("2", "1", "0.5")
    qa = measures[("assessments-quality-assured", "quality-assured")]
    assert (qa["denominator"], qa["numerator"], qa["score"]) == ("3", "1", "0.3333")
    assert measures[("iha-within-20-working-days", "delay-reasons")]["initial_population"] == "1"

    periods = {(r["period"], r["group"]): r for r in _read(f"{stem}-periods.csv")}
    assert (periods[("2018-07", "iha")]["denominator"], periods[("2018-07", "iha")]["numerator"]) == ("2", "1")
    assert periods[("2018-06", "iha")]["denominator"] == "0" and periods[("2018-06", "iha")]["score"] == ""
    assert (periods[("Q2", "iha")]["start"], periods[("Q2", "iha")]["end"]) == ("2018-07-01", "2018-09-30")
    assert (periods[("Q3", "rha")]["numerator"], periods[("Q3", "rha")]["score"]) == ("1", "1.0")
    assert (periods[("2019-02", "rha")]["denominator"], periods[("2019-02", "rha")]["score"]) == ("1", "0.0")
    assert len({p for p, _ in periods}) == 16  # 12 months and 4 quarters

    delay = {r["segment"]: r for r in _read(f"{stem}-delay.csv")}
    assert (delay["notification"]["caused"], delay["notification"]["total_working_days"],
            delay["notification"]["allowance_working_days"]) == ("1", "12", "3")
    assert (delay["scheduling"]["caused"], delay["scheduling"]["total_working_days"]) == ("0", "14")

    text = (tmp_path / "lac-annual-2018-19.md").read_text(encoding="utf-8")
    assert text.startswith("# Looked-after children's health assessments: annual summary 2018-19")
    assert "| iha-within-20-working-days | Initial health assessments" in text
    page = (tmp_path / "lac-annual-2018-19.html").read_text(encoding="utf-8")
    assert "<h2>Reasons for delay</h2>" in page and "<td>notification</td>" in page and "http" not in page
    with zipfile.ZipFile(tmp_path / "lac-annual-2018-19.xlsx") as book:
        workbook = book.read("xl/workbook.xml").decode()
    assert all(f'name="{n}"' in workbook for n in ("Children", "Measures", "Months and quarters",
                                                    "Reasons for delay"))


def test_year_must_be_a_financial_year(tmp_path):
    result = CliRunner().invoke(app, ["report", "annual", "--year", "2018-20", "--out", str(tmp_path),
                                      "--database", f"sqlite:///{tmp_path}/x.sqlite3"])
    assert result.exit_code != 0 and "April" in result.output
