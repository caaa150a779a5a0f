"""SSDA903 OC2 health outcomes as commissioning facts: one row per child and census year for the
children looked after continuously for 12 months at 31 March.

Plain functions of FHIR resources (no SQL, no HTTP). Who is in the cohort and which OC2 items
apply at which age are the SSDA903 export's own rules (adapter/mapping/ssda903.py:
`looked_after_12_months`, `oc2_observations`, `oc2_values`), so the measure and the DfE return
always agree. adapter/store/oc2_sql.py stores the rows in the transaction of every write of the
child's Patient, EpisodeOfCare or OC2 Observations.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

from ..mapping import ssda903
from .rules import KpiRules, age_band, as_date, choose_episode, placement_segment

FLAGS = {"immunisations": "IMMUNISATIONS", "teeth_check": "TEETH_CHECK", "health_assessment": "HEALTH_ASSESSMENT",
         "health_check": "HEALTH_CHECK", "substance_misuse": "SUBSTANCE_MISUSE"}


def census_years(rows: list[dict], born: date) -> range:
    """The census years (31 March) a child's episodes (ssda903.episode_row rows) could make them
    part of the cohort for: from the year after the first start to the last census in care, an
    open episode running to the day before the child's 18th birthday (when care ends). The rows do
    not depend on today, so a stored row needs no refresh as time passes."""
    if not rows:
        return range(0)
    adult = date(born.year + 18, 3, 1) if (born.month, born.day) == (2, 29) else born.replace(year=born.year + 18)
    first = min(r["DECOM"] for r in rows)
    last = max((r["DEC"] or adult - timedelta(days=1)) for r in rows)
    return range(first.year + 1, (last.year if last >= date(last.year, 3, 31) else last.year - 1) + 1)


def _flag(value: str | None) -> bool | None:
    return {"1": True, "0": False}.get(value or "")


def oc2_facts(patient: dict | None, episodes: list[dict], observations: list[dict], la_of,
              rules: KpiRules) -> list[dict]:
    """The child's OC2 rows: for each census year they are in the cohort, their LA, placement
    and age band at 31 March, which items apply, and what was recorded (None: not recorded).

    `episodes` are the child's EpisodeOfCares, `observations` their Observations (the OC2
    items of the census day are picked out here); `la_of(episode)` the responsible LA's code."""
    born = as_date((patient or {}).get("birthDate"))
    if born is None:
        return []
    looked_after = [e for e in episodes if ssda903.is_looked_after(e) and e.get("status") != "entered-in-error"]
    rows = [r for r in (ssda903.episode_row(e) for e in looked_after) if r]
    out = []
    for year in census_years(rows, born):
        census = ssda903.collection_year(year)[1]
        if not ssda903.looked_after_12_months(rows, year):
            continue
        values = ssda903.oc2_values(born, ssda903.oc2_observations(observations, year), year)
        episode = choose_episode(looked_after, census)
        la = la_of(episode) if episode else None
        score = values.get("SDQ_SCORE")
        out.append({
            "year": year, "census": census, "la": la,
            "placement": placement_segment(la, episode, rules), "age_band": age_band(born, census, rules),
            "birth_date": born,
            "health_check_applies": ssda903.health_check_applies(born, year),
            "sdq_applies": ssda903.sdq_applies(born, year),
            **{column: _flag(values.get(oc2)) for column, oc2 in FLAGS.items()},
            "sdq_score": int(score) if score else None,
            "sdq_reason": values.get("SDQ_REASON") or None,
        })
    return out


@lru_cache(maxsize=1)
def item_codes() -> frozenset[tuple[str, str]]:
    """(system, code) of the Observations the OC2 return is made of (mapping tables.OC2.observations)."""
    return frozenset((i["system"], i["code"]) for i in ssda903.load_mapping()["tables"]["OC2"]["observations"])


def is_oc2_item(observation: dict) -> bool:
    items = item_codes()
    return any((c.get("system"), c.get("code")) in items for c in (observation.get("code") or {}).get("coding") or [])
