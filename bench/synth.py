"""Synthetic FHIR R4 data for the benchmarks: invented people, 999-range NHS numbers.

Every name, address and phone number here is made up from syllables; NHS numbers come
from the 999 test range with a valid modulus-11 check digit. Resources are sized like
the ones partners send (about 1-3 KB of JSON each).
"""

from __future__ import annotations

import random
import uuid
from datetime import date, datetime, timedelta, timezone

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
LOCAL = "https://fhir.lac-bench.example.org"

WEIGHT_LOINC = "29463-7"
HEIGHT_LOINC = "8302-2"

# Invented name parts: the combinations are made up, not taken from any register.
_FAMILY_HEADS = ["Brack", "Calder", "Dunmer", "Elswin", "Farrow", "Gorst", "Hallam", "Ivel", "Jessop",
                 "Kestle", "Lanyon", "Morrow", "Nettle", "Orwin", "Pellow", "Quarry", "Ravel", "Sorrel",
                 "Tamsin", "Ulver", "Vantle", "Wexley", "Yarrow", "Zennor"]
_FAMILY_TAILS = ["ford", "wick", "thorne", "by", "combe", "stead", "ley", "more", "ton", "well", "ridge",
                 "hurst"]
_GIVEN = ["Arlo", "Bryn", "Cassia", "Dara", "Ember", "Finnan", "Greer", "Hollis", "Isla", "Jory",
          "Kit", "Lark", "Maelo", "Nia", "Orla", "Perrin", "Quill", "Rowan", "Sable", "Tavi",
          "Umi", "Vesper", "Wren", "Xan", "Yara", "Zeph"]
_STREETS = ["Lantern", "Copper", "Hazel", "Mill", "Orchard", "Quayside", "Rookery", "Saltmarsh",
            "Tanner", "Willow"]
_STREET_KINDS = ["Lane", "Road", "Close", "Street", "Gardens", "Row"]
_TOWNS = ["Examplebury", "Sampleton", "Mockford", "Testwick", "Fauxley"]
TASK_STATUSES = ["requested", "requested", "accepted", "in-progress", "completed", "completed"]


def nhs_check_digit(nine: str) -> int | None:
    """Modulus-11 check digit of the first nine digits, or None if the number is invalid."""
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1)))
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def nhs_numbers(start: int = 999_000_000):
    """Valid 999-range NHS numbers from `start` (a nine-digit prefix) upwards."""
    n = start
    while n <= 999_999_999:
        nine = str(n)
        check = nhs_check_digit(nine)
        if check is not None:
            yield nine + str(check)
        n += 1


def family_name(rng: random.Random) -> str:
    return rng.choice(_FAMILY_HEADS) + rng.choice(_FAMILY_TAILS)


def family_prefixes() -> list[str]:
    """Prefixes that the family-name search benchmark can use (each matches ~1/24 of patients)."""
    return [h[:4] for h in _FAMILY_HEADS]


def _narrative(summary: str) -> dict:
    return {"status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{summary}</p></div>'}


def _instant(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


class Population:
    """Organisations and practitioners that the generated resources refer to."""

    ORGS = [f"bench-org-{i}" for i in range(1, 7)]
    PRACTITIONERS = [f"bench-pract-{i}" for i in range(1, 13)]

    def setup_bundle(self) -> dict:
        entries = []
        for i, oid in enumerate(self.ORGS, 1):
            entries.append({"resource": {
                "resourceType": "Organization", "id": oid, "active": True,
                "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": f"ZZB{i:02d}"}],
                "name": f"{_TOWNS[i % len(_TOWNS)]} {'Council' if i % 2 else 'Community Health Trust'}",
                "telecom": [{"system": "phone", "value": f"0117 496 {i:04d}", "use": "work"}],
            }, "request": {"method": "PUT", "url": f"Organization/{oid}"}})
        for i, pid in enumerate(self.PRACTITIONERS, 1):
            entries.append({"resource": {
                "resourceType": "Practitioner", "id": pid, "active": True,
                "name": [{"family": _FAMILY_HEADS[i] + "ley", "given": [_GIVEN[i]], "prefix": ["Dr"]}],
            }, "request": {"method": "PUT", "url": f"Practitioner/{pid}"}})
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


class Generator:
    """Deterministic generator of patient groups (Patient, 2 Observations, Task, EpisodeOfCare)."""

    GROUP_SIZE = 5

    def __init__(self, seed: int = 2024, nhs_start: int = 999_000_000):
        self.rng = random.Random(seed)
        self._nhs = nhs_numbers(nhs_start)
        self.serial = 0

    def patient(self, nhs: str) -> dict:
        rng = self.rng
        self.serial += 1
        family = family_name(rng)
        given = [rng.choice(_GIVEN), rng.choice(_GIVEN)]
        birth = date(2006, 1, 1) + timedelta(days=rng.randrange(0, 16 * 365))
        town = rng.choice(_TOWNS)
        carer = family_name(rng)
        return {
            "resourceType": "Patient",
            "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},
            "text": _narrative(f"{' '.join(given)} {family.upper()}, born {birth.isoformat()}, "
                               f"NHS number {nhs}, looked after by {Population.ORGS[0]}"),
            "extension": [{
                "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory",
                "valueCodeableConcept": {"coding": [{
                    "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategory",
                    "code": "Z", "display": "Not stated"}]},
            }],
            "identifier": [
                {"system": NHS_SYSTEM, "value": nhs},
                {"system": f"{LOCAL}/Id/child-reference", "value": f"LAC-{self.serial:07d}"},
            ],
            "active": True,
            "name": [{"use": "official", "family": family, "given": given}],
            "telecom": [
                {"system": "phone", "value": f"07700 9{rng.randrange(0, 100000):05d}", "use": "mobile"},
            ],
            "gender": rng.choice(["female", "male"]),
            "birthDate": birth.isoformat(),
            "address": [{
                "use": "home",
                "line": [f"{rng.randrange(1, 200)} {rng.choice(_STREETS)} {rng.choice(_STREET_KINDS)}"],
                "city": town, "district": f"{town}shire", "postalCode": f"ZZ99 {rng.randrange(1, 9)}"
                                                                       f"{rng.choice('ABDEFGHJ')}{rng.choice('LNPQRSTUWXYZ')}",
                "country": "GB",
            }],
            "contact": [{
                "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131",
                                              "code": "C", "display": "Emergency Contact"}]}],
                "name": {"family": carer, "given": [rng.choice(_GIVEN)]},
                "telecom": [{"system": "phone", "value": f"0117 496 {rng.randrange(0, 10000):04d}"}],
            }],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-GB",
                                                        "display": "English (United Kingdom)"}]},
                               "preferred": True}],
            "generalPractitioner": [{"reference": f"Organization/{rng.choice(Population.ORGS)}"}],
            "managingOrganization": {"reference": f"Organization/{Population.ORGS[0]}"},
        }

    def observation(self, subject: str, weight: bool, when: datetime) -> dict:
        rng = self.rng
        if weight:
            code = {"coding": [{"system": LOINC, "code": WEIGHT_LOINC, "display": "Body weight"},
                               {"system": SNOMED, "code": "27113001", "display": "Body weight"}],
                    "text": "Body weight"}
            value = {"value": round(rng.uniform(12, 90), 1), "unit": "kg", "system": UCUM, "code": "kg"}
        else:
            code = {"coding": [{"system": LOINC, "code": HEIGHT_LOINC, "display": "Body height"},
                               {"system": SNOMED, "code": "50373000", "display": "Body height measure"}],
                    "text": "Body height"}
            value = {"value": round(rng.uniform(80, 190), 1), "unit": "cm", "system": UCUM, "code": "cm"}
        return {
            "resourceType": "Observation",
            "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Observation"]},
            "text": _narrative(f"{code['text']}: {value['value']} {value['unit']} on {when.date().isoformat()}"),
            "identifier": [{"system": f"{LOCAL}/Id/observation", "value": str(uuid.UUID(int=rng.getrandbits(128)))}],
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs", "display": "Vital Signs"}]}],
            "code": code,
            "subject": {"reference": subject},
            "effectiveDateTime": _instant(when),
            "issued": _instant(when + timedelta(hours=2)),
            "performer": [{"reference": f"Practitioner/{rng.choice(Population.PRACTITIONERS)}"}],
            "valueQuantity": value,
            "note": [{"text": "Measured at the review health assessment; no concerns raised."}],
        }

    def task(self, subject: str, when: datetime) -> dict:
        rng = self.rng
        status = rng.choice(TASK_STATUSES)
        due = when + timedelta(days=28)
        task = {
            "resourceType": "Task",
            "text": _narrative(f"Review health assessment ({status}), due {due.date().isoformat()}"),
            "identifier": [{"system": f"{LOCAL}/Id/task", "value": str(uuid.UUID(int=rng.getrandbits(128)))}],
            "status": status,
            "intent": "order",
            "priority": "routine",
            "code": {"coding": [{"system": f"{LOCAL}/CodeSystem/lac-health-assessment",
                                 "code": "review-health-assessment", "display": "Review health assessment"}]},
            "description": "Review health assessment for a looked-after child, due within 28 days.",
            "businessStatus": {"text": "Awaiting appointment" if status != "completed" else "Report received"},
            "for": {"reference": subject},
            "authoredOn": _instant(when),
            "lastModified": _instant(when + timedelta(days=1)),
            "requester": {"reference": f"Organization/{Population.ORGS[0]}"},
            "owner": {"reference": f"Organization/{rng.choice(Population.ORGS[1:])}"},
            "restriction": {"period": {"end": _instant(due)}},
            "note": [{"text": "Placement is out of area; the receiving trust carries out the assessment."}],
        }
        if status in ("in-progress", "completed"):
            task["executionPeriod"] = {"start": _instant(when + timedelta(days=3))}
            if status == "completed":
                task["executionPeriod"]["end"] = _instant(when + timedelta(days=rng.randrange(5, 28)))
        return task

    def episode(self, subject: str, when: datetime) -> dict:
        rng = self.rng
        start = when - timedelta(days=rng.randrange(30, 2000))
        return {
            "resourceType": "EpisodeOfCare",
            "text": _narrative(f"Looked after since {start.date().isoformat()}"),
            "identifier": [{"system": f"{LOCAL}/Id/episode", "value": str(uuid.UUID(int=rng.getrandbits(128)))}],
            "status": "active",
            "statusHistory": [
                {"status": "planned", "period": {"start": start.date().isoformat(),
                                                 "end": (start + timedelta(days=7)).date().isoformat()}},
                {"status": "active", "period": {"start": (start + timedelta(days=7)).date().isoformat()}},
            ],
            "type": [{"coding": [{"system": f"{LOCAL}/CodeSystem/episode-type", "code": "looked-after",
                                  "display": "Looked-after child"}],
                      "text": "Looked after under section 20 or a care order"}],
            "patient": {"reference": subject},
            "managingOrganization": {"reference": f"Organization/{Population.ORGS[0]}"},
            "period": {"start": start.date().isoformat()},
            "careManager": {"reference": f"Practitioner/{rng.choice(Population.PRACTITIONERS)}"},
            "team": [{"display": "Children in care health team"}],
            "account": [{"display": f"Placement funding {start.year}/{start.year + 1}"}],
        }

    def group(self) -> tuple[str, list[dict]]:
        """One child's resources as transaction entries; returns (nhs number, entries)."""
        nhs = next(self._nhs)
        purl = f"urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128))}"
        when = datetime(2015, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=self.rng.randrange(0, 10 * 525600))
        resources = [
            (purl, self.patient(nhs)),
            (None, self.observation(purl, True, when)),
            (None, self.observation(purl, False, when)),
            (None, self.task(purl, when)),
            (None, self.episode(purl, when)),
        ]
        entries = []
        for full_url, res in resources:
            url = full_url or f"urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128))}"
            entries.append({"fullUrl": url, "resource": res,
                            "request": {"method": "POST", "url": res["resourceType"]}})
        return nhs, entries

    def bundle(self, size: int) -> tuple[list[str], dict]:
        """A transaction Bundle of about `size` entries (whole groups, at least one)."""
        nhs_list, entries = [], []
        while not entries or len(entries) + self.GROUP_SIZE <= size:
            nhs, group = self.group()
            nhs_list.append(nhs)
            entries.extend(group)
        return nhs_list, {"resourceType": "Bundle", "type": "transaction", "entry": entries}
