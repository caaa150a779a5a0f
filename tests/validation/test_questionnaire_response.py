"""A QuestionnaireResponse judged against its Questionnaire (FHIR R4 and SDC rules).

Each rule has a passing and a failing case on a small synthetic Questionnaire about a
child's dental check; failures are pinned by severity, IssueType code and the exact
FHIRPath location in the response.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from adapter.validation.questionnaire import validate_response
from adapter.validation.terminology import Terminology

URL = "https://lac.example.org/fhir/Questionnaire/dental-check"
EXT = "http://hl7.org/fhir/StructureDefinition/"
UNIT_OPTION = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-unitOption"
DENTAL = "https://lac.example.org/fhir/CodeSystem/dental-outcome"
UCUM = "http://unitsofmeasure.org"


# -- builders -----------------------------------------------------------------------------

def q(link: str, kind: str, *children: dict, **extra) -> dict:
    """A Questionnaire item."""
    out = {"linkId": link, "text": f"About {link}", "type": kind, **extra}
    if children:
        out["item"] = list(children)
    return out


def questionnaire(*items: dict, version: str | None = None, **extra) -> dict:
    out = {"resourceType": "Questionnaire", "url": URL, "status": "active", "item": list(items), **extra}
    if version:
        out["version"] = version
    return out


def r(link: str, *answers: dict, items: list[dict] | None = None) -> dict:
    """A response item; answers are dicts such as {"valueBoolean": True}."""
    out: dict = {"linkId": link}
    if answers:
        out["answer"] = list(answers)
    if items is not None:
        out["item"] = items
    return out


def response(*items: dict, status: str = "completed", canonical: str = URL) -> dict:
    return {"resourceType": "QuestionnaireResponse", "questionnaire": canonical, "status": status,
            "item": list(items)}


def coding(code: str, system: str = DENTAL) -> dict:
    return {"system": system, "code": code}


def ext(name: str, **value) -> dict:
    return {"url": name if name.startswith("http") else EXT + name, **value}


def found(issues) -> list[tuple[str, str, list[str]]]:
    return [(i.severity, i.code, i.expression) for i in issues]


def check(resp: dict, quest: dict, terminology: Terminology | None = None) -> list[tuple[str, str, list[str]]]:
    issues = validate_response(resp, quest, terminology or Terminology([]))
    for issue in issues:
        assert issue.diagnostics and issue.expression, issue
    return found(issues)


def one(resp: dict, quest: dict, terminology: Terminology | None = None) -> tuple[str, str, str]:
    issues = validate_response(resp, quest, terminology or Terminology([]))
    assert len(issues) == 1, found(issues)
    issue = issues[0]
    assert issue.diagnostics
    return issue.severity, issue.code, issue.expression[0]


SEEN = q("seen-dentist", "boolean")


# -- rule 1: the canonical ----------------------------------------------------------------

def test_canonical_with_version_matches():
    assert check(response(r("seen-dentist", {"valueBoolean": True}), canonical=URL + "|2.0"),
                 questionnaire(SEEN, version="2.0")) == []


def test_canonical_of_another_questionnaire_is_an_error():
    assert one(response(canonical="https://lac.example.org/fhir/Questionnaire/other"),
               questionnaire(SEEN)) == ("error", "invalid", "QuestionnaireResponse.questionnaire")


def test_canonical_with_another_version_is_an_error():
    assert one(response(canonical=URL + "|1.0"), questionnaire(SEEN, version="2.0")) == (
        "error", "invalid", "QuestionnaireResponse.questionnaire")


def test_missing_canonical_is_an_error():
    resp = response()
    del resp["questionnaire"]
    assert one(resp, questionnaire(SEEN)) == ("error", "invalid", "QuestionnaireResponse.questionnaire")


# -- rule 2: where items sit --------------------------------------------------------------

VISIT = questionnaire(
    q("visit", "group", q("visit-date", "date"), q("seen-by", "string")),
    q("notes", "text"),
    q("reminder", "group", q("reminder-date", "date"), repeats=True),
)


def test_items_nested_and_ordered_as_in_the_questionnaire():
    resp = response(r("visit", items=[r("visit-date", {"valueDate": "2024-03-01"}),
                                      r("seen-by", {"valueString": "Community dentist"})]),
                    r("notes", {"valueString": "No concerns"}),
                    r("reminder", items=[r("reminder-date", {"valueDate": "2024-09-01"})]),
                    r("reminder", items=[r("reminder-date", {"valueDate": "2025-03-01"})]))
    assert check(resp, VISIT) == []


def test_unknown_link_id_is_an_error():
    resp = response(r("visit", items=[r("visit-date", {"valueDate": "2024-03-01"}),
                                      r("fluoride", {"valueBoolean": True})]))
    assert one(resp, VISIT) == ("error", "structure", "QuestionnaireResponse.item[0].item[1]")


def test_item_at_the_wrong_level_is_an_error():
    resp = response(r("visit-date", {"valueDate": "2024-03-01"}))
    assert one(resp, VISIT) == ("error", "structure", "QuestionnaireResponse.item[0]")


def test_items_out_of_order_are_a_warning():
    resp = response(r("notes", {"valueString": "No concerns"}),
                    r("visit", items=[r("visit-date", {"valueDate": "2024-03-01"})]))
    assert one(resp, VISIT) == ("warning", "structure", "QuestionnaireResponse.item[1]")


def test_non_repeating_group_twice_is_an_error():
    resp = response(r("visit", items=[r("seen-by", {"valueString": "A"})]),
                    r("visit", items=[r("seen-by", {"valueString": "B"})]))
    assert one(resp, VISIT) == ("error", "structure", "QuestionnaireResponse.item[1]")


# -- rule 3: answer types -----------------------------------------------------------------

@pytest.mark.parametrize("kind, answer", [
    ("boolean", {"valueBoolean": False}),
    ("decimal", {"valueDecimal": Decimal("2.5")}),
    ("integer", {"valueInteger": 3}),
    ("date", {"valueDate": "2024-03-01"}),
    ("dateTime", {"valueDateTime": "2024-03-01T10:30:00Z"}),
    ("time", {"valueTime": "10:30:00"}),
    ("string", {"valueString": "Community dentist"}),
    ("text", {"valueString": "Brushes twice a day"}),
    ("url", {"valueUri": "https://dentist.example.org"}),
    ("choice", {"valueCoding": coding("routine")}),
    ("open-choice", {"valueCoding": coding("routine")}),
    ("open-choice", {"valueString": "Referred to orthodontist"}),
    ("attachment", {"valueAttachment": {"contentType": "image/png", "url": "https://x.example/a.png"}}),
    ("reference", {"valueReference": {"reference": "Practitioner/dentist-1"}}),
    ("quantity", {"valueQuantity": {"value": 2, "system": UCUM, "code": "a"}}),
])
def test_answer_of_the_item_type(kind, answer):
    assert check(response(r("answer", answer)), questionnaire(q("answer", kind))) == []


@pytest.mark.parametrize("kind, answer, key", [
    ("boolean", {"valueString": "yes"}, "valueString"),
    ("integer", {"valueDecimal": Decimal("3.0")}, "valueDecimal"),
    ("dateTime", {"valueDate": "2024-03-01"}, "valueDate"),
    ("url", {"valueString": "https://dentist.example.org"}, "valueString"),
    ("choice", {"valueString": "routine"}, "valueString"),
])
def test_answer_of_another_type_is_an_error(kind, answer, key):
    assert one(response(r("answer", answer)), questionnaire(q("answer", kind))) == (
        "error", "structure", f"QuestionnaireResponse.item[0].answer[0].{key}")


def test_choice_with_string_options_takes_value_string():
    quest = questionnaire(q("outcome", "choice", answerOption=[{"valueString": "routine"}, {"valueString": "urgent"}]))
    assert check(response(r("outcome", {"valueString": "urgent"})), quest) == []
    assert one(response(r("outcome", {"valueCoding": coding("urgent")})), quest) == (
        "error", "structure", "QuestionnaireResponse.item[0].answer[0].valueCoding")


def test_group_and_display_carry_no_answers():
    quest = questionnaire(q("intro", "display"), q("visit", "group", q("seen-by", "string")))
    resp = response(r("intro", {"valueString": "read"}),
                    r("visit", {"valueBoolean": True}, items=[r("seen-by", {"valueString": "A"})]))
    assert check(resp, quest) == [("error", "structure", ["QuestionnaireResponse.item[0].answer"]),
                                  ("error", "structure", ["QuestionnaireResponse.item[1].answer"])]


def test_display_has_no_child_items():
    quest = questionnaire(q("intro", "display"), SEEN)
    resp = response(r("intro", items=[r("seen-dentist", {"valueBoolean": True})]))
    assert one(resp, quest) == ("error", "structure", "QuestionnaireResponse.item[0].item")


# -- rule 4: required ---------------------------------------------------------------------

REQUIRED = questionnaire(
    q("seen-dentist", "boolean", required=True),
    q("visit", "group", q("visit-date", "date"), q("seen-by", "string"), required=True),
)


def complete_visit() -> dict:
    return r("visit", items=[r("seen-by", {"valueString": "Community dentist"})])


def test_required_items_answered():
    assert check(response(r("seen-dentist", {"valueBoolean": True}), complete_visit()), REQUIRED) == []


def test_required_item_missing_from_a_completed_response_is_an_error():
    assert one(response(complete_visit()), REQUIRED) == ("error", "required", "QuestionnaireResponse")


def test_required_item_missing_from_an_amended_response_is_an_error():
    assert one(response(complete_visit(), status="amended"), REQUIRED) == ("error", "required", "QuestionnaireResponse")


def test_in_progress_response_may_be_incomplete():
    assert check(response(r("seen-dentist"), status="in-progress"), REQUIRED) == []


def test_required_question_present_without_answer_is_an_error():
    assert one(response(r("seen-dentist"), complete_visit()), REQUIRED) == (
        "error", "required", "QuestionnaireResponse.item[0]")


def test_required_group_without_answered_descendant_is_an_error():
    resp = response(r("seen-dentist", {"valueBoolean": True}), r("visit", items=[r("seen-by")]))
    assert one(resp, REQUIRED) == ("error", "required", "QuestionnaireResponse.item[1]")


def test_required_child_of_present_group_is_checked_in_that_group():
    quest = questionnaire(q("visit", "group", q("visit-date", "date", required=True), q("seen-by", "string")))
    assert check(response(), quest) == []  # the optional group is absent: its children are not asked for
    assert one(response(r("visit", items=[r("seen-by", {"valueString": "A"})])), quest) == (
        "error", "required", "QuestionnaireResponse.item[0]")


# -- rule 5: enableWhen -------------------------------------------------------------------

def gated(when: list[dict], behavior: str | None = None, kind: str = "string", **extra) -> dict:
    item = q("follow-up", kind, enableWhen=when, **extra)
    if behavior:
        item["enableBehavior"] = behavior
    return item


FOLLOW_UP = r("follow-up", {"valueString": "Book a check in six months"})


@pytest.mark.parametrize("source_kind, source_answers, when", [
    ("boolean", [{"valueBoolean": True}], {"operator": "exists", "answerBoolean": True}),
    ("boolean", [], {"operator": "exists", "answerBoolean": False}),
    ("boolean", [{"valueBoolean": True}], {"operator": "=", "answerBoolean": True}),
    ("choice", [{"valueCoding": coding("urgent")}], {"operator": "=", "answerCoding": coding("urgent")}),
    ("choice", [{"valueCoding": coding("routine")}], {"operator": "!=", "answerCoding": coding("urgent")}),
    ("integer", [{"valueInteger": 3}], {"operator": ">", "answerInteger": 2}),
    ("decimal", [{"valueDecimal": Decimal("1.5")}], {"operator": "<", "answerDecimal": Decimal("2")}),
    ("integer", [{"valueInteger": 2}], {"operator": ">=", "answerDecimal": Decimal("2.0")}),
    ("date", [{"valueDate": "2024-03-01"}], {"operator": ">=", "answerDate": "2024-03-01"}),
    ("dateTime", [{"valueDateTime": "2024-03-01T09:00:00Z"}],
     {"operator": "<", "answerDateTime": "2024-03-01T10:00:00+00:00"}),
    ("time", [{"valueTime": "09:00:00"}], {"operator": "<=", "answerTime": "09:00:00"}),
    ("string", [{"valueString": "yes"}], {"operator": "=", "answerString": "yes"}),
    ("quantity", [{"valueQuantity": {"value": 3, "system": UCUM, "code": "a"}}],
     {"operator": "<=", "answerQuantity": {"value": 3, "system": UCUM, "code": "a"}}),
    ("reference", [{"valueReference": {"reference": "Practitioner/1"}}],
     {"operator": "=", "answerReference": {"reference": "Practitioner/1"}}),
])
def test_enabled_item_may_be_answered(source_kind, source_answers, when):
    quest = questionnaire(q("source", source_kind, repeats=True), gated([{"question": "source", **when}]))
    assert check(response(r("source", *source_answers), FOLLOW_UP), quest) == []


@pytest.mark.parametrize("source_kind, source_answers, when", [
    ("boolean", [], {"operator": "exists", "answerBoolean": True}),
    ("boolean", [{"valueBoolean": False}], {"operator": "exists", "answerBoolean": False}),
    ("boolean", [{"valueBoolean": False}], {"operator": "=", "answerBoolean": True}),
    ("choice", [{"valueCoding": coding("urgent", "https://other.example/cs")}],
     {"operator": "=", "answerCoding": coding("urgent")}),
    ("choice", [{"valueCoding": coding("routine")}, {"valueCoding": coding("urgent")}],
     {"operator": "!=", "answerCoding": coding("urgent")}),
    ("integer", [{"valueInteger": 2}], {"operator": ">", "answerInteger": 2}),
    ("integer", [], {"operator": "<", "answerInteger": 2}),
    ("date", [{"valueDate": "2024-02-29"}], {"operator": ">=", "answerDate": "2024-03-01"}),
    ("date", [{"valueDate": "2024-03"}], {"operator": "=", "answerDate": "2024-03-01"}),
    ("quantity", [{"valueQuantity": {"value": 3, "system": UCUM, "code": "mo"}}],
     {"operator": "<=", "answerQuantity": {"value": 3, "system": UCUM, "code": "a"}}),
])
def test_disabled_item_must_not_be_answered(source_kind, source_answers, when):
    quest = questionnaire(q("source", source_kind, repeats=True), gated([{"question": "source", **when}]))
    assert one(response(r("source", *source_answers), FOLLOW_UP), quest) == (
        "error", "business-rule", "QuestionnaireResponse.item[1]")


def test_enable_behavior_any_and_all():
    when = [{"question": "pain", "operator": "=", "answerBoolean": True},
            {"question": "bleeding", "operator": "=", "answerBoolean": True}]
    answers = (r("pain", {"valueBoolean": True}), r("bleeding", {"valueBoolean": False}), FOLLOW_UP)
    items = (q("pain", "boolean"), q("bleeding", "boolean"))
    assert check(response(*answers), questionnaire(*items, gated(when, "any"))) == []
    assert one(response(*answers), questionnaire(*items, gated(when, "all"))) == (
        "error", "business-rule", "QuestionnaireResponse.item[2]")


def test_descendants_of_a_disabled_group_must_not_be_answered():
    quest = questionnaire(SEEN, q("visit", "group", q("seen-by", "string"),
                                  enableWhen=[{"question": "seen-dentist", "operator": "=", "answerBoolean": True}]))
    resp = response(r("seen-dentist", {"valueBoolean": False}),
                    r("visit", items=[r("seen-by", {"valueString": "Community dentist"})]))
    assert one(resp, quest) == ("error", "business-rule", "QuestionnaireResponse.item[1].item[0]")


def test_disabled_required_item_is_not_required():
    quest = questionnaire(SEEN, gated([{"question": "seen-dentist", "operator": "=", "answerBoolean": True}],
                                      required=True))
    assert check(response(r("seen-dentist", {"valueBoolean": False})), quest) == []
    assert one(response(r("seen-dentist", {"valueBoolean": True})), quest) == (
        "error", "required", "QuestionnaireResponse")


def test_enable_when_uses_the_nearest_occurrence_in_repeating_groups():
    quest = questionnaire(q("tooth", "group", q("decayed", "boolean"), gated(
        [{"question": "decayed", "operator": "=", "answerBoolean": True}]), repeats=True))
    resp = response(r("tooth", items=[r("decayed", {"valueBoolean": True}), FOLLOW_UP]),
                    r("tooth", items=[r("decayed", {"valueBoolean": False}), FOLLOW_UP]))
    assert one(resp, quest) == ("error", "business-rule", "QuestionnaireResponse.item[1].item[1]")


# -- rule 6: repeats ----------------------------------------------------------------------

def test_repeating_question_takes_several_answers():
    quest = questionnaire(q("treatment", "string", repeats=True))
    assert check(response(r("treatment", {"valueString": "Scale"}, {"valueString": "Polish"})), quest) == []


def test_non_repeating_question_with_two_answers_is_an_error():
    quest = questionnaire(q("treatment", "string"))
    assert one(response(r("treatment", {"valueString": "Scale"}, {"valueString": "Polish"})), quest) == (
        "error", "structure", "QuestionnaireResponse.item[0].answer[1]")


# -- rule 7: answerOption and answerValueSet ----------------------------------------------

OUTCOME_OPTIONS = [{"valueCoding": coding("routine")}, {"valueCoding": coding("urgent")}]


def test_coded_answer_among_the_options():
    quest = questionnaire(q("outcome", "choice", answerOption=OUTCOME_OPTIONS))
    assert check(response(r("outcome", {"valueCoding": {**coding("urgent"), "display": "Urgent"}})), quest) == []


@pytest.mark.parametrize("answer", [coding("none"), coding("urgent", "https://other.example/cs"), {"code": "urgent"}])
def test_coded_answer_not_among_the_options_is_an_error(answer):
    quest = questionnaire(q("outcome", "choice", answerOption=OUTCOME_OPTIONS))
    assert one(response(r("outcome", {"valueCoding": answer})), quest) == (
        "error", "code-invalid", "QuestionnaireResponse.item[0].answer[0].valueCoding")


def test_integer_options_match_exactly():
    quest = questionnaire(q("teeth", "choice", answerOption=[{"valueInteger": 1}, {"valueInteger": 2}]))
    assert check(response(r("teeth", {"valueInteger": 2})), quest) == []
    assert one(response(r("teeth", {"valueInteger": 3})), quest) == (
        "error", "code-invalid", "QuestionnaireResponse.item[0].answer[0].valueInteger")


def test_open_choice_takes_free_text_but_not_an_unknown_code():
    quest = questionnaire(q("outcome", "open-choice", answerOption=OUTCOME_OPTIONS))
    assert check(response(r("outcome", {"valueString": "Referred to orthodontist"})), quest) == []
    assert one(response(r("outcome", {"valueCoding": coding("none")})), quest) == (
        "error", "code-invalid", "QuestionnaireResponse.item[0].answer[0].valueCoding")


VS = "https://lac.example.org/fhir/ValueSet/dental-outcome"
OUTCOME_TERMINOLOGY = Terminology([
    {"resourceType": "CodeSystem", "url": DENTAL, "status": "active", "content": "complete",
     "concept": [{"code": "routine"}, {"code": "urgent"}]},
    {"resourceType": "ValueSet", "url": VS, "status": "active", "compose": {"include": [{"system": DENTAL}]}},
])


def test_answer_value_set_membership():
    quest = questionnaire(q("outcome", "choice", answerValueSet=VS))
    assert check(response(r("outcome", {"valueCoding": coding("routine")})), quest, OUTCOME_TERMINOLOGY) == []
    assert one(response(r("outcome", {"valueCoding": coding("none")})), quest, OUTCOME_TERMINOLOGY) == (
        "error", "code-invalid", "QuestionnaireResponse.item[0].answer[0].valueCoding")


def test_answer_value_set_we_cannot_expand_is_information():
    quest = questionnaire(q("outcome", "choice", answerValueSet="https://elsewhere.example/ValueSet/x"))
    assert one(response(r("outcome", {"valueCoding": coding("routine")})), quest, OUTCOME_TERMINOLOGY) == (
        "information", "code-invalid", "QuestionnaireResponse.item[0].answer[0].valueCoding")


def test_contained_answer_value_set():
    contained = {"resourceType": "ValueSet", "id": "outcomes", "status": "active",
                 "compose": {"include": [{"system": DENTAL, "concept": [{"code": "routine"}]}]}}
    quest = questionnaire(q("outcome", "choice", answerValueSet="#outcomes"), contained=[contained])
    assert check(response(r("outcome", {"valueCoding": coding("routine")})), quest) == []
    assert one(response(r("outcome", {"valueCoding": coding("urgent")})), quest) == (
        "error", "code-invalid", "QuestionnaireResponse.item[0].answer[0].valueCoding")


# -- rule 8: limits -----------------------------------------------------------------------

@pytest.mark.parametrize("item, good, bad", [
    (q("seen-by", "string", maxLength=5), {"valueString": "Dr A"}, {"valueString": "Dr Ahmed"}),
    (q("site", "url", maxLength=20), {"valueUri": "https://d.example"}, {"valueUri": "https://dentist.example.org"}),
    (q("seen-by", "string", extension=[ext("minLength", valueInteger=3)]),
     {"valueString": "Dr A"}, {"valueString": "A"}),
    (q("postcode", "string", extension=[ext("regex", valueString="[A-Z]{2}[0-9]")]),
     {"valueString": "LS1"}, {"valueString": "LS1 4AP"}),
    (q("teeth", "integer", extension=[ext("minValue", valueInteger=0), ext("maxValue", valueInteger=32)]),
     {"valueInteger": 32}, {"valueInteger": 33}),
    (q("teeth", "integer", extension=[ext("minValue", valueInteger=0)]),
     {"valueInteger": 0}, {"valueInteger": -1}),
    (q("score", "decimal", extension=[ext("maxValue", valueDecimal=Decimal("10.0"))]),
     {"valueDecimal": Decimal("10")}, {"valueDecimal": Decimal("10.5")}),
    (q("visit-date", "date", extension=[ext("minValue", valueDate="2020-01-01")]),
     {"valueDate": "2020-01-01"}, {"valueDate": "2019-12-31"}),
    (q("visit-at", "dateTime", extension=[ext("maxValue", valueDateTime="2024-12-31T23:59:59Z")]),
     {"valueDateTime": "2024-06-01T10:00:00Z"}, {"valueDateTime": "2025-01-01T00:00:00Z"}),
    (q("score", "decimal", extension=[ext("maxDecimalPlaces", valueInteger=1)]),
     {"valueDecimal": Decimal("2.5")}, {"valueDecimal": Decimal("2.50")}),
])
def test_value_limits(item, good, bad):
    quest = questionnaire(item)
    assert check(response(r(item["linkId"], good)), quest) == []
    key = next(iter(bad))
    assert one(response(r(item["linkId"], bad)), quest) == (
        "error", "value", f"QuestionnaireResponse.item[0].answer[0].{key}")


@pytest.mark.parametrize("extensions", [
    [ext("questionnaire-unit", valueCoding=coding("mo", UCUM))],
    [ext(UNIT_OPTION, valueCoding=coding("a", UCUM)), ext(UNIT_OPTION, valueCoding=coding("mo", UCUM))],
])
def test_quantity_units(extensions):
    quest = questionnaire(q("since-last-visit", "quantity", extension=extensions))
    months = {"valueQuantity": {"value": 7, "unit": "months", "system": UCUM, "code": "mo"}}
    weeks = {"valueQuantity": {"value": 30, "unit": "weeks", "system": UCUM, "code": "wk"}}
    assert check(response(r("since-last-visit", months)), quest) == []
    assert one(response(r("since-last-visit", weeks)), quest) == (
        "error", "code-invalid", "QuestionnaireResponse.item[0].answer[0].valueQuantity")


# -- rule 9: read-only and display items --------------------------------------------------

def test_read_only_item_may_carry_an_answer():
    quest = questionnaire(q("child-age", "integer", readOnly=True))
    assert check(response(r("child-age", {"valueInteger": 9})), quest) == []


def test_display_item_with_an_answer_is_an_error():
    quest = questionnaire(q("intro", "display"))
    assert check(response(r("intro")), quest) == []
    assert one(response(r("intro", {"valueBoolean": True})), quest) == (
        "error", "structure", "QuestionnaireResponse.item[0].answer")


# -- rule 10: items nested under answers ---------------------------------------------------

NESTED = questionnaire(q("referred", "boolean", q("referred-to", "string", required=True)), q("notes", "text"))


def test_children_of_a_question_nest_under_its_answer():
    resp = response(r("referred", {"valueBoolean": True, "item": [r("referred-to", {"valueString": "Orthodontist"})]}))
    assert check(resp, NESTED) == []


def test_required_child_missing_under_an_answer_is_an_error():
    assert one(response(r("referred", {"valueBoolean": True})), NESTED) == (
        "error", "required", "QuestionnaireResponse.item[0].answer[0]")


def test_answer_items_under_a_question_without_children_is_an_error():
    resp = response(r("notes", {"valueString": "ok", "item": [r("referred-to", {"valueString": "Orthodontist"})]}))
    assert one(resp, NESTED) == ("error", "structure", "QuestionnaireResponse.item[0].answer[0].item")


def test_children_of_a_question_directly_under_the_item_is_an_error():
    resp = response(r("referred", {"valueBoolean": True, "item": [r("referred-to", {"valueString": "A"})]},
                      items=[r("referred-to", {"valueString": "B"})]))
    assert one(resp, NESTED) == ("error", "structure", "QuestionnaireResponse.item[0].item")


# -- all issues at once, and speed ----------------------------------------------------------

def test_every_issue_is_reported_not_only_the_first():
    quest = questionnaire(q("seen-dentist", "boolean", required=True), q("notes", "text", maxLength=3))
    resp = response(r("notes", {"valueString": "Too long"}), r("unknown"), canonical=URL + "|9")
    assert sorted(check(resp, quest)) == sorted([
        ("error", "invalid", ["QuestionnaireResponse.questionnaire"]),
        ("error", "value", ["QuestionnaireResponse.item[0].answer[0].valueString"]),
        ("error", "structure", ["QuestionnaireResponse.item[1]"]),
        ("error", "required", ["QuestionnaireResponse"]),
    ])


def hundred_answers() -> tuple[dict, dict, float]:
    """A 100-answer response over 20 groups of 5 questions, and the seconds one validation takes."""
    groups, answers = [], []
    for g in range(20):
        children = [q(f"g{g}-q0", "boolean", required=True),
                    q(f"g{g}-q1", "integer", extension=[ext("minValue", valueInteger=0)],
                      enableWhen=[{"question": f"g{g}-q0", "operator": "=", "answerBoolean": True}]),
                    q(f"g{g}-q2", "choice", answerOption=OUTCOME_OPTIONS),
                    q(f"g{g}-q3", "string", maxLength=50),
                    q(f"g{g}-q4", "decimal", extension=[ext("maxDecimalPlaces", valueInteger=2)])]
        groups.append(q(f"g{g}", "group", *children))
        answers.append(r(f"g{g}", items=[r(f"g{g}-q0", {"valueBoolean": True}),
                                         r(f"g{g}-q1", {"valueInteger": g}),
                                         r(f"g{g}-q2", {"valueCoding": coding("routine")}),
                                         r(f"g{g}-q3", {"valueString": "fine"}),
                                         r(f"g{g}-q4", {"valueDecimal": Decimal("1.25")})]))
    quest, resp = questionnaire(*groups), response(*answers)
    start = time.perf_counter()
    validate_response(resp, quest, Terminology([]))
    return quest, resp, time.perf_counter() - start


def test_hundred_answer_response_validates_cleanly():
    quest, resp, _elapsed = hundred_answers()
    assert check(resp, quest) == []
