"""Which provider (ODS code) carries out an assessment: rules as data (config/routing.toml).

Plain functions; no I/O but reading the rules. The tables shipped are illustrative: a
Dorset-like list of home postcode districts and invented out-of-area ODS codes (ZZ9xx).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ROUTING_FILE = Path(__file__).resolve().parents[2] / "config" / "routing.toml"
_DISTRICT = re.compile(r"^([A-Z]{1,2})[0-9][0-9A-Z]?$")


@dataclass(frozen=True)
class AssessmentRoute:
    in_area: str
    out_of_area: str  # "placement-area" | "home"


@dataclass(frozen=True)
class RoutingRules:
    home_districts: frozenset[str]
    home_service_ods: str
    assessments: dict[str, AssessmentRoute]
    out_of_area: dict[str, str]  # postcode area -> ODS
    names: dict[str, str] = field(default_factory=dict)
    unrouted_owner_ods: str = "RDY"
    unrouted_reason_code: str = "other"
    unrouted_reason_text: str = "Unrouted: a person must route this assessment"


@dataclass(frozen=True)
class Route:
    ods: str | None  # None: unrouted, a person must choose the provider
    reason: str

    @property
    def routed(self) -> bool:
        return self.ods is not None


def rules_from_dict(raw: dict) -> RoutingRules:
    home = raw.get("home_area", {})
    unrouted = raw.get("unrouted", {})
    return RoutingRules(
        home_districts=frozenset(d.strip().upper() for d in home.get("postcode_districts", [])),
        home_service_ods=str(home.get("home_service_ods", "RDY")),
        assessments={code: AssessmentRoute(str(a["in_area"]), str(a.get("out_of_area", "placement-area")))
                     for code, a in raw.get("assessments", {}).items()},
        out_of_area={area.upper(): str(ods) for area, ods in raw.get("out_of_area", {}).items()},
        names={k: str(v) for k, v in raw.get("organisation_names", {}).items()},
        unrouted_owner_ods=str(unrouted.get("owner_ods", home.get("home_service_ods", "RDY"))),
        unrouted_reason_code=str(unrouted.get("status_reason_code", "other")),
        unrouted_reason_text=str(unrouted.get("status_reason_text", "Unrouted: a person must route this assessment")),
    )


@lru_cache(maxsize=4)
def load_routing(path: Path = ROUTING_FILE) -> RoutingRules:
    with open(path, "rb") as fh:
        return rules_from_dict(tomllib.load(fh))


def normalise_district(postcode_district: str | None) -> str | None:
    if postcode_district is None:
        return None
    value = postcode_district.strip().upper().replace(" ", "")
    return value or None


def postcode_area(district: str) -> str | None:
    """The letters of an outward code: 'SO14' -> 'SO', 'B1' -> 'B'; None when not an outward code."""
    match = _DISTRICT.match(district)
    return match.group(1) if match else None


def provider_for(assessment: str, postcode_district: str | None, out_of_area: bool | None,
                 rules: RoutingRules | None = None) -> Route:
    """Who does `assessment` for a child placed in `postcode_district`.

    `out_of_area` is the LA's own flag; when None it is inferred from the home-area list.
    A flag that contradicts the district (in area but not a home district, or out of area
    but a home district), an unknown postcode area or an assessment type without rules gives
    an unrouted Route (ods None) whose reason tells a person what to check.
    """
    rules = rules or load_routing()
    how = rules.assessments.get(assessment)
    if how is None:
        return Route(None, f"unrouted: no routing rule for assessment type '{assessment}'")
    district = normalise_district(postcode_district)
    in_home = district in rules.home_districts if district else None
    if out_of_area is None:
        if district is None:
            return Route(None, "unrouted: no placement postcode district and no out-of-area flag")
        out_of_area = not in_home
    if not out_of_area:
        if district is not None and not in_home:
            return Route(None, f"unrouted: placement marked in area but {district} is not a home-area district")
        where = district or "district not given"
        return Route(how.in_area, f"in area ({where}): {assessment} by {how.in_area}")
    # out of area
    if how.out_of_area == "home":
        return Route(how.in_area, f"out of area ({district or 'district not given'}): "
                                  f"{assessment} stays with the home service {how.in_area}")
    if district is None:
        return Route(None, "unrouted: placed out of area but the placement postcode district is not known")
    if in_home:
        return Route(None, f"unrouted: placement marked out of area but {district} is a home-area district")
    area = postcode_area(district)
    ods = rules.out_of_area.get(area) if area else None
    if ods is None:
        return Route(None, f"unrouted: out of area ({district}) and no provider known for postcode area "
                           f"{area or district!r}")
    return Route(ods, f"out of area ({district}, postcode area {area}): {assessment} by {ods}")
