"""Form document XML <-> QuestionnaireResponse (adapter.mapping.forms), offline.

Golden files: each mappings/forms/examples/<form>.xml must map to fixtures/forms/<form>-completed.json
with `id` removed, `identifier` the form-document identifier and `subject` the conditional reference
by NHS number; and that response must write back to the same XML. Then round trips both ways, and
every class of bad input with its status and a diagnostics string naming the line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from lxml import etree

from adapter.fhir.errors import FhirError
from adapter.fhir.jsonio import FhirDecimal, loads
from adapter.mapping.forms import (
    FORM_DOCUMENT_SYSTEM,
    NHS_NUMBER_SYSTEM,
    NS,
    XSD,
    form_xml,
    map_form,
    mappings,
    nhs_number_valid,
)
from adapter.validation.conformance import published_index
from adapter.validation.terminology import default_terminology
from adapter.validation.validator import Validator, errors

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "mappings" / "forms" / "examples"
FIXTURES_XML = ROOT / "fixtures" / "forms-xml"
FIXTURES = ROOT / "fixtures" / "forms"
Q_DIR = ROOT / "profiles" / "questionnaires"
FORMS = ["lac-consent", "iha-c", "iha-yp", "rha-c", "rha-yp", "cr-c", "cr-yp"]


def example(form: str) -> bytes:
    return (EXAMPLES / f"{form}.xml").read_bytes()


def expected_response(form: str, xml: bytes) -> dict:
    """The worked example as the mapping must produce it from `xml`."""
    qr = loads((FIXTURES / f"{form}-completed.json").read_bytes())
    root = etree.fromstring(xml)
    nhs = root.find(f"{{{NS}}}Child").get("nhsNumber")
    qr.pop("id")
    qr["identifier"] = {"system": FORM_DOCUMENT_SYSTEM, "value": root.get("documentId")}
    qr["subject"] = {"reference": f"Patient?identifier={NHS_NUMBER_SYSTEM}|{nhs}"}
    return qr


def canonical(xml: bytes) -> bytes:
    """C14N of the document without comments and whitespace-only text between elements."""
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True)
    return etree.tostring(etree.fromstring(xml, parser), method="c14n")


def response_of(xml: bytes) -> dict:
    return map_form(xml).bundle["entry"][0]["resource"]


def strip(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


def error_of(xml: bytes) -> FhirError:
    with pytest.raises(FhirError) as caught:
        map_form(xml)
    return caught.value


def edit(form: str, old: str, new: str, count: int = 1) -> bytes:
    text = example(form).decode()
    assert old in text, old
    return text.replace(old, new, count).encode()


def line_of(xml: bytes, needle: str) -> int:
    return xml.decode().split(needle)[0].count("\n") + 1


# --------------------------------------------------------------------------- the definitions

def test_every_form_has_a_mapping_per_questionnaire_version():
    registry = mappings()
    for path in sorted(Q_DIR.glob("Questionnaire-*.json")):
        q = json.loads(path.read_text())
        m = registry.by_form[(q["id"], q["version"])]
        assert m.questionnaire == f"{q['url']}|{q['version']}"
        assert m.file == f"mappings/forms/{q['id']}-{q['version']}.json"
        assert (ROOT / m.file).is_file()
    assert sorted(f for f, _ in registry.by_form) == sorted(FORMS)


@pytest.mark.parametrize("form", FORMS)
def test_mapping_matches_its_questionnaire(form):
    """Every answerable item is mapped once, with the Questionnaire's type, text, options and unit."""
    m = mappings().by_form[(form, "1.0.0")]
    q = published_index().resolve("Questionnaire", m.questionnaire)

    def q_items(items, parent=None):
        for item in items:
            if item["type"] != "display":
                yield item, parent
                yield from q_items(item.get("item", []), item["linkId"])

    def m_entries(entries, parent=None):
        for e in entries:
            yield e, parent
            yield from m_entries(e.items, e.link_id)

    wanted = {item["linkId"]: (item, parent) for item, parent in q_items(q["item"])}
    mapped = {e.link_id: (e, parent) for e, parent in m_entries(m.items)}
    assert set(mapped) == set(wanted)
    paths = set()
    for link, (e, parent) in mapped.items():
        item, q_parent = wanted[link]
        assert parent == q_parent, link
        assert (e.type, e.text, e.repeats) == (item["type"], item.get("text"), bool(item.get("repeats"))), link
        assert e.answer_value_set == item.get("answerValueSet"), link
        assert len(e.answer_option) == len(item.get("answerOption", [])), link
        assert (parent, e.path) not in paths, link
        paths.add((parent, e.path))


def test_nhs_number_check_digit():
    assert all(nhs_number_valid(n) for n in ("9990000034", "9990000042", "9990000050", "9434765919"))
    assert not nhs_number_valid("9990000043")       # wrong check digit
    assert not nhs_number_valid("9990000120")       # check digit would be 10: never issued
    assert not nhs_number_valid("999000004")


# --------------------------------------------------------------------------- golden files

@pytest.mark.parametrize("form", FORMS)
def test_example_maps_to_the_worked_example(form):
    xml = example(form)
    doc = map_form(xml)
    qr = doc.bundle["entry"][0]["resource"]
    assert qr == expected_response(form, xml)
    root = etree.fromstring(xml)
    document_id, nhs = root.get("documentId"), root.find(f"{{{NS}}}Child").get("nhsNumber")
    assert doc.bundle["type"] == "transaction" and len(doc.bundle["entry"]) == 1
    entry = doc.bundle["entry"][0]
    assert entry["fullUrl"].startswith("urn:uuid:")
    assert entry["request"] == {"method": "POST", "url": "QuestionnaireResponse",
                                "ifNoneExist": f"identifier={FORM_DOCUMENT_SYSTEM}|{document_id}"}
    assert doc.identifier == {"system": FORM_DOCUMENT_SYSTEM, "value": document_id}
    assert doc.source == xml and doc.content_type == "application/xml"
    assert doc.mapping == f"mappings/forms/{form}-1.0.0.json"
    assert doc.subject == f"Patient?identifier={NHS_NUMBER_SYSTEM}|{nhs}"
    assert doc.document_type.endswith("(XML)")
    assert doc.unconsumed == []
    # the same document twice maps to the same bundle (deterministic fullUrl)
    assert map_form(xml).bundle == doc.bundle


@pytest.mark.parametrize("form", FORMS)
def test_mapped_response_validates(form):
    qr = response_of(example(form))
    issues = Validator(default_terminology()).validate(qr, published_index().resolve)
    assert errors(issues) == [], [i.diagnostics for i in issues]


@pytest.mark.parametrize("form", FORMS)
def test_worked_example_writes_the_example(form):
    xml = example(form)
    assert canonical(form_xml(expected_response(form, xml))) == canonical(xml)


@pytest.mark.parametrize("form", FORMS)
def test_fixture_is_the_example(form):
    assert (FIXTURES_XML / f"{form}.xml").read_bytes() == example(form)


# --------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("form", FORMS)
def test_round_trip_xml_qr_xml(form):
    xml = example(form)
    assert canonical(form_xml(response_of(xml))) == canonical(xml)


@pytest.mark.parametrize("form", FORMS)
def test_round_trip_qr_xml_qr(form):
    qr = expected_response(form, example(form))
    qr["id"] = "stored-1"
    qr["meta"] = {"versionId": "3", "lastUpdated": "2026-11-20T10:00:00Z"}
    back = response_of(form_xml(qr))
    assert strip(back) == strip(qr)


def test_decimal_keeps_its_digits():
    xml = edit("iha-c", 'value="2.61"', 'value="2.610"')
    qr = response_of(xml)
    weight = qr["item"][2]["item"][4]["item"][1]["answer"][0]["valueQuantity"]
    assert isinstance(weight["value"], FhirDecimal) and str(weight["value"]) == "2.610"
    assert b'value="2.610"' in form_xml(qr)


def test_document_order_does_not_matter():
    """Fields in another order than the mapping's still land in the Questionnaire's order."""
    xml = edit("iha-c", '<Text name="preferredName">Alfie</Text>', "")
    xml = xml.replace(b'<Text name="school">Not yet in nursery</Text>',
                      b'<Text name="school">Not yet in nursery</Text><Text name="preferredName">Alfie</Text>')
    assert response_of(xml) == response_of(example("iha-c"))


def test_author_may_be_a_name_only():
    xml = edit("iha-c", '<Author reference="Practitioner/demo-paediatrician-1">', "<Author>")
    assert response_of(xml)["author"] == {"display": "Dr Helen Marchbank"}
    assert canonical(form_xml(response_of(xml))) == canonical(xml)


# --------------------------------------------------------------------------- bad input

def test_not_well_formed():
    err = error_of(edit("iha-c", "</Part>", "</Prat>"))
    assert err.status == 400 and re.search(r"line \d+: not well-formed", err.diagnostics)


def test_billion_laughs():
    xml = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
           b' <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n'
           b' <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">\n]>\n'
           b'<HealthAssessmentForm xmlns="' + NS.encode() + b'">&lol3;</HealthAssessmentForm>\n')
    err = error_of(xml)
    assert err.status == 400 and "DTD" in err.diagnostics


def test_external_entity():
    text = example("iha-c").decode()
    text = text.replace('<?xml version="1.0" encoding="UTF-8"?>\n',
                        '<?xml version="1.0" encoding="UTF-8"?>\n'
                        '<!DOCTYPE HealthAssessmentForm [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n')
    text = text.replace("<Name>Alfie Rendell</Name>", "<Name>&xxe;</Name>")
    err = error_of(text.encode())
    assert err.status == 400 and "DTD" in err.diagnostics


def test_undeclared_entity_is_not_resolved():
    err = error_of(edit("iha-c", "<Name>Alfie Rendell</Name>", "<Name>&xxe;</Name>"))
    assert err.status == 400 and re.search(r"line \d+: not well-formed", err.diagnostics)


def test_wrong_namespace():
    err = error_of(edit("iha-c", f'xmlns="{NS}"', 'xmlns="urn:example:other"'))
    assert err.status == 422
    assert err.diagnostics.startswith(f"line {line_of(example('iha-c'), '<HealthAssessmentForm')}:")
    assert "namespace" in err.diagnostics


def test_schema_violation():
    xml = edit("iha-c", '<Boolean name="outOfArea">false</Boolean>', '<Boolean name="outOfArea">no</Boolean>')
    err = error_of(xml)
    assert err.status == 422
    assert err.diagnostics.startswith(f"line {line_of(xml, 'outOfArea')}:")


def test_schema_violation_unknown_element_in_our_namespace():
    xml = edit("iha-c", '<Text name="ethnicity">', '<Comment>x</Comment><Text name="ethnicity">')
    err = error_of(xml)
    assert err.status == 422 and err.diagnostics.startswith(f"line {line_of(xml, '<Comment>')}:")


def test_nhs_number_pattern_is_in_the_schema():
    xml = edit("iha-c", 'nhsNumber="9990000042"', 'nhsNumber="999 000 0042"')
    err = error_of(xml)
    assert err.status == 422 and err.diagnostics.startswith(f"line {line_of(xml, '<Child ')}:")


@pytest.mark.parametrize("form, version", [("iha-x", "1.0.0"), ("iha-c", "9.0.0")])
def test_unknown_form_or_version(form, version):
    xml = edit("iha-c", 'form="iha-c" formVersion="1.0.0"', f'form="{form}" formVersion="{version}"')
    err = error_of(xml)
    assert err.status == 422
    assert err.diagnostics.startswith(f"line {line_of(xml, '<HealthAssessmentForm')}: no mapping for form")
    assert f"'{form}'" in err.diagnostics and f"'{version}'" in err.diagnostics


def test_unknown_code_in_value_set():
    xml = edit("iha-c", 'code="C1" system="https://lac-fhir-adapter.example/fhir/CodeSystem/ssda903-legal-status"',
               'code="Z9" system="https://lac-fhir-adapter.example/fhir/CodeSystem/ssda903-legal-status"')
    err = error_of(xml)
    assert err.status == 422
    assert err.diagnostics.startswith(f"line {line_of(xml, 'Z9')}:")
    assert "Z9" in err.diagnostics and "ssda903-legal-status" in err.diagnostics


def test_unknown_code_in_answer_options():
    xml = edit("iha-c", 'code="male" system="http://hl7.org/fhir/administrative-gender"',
               'code="male" system="http://snomed.info/sct"')
    err = error_of(xml)
    assert err.status == 422 and err.diagnostics.startswith(f"line {line_of(xml, 'sexAtBirth')}:")


def test_text_answer_not_among_options():
    xml = edit("cr-c", '<Text name="role">Foster carer</Text>', '<Text name="role">Neighbour</Text>')
    err = error_of(xml)
    assert err.status == 422 and err.diagnostics.startswith(f"line {line_of(xml, 'Neighbour')}:")


def test_impossible_date_in_a_field():
    xml = edit("iha-c", '<Date name="dateLookedAfter">2026-10-26</Date>',
               '<Date name="dateLookedAfter">2026-02-30</Date>')
    err = error_of(xml)
    assert err.status == 422 and err.diagnostics.startswith(f"line {line_of(xml, 'dateLookedAfter')}:")


def test_impossible_date_of_birth():
    xml = edit("iha-c", 'dateOfBirth="2025-06-03"', 'dateOfBirth="2025-13-03"')
    err = error_of(xml)
    assert err.status == 422 and err.diagnostics.startswith(f"line {line_of(xml, '<Child ')}:")


def test_impossible_time_the_schema_lets_through():
    """xs:dateTime accepts 24:00:00; FHIR does not."""
    xml = edit("iha-c", 'completed="2026-11-18T15:05:00Z"', 'completed="2026-11-18T24:00:00Z"')
    err = error_of(xml)
    assert err.status == 422
    assert err.diagnostics.startswith(f"line {line_of(xml, '<HealthAssessmentForm')}:")
    assert "not a possible date and time" in err.diagnostics


def test_nhs_number_with_a_bad_check_digit():
    xml = edit("iha-c", 'nhsNumber="9990000042"', 'nhsNumber="9990000043"')
    err = error_of(xml)
    assert err.status == 422
    assert err.diagnostics.startswith(f"line {line_of(xml, '<Child ')}:")
    assert "9990000043" in err.diagnostics and "modulus 11" in err.diagnostics


def test_wrong_unit():
    xml = edit("iha-c", 'value="2.61" unit="kg"', 'value="2610" unit="g"')
    err = error_of(xml)
    assert err.status == 422 and err.diagnostics.startswith(f"line {line_of(xml, 'value=' + chr(34) + '2610')}:")


def test_field_written_with_the_wrong_type():
    xml = edit("iha-c", '<Integer name="gestationWeeks">37</Integer>', '<Text name="gestationWeeks">37</Text>')
    err = error_of(xml)
    assert err.status == 422 and err.diagnostics.startswith(f"line {line_of(xml, 'gestationWeeks')}:")
    assert "Integer" in err.diagnostics


def test_non_repeating_field_twice():
    xml = edit("iha-c", '<Text name="ethnicity">White British</Text>',
               '<Text name="ethnicity">White British</Text><Text name="ethnicity">Other</Text>')
    err = error_of(xml)
    assert err.status == 422 and "does not repeat" in err.diagnostics


def test_several_errors_are_reported_together():
    xml = edit("iha-c", 'nhsNumber="9990000042"', 'nhsNumber="9990000043"')
    xml = xml.replace(b'code="C1"', b'code="Z9"')
    err = error_of(xml)
    assert len(err.issues) == 2 and all(i.diagnostics.startswith("line ") for i in err.issues)


def test_unconsumed_elements_and_attributes_are_reported():
    xml = edit("iha-c", '<Text name="ethnicity">White British</Text>',
               '<Text name="ethnicity">White British</Text>\n      <Text name="favouriteColour">Blue</Text>')
    xml = xml.replace(b'<Part id="B">', b'<Part id="B">\n    <Group name="pets"><Text name="dog">Rex</Text></Group>')
    xml = xml.replace(b'<HealthAssessmentForm ', b'<HealthAssessmentForm xmlns:v="urn:vendor" v:exportedBy="EMIS-x" ')
    xml = xml.replace(b"<Child ", b'<v:Audit>exported twice</v:Audit>\n  <Child ', 0)
    xml = xml.replace(b'<Text name="school">', b'<Text v:source="import" name="school">')
    xml = xml.replace(b"</Name>", b"</Name><v:Alias>Alf</v:Alias>")
    doc = map_form(xml)
    assert doc.unconsumed == [
        f"line {line_of(xml, 'v:exportedBy')}: /HealthAssessmentForm/@v:exportedBy",
        f"line {line_of(xml, '<v:Alias>')}: /HealthAssessmentForm/Child/v:Alias",
        f"line {line_of(xml, 'favouriteColour')}: /HealthAssessmentForm/Part[@id='A']/Group[@name='child']"
        f"/Text[@name='favouriteColour']",
        f"line {line_of(xml, 'v:source')}: /HealthAssessmentForm/Part[@id='A']/Group[@name='child']"
        f"/Text[@name='school']/@v:source",
        f"line {line_of(xml, 'pets')}: /HealthAssessmentForm/Part[@id='B']/Group[@name='pets']",
    ]
    # what was mapped is unchanged
    assert doc.bundle == map_form(example("iha-c")).bundle


# --------------------------------------------------------------------------- outbound errors

def test_outbound_unknown_questionnaire():
    qr = expected_response("iha-c", example("iha-c"))
    qr["questionnaire"] = qr["questionnaire"].replace("|1.0.0", "|2.0.0")
    with pytest.raises(FhirError) as caught:
        form_xml(qr)
    assert caught.value.status == 422 and "no form mapping" in caught.value.diagnostics


def test_outbound_item_not_in_the_form():
    qr = expected_response("iha-c", example("iha-c"))
    qr["item"][1]["item"].append({"linkId": "partA.pets", "answer": [{"valueString": "dog"}]})
    with pytest.raises(FhirError) as caught:
        form_xml(qr)
    assert caught.value.status == 422
    assert "QuestionnaireResponse.item[1].item[" in caught.value.diagnostics
    assert "partA.pets" in caught.value.diagnostics


def test_outbound_without_identifier_uses_the_id():
    qr = expected_response("cr-c", example("cr-c"))
    del qr["identifier"]
    qr["id"] = "abc-1"
    root = etree.fromstring(form_xml(qr))
    assert root.get("documentId") == "QuestionnaireResponse/abc-1"


def test_new_form_version_is_a_new_file(tmp_path, monkeypatch):
    """A mapping definition for another form version needs no code change."""
    from adapter.mapping import forms

    for path in (ROOT / "mappings" / "forms").glob("*.json"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    definition = json.loads((tmp_path / "iha-c-1.0.0.json").read_text())
    definition["formVersion"] = "1.1.0"
    definition["questionnaire"] = definition["questionnaire"].replace("|1.0.0", "|1.1.0")
    (tmp_path / "iha-c-1.1.0.json").write_text(json.dumps(definition))
    monkeypatch.setattr(forms, "MAPPINGS_DIR", tmp_path)
    forms.mappings.cache_clear()
    try:
        doc = map_form(edit("iha-c", 'formVersion="1.0.0"', 'formVersion="1.1.0"'))
        assert doc.bundle["entry"][0]["resource"]["questionnaire"].endswith("iha-c|1.1.0")
        assert doc.mapping.endswith("iha-c-1.1.0.json")
        assert b'formVersion="1.1.0"' in form_xml(doc.bundle["entry"][0]["resource"])
    finally:
        monkeypatch.undo()
        forms.mappings.cache_clear()


def test_schema_is_ours():
    root = etree.parse(str(XSD)).getroot()
    assert root.get("targetNamespace") == NS
