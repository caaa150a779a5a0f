"""The home LA's SSDA903 return (Header, Episodes, OC2) for the collection year ending on the
last 31 March on or before the reference date, as CSV tables and as 903 XML (`<EXPSSDA903>`).

Columns, their order and the XML names come from the project's mapping data
(mappings/ssda903/ssda903-2025-26.json, `ssda903.load_mapping()`); the project's importer
(`ssda903.map_903`) reads both forms, and its exporter (`ssda903.export_903`) gives back the
columns we model (tests/synth). Unlike the exporter, which can only say what FHIR holds, the
generator knows the whole story, so it also fills RNE, REC, CIN, REASON_PLACE_CHANGE, ETHNIC,
UPN, MOTHER, HOME_POST and URN. Children placed in by other LAs belong to their own LA's return
and are not in ours. Rows are written child by child (`Return903.add`).
"""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path
from xml.sax.saxutils import escape

from ..mapping.ssda903 import load_mapping
from ..pathway.schedule import age_on, birthday
from .population import Child

ETHNIC = ("WBRI", "WBRI", "WBRI", "WBRI", "WOTH", "MWBC", "MWBA", "MOTH", "AIND", "APKN", "BAFR", "BCRB", "AOTH", "OOTH")
UPN_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"
PLACE_CHANGE = ("CARPL", "CARPL", "CHILD", "LAREQ", "PLACE", "OTHER")
HOME_DISTRICTS = ("BH11", "BH10", "BH9", "DT2", "DT3")   # the child's home before care: not a placement district
NO_URN = ("P1", "P3", "R1", "R2", "R5", "T0", "T1", "T2", "T3", "T4", "Z11", "Z12", "Z13", "Z14")  # DfE rule 222
FILES = {"Header": "header.csv", "Episodes": "episodes.csv", "OC2": "oc2.csv"}


def collection_year(as_of: date) -> int:
    """The year of the last 31 March on or before `as_of`: its return is complete."""
    return as_of.year if (as_of.month, as_of.day) >= (3, 31) else as_of.year - 1


def upn(index: int) -> str:
    """A unique pupil number with a valid check letter (DfE: weights 2..13 on characters 2-13, mod 23)."""
    body = f"999{index % 10**9:09d}"
    total = sum(int(d) * w for d, w in zip(body, range(2, 14)))
    return UPN_LETTERS[total % 23] + body


def _fmt(day: date | None) -> str:
    return day.strftime("%d/%m/%Y") if day else ""


def rows_for(child: Child, year: int) -> dict[str, list[dict]]:
    """The child's rows in the return for the year ending 31 March `year` (empty if not in it)."""
    if child.placed_in:
        return {"Header": [], "Episodes": [], "OC2": []}
    start, end = date(year - 1, 4, 1), date(year, 3, 31)
    episodes = [e for e in child.episodes if e.start <= end and (e.end is None or e.end >= start)]
    if not episodes:
        return {"Header": [], "Episodes": [], "OC2": []}
    header = {"CHILD": child.la_child_id, "SEX": "F" if child.sex == "female" else "M", "DOB": _fmt(child.birth),
              "ETHNIC": ETHNIC[child.index % len(ETHNIC)], "UPN": upn(child.index),
              "MOTHER": "0" if child.sex == "female" else "", "MC_DOB": ""}
    districts = {p.district for p in child.placements}
    home = next(d for d in HOME_DISTRICTS if d not in districts)
    out_eps = []
    for n, e in enumerate(episodes):
        ends = e.end if e.end is not None and e.end <= end else None
        following = child.episodes[child.episodes.index(e) + 1] if e is not child.episodes[-1] else None
        moved = ends is not None and following is not None and following.rne in ("P", "B", "T", "U")
        out_eps.append({"CHILD": child.la_child_id, "DECOM": _fmt(e.start), "RNE": e.rne, "LS": e.legal_status,
                        "CIN": child.category_of_need, "PLACE": e.placement.type, "PLACE_PROVIDER": e.placement.provider,
                        "DEC": _fmt(ends), "REC": e.rec if ends else "",
                        "REASON_PLACE_CHANGE": PLACE_CHANGE[(child.index + n) % len(PLACE_CHANGE)] if moved else "",
                        "HOME_POST": home, "PL_POST": e.placement.district,
                        "URN": _urn(child, e.placement.type)})
    return {"Header": [header], "Episodes": out_eps, "OC2": _oc2(child, year)}


def _urn(child: Child, place: str) -> str:
    """An (invented) Ofsted URN of the placement's provider; none where DfE rule 222 forbids one."""
    return "" if place in NO_URN else f"SC{999000 + child.index % 1000:06d}"


def _oc2(child: Child, year: int) -> list[dict]:
    """OC2 for a child looked after continuously for 12 months at 31 March (the exporter's rule)."""
    ages = load_mapping()["export"]["oc2Ages"]
    start, end = date(year - 1, 4, 1), date(year, 3, 31)
    if child.entered > start or (child.left is not None and child.left < end):
        return []
    if any(code in ("V3", "V4") for _, code in child.legal_statuses):
        return []
    done = [a for a in child.assessments if a.date <= end]
    latest = done[-1] if done else None
    dob = child.birth
    row = {"CHILD": child.la_child_id, "DOB": _fmt(dob)}

    def flag(value: bool) -> str:
        return "1" if value else "0"

    health = latest.health if latest else None
    if birthday(dob, ages["sdqFromAge"]) <= end and birthday(dob, ages["sdqBeforeAge"]) >= start:
        if health is not None and 4 <= age_on(dob, latest.date) <= 16:
            row["SDQ_SCORE"] = str(health.sdq)
        else:
            row["SDQ_REASON"] = "SDQ1" if health is not None else "SDQ5"
    if birthday(dob, ages["convictedFromAge"]) <= end:
        row["CONVICTED"] = "0"
    if birthday(dob, ages["healthCheckBeforeAge"]) > end:
        row["HEALTH_CHECK"] = flag(bool(health and health.immunisations))
    row["IMMUNISATIONS"] = flag(bool(health and health.immunisations))
    row["TEETH_CHECK"] = flag(bool(health and health.teeth))
    row["HEALTH_ASSESSMENT"] = flag(latest is not None and latest.date >= start)
    row["SUBSTANCE_MISUSE"] = flag(bool(health and health.substance_misuse))
    if row["SUBSTANCE_MISUSE"] == "1":
        row["INTERVENTION_RECEIVED"] = flag(health.intervention_received)
        if row["INTERVENTION_RECEIVED"] == "0":
            row["INTERVENTION_OFFERED"] = "1"
    return [row]


class Return903:
    """The return's files, written child by child: ssda903/header.csv, episodes.csv, oc2.csv, ssda903.xml."""

    def __init__(self, folder: Path, year: int):
        self.year = year
        mapping = load_mapping()
        self.columns = {t: mapping["tables"][t]["columns"] for t in FILES}
        self.xml_names = {v: k for k, v in mapping["xml"]["aliases"].items()}   # CHILD -> CHILDID, PLACE -> PL
        folder.mkdir(parents=True, exist_ok=True)
        self.csv = {t: open(folder / name, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed by close())
                    for t, name in FILES.items()}
        self.writers = {t: csv.writer(fh, lineterminator="\r\n") for t, fh in self.csv.items()}
        for table, writer in self.writers.items():
            writer.writerow(self.columns[table])
        self.xml = open(folder / "ssda903.xml", "w", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self.xml.write('<?xml version="1.0" encoding="UTF-8"?>\n<EXPSSDA903>\n')
        self.children = 0
        self.episodes = 0

    def add(self, child: Child) -> dict[str, list[dict]]:
        return self.add_rows(rows_for(child, self.year))

    def add_rows(self, rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
        """Append one child's rows (from rows_for)."""
        if not rows["Header"]:
            return rows
        self.children += 1
        self.episodes += len(rows["Episodes"])
        for table, table_rows in rows.items():
            for row in table_rows:
                self.writers[table].writerow([row.get(c, "") for c in self.columns[table]])
        self.xml.write(self.child_xml(rows))
        return rows

    def _leaves(self, row: dict, table: str, skip: tuple[str, ...], indent: str) -> str:
        out = ""
        for column in self.columns[table]:
            if column in skip or not row.get(column):
                continue
            tag = self.xml_names.get(column, column)
            out += f"{indent}<{tag}>{escape(row[column])}</{tag}>\n"
        return out

    def child_xml(self, rows: dict[str, list[dict]]) -> str:
        out = "  <CHILD>\n    <HEADER>\n" + self._leaves(rows["Header"][0], "Header", (), "      ")
        for oc2 in rows["OC2"]:
            out += "      <OC2>\n" + self._leaves(oc2, "OC2", ("CHILD", "DOB"), "        ") + "      </OC2>\n"
        out += "    </HEADER>\n"
        for episode in rows["Episodes"]:
            out += "    <EPISODE>\n" + self._leaves(episode, "Episodes", ("CHILD",), "      ") + "    </EPISODE>\n"
        return out + "  </CHILD>\n"

    def close(self) -> None:
        self.xml.write("</EXPSSDA903>\n")
        self.xml.close()
        for fh in self.csv.values():
            fh.close()


def table_text(columns: list[str], rows: list[dict]) -> str:
    """One table as CSV text (for tests and single children)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns])
    return buf.getvalue()
