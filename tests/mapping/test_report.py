"""The printable HTML report of a completed form."""

from __future__ import annotations

import copy
from pathlib import Path

import lxml.html
import pytest

from adapter.fhir.jsonio import loads
from adapter.mapping.extract import extract
from adapter.mapping.report import format_nhs_number, render_report
from adapter.validation.conformance import published_index

ROOT = Path(__file__).resolve().parents[2]
FORMS = ROOT / "fixtures" / "forms"
NHS = "https://fhir.nhs.uk/Id/nhs-number"
COMPLETED = sorted(p.name[:-len("-completed.json")] for p in FORMS.glob("*-completed.json"))

# the worked examples' children (fixtures/forms/README.md)
CHILDREN = {
    "lac-consent": ("Maisie", "Penhallow", "9990000034", "999 000 0034"),
    "iha-c": ("Alfie", "Rendell", "9990000042", "999 000 0042"),
    "iha-yp": ("Kayden", "Marsh", "9990000050", "999 000 0050"),
    "rha-c": ("Poppy", "Ashworth", "9990000069", "999 000 0069"),
    "rha-yp": ("Leah", "Okafor-Dunn", "9990000077", "999 000 0077"),
    "cr-c": ("Theo", "Brannigan", "9990000085", "999 000 0085"),
    "cr-yp": ("Jasmine", "Holloway", "9990000093", "999 000 0093"),
}
PLAN_ROWS = {"iha-c": 3, "iha-yp": 3, "rha-c": 2, "rha-yp": 2}


def load(form: str) -> tuple[dict, dict]:
    response = loads((FORMS / f"{form}-completed.json").read_bytes())
    return response, published_index().resolve("Questionnaire", response["questionnaire"])


def patient_for(form: str, response: dict) -> dict:
    given, family, nhs, _ = CHILDREN[form]
    birth = _answer(response["item"], "header.birthDate")["valueDate"]
    return {"resourceType": "Patient", "id": response["subject"]["reference"].split("/")[1],
            "identifier": [{"system": NHS, "value": nhs}], "name": [{"given": [given], "family": family}],
            "birthDate": birth}


def _answer(items: list[dict], link_id: str) -> dict | None:
    for item in items:
        if item.get("linkId") == link_id:
            return item["answer"][0]
        found = _answer(item.get("item", []), link_id)
        if found:
            return found
    return None


def _items_with(items: list[dict], link_id: str) -> list[dict]:
    out = []
    for item in items:
        if item.get("linkId") == link_id:
            out.append(item)
        out += _items_with(item.get("item", []), link_id)
    return out


def text_of(html: str) -> str:
    return " ".join(lxml.html.document_fromstring(html).text_content().split())


def test_nhs_number_format():
    assert format_nhs_number("9990000034") == "999 000 0034"
    assert format_nhs_number("999 000 0034") == "999 000 0034"
    assert format_nhs_number("12345") == "12345"


@pytest.mark.parametrize("form", COMPLETED)
@pytest.mark.parametrize("with_patient", [True, False], ids=["patient", "form-only"])
def test_report_for_every_worked_example(form, with_patient):
    response, questionnaire = load(form)
    patient = patient_for(form, response) if with_patient else None
    html = render_report(response, questionnaire, patient=patient)
    assert html.startswith("<!DOCTYPE html>")
    doc = lxml.html.document_fromstring(html)
    assert doc.tag == "html" and doc.find("head/title") is not None
    text = text_of(html)
    given, family, _, formatted = CHILDREN[form]
    assert f"{given} {family}" in text
    assert formatted in text
    assert questionnaire["title"] in text
    # standalone: inline CSS with print rules, no scripts, nothing fetched
    assert not doc.xpath("//script") and not doc.xpath("//link") and not doc.xpath("//img")
    assert not doc.xpath("//@src") and "@media print" in doc.xpath("string(//style)")
    # every part with answers is there under the Questionnaire's own text; display items are not
    for part in questionnaire["item"]:
        if any(i["linkId"] == part["linkId"] for i in response["item"]):
            assert part["text"] in [h.text_content() for h in doc.xpath("//h2")]
    [child] = doc.xpath("//table[@class='child']")
    assert [td.text_content() for td in child.xpath(".//td")][:2] == [f"{given} {family}", formatted]


@pytest.mark.parametrize("form", sorted(PLAN_ROWS))
def test_health_plan_table(form):
    response, questionnaire = load(form)
    doc = lxml.html.document_fromstring(render_report(response, questionnaire))
    [table] = doc.xpath("//table[@class='plan']")
    headers = [th.text_content() for th in table.xpath(".//th")]
    assert headers == ["Health need", "Area of health", "Action", "Who is responsible", "By when", "Outcome"]
    rows = table.xpath("./tbody/tr")
    assert len(rows) == PLAN_ROWS[form]
    groups = [g for g in _items_with(response["item"], "partC.plan")]
    for row, group in zip(rows, groups):
        cells = [td.text_content() for td in row.xpath("./td")]
        assert cells[0] == _answer(group["item"], "partC.plan.need")["valueString"]
        assert cells[2] == _answer(group["item"], "partC.plan.action")["valueString"]
        assert _answer(group["item"], "partC.plan.responsiblePerson")["valueString"] in cells[3]


def test_iha_c_plan_row_values():
    response, questionnaire = load("iha-c")
    doc = lxml.html.document_fromstring(render_report(response, questionnaire))
    first = [td.text_content() for td in doc.xpath("//table[@class='plan']/tbody/tr[1]/td")]
    assert first == ["Immunisations not up to date", "Immunisation", "Give the 1-year vaccinations at the practice.",
                     "Practice nurse; Harbourside Surgery (example)", "18 December 2026", "In progress"]
    child = [td.text_content() for td in doc.xpath("//table[@class='child']/tbody/tr/td")]
    assert child == ["Alfie Rendell", "999 000 0042", "3 June 2025", "17 months"]
    text = text_of(render_report(response, questionnaire))
    assert "Dr Helen Marchbank" in text
    assert "10.2 kg" in text


def test_consent_form_shows_who_consented_to_what():
    response, questionnaire = load("lac-consent")
    doc = lxml.html.document_fromstring(render_report(response, questionnaire))
    [section] = doc.xpath("//section[@class='consent']")
    rows = [[td.text_content() for td in tr.xpath("./td")] for tr in section.xpath(".//tbody/tr")]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("Health assessment", "Given", "Rachel Penhallow"),
        ("Obtaining and sharing health information", "Refused", "Rachel Penhallow")]


def test_consents_given_are_shown_on_an_assessment_report():
    consent_response, consent_q = load("lac-consent")
    consents = [e["resource"] for e in extract(consent_response, consent_q)["entry"]]
    response, questionnaire = load("iha-yp")
    text = text_of(render_report(response, questionnaire, consents=consents))
    assert "Refused" in text and "Rachel Penhallow" in text
    assert "No consent record" in text_of(render_report(response, questionnaire))


def test_extracted_care_plans_are_used_when_given():
    response, questionnaire = load("rha-c")
    plans = [e["resource"] for e in extract(response, questionnaire)["entry"]
             if e["resource"]["resourceType"] == "CarePlan"]
    plans[0]["activity"][0]["detail"]["description"] = "Changed after the review"
    doc = lxml.html.document_fromstring(render_report(response, questionnaire, extracted=plans))
    assert doc.xpath("//table[@class='plan']/tbody/tr[1]/td[3]")[0].text_content() == "Changed after the review"


def test_unanswered_and_display_items_are_left_out():
    response, questionnaire = load("cr-c")
    html = render_report(response, questionnaire)
    display = next(i for i in questionnaire["item"][-1]["item"] if i["type"] == "display")
    assert display["text"] not in text_of(html)
    trimmed = copy.deepcopy(response)
    group = next(i for i in trimmed["item"] if i["linkId"] == "observations")
    removed = group["item"].pop(0)
    q_text = next(i["text"] for i in questionnaire["item"][2]["item"] if i["linkId"] == removed["linkId"])
    assert q_text in text_of(html)
    assert q_text not in text_of(render_report(trimmed, questionnaire))


def test_untrusted_text_is_escaped():
    response, questionnaire = load("iha-c")
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    _answer(response["item"], "partB.allergies")["valueString"] = evil
    _answer(response["item"], "partC.plan.need")["valueString"] = evil
    response["subject"]["display"] = evil
    response["author"]["display"] = "</title><script>bad()</script>"
    html = render_report(response, questionnaire)
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html
    doc = lxml.html.document_fromstring(html)
    assert not doc.xpath("//script") and not doc.xpath("//img") and not doc.xpath("//@onerror")
    assert evil in doc.text_content()
    assert evil in doc.xpath("//table[@class='plan']/tbody/tr[1]/td[1]")[0].text_content()
