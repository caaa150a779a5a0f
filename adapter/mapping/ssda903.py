"""SSDA903, the DfE children looked after return, in and out of FHIR R4.

`map_903(files)` reads the CSV tables (Header, Episodes, OC2; Reviews and OC3 are
recognised and reported as unconsumed) or the 903 XML (`<EXPSSDA903>`) and returns a
MappedDocument whose transaction Bundle holds one lac-patient per child, one
lac-episode-of-care per episode and one Observation per OC2 item, all as conditional
updates on their identifiers. `export_903(resources, year)` writes header.csv,
episodes.csv and oc2.csv back from those resources.

The column rules (types, code systems, FHIR homes, identifier systems) are data in
mappings/ssda903/ssda903-2025-26.json; this module applies them. Every problem with the
input is a FhirError whose diagnostics name the file, the line and the column.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Iterable
from urllib.parse import quote

from ..config import PROJECT_ROOT
from ..fhir.errors import FhirError
from ..validation.terminology import Terminology, default_terminology
from .document import MappedDocument
from .xmldoc import parse_document

MAPPING = "mappings/ssda903/ssda903-2025-26.json"
MAPPING_PATH = PROJECT_ROOT / MAPPING
_UUID_NS = uuid.UUID("6f1d1d6e-9b5c-4e0b-8f3e-903903903903")
_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][0-9A-Z]?)(?:\s*([0-9][A-Z]{2}))?$")


@lru_cache(maxsize=1)
def load_mapping() -> dict:
    return json.loads(MAPPING_PATH.read_text(encoding="utf-8"))


def _error(where: str, message: str, status: int = 422, code: str = "invalid") -> FhirError:
    return FhirError(status, code, f"{where}: {message}")


# -- reading the tables ---------------------------------------------------------------

@dataclass
class Cell:
    value: str
    line: int


@dataclass
class Row:
    table: str
    file: str
    line: int
    cells: dict[str, Cell] = field(default_factory=dict)

    def get(self, column: str) -> str:
        cell = self.cells.get(column)
        return cell.value if cell else ""

    def where(self, column: str) -> str:
        cell = self.cells.get(column)
        return f"{self.file} line {cell.line if cell else self.line} column {column}"

    def loc(self, column: str) -> str:
        cell = self.cells.get(column)
        return f"{self.file}:{cell.line if cell else self.line}:{column}"


def _read_csv(name: str, data: bytes, mapping: dict) -> tuple[str, list[Row]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _error(f"{name} byte {exc.start}", "not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise _error(f"{name} line 1", f"malformed CSV: {exc}") from None
    if not header:
        raise _error(f"{name} line 1", "empty file: expected an SSDA903 column header row")
    table = None
    for tname, spec in mapping["tables"].items():
        if header == spec["columns"] or (sorted(header) == sorted(spec["columns"])
                                         and len(set(header)) == len(header)):
            table = tname
            break
    if table is None:
        raise _error(f"{name} line 1", "column header row matches no SSDA903 table "
                     f"(got {','.join(header)}; expected e.g. {','.join(mapping['tables']['Episodes']['columns'])})")
    rows = []
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise _error(f"{name} line {reader.line_num}", f"malformed CSV: {exc}") from None
        line = reader.line_num
        if not values or all(not v.strip() for v in values) and len(values) <= 1:
            continue  # blank line
        if len(values) != len(header):
            raise _error(f"{name} line {line}", f"expected {len(header)} columns ({table}), found {len(values)}")
        row = Row(table, name, line)
        for col, value in zip(header, values):
            row.cells[col] = Cell(value.strip(), line)
        rows.append(row)
    return table, rows


def _read_xml(name: str, data: bytes, mapping: dict, unconsumed: list[str]) -> dict[str, list[Row]]:
    try:
        root = parse_document(data)
    except FhirError as err:
        raise FhirError(err.status, err.issues[0].code, f"{name} {err.diagnostics}") from None
    spec = mapping["xml"]
    if root.tag != spec["root"]:
        raise _error(f"{name} line {root.sourceline}", f"root element is <{root.tag}>, expected <{spec['root']}>")
    aliases = spec["aliases"]
    tables = mapping["tables"]
    out: dict[str, list[Row]] = {"Header": [], "Episodes": [], "OC2": []}

    def leaves(parent, table: str, row: Row) -> None:
        allowed = tables[table]["columns"]
        for el in parent:
            if not isinstance(el.tag, str):
                continue
            tag = aliases.get(el.tag, el.tag)
            if len(el):
                continue  # nested groups are handled by the caller
            text = (el.text or "").strip()
            if tag in allowed:
                if tag in row.cells and tag != "CHILD":
                    raise _error(f"{name} line {el.sourceline} column {tag}", f"<{el.tag}> repeated")
                row.cells[tag] = Cell(text, el.sourceline or row.line)
            elif text:
                unconsumed.append(f"{name}:{el.sourceline}:{el.tag}")

    for child_el in root:
        if not isinstance(child_el.tag, str):
            continue
        if child_el.tag != spec["child"]:
            raise _error(f"{name} line {child_el.sourceline}", f"unexpected <{child_el.tag}> in <{spec['root']}>, "
                         f"expected <{spec['child']}>")
        header_el = child_el.find(spec["header"])
        if header_el is None:
            raise _error(f"{name} line {child_el.sourceline}", f"<{spec['child']}> has no <{spec['header']}>")
        header = Row("Header", name, header_el.sourceline)
        leaves(header_el, "Header", header)
        child_id = header.cells.get("CHILD")
        if child_id is None or not child_id.value:
            raise _error(f"{name} line {header_el.sourceline} column CHILD", "the child has no CHILDID")
        out["Header"].append(header)
        nested_groups = [(header_el, el) for el in header_el if isinstance(el.tag, str) and len(el)]
        for el in child_el:
            if not isinstance(el.tag, str) or el is header_el:
                continue
            if el.tag == spec["episode"]:
                episode = Row("Episodes", name, el.sourceline)
                episode.cells["CHILD"] = Cell(child_id.value, child_id.line)
                leaves(el, "Episodes", episode)
                for sub in el:
                    if isinstance(sub.tag, str) and len(sub):
                        _unconsumed_tree(name, sub, unconsumed)
                out["Episodes"].append(episode)
            elif len(el):
                nested_groups.append((child_el, el))
            elif (el.text or "").strip():
                unconsumed.append(f"{name}:{el.sourceline}:{el.tag}")
        for _, group in nested_groups:
            table = spec["nested"].get(group.tag)
            if table is None:
                _unconsumed_tree(name, group, unconsumed)
                continue
            row = Row(table, name, group.sourceline)
            row.cells["CHILD"] = Cell(child_id.value, child_id.line)
            if "DOB" in tables[table]["columns"] and "DOB" in header.cells:
                row.cells["DOB"] = header.cells["DOB"]
            leaves(group, table, row)
            out[table].append(row)
    return out


def _unconsumed_tree(name: str, element, unconsumed: list[str]) -> None:
    for el in element.iter():
        if isinstance(el.tag, str) and not len(el) and (el.text or "").strip():
            unconsumed.append(f"{name}:{el.sourceline}:{el.tag}")


# -- values -----------------------------------------------------------------------------

class _Codes:
    """Code membership in our CodeSystems (profiles/terminology)."""

    def __init__(self, terminology: Terminology):
        self.terminology = terminology
        self._cache: dict[str, dict[str, str | None]] = {}

    def concepts(self, system: str) -> dict[str, str | None]:
        if system not in self._cache:
            cs = self.terminology.code_system(system)
            if cs is None:
                raise FhirError(500, "exception", f"CodeSystem {system} named by {MAPPING} is not known")
            found: dict[str, str | None] = {}
            stack = list(cs.get("concept", []))
            while stack:
                c = stack.pop()
                found[c["code"]] = c.get("display")
                stack.extend(c.get("concept", []))
            self._cache[system] = found
        return self._cache[system]

    def coding(self, system: str, code: str) -> dict:
        out = {"system": system, "code": code}
        display = self.concepts(system).get(code)
        if display:
            out["display"] = display
        return out


def _parse_date(text: str, fmt: str) -> date:
    return datetime.strptime(text, fmt).date()


def _convert(row: Row, column: str, rule: dict, mapping: dict, codes: _Codes):
    """The cell's value checked and converted by its rule; None when blank."""
    value = row.get(column)
    if not value:
        if rule.get("required"):
            raise _error(row.where(column), "a value is required")
        return None
    kind = rule["type"]
    if kind == "date":
        fmt = mapping["dateFormat"]
        if not re.fullmatch(r"\d{2}/\d{2}/\d{4}", value):
            raise _error(row.where(column), f"'{value}' is not a date in the form dd/mm/YYYY")
        try:
            return _parse_date(value, fmt)
        except ValueError:
            raise _error(row.where(column), f"'{value}' is not a real date") from None
    if kind == "code":
        if value not in codes.concepts(rule["system"]):
            raise _error(row.where(column), f"code '{value}' is not in CodeSystem {rule['system']}", code="code-invalid")
        return value
    if kind == "enum":
        if value not in rule["values"]:
            raise _error(row.where(column), f"'{value}' is not one of {', '.join(rule['values'])}", code="code-invalid")
        return rule["values"][value]
    if kind == "flag":
        if value not in ("0", "1"):
            raise _error(row.where(column), f"'{value}' is not 0 or 1")
        return value == "1"
    if kind == "integer":
        if not re.fullmatch(r"\d+", value) or not rule.get("min", 0) <= int(value) <= rule.get("max", 10**9):
            raise _error(row.where(column), f"'{value}' is not a whole number from {rule.get('min')} to {rule.get('max')}")
        return int(value)
    if kind == "postcode":
        match = _POSTCODE.match(value.upper())
        if not match:
            raise _error(row.where(column), f"'{value}' is not a UK postcode or postcode district")
        return match
    return value  # id, text


# -- import -----------------------------------------------------------------------------

def _ref(system: str, value: str) -> str:
    return quote(f"{system}|{value}", safe=":/|")


def _urn(kind: str, system: str, value: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_UUID_NS, f'{kind}|{system}|{value}')}"


def _census_year(day: date) -> int:
    """The year of the first 31 March on or after `day` (the 903 collection's end)."""
    return day.year if (day.month, day.day) <= (3, 31) else day.year + 1


def map_903(files: dict[str, bytes], la_code: str | None = None, la_name: str | None = None,
            year: int | None = None, terminology: Terminology | None = None) -> MappedDocument:
    """Map one SSDA903 return (CSV tables, or one XML file) to a FHIR transaction Bundle.

    `la_code` identifies the responsible local authority (default from the mapping data);
    `year` is the collection year's end (OC2 observations are dated 31 March `year`);
    by default it is derived from the latest episode date in the files.
    """
    mapping = load_mapping()
    codes = _Codes(terminology or default_terminology())
    if not files:
        raise FhirError(422, "required", "no SSDA903 files given")
    unconsumed: list[str] = []
    tables: dict[str, list[Row]] = {"Header": [], "Episodes": [], "OC2": []}
    xml_names = [n for n, data in files.items() if data.lstrip()[:1] == b"<"]
    if xml_names:
        if len(files) != 1:
            raise FhirError(422, "invalid", "an SSDA903 return is either CSV tables or one XML file, "
                                            f"got {', '.join(sorted(files))}")
        name = xml_names[0]
        tables = _read_xml(name, files[name], mapping, unconsumed)
        source, content_type = files[name], "application/xml"
    else:
        seen: dict[str, str] = {}
        for name in sorted(files):
            table, rows = _read_csv(name, files[name], mapping)
            if table in seen:
                raise _error(f"{name} line 1", f"a second {table} table (the first is {seen[table]})")
            seen[table] = name
            spec = mapping["tables"][table]
            if "rules" not in spec:
                for row in rows:
                    unconsumed += [row.loc(c) for c in spec["columns"] if row.get(c)]
                continue
            tables[table] = rows
        texts = {name: files[name].decode("utf-8-sig") for name in sorted(files)}
        source, content_type = json.dumps(texts, ensure_ascii=False, sort_keys=True).encode("utf-8"), "application/json"

    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(files[name])

    parsed = {t: [(row, _parse_row(row, mapping, codes, unconsumed)) for row in rows] for t, rows in tables.items()}
    bundle = _bundle(parsed, mapping, codes, la_code, la_name, year)
    return MappedDocument(
        bundle=bundle,
        identifier={"system": mapping["identifierSystems"]["document"], "value": "ssda903:" + digest.hexdigest()},
        source=source,
        content_type=content_type,
        document_type="SSDA903 return",
        mapping=MAPPING,
        subject=None,
        unconsumed=unconsumed,
    )


def _parse_row(row: Row, mapping: dict, codes: _Codes, unconsumed: list[str]) -> dict:
    rules = mapping["tables"][row.table]["rules"]
    values = {}
    for column, rule in rules.items():
        value = _convert(row, column, rule, mapping, codes)
        values[column] = value
        if value is None:
            continue
        if rule.get("home") is None:
            unconsumed.append(row.loc(column))
        elif value in rule.get("absentCodes", ()):
            values[column] = None
            unconsumed.append(row.loc(column))
        elif rule["type"] == "postcode" and value.group(2):
            unconsumed.append(row.loc(column))  # the inward code is not kept
    if row.table == "OC2" and values.get("SDQ_SCORE") is not None and values.get("SDQ_REASON"):
        unconsumed.append(row.loc("SDQ_REASON"))  # a reason beside a score has no home (obs-6)
        values["SDQ_REASON"] = None
    return values


def _bundle(parsed: dict, mapping: dict, codes: _Codes, la_code: str | None, la_name: str | None,
            year: int | None) -> dict:
    ids = mapping["identifierSystems"]
    defaults = mapping["defaults"]
    if la_code is None:
        la_code = defaults["laCode"]
        la_name = la_name or defaults["laName"]
    elif la_name is None and la_code == defaults["laCode"]:
        la_name = defaults["laName"]

    children: dict[str, tuple[Row, dict]] = {}
    for row, values in parsed["Header"]:
        if values["CHILD"] in children:
            first = children[values["CHILD"]][0]
            raise _error(row.where("CHILD"), f"child {values['CHILD']} already has a Header row "
                                             f"({first.file} line {first.line})")
        children[values["CHILD"]] = (row, values)
    episodes: dict[tuple[str, date], tuple[Row, dict]] = {}
    for row, values in parsed["Episodes"]:
        key = (values["CHILD"], values["DECOM"])
        if key in episodes:
            raise _error(row.where("DECOM"), f"child {key[0]} already has an episode starting {key[1]:%d/%m/%Y}")
        if values["DEC"] is not None and values["DEC"] < values["DECOM"]:
            raise _error(row.where("DEC"), "the episode ends before it starts (DEC before DECOM)")
        episodes[key] = (row, values)
    oc2: dict[str, tuple[Row, dict]] = {}
    for row, values in parsed["OC2"]:
        if values["CHILD"] in oc2:
            raise _error(row.where("CHILD"), f"child {values['CHILD']} already has an OC2 row")
        header = children.get(values["CHILD"])
        if header and header[1]["DOB"] != values["DOB"]:
            raise _error(row.where("DOB"), f"DOB differs from the Header's ({header[0].where('DOB')})")
        oc2[values["CHILD"]] = (row, values)

    if year is None and oc2:
        dates = [d for _, v in episodes.values() for d in (v["DECOM"], v["DEC"]) if d is not None]
        if not dates:
            first = next(iter(oc2.values()))[0]
            raise _error(f"{first.file} line {first.line}", "the collection year cannot be derived "
                                                            "without episodes: pass year")
        year = _census_year(max(dates))

    entries: list[dict] = []
    org_ident = {"system": ids["localAuthority"], "value": la_code}
    org_url = _urn("Organization", ids["localAuthority"], la_code)
    org = {"resourceType": "Organization", "identifier": [org_ident], "active": True,
           "type": [{"text": "Local authority children's services"}]}
    if la_name:
        org["name"] = la_name
    if episodes:
        entries.append({"fullUrl": org_url, "resource": org,
                        "request": {"method": "POST", "url": "Organization",
                                    "ifNoneExist": f"identifier={_ref(ids['localAuthority'], la_code)}"}})

    def patient_ref(child: str) -> str:
        if child in children:
            return _urn("Patient", ids["child"], child)
        return f"Patient?identifier={_ref(ids['child'], child)}"

    for child in sorted(children):
        _, v = children[child]
        identifiers = [{"system": ids["child"], "value": child}]
        if v["UPN"]:
            identifiers.append({"system": ids["upn"], "value": v["UPN"]})
        patient = {"resourceType": "Patient", "meta": {"profile": [mapping["profiles"]["Patient"]]},
                   "identifier": identifiers,
                   "name": [{"extension": [{k: mapping["patientNameAbsent"][k] for k in ("url", "valueCode")}]}]}
        if v["SEX"]:
            patient["gender"] = v["SEX"]
        patient["birthDate"] = v["DOB"].isoformat()
        # Create the child only if absent: other sources (the LA's notifications, NHS number,
        # name) know more about a child than the 903 return does, and must not be overwritten.
        entries.append({"fullUrl": _urn("Patient", ids["child"], child), "resource": patient,
                        "request": {"method": "POST", "url": "Patient",
                                    "ifNoneExist": f"identifier={_ref(ids['child'], child)}"}})

    ext = mapping["extensions"]
    rules = mapping["tables"]["Episodes"]["rules"]
    for (child, start) in sorted(episodes):
        _, v = episodes[(child, start)]
        ident = f"{child}/{start.isoformat()}"
        extensions = [{"url": ext["legalStatus"], "valueCoding": codes.coding(rules["LS"]["system"], v["LS"])}]
        placement = []
        if v["PLACE"]:
            placement.append({"url": "type", "valueCoding": codes.coding(rules["PLACE"]["system"], v["PLACE"])})
        if v["PLACE_PROVIDER"]:
            placement.append({"url": "provider",
                              "valueCoding": codes.coding(rules["PLACE_PROVIDER"]["system"], v["PLACE_PROVIDER"])})
        if v["PL_POST"]:
            placement.append({"url": "postcodeDistrict", "valueString": v["PL_POST"].group(1)})
        if placement:
            if not v["PLACE"]:
                row = episodes[(child, start)][0]
                raise _error(row.where("PLACE"), "a placement (provider or postcode) needs its placement type")
            extensions.append({"url": ext["placement"], "extension": placement})
        period = {"start": start.isoformat()}
        if v["DEC"]:
            period["end"] = v["DEC"].isoformat()
        episode = {"resourceType": "EpisodeOfCare", "meta": {"profile": [mapping["profiles"]["EpisodeOfCare"]]},
                   "extension": extensions,
                   "identifier": [{"system": ids["episode"], "value": ident}],
                   "status": "finished" if v["DEC"] else "active",
                   "type": [{"coding": [dict(mapping["lookedAfterType"])]}],
                   "patient": {"reference": patient_ref(child)},
                   "managingOrganization": {"reference": org_url},
                   "period": period}
        entries.append(_put(_urn("EpisodeOfCare", ids["episode"], ident), episode, "EpisodeOfCare",
                            ids["episode"], ident))

    for child in sorted(oc2):
        row, v = oc2[child]
        for item in mapping["tables"]["OC2"]["observations"]:
            value = v.get(item["column"])
            reason = v.get(item.get("absentReasonColumn", ""), None)
            if value is None and not reason:
                continue
            ident = f"{child}/{year}/{item['code']}"
            obs = {"resourceType": "Observation",
                   "identifier": [{"system": ids["oc2"], "value": ident}],
                   "status": "final",
                   "code": {"coding": [codes.coding(item["system"], item["code"])]},
                   "subject": {"reference": patient_ref(child)},
                   "effectiveDateTime": f"{year}-03-31"}
            if value is None:
                reason_rule = mapping["tables"]["OC2"]["rules"][item["absentReasonColumn"]]
                obs["dataAbsentReason"] = {"coding": [codes.coding(reason_rule["system"], reason)]}
            elif item["value"] == "integer":
                obs["valueInteger"] = value
            else:
                obs["valueBoolean"] = value
            entries.append(_put(_urn("Observation", ids["oc2"], ident), obs, "Observation", ids["oc2"], ident))

    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _put(full_url: str, resource: dict, rtype: str, system: str, value: str) -> dict:
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "PUT", "url": f"{rtype}?identifier={_ref(system, value)}"}}


# -- export -----------------------------------------------------------------------------

def _ident(resource: dict, system: str) -> str | None:
    for ident in resource.get("identifier") or []:
        if ident.get("system") == system and ident.get("value"):
            return ident["value"]
    return None


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def _fmt(day: date | None) -> str:
    return day.strftime("%d/%m/%Y") if day else ""


def export_903(resources: Iterable[dict], year: int) -> dict[str, str]:
    """header.csv, episodes.csv and oc2.csv for the collection year ending 31 March `year`.

    `resources` are FHIR resources (or Bundles of them): lac-patient Patients, their
    lac-episode-of-care EpisodeOfCares and the OC2 Observations. Columns with no FHIR home
    are left blank; RNE and REC are derived where the periods decide them (see the mapping).
    """
    mapping = load_mapping()
    ids = mapping["identifierSystems"]
    start, end = collection_year(year)

    patients: dict[str, dict] = {}      # CHILD -> Patient
    refs: dict[str, str] = {}           # reference -> CHILD
    episodes: list[dict] = []
    observations: list[dict] = []

    def take(resource: dict, full_url: str | None = None) -> None:
        kind = resource.get("resourceType")
        if kind == "Bundle":
            for entry in resource.get("entry") or []:
                if entry.get("resource"):
                    take(entry["resource"], entry.get("fullUrl"))
        elif kind == "Patient":
            child = _ident(resource, ids["child"])
            if child is None:
                return
            patients[child] = resource
            if resource.get("id"):
                refs[f"Patient/{resource['id']}"] = child
            if full_url:
                refs[full_url] = child
            refs[f"Patient?identifier={_ref(ids['child'], child)}"] = child
        elif kind == "EpisodeOfCare":
            episodes.append(resource)
        elif kind == "Observation":
            observations.append(resource)

    for resource in resources:
        take(resource)

    def child_of(reference: dict | None) -> str | None:
        ref = (reference or {}).get("reference", "")
        if ref in refs:
            return refs[ref]
        tail = "/".join(ref.split("/")[-2:])  # absolute URLs and Patient/x/_history/n
        if tail in refs:
            return refs[tail]
        m = re.match(r"^(?:.*/)?Patient/([^/]+)", ref)
        return refs.get(f"Patient/{m.group(1)}") if m else None

    by_child: dict[str, list[dict]] = {}
    for eoc in episodes:
        if not is_looked_after(eoc):
            continue
        child = child_of(eoc.get("patient"))
        if child is None:
            ident = _ident(eoc, ids["episode"])
            child = ident.rsplit("/", 1)[0] if ident and "/" in ident else None
        if child is None or child not in patients:
            continue
        row = episode_row(eoc)
        if row is None or row["DECOM"] > end or (row["DEC"] is not None and row["DEC"] < start):
            continue
        by_child.setdefault(child, []).append({"CHILD": child, **row})

    header_cols = mapping["tables"]["Header"]["columns"]
    episode_cols = mapping["tables"]["Episodes"]["columns"]
    oc2_cols = mapping["tables"]["OC2"]["columns"]
    header_rows, episode_rows, oc2_rows = [], [], []
    gender_codes = mapping["tables"]["Header"]["rules"]["SEX"]["exportValues"]
    cla: set[str] = set()
    for child in sorted(by_child):
        patient = patients[child]
        dob = date.fromisoformat(patient["birthDate"]) if patient.get("birthDate") else None
        header_rows.append({"CHILD": child, "SEX": gender_codes.get(patient.get("gender"), ""), "DOB": _fmt(dob),
                            "UPN": _ident(patient, ids["upn"]) or ""})
        rows = sorted(by_child[child], key=lambda r: r["DECOM"])
        ends = {r["DEC"] for r in rows if r["DEC"]}
        starts = {r["DECOM"] for r in rows}
        for r in rows:
            out = dict(r)
            out["RNE"] = "S" if r["DECOM"] >= start and r["DECOM"] not in ends else ""
            in_year_end = r["DEC"] if r["DEC"] and r["DEC"] <= end else None
            out["DEC"] = _fmt(in_year_end)
            out["REC"] = "X1" if in_year_end and in_year_end in starts else ""
            out["DECOM"] = _fmt(r["DECOM"])
            episode_rows.append(out)
        if looked_after_12_months(rows, year) and dob:
            cla.add(child)

    found: dict[str, list[dict]] = {}
    for obs in observations:
        child = child_of(obs.get("subject"))
        if child in cla:
            found.setdefault(child, []).append(obs)
    for child in sorted(cla):
        dob = date.fromisoformat(patients[child]["birthDate"])
        oc2_rows.append({"CHILD": child, "DOB": _fmt(dob), **oc2_values(dob, oc2_observations(found.get(child, []), year), year)})

    return {
        "header.csv": _csv(header_cols, header_rows),
        "episodes.csv": _csv(episode_cols, episode_rows),
        "oc2.csv": _csv(oc2_cols, oc2_rows),
    }


# -- the OC2 rules, shared by the export and the commissioning facts (adapter/kpi/oc2.py) ------

def collection_year(year: int) -> tuple[date, date]:
    """The collection year ending 31 March `year`: (1 April year-1, 31 March year)."""
    return date(year - 1, 4, 1), date(year, 3, 31)


def is_looked_after(eoc: dict) -> bool:
    code = load_mapping()["lookedAfterType"]["code"]
    return any(c.get("code") == code for t in eoc.get("type") or [] for c in t.get("coding") or [])


def episode_row(eoc: dict) -> dict | None:
    """An EpisodeOfCare as an episodes.csv row (dates as dates), or None without a start."""
    ext = load_mapping()["extensions"]
    period = eoc.get("period") or {}
    if not period.get("start"):
        return None
    row = {"DECOM": date.fromisoformat(period["start"][:10]),
           "DEC": date.fromisoformat(period["end"][:10]) if period.get("end") else None,
           "LS": "", "PLACE": "", "PLACE_PROVIDER": "", "PL_POST": ""}
    for e in eoc.get("extension") or []:
        if e.get("url") == ext["legalStatus"]:
            row["LS"] = (e.get("valueCoding") or {}).get("code", "")
        elif e.get("url") == ext["placement"]:
            for sub in e.get("extension") or []:
                if sub.get("url") == "type":
                    row["PLACE"] = sub["valueCoding"].get("code", "")
                elif sub.get("url") == "provider":
                    row["PLACE_PROVIDER"] = sub["valueCoding"].get("code", "")
                elif sub.get("url") == "postcodeDistrict":
                    row["PL_POST"] = sub.get("valueString", "")
    return row


def looked_after_12_months(rows: list[dict], year: int) -> bool:
    """Looked after continuously for 12 months at 31 March `year` (the OC2 cohort): one unbroken
    chain of episodes (episode_row rows) from on or before 1 April, still open at 31 March, with
    no short-break legal status. Episodes outside the collection year are ignored."""
    start, end = collection_year(year)
    rows = sorted((r for r in rows if r["DECOM"] <= end and (r["DEC"] is None or r["DEC"] >= start)),
                  key=lambda r: r["DECOM"])
    if not rows:
        return False
    chain_ok = rows[0]["DECOM"] <= start and all(a["DEC"] == b["DECOM"] for a, b in zip(rows, rows[1:]))
    last_open = rows[-1]["DEC"] is None or rows[-1]["DEC"] >= end
    return chain_ok and last_open and not any(r["LS"] in ("V3", "V4") for r in rows)


def oc2_observations(observations: Iterable[dict], year: int) -> dict[str, dict]:
    """A child's OC2 Observations of the census day (31 March `year`) by OC2 column."""
    mapping = load_mapping()
    items = {(i["system"], i["code"]): i for i in mapping["tables"]["OC2"]["observations"]}
    census = f"{year}-03-31"
    got: dict[str, dict] = {}
    for obs in observations:
        if not str(obs.get("effectiveDateTime", "")).startswith(census) or obs.get("status") not in ("final", "amended", "corrected"):
            continue
        for coding in (obs.get("code") or {}).get("coding") or []:
            item = items.get((coding.get("system"), coding.get("code")))
            if item:
                got[item["column"]] = obs
    return got


def oc2_values(dob: date, got: dict[str, dict], year: int) -> dict[str, str]:
    """The OC2 columns (after CHILD and DOB) of a child in the cohort: flags "1"/"0"/"" (not
    recorded), each only for the ages it applies to (mapping export.oc2Ages)."""
    mapping = load_mapping()
    ages = mapping["export"]["oc2Ages"]
    end = collection_year(year)[1]
    row: dict[str, str] = {}

    def flag(column: str) -> str:
        obs = got.get(column)
        if obs is None or not isinstance(obs.get("valueBoolean"), bool):
            return ""
        return "1" if obs["valueBoolean"] else "0"

    sdq = got.get("SDQ_SCORE")
    if sdq is not None and sdq_applies(dob, year):
        if isinstance(sdq.get("valueInteger"), int):
            row["SDQ_SCORE"] = str(sdq["valueInteger"])
        else:
            reason_codes = [c.get("code") for c in (sdq.get("dataAbsentReason") or {}).get("coding") or []
                            if c.get("system") == mapping["tables"]["OC2"]["rules"]["SDQ_REASON"]["system"]]
            row["SDQ_REASON"] = reason_codes[0] if reason_codes else ""
    if _add_years(dob, ages["convictedFromAge"]) <= end:
        row["CONVICTED"] = flag("CONVICTED")
    if health_check_applies(dob, year):
        row["HEALTH_CHECK"] = flag("HEALTH_CHECK")
    for column in ("IMMUNISATIONS", "TEETH_CHECK", "HEALTH_ASSESSMENT", "SUBSTANCE_MISUSE"):
        row[column] = flag(column)
    if row["SUBSTANCE_MISUSE"] == "1":
        row["INTERVENTION_RECEIVED"] = flag("INTERVENTION_RECEIVED")
        if row["INTERVENTION_RECEIVED"] == "0":
            row["INTERVENTION_OFFERED"] = flag("INTERVENTION_OFFERED")
    return row


def sdq_applies(dob: date, year: int) -> bool:
    """Whether an SDQ score is expected of a child in the cohort at 31 March `year` (ages 4-16)."""
    ages = load_mapping()["export"]["oc2Ages"]
    start, end = collection_year(year)
    return _add_years(dob, ages["sdqFromAge"]) <= end and _add_years(dob, ages["sdqBeforeAge"]) >= start


def health_check_applies(dob: date, year: int) -> bool:
    """Whether the under-5s' health surveillance check (HEALTH_CHECK) applies at 31 March `year`."""
    ages = load_mapping()["export"]["oc2Ages"]
    return _add_years(dob, ages["healthCheckBeforeAge"]) > collection_year(year)[1]


def _csv(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c, "") or "" for c in columns])
    return buf.getvalue()
