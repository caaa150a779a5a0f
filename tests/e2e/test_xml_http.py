"""FHIR XML on the wire: write XML, read XML, and refuse hostile XML."""

from __future__ import annotations

from lxml import etree

XML = "application/fhir+xml"
NS = {"f": "http://hl7.org/fhir"}


def patient_xml(tag: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Patient xmlns="http://hl7.org/fhir">
  <meta><tag><system value="https://lac-fhir-adapter.example/test-run"/><code value="{tag}"/></tag></meta>
  <identifier><system value="https://fhir.nhs.uk/Id/nhs-number"/><value value="9990000026"/></identifier>
  <name><family value="Xmlson"/><given value="Rae"/></name>
  <gender value="female"/>
  <birthDate value="2012-08-09"/>
</Patient>""".encode()


def test_create_in_xml_read_in_json_and_xml(fhir, tag):
    r = fhir.http.post(fhir.url("Patient"), data=patient_xml(tag), headers={"Content-Type": XML, "Accept": XML})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith(XML)
    doc = etree.fromstring(r.content)
    pid = doc.find("f:id", NS).get("value")
    as_json = fhir.get(f"Patient/{pid}").json()
    assert as_json["name"][0]["given"] == ["Rae"]
    by_format = fhir.get(f"Patient/{pid}", params={"_format": "xml"})
    assert by_format.headers["Content-Type"].startswith(XML)
    assert etree.fromstring(by_format.content).find("f:birthDate", NS).get("value") == "2012-08-09"
    bundle = fhir.get("Patient", params={"_tag": tag}, headers={"Accept": XML})
    root = etree.fromstring(bundle.content)
    assert root.tag == "{http://hl7.org/fhir}Bundle"
    assert root.find("f:total", NS).get("value") == "1"


def test_errors_in_xml_when_xml_is_asked_for(fhir):
    r = fhir.get("Patient/nope", headers={"Accept": XML})
    assert r.status_code == 404
    assert etree.fromstring(r.content).tag == "{http://hl7.org/fhir}OperationOutcome"


def test_doctype_and_entities_are_refused(fhir):
    bomb = b"""<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>
<Patient xmlns="http://hl7.org/fhir"><gender value="&b;"/></Patient>"""
    r = fhir.http.post(fhir.url("Patient"), data=bomb, headers={"Content-Type": XML})
    assert r.status_code == 400
    assert "DTD" in r.json()["issue"][0]["diagnostics"]
    xxe = b"""<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Patient xmlns="http://hl7.org/fhir"><gender value="&x;"/></Patient>"""
    assert fhir.http.post(fhir.url("Patient"), data=xxe, headers={"Content-Type": XML}).status_code == 400


def test_unknown_xml_element_names_line(fhir):
    body = b"""<Patient xmlns="http://hl7.org/fhir">
  <gender value="female"/>
  <shoeSize value="5"/>
</Patient>"""
    r = fhir.http.post(fhir.url("Patient"), data=body, headers={"Content-Type": XML})
    assert r.status_code == 400
    diag = r.json()["issue"][0]["diagnostics"]
    assert "line 3" in diag and "shoeSize" in diag
