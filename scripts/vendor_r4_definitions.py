"""Regenerate the FHIR R4 definitions vendored under profiles/r4/.

Source: HL7's npm package hl7.fhir.r4.examples@4.0.1, which carries the R4 (4.0.1)
specification's core StructureDefinitions (with snapshots) and SearchParameters
beside the examples. We keep two derived files:

- elements.json: per type (every resource and data type), each element path
  with its types, whether it repeats, whether it is in the summary, and the
  contentReference it reuses. The XML codec and _summary use it.
- patient-compartment.json: the Patient CompartmentDefinition, resource types with params.
- search-parameters.json: a FHIR Bundle of the specification's SearchParameters
  whose base is a resource type we serve, trimmed to the fields search needs.

Usage: python scripts/vendor_r4_definitions.py PATH/TO/package
(get it with `npm pack hl7.fhir.r4.examples@4.0.1` and untar it; the tests keep an
unpacked copy in .cache/r4-examples/package).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "profiles" / "r4"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
SP_KEEP = ("resourceType", "id", "url", "version", "name", "status", "description", "code",
           "base", "type", "expression", "target", "multipleOr", "multipleAnd", "comparator",
           "modifier", "chain", "component")


def element_types(el: dict) -> list[str]:
    out = []
    for t in el.get("type") or []:
        code = t["code"]
        for ext in t.get("extension", []):
            if ext["url"] == FHIR_TYPE_EXT:
                code = ext.get("valueUrl") or ext.get("valueUri") or code
        if code.startswith("http://hl7.org/fhirpath/System."):
            code = {"String": "string", "Boolean": "boolean", "Integer": "integer",
                    "Decimal": "decimal", "Date": "date", "DateTime": "dateTime",
                    "Time": "time"}[code.rsplit(".", 1)[1]]
        out.append(code)
    return out


def index_structure(sd: dict) -> dict:
    elements = {}
    root = sd["type"]
    for el in sd["snapshot"]["element"][1:]:
        rel = el["path"][len(root) + 1:]
        entry: dict = {"t": element_types(el)}
        if el.get("max") != "1" and el.get("max") != "0":
            entry["m"] = 1
        if el.get("isSummary"):
            entry["s"] = 1
        if el.get("min", 0) > 0:
            entry["r"] = 1
        if el.get("contentReference"):
            entry["c"] = el["contentReference"].split(".", 1)[1]
        if el.get("representation"):
            entry["x"] = el["representation"]
        elements[rel] = entry
    return elements


def _core_structure_definitions(src: Path) -> list[dict]:
    out = []
    for path in sorted(src.glob("StructureDefinition-*.json")):
        sd = json.loads(path.read_text())
        if sd.get("derivation") == "constraint" or sd.get("kind") == "logical":
            continue
        if not sd.get("url", "").startswith("http://hl7.org/fhir/StructureDefinition/"):
            continue
        out.append(sd)
    return out


EXAMPLE_ONLY = {"example", "example-reference", "example-extension", "filter"}


def _core_search_parameters(src: Path, resources: set[str]) -> list[dict]:
    out = []
    for path in sorted(src.glob("SearchParameter-*.json")):
        sp = json.loads(path.read_text())
        sid = sp.get("id", "")
        if "-extensions-" in sid or "-genetic-" in sid or sid in EXAMPLE_ONLY or not sp.get("base"):
            continue  # extension-, profile- and example-defined parameters are not the core set
        if not sp.get("url", "").startswith("http://hl7.org/fhir/SearchParameter/"):
            continue
        if set(sp["base"]) & (resources | {"Resource", "DomainResource"}):
            out.append(sp)
    return out


def main(src: Path) -> None:
    index: dict = {}
    kinds: dict = {}
    for sd in _core_structure_definitions(src):
        index[sd["type"]] = index_structure(sd)
        kinds[sd["type"]] = sd["kind"]
    (OUT / "elements.json").write_text(json.dumps(
        {"source": "hl7.fhir.r4.examples@4.0.1 core StructureDefinitions (FHIR 4.0.1)",
         "kinds": kinds, "types": index}, separators=(",", ":")))

    resources = {t for t, k in kinds.items() if k == "resource"}
    kept = [{"fullUrl": sp["url"], "resource": {k: sp[k] for k in SP_KEEP if k in sp}}
            for sp in _core_search_parameters(src, resources)]
    (OUT / "search-parameters.json").write_text(json.dumps(
        {"resourceType": "Bundle", "id": "r4-search-parameters", "type": "collection",
         "entry": kept}, separators=(",", ":")))

    # The Patient compartment: which search parameters tie each resource type to a child
    # (organisation scoping, adapter/security/access.py).
    compartment = json.loads((src / "CompartmentDefinition-patient.json").read_text())
    (OUT / "patient-compartment.json").write_text(json.dumps(
        {"resourceType": "CompartmentDefinition", "url": compartment["url"],
         "version": compartment.get("version"), "name": compartment["name"],
         "status": compartment["status"], "code": compartment["code"], "search": compartment["search"],
         "resource": [{"code": r["code"], "param": r["param"]}
                      for r in compartment["resource"] if r.get("param")]}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
