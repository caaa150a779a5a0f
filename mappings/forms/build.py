"""Generate the form mapping definitions and the documented examples.

    /tmp/venv/bin/python mappings/forms/build.py            # mappings/forms/<form>-<version>.json
    /tmp/venv/bin/python mappings/forms/build.py --examples # also examples/ and fixtures/forms-xml/

The mapping definitions are derived from the Questionnaires in profiles/questionnaires/ by
fixed naming rules (see README.md). The JSON files are what the adapter reads; this script
only saves typing them. A hand-written definition for a new form version is just as good,
as long as tests/mapping/test_forms.py still finds it consistent with its Questionnaire.
The examples are the worked examples in fixtures/forms/ written out by the adapter itself
(`adapter.mapping.forms.form_xml`), so they carry exactly the same answers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
Q_DIR = ROOT / "profiles" / "questionnaires"
FIXTURES = ROOT / "fixtures" / "forms"
UNIT = "http://hl7.org/fhir/StructureDefinition/questionnaire-unit"
NHS = "https://fhir.nhs.uk/Id/nhs-number"

DOCUMENT_TYPES = {
    "lac-consent": "LAC consent form (XML)",
    "iha-c": "IHA-C health assessment form (XML)",
    "iha-yp": "IHA-YP health assessment form (XML)",
    "rha-c": "RHA-C health assessment form (XML)",
    "rha-yp": "RHA-YP health assessment form (XML)",
    "cr-c": "CR-C carer's report (XML)",
    "cr-yp": "CR-YP carer's report (XML)",
}

# The header every form has: the <Child> element.
HEADER = {
    "header": "Child",
    "header.name": "Name",
    "header.nhsNumber": "@nhsNumber",
    "header.birthDate": "@dateOfBirth",
}

ELEMENT = {"valueString": "Text", "valueUri": "Text", "valueDate": "Date", "valueDateTime": "DateTime",
           "valueTime": "Time", "valueBoolean": "Boolean", "valueInteger": "Integer", "valueDecimal": "Decimal",
           "valueQuantity": "Quantity", "valueCoding": "Coded"}
SIMPLE = {"string": "valueString", "text": "valueString", "url": "valueUri", "date": "valueDate",
          "dateTime": "valueDateTime", "time": "valueTime", "boolean": "valueBoolean", "integer": "valueInteger",
          "decimal": "valueDecimal", "quantity": "valueQuantity"}


def answer_type(item: dict) -> str:
    kind = item["type"]
    if kind in SIMPLE:
        return SIMPLE[kind]
    if kind in ("choice", "open-choice"):
        if "answerValueSet" in item:
            return "valueCoding"
        kinds = {key for option in item.get("answerOption", []) for key in option if key.startswith("value")}
        if len(kinds) == 1:
            return kinds.pop()
        raise SystemExit(f"{item['linkId']}: cannot tell the answer type of this {kind} item")
    raise SystemExit(f"{item['linkId']}: item type {kind} has no XML field type")


def entry(item: dict, parent: str | None, top: bool) -> dict | None:
    link = item["linkId"]
    if item["type"] == "display":
        return None
    name = link[len(parent) + 1:] if parent and link.startswith(parent + ".") else link
    out: dict = {}
    if link in HEADER:
        out["path"] = HEADER[link]
    elif item["type"] == "group":
        if top and len(link) == 5 and link.startswith("part") and link[4].isupper():
            out["path"] = f"Part[@id='{link[4]}']"
        elif top:
            out["path"] = f"Section[@name='{name}']"
        else:
            out["path"] = f"Group[@name='{name}']"
    else:
        out["path"] = f"{ELEMENT[answer_type(item)]}[@name='{name}']"
    out["linkId"] = link
    out["type"] = item["type"]
    out["text"] = item.get("text")
    if item.get("repeats"):
        out["repeats"] = True
    if item["type"] == "group":
        out["items"] = [e for e in (entry(child, link, False) for child in item.get("item", [])) if e]
        return out
    out["answer"] = answer_type(item)
    if link == "header.nhsNumber":
        out["check"] = "nhs-number"
    if "answerValueSet" in item:
        out["answerValueSet"] = item["answerValueSet"]
    if "answerOption" in item:
        out["answerOption"] = [{k: v for k, v in o.items() if k.startswith("value")} for o in item["answerOption"]]
    for ext in item.get("extension", []):
        if ext["url"] == UNIT:
            out["unit"] = ext["valueCoding"]
    return out


def mapping(questionnaire: dict) -> dict:
    form = questionnaire["id"]
    return {
        "form": form,
        "formVersion": questionnaire["version"],
        "questionnaire": f"{questionnaire['url']}|{questionnaire['version']}",
        "documentType": DOCUMENT_TYPES.get(form, f"{form} form (XML)"),
        "subject": {"path": "Child/@nhsNumber", "system": NHS},
        "items": [e for e in (entry(item, None, True) for item in questionnaire["item"]) if e],
    }


def write_mappings() -> list[str]:
    written = []
    for path in sorted(Q_DIR.glob("Questionnaire-*.json")):
        q = json.loads(path.read_text(encoding="utf-8"))
        m = mapping(q)
        target = HERE / f"{m['form']}-{m['formVersion']}.json"
        target.write_text(json.dumps(m, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(m["form"])
    return written


def document_id(form: str) -> str:
    return f"EXAMPLE-{form.upper()}-2026-0001"


def example_response(form: str) -> dict:
    """The worked example as the adapter would hold it after importing the example XML."""
    sys.path.insert(0, str(ROOT))
    from adapter.fhir.jsonio import loads
    from adapter.mapping.forms import FORM_DOCUMENT_SYSTEM, NHS_NUMBER_SYSTEM

    qr = loads((FIXTURES / f"{form}-completed.json").read_bytes())
    nhs = next(i["answer"][0]["valueString"] for i in qr["item"][0]["item"] if i["linkId"] == "header.nhsNumber")
    qr.pop("id", None)
    qr["identifier"] = {"system": FORM_DOCUMENT_SYSTEM, "value": document_id(form)}
    qr["subject"] = {"reference": f"Patient?identifier={NHS_NUMBER_SYSTEM}|{nhs}"}
    return qr


def write_examples(forms: list[str]) -> None:
    from adapter.mapping.forms import form_xml

    (HERE / "examples").mkdir(exist_ok=True)
    (ROOT / "fixtures" / "forms-xml").mkdir(exist_ok=True)
    for form in forms:
        xml = form_xml(example_response(form), annotate=True)
        note = (f"<!-- Example {form} form document (health-assessment-form 1.0): a synthetic child with the same\n"
                f"     answers as fixtures/forms/{form}-completed.json. Generated by mappings/forms/build.py;\n"
                f"     see mappings/forms/README.md. -->\n").encode()
        xml = xml.replace(b"?>\n", b"?>\n" + note, 1)
        (HERE / "examples" / f"{form}.xml").write_bytes(xml)
        (ROOT / "fixtures" / "forms-xml" / f"{form}.xml").write_bytes(xml)


if __name__ == "__main__":
    forms = write_mappings()
    if "--examples" in sys.argv[1:]:
        write_examples(forms)
    print("wrote", ", ".join(forms))
