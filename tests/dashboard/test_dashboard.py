"""The dashboard in a real headless browser, against a real server on SQLite and PostgreSQL.

The month is March 2017 (no other test has assessments due then), judged as of 31 March 2017.
LA-DEMO-1 looks after five children, LA-OTHER-2 one; every hand-computed value is below.
IHA due dates are 20 working days after entering care (no bank holiday in those weeks):

| child | LA | entered care | assessment, due | done | |
|---|---|---|---|---|---|
| d5 | LA-DEMO-1 | Mon 9 Jan 2017 | IHA, Mon 6 Feb | 3 Feb | on time (February) |
| d1 | LA-DEMO-1 | Mon 6 Feb | IHA, Mon 6 Mar | 3 Mar | on time |
| d2 | LA-DEMO-1 | Mon 6 Feb | IHA, Mon 6 Mar | 15 Mar | late: notified 20 Feb (10 working days, 7 over 3) |
| d3 | LA-DEMO-1 | Mon 13 Feb | IHA, Mon 13 Mar | open | 18 days overdue; consent awaited 33 working days |
| d4 | LA-DEMO-1 | 11 Jan 2016 | RHA, Mon 10 Apr | open | due in 10 days |
| e1 | LA-OTHER-2 | Mon 6 Feb | IHA, Mon 6 Mar | open | 25 days overdue |

So LA-DEMO-1's IHAs in March: 3 due, 1 on time (33.3%; February 1 of 1); the late ones were
caused by notification (d2) and consent (d3). The administrator also counts e1 (4 due, 25.0%);
LA-OTHER-2 sees only e1 (1 due, 0%). d3 was notified on 14 February and has waited for consent since
(33 working days to 31 March).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests

from adapter.cli_report import load_measures
from adapter.kpi import measures as kpi_measures
from tests.conftest import Fhir
from tests.kpi.population import assessment, episode, iha_steps, organisation
from tests.security.population import tagged
from tests.support.auth import ADMIN_HEADERS, ROLE_TOKENS, headers_for
from tests.support.browser import chrome
from tests.support.data import NHS, nhs_number

MONTH = "month=2017-03&asOf=2017-03-31"
PROVIDER = "ZDD17"  # this module's own provider code
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
NAMES = {"d1": "Ada Dashwood", "d2": "Ben Dashwood", "d3": "Cara Dashwood", "d4": "Dev Dashwood",
         "d5": "Eve Dashwood", "e1": "Finn Otherby"}


def _child(fhir: Fhir, tag: str, key: str, birth: str, serial: int) -> tuple[str, str]:
    given, family = NAMES[key].split()
    nhs = nhs_number(serial)
    made = fhir.create(tagged(tag, {"resourceType": "Patient", "birthDate": birth,
                                    "identifier": [{"system": NHS, "value": nhs}],
                                    "name": [{"use": "official", "family": family, "given": [given]}]}))
    return made["id"], nhs


@pytest.fixture(scope="module")
def world(base_url) -> dict:
    """The caseload, built once per backend through the API as the administrator."""
    fhir, tag = Fhir(base_url), uuid.uuid4().hex[:16]
    la, other = organisation(fhir, tag, "LA-DEMO-1", la=True), organisation(fhir, tag, "LA-OTHER-2", la=True)
    provider = organisation(fhir, tag, PROVIDER)
    serial = 417000 + (uuid.UUID(tag + "0" * 16).int % 5000) * 7
    kids = {key: _child(fhir, tag, key, "2009-06-06", serial + 3 * i) for i, key in enumerate(NAMES)}
    ids = {k: v[0] for k, v in kids.items()}
    for key, start in (("d5", "2017-01-09"), ("d1", "2017-02-06"), ("d2", "2017-02-06"), ("d3", "2017-02-13"),
                       ("d4", "2016-01-11")):
        episode(fhir, tag, ids[key], la, start)
    episode(fhir, tag, ids["e1"], other, "2017-02-06")
    assessment(fhir, tag, ids["d5"], provider, "iha", iha_steps("2017-01-10", "2017-02-03"))
    assessment(fhir, tag, ids["d1"], provider, "iha", iha_steps("2017-02-07", "2017-03-03"))
    assessment(fhir, tag, ids["d2"], provider, "iha", iha_steps("2017-02-20", "2017-03-15", requested="2017-02-21",
                                                               assessed="2017-03-03"))
    assessment(fhir, tag, ids["d3"], provider, "iha", [("requested", "notification-received", "2017-02-14")])
    assessment(fhir, tag, ids["d4"], provider, "rha", [("requested", "request-sent", "2017-03-01")], due="2017-04-10")
    assessment(fhir, tag, ids["e1"], provider, "iha", [("requested", "notification-received", "2017-02-07")])
    return {"base": base_url, "root": base_url.removesuffix("/fhir"), "ids": ids,
            "nhs": {k: v[1] for k, v in kids.items()}}


@pytest.fixture(scope="module")
def browser():
    driver = chrome()
    yield driver
    driver.quit()


def score_groups() -> list[str]:
    """`measure/group` of every group with a score, of every published Measure."""
    return [f"{m['id']}/{d.id}" for m in load_measures() for d in kpi_measures.group_definitions(m) if not d.delay]


def click_and_wait(browser, element) -> None:
    """Click a submit button and wait for the next page to replace this one."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def gone(_driver) -> bool:
        try:
            element.is_enabled()  # raises once the page holding it has been replaced
            return False
        except WebDriverException:  # stale, or (chromedriver, mid-navigation) not in the document
            return True

    element.click()
    WebDriverWait(browser, 30).until(gone)


def test_sign_in_and_see_the_month_in_the_browser(world, browser, backend):
    from selenium.webdriver.common.by import By

    root = world["root"]
    browser.delete_all_cookies()
    browser.get(f"{root}/dashboard")
    assert browser.current_url == f"{root}/dashboard/sign-in"  # no credentials: to the sign-in form
    browser.find_element(By.ID, "token").send_keys("wrong-token")
    click_and_wait(browser, browser.find_element(By.ID, "sign-in"))
    assert "not accepted" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    browser.find_element(By.ID, "token").send_keys(ROLE_TOKENS["la"].token)
    click_and_wait(browser, browser.find_element(By.ID, "sign-in"))
    assert browser.current_url == f"{root}/dashboard"
    cookie = browser.get_cookie("lac_dashboard")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"

    browser.get(f"{root}/dashboard?{MONTH}")
    assert "LA-DEMO-1" in browser.find_element(By.CLASS_NAME, "who").text

    def kpi(key: str, cell: str) -> str:
        return browser.find_element(By.CSS_SELECTOR, f'tr[data-kpi="{key}"] td.{cell}').text

    cells = ("denominator", "numerator", "score", "target", "status")
    assert [kpi("iha-within-20-working-days/iha", c) for c in cells] == ["3", "1", "33.3%", "85.0%", "below target"]
    assert kpi("rha-by-due-date/rha", "denominator") == "0" and kpi("rha-by-due-date/rha", "score") == "–"
    shown = [r.get_attribute("data-kpi") for r in browser.find_elements(By.CSS_SELECTOR, "tr.kpi")]
    assert sorted(shown) == sorted(score_groups())  # every published Measure, whatever they are

    due = {r.get_attribute("data-patient"): r for r in browser.find_elements(By.CSS_SELECTOR, "tr.due-row")}
    ids = world["ids"]
    mine = [p for p in due if p in {f"Patient/{ids[k]}" for k in NAMES}]
    assert mine == [f"Patient/{ids['d3']}", f"Patient/{ids['d4']}"]  # most overdue first; e1 is not theirs
    d3 = due[f"Patient/{ids['d3']}"]
    cells = [d3.find_element(By.CLASS_NAME, c).text for c in ("name", "nhs", "assessment", "due", "days", "provider")]
    assert cells == ["Cara Dashwood", world["nhs"]["d3"], "IHA", "2017-03-13", "18", PROVIDER]
    assert due[f"Patient/{ids['d4']}"].find_element(By.CLASS_NAME, "days").text == "due in 10"
    assert "Finn Otherby" not in browser.page_source

    chart = browser.find_element(By.CSS_SELECTOR, 'figure[data-kpi="iha-within-20-working-days/iha"] svg')
    assert len(chart.find_elements(By.CSS_SELECTOR, "circle.point")) == 2   # February 100%, March 33.3%
    assert len(chart.find_elements(By.CSS_SELECTOR, "line.target")) == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#trends figure svg")) == len(score_groups())
    caused = {r.get_attribute("data-segment"): r.find_element(By.CLASS_NAME, "caused").text
              for r in browser.find_elements(By.CSS_SELECTOR, "tr.segment")}
    assert (caused["notification"], caused["consent"], caused["scheduling"]) == ("1", "1", "0")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#delay svg rect.bar")) == 6
    # the browser loaded nothing the CSP refused (no console errors)
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    if backend == "sqlite":
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form[action='/dashboard/sign-out'] button"))
    assert browser.current_url == f"{root}/dashboard/sign-in" and browser.get_cookie("lac_dashboard") is None


def test_another_organisation_sees_only_its_children(world):
    ids = world["ids"]
    r = requests.get(f"{world['root']}/dashboard/data.json?{MONTH}", headers=headers_for("other-la"))
    assert r.status_code == 200, r.text
    data = r.json()
    iha = next(g for m in data["measures"] if m["id"] == "iha-within-20-working-days" for g in m["groups"])
    assert (iha["populations"]["denominator"], iha["populations"]["numerator"], iha["score"]) == (1, 0, 0.0)
    listed = {row["patient"] for row in data["due"]}
    assert f"Patient/{ids['e1']}" in listed and not listed & {f"Patient/{ids[k]}" for k in NAMES if k != "e1"}
    e1 = next(row for row in data["due"] if row["patient"] == f"Patient/{ids['e1']}")
    assert (e1["name"], e1["daysOverdue"], e1["due"]) == ("Finn Otherby", 25, "2017-03-06")

    page = requests.get(f"{world['root']}/dashboard?{MONTH}", headers=headers_for("other-la"))
    assert page.status_code == 200 and "Finn Otherby" in page.text and "Cara Dashwood" not in page.text

    admin = requests.get(f"{world['root']}/dashboard/data.json?{MONTH}", headers=ADMIN_HEADERS).json()
    iha = next(g for m in admin["measures"] if m["id"] == "iha-within-20-working-days" for g in m["groups"])
    assert (iha["populations"]["denominator"], iha["populations"]["numerator"], iha["score"]) == (4, 1, 0.25)


def test_data_json_matches_the_hand_computed_month(world):
    r = requests.get(f"{world['root']}/dashboard/data.json?{MONTH}", headers=headers_for("la"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    data = r.json()
    assert (data["month"], data["asOf"], data["trendMonths"][0], data["trendMonths"][-1]) == \
        ("2017-03", "2017-03-31", "2016-04", "2017-03")
    iha = next(g for m in data["measures"] if m["id"] == "iha-within-20-working-days" for g in m["groups"])
    trend = {p["month"]: (p["denominator"], p["numerator"], p["score"]) for p in iha["trend"]}
    assert trend["2017-02"] == (1, 1, 1.0) and trend["2017-03"] == (3, 1, 0.3333) and trend["2017-01"][2] is None
    assert (iha["target"], iha["met"]) == (0.85, False)
    delay = data["delay"]["groups"][0]
    segments = {s["segment"]: s for s in delay["segments"]}
    assert delay["late"] == 2
    assert (segments["notification"]["caused"], segments["notification"]["totalWorkingDays"]) == (1, 11)
    assert (segments["consent"]["caused"], segments["consent"]["totalWorkingDays"]) == (1, 33)


def test_without_credentials_or_scopes_the_dashboard_is_refused(world):
    root = world["root"]
    r = requests.get(f"{root}/dashboard/data.json")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"
    r = requests.get(f"{root}/dashboard", allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/sign-in"
    r = requests.get(f"{root}/dashboard", headers={"Authorization": "Bearer not-a-token"}, allow_redirects=False)
    assert r.status_code == 401
    r = requests.get(f"{root}/dashboard/data.json", cookies={"lac_dashboard": "not-a-token"})
    assert r.status_code == 401
    r = requests.get(f"{root}/dashboard/data.json", headers=headers_for("la-no-patients"))
    assert r.status_code == 403 and "Patient" in r.json()["issue"][0]["diagnostics"]
    r = requests.get(f"{root}/dashboard/sign-in")
    assert r.status_code == 200 and "default-src 'none'" in r.headers["content-security-policy"]
    assert "script" not in r.text.lower()


def test_views_are_audited_naming_the_children_listed(world):
    ids = world["ids"]
    assert requests.get(f"{world['root']}/dashboard/data.json?{MONTH}", headers=headers_for("la")).status_code == 200
    fhir = Fhir(world["base"])
    events = [e["resource"] for e in fhir.search("AuditEvent", patient=f"Patient/{ids['d3']}", _count="200")["entry"]]
    views = [e for e in events if any(s.get("display") == "$dashboard" for s in e.get("subtype", []))
             and "LA-DEMO-1" in str(e.get("agent"))]
    assert views, "the LA's view of the dashboard is audited"
    assert all(f"Patient/{ids['e1']}" not in str(e) for e in views)
