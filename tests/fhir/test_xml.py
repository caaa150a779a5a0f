"""FHIR XML codec: every official R4 example round-trips, hand-written XML parses to the
JSON the spec prescribes, and hostile or broken XML is a precise 400."""

from __future__ import annotations

import shutil
from decimal import Decimal
from typing import Any

import pytest
from lxml import etree

from adapter.fhir import jsonio
from adapter.fhir import xml as fhir_xml
from adapter.fhir.errors import FhirError
from tests.support.r4_examples import examples_dir

FHIR = 'xmlns="http://hl7.org/fhir"'
XHTML = "http://www.w3.org/1999/xhtml"

# Official examples that cannot round-trip because they are invalid against the R4
# definitions, with the reason for each. Currently none.
KNOWN_INVALID: dict[str, str] = {}


def xml(body: str) -> bytes:
    return body.strip().encode("utf-8")


def differences(expected: Any, actual: Any, path: str = "") -> str | None:
    """First difference, comparing strictly: booleans are not numbers, a number must keep
    its exact text (2.00 is not 2.0), and Narrative divs must be the same XML (C14N)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if expected.keys() != actual.keys():
            return f"{path or '/'}: keys {sorted(expected.keys() ^ actual.keys())} differ"
        for key, value in expected.items():
            if key == "div" and isinstance(value, str) and isinstance(actual[key], str):
                if etree.canonicalize(value) != etree.canonicalize(actual[key]):
                    return f"{path}.div: {value[:60]!r} != {actual[key][:60]!r}"
                continue
            found = differences(value, actual[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{path}: {len(expected)} items != {len(actual)}"
        for i, (a, b) in enumerate(zip(expected, actual)):
            found = differences(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    numbers = (int, Decimal)
    if (isinstance(expected, numbers) and not isinstance(expected, bool)
            and isinstance(actual, numbers) and not isinstance(actual, bool)):
        return None if str(expected) == str(actual) else f"{path}: {expected} != {actual}"
    if type(expected) is not type(actual) or expected != actual:
        return f"{path}: {expected!r:.60} != {actual!r:.60}"
    return None


# --------------------------------------------------------------------------- official examples

@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is needed to fetch the FHIR R4 examples")
def test_every_official_r4_example_round_trips():
    folder = examples_dir()
    failures: list[str] = []
    checked = 0
    for path in sorted(folder.glob("*.json")):
        if path.name in ("package.json", ".index.json"):
            continue
        resource = jsonio.loads(path.read_bytes())
        if not isinstance(resource, dict) or "resourceType" not in resource:
            continue
        if path.name in KNOWN_INVALID:
            continue
        checked += 1
        try:
            back = fhir_xml.parse_resource(fhir_xml.serialize_resource(resource))
        except FhirError as exc:
            failures.append(f"{path.name}: {exc.diagnostics}")
            continue
        found = differences(resource, back)
        if found:
            failures.append(f"{path.name}: {found}")
    assert checked > 5000, f"only {checked} examples found in {folder}"
    assert not failures, f"{len(failures)} of {checked} examples fail:\n" + "\n".join(failures[:20])


# --------------------------------------------------------------------------- parsing

def test_repeated_primitive_with_extension_only_item_keeps_alignment():
    resource = fhir_xml.parse_resource(xml(f"""
<Patient {FHIR}>
  <name>
    <given value="Peter"/>
    <given>
      <extension url="http://example.org/nickname">
        <valueString value="Pete"/>
      </extension>
    </given>
    <given id="g3" value="James"/>
  </name>
</Patient>"""))
    assert resource == {
        "resourceType": "Patient",
        "name": [{
            "given": ["Peter", None, "James"],
            "_given": [None,
                       {"extension": [{"url": "http://example.org/nickname", "valueString": "Pete"}]},
                       {"id": "g3"}],
        }],
    }


def test_primitive_types_and_decimal_text_are_kept():
    body = xml(f"""
<Observation {FHIR}>
  <status value="final"/>
  <code><text value="Weight"/></code>
  <valueQuantity>
    <value value="2.00"/>
    <unit value="kg"/>
  </valueQuantity>
  <referenceRange><low><value value="1e-3"/></low></referenceRange>
</Observation>""")
    resource = fhir_xml.parse_resource(body)
    value = resource["valueQuantity"]["value"]
    assert isinstance(value, Decimal) and str(value) == "2.00"
    assert jsonio.dumps(resource["valueQuantity"]) == b'{"value":2.00,"unit":"kg"}'
    assert str(resource["referenceRange"][0]["low"]["value"]) == "1e-3"  # lexical form kept
    assert b'<value value="2.00"/>' in fhir_xml.serialize_resource(resource)

    patient = fhir_xml.parse_resource(xml(f"""
<Patient {FHIR}><active value="false"/><multipleBirthInteger value="-2"/></Patient>"""))
    assert patient["active"] is False
    assert patient["multipleBirthInteger"] == -2 and type(patient["multipleBirthInteger"]) is int


def test_questionnaire_nested_items_use_the_content_reference():
    resource = fhir_xml.parse_resource(xml(f"""
<Questionnaire {FHIR}>
  <status value="active"/>
  <item>
    <linkId value="1"/>
    <type value="group"/>
    <item>
      <linkId value="1.1"/>
      <type value="boolean"/>
      <item>
        <linkId value="1.1.1"/>
        <type value="string"/>
        <enableWhen>
          <question value="1.1"/>
          <operator value="="/>
          <answerBoolean value="true"/>
        </enableWhen>
        <repeats value="true"/>
      </item>
    </item>
  </item>
</Questionnaire>"""))
    inner = resource["item"][0]["item"][0]["item"][0]
    assert inner == {
        "linkId": "1.1.1", "type": "string", "repeats": True,
        "enableWhen": [{"question": "1.1", "operator": "=", "answerBoolean": True}],
    }


def test_bundle_and_contained_resources():
    resource = fhir_xml.parse_resource(xml(f"""
<Bundle {FHIR}>
  <type value="collection"/>
  <entry>
    <fullUrl value="urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"/>
    <resource>
      <Patient>
        <id value="p1"/>
        <contained>
          <Organization><id value="org"/><name value="Acme"/></Organization>
        </contained>
        <managingOrganization><reference value="#org"/></managingOrganization>
      </Patient>
    </resource>
  </entry>
</Bundle>"""))
    assert resource == {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{
            "fullUrl": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",
            "resource": {
                "resourceType": "Patient", "id": "p1",
                "contained": [{"resourceType": "Organization", "id": "org", "name": "Acme"}],
                "managingOrganization": {"reference": "#org"},
            },
        }],
    }


def test_narrative_div_becomes_a_string_with_only_its_own_namespace():
    resource = fhir_xml.parse_resource(xml(f"""
<Patient {FHIR} xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <text>
    <status value="generated"/>
    <div xmlns="{XHTML}"><p>Hello <b>world</b> &amp; &lt;friends&gt;</p></div>
  </text>
</Patient>"""))
    assert resource["text"] == {
        "status": "generated",
        "div": f'<div xmlns="{XHTML}"><p>Hello <b>world</b> &amp; &lt;friends&gt;</p></div>',
    }
    out = fhir_xml.serialize_resource(resource)
    assert f'<div xmlns="{XHTML}"><p>Hello <b>world</b>'.encode() in out
    assert fhir_xml.parse_resource(out) == resource


def test_element_order_is_tolerated_on_input_and_definition_order_on_output():
    resource = fhir_xml.parse_resource(xml(f"""
<Patient {FHIR}><gender value="female"/><active value="true"/><id value="a"/></Patient>"""))
    assert resource == {"resourceType": "Patient", "gender": "female", "active": True, "id": "a"}
    assert fhir_xml.serialize_resource(resource) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<Patient xmlns="http://hl7.org/fhir"><id value="a"/><active value="true"/>'
        b'<gender value="female"/></Patient>')


def test_serialize_writes_attributes_and_primitive_extensions():
    resource = {
        "resourceType": "Patient",
        "birthDate": "2014-05-06",
        "_birthDate": {"id": "bd", "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
             "valueDateTime": "2014-05-06T10:00:00Z"}]},
        "name": [{"id": "n1", "family": "Testchild"}],
    }
    assert fhir_xml.serialize_resource(resource) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<Patient xmlns="http://hl7.org/fhir"><name id="n1"><family value="Testchild"/></name>'
        b'<birthDate id="bd" value="2014-05-06">'
        b'<extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime">'
        b'<valueDateTime value="2014-05-06T10:00:00Z"/></extension></birthDate></Patient>')
    assert fhir_xml.parse_resource(fhir_xml.serialize_resource(resource)) == resource


def test_pretty_output_indents_fhir_elements_but_not_the_narrative():
    div = f'<div xmlns="{XHTML}"><p>a</p><p>b</p></div>'
    resource = {"resourceType": "Patient", "text": {"status": "generated", "div": div},
                "name": [{"given": ["A", "B"]}]}
    out = fhir_xml.serialize_resource(resource, pretty=True)
    assert b'\n  <name>\n    <given value="A"/>\n' in out
    assert div.encode() in out
    assert fhir_xml.parse_resource(out) == resource


# --------------------------------------------------------------------------- rejected input

def rejected(body: bytes) -> FhirError:
    with pytest.raises(FhirError) as info:
        fhir_xml.parse_resource(body)
    assert info.value.status == 400
    return info.value


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Patient xmlns="http://hl7.org/fhir"><name><family value="&lol4;"/></name></Patient>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Patient xmlns="http://hl7.org/fhir"><name><family value="&xxe;"/></name></Patient>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY, b"<!doctype Patient><Patient/>"],
                         ids=["billion-laughs", "external-entity", "lowercase-doctype"])
def test_dtds_are_rejected_before_parsing(body):
    error = rejected(body)
    assert error.diagnostics == "DTDs are not allowed in FHIR XML (found a DOCTYPE or ENTITY declaration)"


EXTERNAL_ENTITY_IN_TEXT = f"""<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Patient {FHIR}><text><status value="generated"/><div xmlns="{XHTML}">&xxe;</div></text></Patient>""".encode()


@pytest.mark.parametrize("body, diagnostics", [
    (BILLION_LAUGHS, "DTDs are not allowed in FHIR XML"),
    (EXTERNAL_ENTITY, "line 3, column 64: malformed XML: Attribute references external entity 'xxe'"),
    (EXTERNAL_ENTITY_IN_TEXT, "DTDs are not allowed in FHIR XML"),
], ids=["billion-laughs", "external-entity", "external-entity-in-text"])
def test_dtds_are_rejected_by_the_parser_too(body, diagnostics, monkeypatch):
    """Defence in depth: without the byte scan, the parser expands and fetches nothing,
    and a document that still has a DTD is refused."""
    monkeypatch.setattr(fhir_xml, "_reject_dtd", lambda data: None)
    assert rejected(body).diagnostics == diagnostics


@pytest.mark.parametrize("body, diagnostics, expression", [
    (b'<Patient xmlns="http://hl7.org/fhir">\n  <id value="a"/>\n  <name>\n</Patient>',
     "line 4, column 11: malformed XML: Opening and ending tag mismatch: name line 3 and Patient", []),
    (b"", "line 1, column 1: malformed XML: Document is empty", []),
    (b'<Patient xmlns="http://hl7.org/STU3"/>',
     "line 1: element 'Patient' is in namespace 'http://hl7.org/STU3', expected a resource in "
     "namespace 'http://hl7.org/fhir'", ["Patient"]),
    (b"<Patient/>",
     "line 1: element 'Patient' is in no namespace, expected a resource in namespace "
     "'http://hl7.org/fhir'", ["Patient"]),
    (b'<Child xmlns="http://hl7.org/fhir"/>', "line 1: unknown resource type 'Child'", ["Child"]),
    (b'<Resource xmlns="http://hl7.org/fhir"/>', "line 1: unknown resource type 'Resource'", ["Resource"]),
    (b'<Patient xmlns="http://hl7.org/fhir">\n  <name>\n    <given value="A"/>\n    <foo value="x"/>\n'
     b"  </name>\n</Patient>",
     "line 4: unknown element 'foo' in Patient.name[0]", ["Patient.name[0].foo"]),
    (b'<Patient xmlns="http://hl7.org/fhir">\n  <active value="yes"/>\n</Patient>',
     "line 2: invalid boolean value 'yes' for Patient.active: expected 'true' or 'false'",
     ["Patient.active"]),
    (b'<Patient xmlns="http://hl7.org/fhir"><multipleBirthInteger value="1.5"/></Patient>',
     "line 1: invalid integer value '1.5' for Patient.multipleBirthInteger: expected an integer "
     "between -2147483648 and 2147483647", ["Patient.multipleBirthInteger"]),
    (b'<Patient xmlns="http://hl7.org/fhir"><multipleBirthInteger value="2147483648"/></Patient>',
     "line 1: invalid integer value '2147483648' for Patient.multipleBirthInteger: expected an "
     "integer between -2147483648 and 2147483647", ["Patient.multipleBirthInteger"]),
    (b'<Observation xmlns="http://hl7.org/fhir"><status value="final"/>\n'
     b'<valueQuantity><value value="1,5"/></valueQuantity></Observation>',
     "line 2: invalid decimal value '1,5' for Observation.valueQuantity.value: expected a decimal "
     "number such as 2.00, -1 or 1.5e3", ["Observation.valueQuantity.value"]),
    (b'<Patient xmlns="http://hl7.org/fhir">\n<name><given/></name></Patient>',
     "line 2: Patient.name[0].given[0] has no value attribute and no extensions",
     ["Patient.name[0].given[0]"]),
    (b'<Patient xmlns="http://hl7.org/fhir"><gender value=""/></Patient>',
     "line 1: empty value attribute on Patient.gender (omit the element instead)", ["Patient.gender"]),
    (b'<Patient xmlns="http://hl7.org/fhir">\n<name>Peter<given value="A"/></name></Patient>',
     "line 2: text content 'Peter' is not allowed in Patient.name[0] (FHIR values go in value "
     "attributes)", ["Patient.name[0]"]),
    (b'<Patient xmlns="http://hl7.org/fhir"><gender value="male"/>\n<gender value="female"/></Patient>',
     "line 2: element 'gender' appears more than once in Patient but does not repeat",
     ["Patient.gender"]),
    (b'<Patient xmlns="http://hl7.org/fhir"><deceasedBoolean value="true"/>'
     b'<deceasedDateTime value="2020"/></Patient>',
     "line 1: element 'deceasedDateTime' conflicts with 'deceasedBoolean' in Patient: deceased[x] "
     "has only one value", ["Patient.deceasedDateTime"]),
    (b'<Patient xmlns="http://hl7.org/fhir" id="x"/>',
     "line 1: unknown attribute 'id' on Patient", ["Patient"]),
    (b'<Patient xmlns="http://hl7.org/fhir"><text><status value="generated"/>\n<div>x</div></text>'
     b"</Patient>",
     "line 2: unknown element 'div' in Patient.text (Narrative.div must be in namespace "
     "'http://www.w3.org/1999/xhtml')", ["Patient.text.div"]),
    (b'<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/><entry><resource>\n'
     b'<Patient><name><foo/></name></Patient></resource></entry></Bundle>',
     "line 2: unknown element 'foo' in Bundle.entry[0].resource.name[0]",
     ["Bundle.entry[0].resource.name[0].foo"]),
    (b'<Patient xmlns="http://hl7.org/fhir"><contained><Patient/><Patient/></contained></Patient>',
     "line 1: Patient.contained[0] must contain exactly one resource, found 2 elements",
     ["Patient.contained[0]"]),
    (b'<?xml version="1.0" encoding="ISO-8859-1"?><Patient xmlns="http://hl7.org/fhir"/>',
     "FHIR XML must be UTF-8 encoded (the XML declaration says ISO-8859-1)", []),
    ('<Patient xmlns="http://hl7.org/fhir"/>'.encode("utf-16"),
     "FHIR XML must be UTF-8 encoded (invalid UTF-8 at byte 0)", []),
], ids=["malformed", "empty", "wrong-namespace", "no-namespace", "unknown-resource", "abstract-resource",
        "unknown-element", "bad-boolean", "bad-integer", "integer-overflow", "bad-decimal",
        "no-value", "empty-value", "text-content", "duplicate", "choice-conflict", "unknown-attribute",
        "div-namespace", "nested-path", "contained-two", "latin1", "utf16"])
def test_bad_xml_is_a_precise_400(body, diagnostics, expression):
    error = rejected(body)
    assert error.diagnostics == diagnostics
    assert error.issues[0].code == "structure"
    assert error.issues[0].expression == expression


# --------------------------------------------------------------------------- rejected JSON

@pytest.mark.parametrize("resource, diagnostics", [
    ({"resourceType": "Patient", "nickname": "Al"}, "unknown property 'nickname' at Patient.nickname"),
    ({"resourceType": "Patient", "name": [{"family": "A", "suffixes": ["x"]}]},
     "unknown property 'suffixes' at Patient.name[0].suffixes"),
    ({"resourceType": "Patient", "active": "true"},
     "invalid boolean value 'true': expected a JSON boolean at Patient.active"),
    ({"resourceType": "Patient", "name": {"family": "A"}}, "'name' must be a non-empty array at Patient.name"),
    ({"resourceType": "Patient", "name": [{"given": ["A"], "_given": [None, None]}]},
     "'_given' must have as many items as 'given' at Patient.name[0]._given"),
    ({"resourceType": "Patient", "deceasedBoolean": True, "deceasedDateTime": "2020"},
     "'deceasedDateTime' and 'deceasedBoolean' both given for deceased[x] at Patient.deceasedDateTime"),
    ({"resourceType": "Patient", "text": {"status": "generated", "div": "<div>x</div>"}},
     f'Narrative div must be a <div xmlns="{XHTML}"> element, found <div> in no namespace at Patient.text.div'),
    ({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Nope"}}]},
     "unknown resource type 'Nope' at Bundle.entry[0].resource"),
    ({"resourceType": "Patient", "name": [{"family": "a\x01b"}]},
     "value contains characters that XML cannot carry at Patient.name[0].family"),
])
def test_bad_json_is_a_400_naming_the_path(resource, diagnostics):
    with pytest.raises(FhirError) as info:
        fhir_xml.serialize_resource(resource)
    assert info.value.status == 400
    assert info.value.diagnostics == diagnostics


def test_narrative_div_with_a_dtd_is_rejected_when_writing():
    div = f'<!DOCTYPE div [<!ENTITY x SYSTEM "file:///etc/passwd">]><div xmlns="{XHTML}">&x;</div>'
    with pytest.raises(FhirError) as info:
        fhir_xml.serialize_resource({"resourceType": "Patient", "text": {"status": "generated", "div": div}})
    assert "DTDs are not allowed" in info.value.diagnostics
