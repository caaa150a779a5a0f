"""A small synthetic caseload for access tests: three children, five organisations.

- child A: looked after by LA-DEMO-1 (served by RDY and RD3), information sharing consented by
  a parent; an IHA Task owned by RD3.
- child B: looked after by LA-OTHER-2 (served by nobody here), consented; an assessment request
  Task owned by the out-of-area trust ZZ901, open.
- child C: looked after by LA-DEMO-1, no consent recorded.

Each child has a Patient, EpisodeOfCare, Observation, QuestionnaireResponse, CarePlan, Task and
(A, B) a Consent; every resource carries the test's tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.support.data import NHS, TAG_SYSTEM, nhs_number

ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
LA_SYSTEM = "https://lac-fhir-adapter.example/fhir/Id/local-authority"
BASE = "https://lac-fhir-adapter.example/fhir/"
ORGS = {"LA-DEMO-1": LA_SYSTEM, "LA-OTHER-2": LA_SYSTEM, "RDY": ODS, "RD3": ODS, "ZZ901": ODS}
CHILDREN = {"A": ("LA-DEMO-1", True, "RD3"), "B": ("LA-OTHER-2", True, "ZZ901"), "C": ("LA-DEMO-1", False, "RD3")}
CLINICAL = ("Observation", "QuestionnaireResponse", "CarePlan")  # consent-gated (config/consent.toml)
RECORD_TYPES = ("Patient", "EpisodeOfCare", "Task", "Consent", *CLINICAL)


@dataclass
class Population:
    tag: str
    orgs: dict[str, str] = field(default_factory=dict)          # ODS -> Organization id
    ids: dict[tuple[str, str], str] = field(default_factory=dict)  # (child, type) -> id
    nhs: dict[str, str] = field(default_factory=dict)

    def ref(self, child: str, rtype: str) -> str:
        return f"{rtype}/{self.ids[(child, rtype)]}"


def tagged(tag: str, resource: dict) -> dict:
    resource.setdefault("meta", {})["tag"] = [{"system": TAG_SYSTEM, "code": tag}]
    return resource


def consent(tag: str, patient_ref: str, performer_ref: str, decision: str = "permit",
            grantor: str = "parent-with-pr", when: str = "2026-09-01", status: str = "active") -> dict:
    return tagged(tag, {
        "resourceType": "Consent",
        "meta": {"profile": [BASE + "StructureDefinition/lac-consent"]},
        "extension": [{"url": BASE + "StructureDefinition/lac-consent-grantor",
                       "valueCoding": {"system": BASE + "CodeSystem/lac-consent-grantor", "code": grantor}}],
        "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient_ref},
        "dateTime": when,
        "performer": [{"reference": performer_ref}],
        "provision": {"type": decision, "period": {"start": when},
                      "purpose": [{"system": BASE + "CodeSystem/lac-consent-purpose", "code": "information-sharing"}]},
    })


def build(fhir, tag: str, serial: int) -> Population:
    """Create the caseload through the API as the administrator."""
    pop = Population(tag)
    for ods, system in ORGS.items():
        org = fhir.create(tagged(tag, {"resourceType": "Organization", "name": f"Org {ods}",
                                       "identifier": [{"system": system, "value": ods}]}))
        pop.orgs[ods] = org["id"]
    for n, (child, (la, consented, owner)) in enumerate(CHILDREN.items()):
        nhs = nhs_number(serial + 3 * n)  # apart: nhs_number skips serials whose check digit is 10
        pop.nhs[child] = nhs
        made = fhir.create(tagged(tag, {"resourceType": "Patient", "identifier": [{"system": NHS, "value": nhs}],
                                        "name": [{"family": f"Access{child}", "given": ["Sam"]}],
                                        "birthDate": "2016-04-01"}))
        pid = made["id"]
        pop.ids[(child, "Patient")] = pid
        pref = f"Patient/{pid}"
        made = {
            "EpisodeOfCare": {"resourceType": "EpisodeOfCare", "status": "active", "patient": {"reference": pref},
                              "managingOrganization": {"reference": f"Organization/{pop.orgs[la]}"}},
            "Task": {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": pref},
                     "owner": {"reference": f"Organization/{pop.orgs[owner]}"},
                     "requester": {"reference": f"Organization/{pop.orgs[la]}"}},
            "Observation": {"resourceType": "Observation", "status": "final", "subject": {"reference": pref},
                            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                            "valueQuantity": {"value": 30, "unit": "kg", "system": "http://unitsofmeasure.org",
                                              "code": "kg"}},
            "QuestionnaireResponse": {"resourceType": "QuestionnaireResponse", "status": "completed",
                                      "subject": {"reference": pref}},
            "CarePlan": {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                         "subject": {"reference": pref}},
        }
        for rtype, body in made.items():
            pop.ids[(child, rtype)] = fhir.create(tagged(tag, body))["id"]
        if consented:
            parent = fhir.create(tagged(tag, {"resourceType": "RelatedPerson", "patient": {"reference": pref},
                                              "name": [{"family": f"Parent{child}"}]}))
            pop.ids[(child, "RelatedPerson")] = parent["id"]
            pop.ids[(child, "Consent")] = fhir.create(
                consent(tag, pref, f"RelatedPerson/{parent['id']}"))["id"]
    return pop


# Which children's records each role sees: {role: {child: "all" | "ungated"}}.
#  - LA-DEMO-1 and the trusts serving it (RDY, RD3) see A fully (consented), C without clinical
#    content (no consent), not B.
#  - The out-of-area trust sees B only, for its open request; LA-OTHER-2 sees B.
SEES = {
    "la": {"A": "all", "C": "ungated"},
    "dhc": {"A": "all", "C": "ungated"},
    "phft": {"A": "all", "C": "ungated"},
    "ooa": {"B": "all"},
    "other-la": {"B": "all"},
}


def visible(role: str, child: str, rtype: str) -> bool:
    sees = SEES[role].get(child)
    if sees is None:
        return False
    return sees == "all" or rtype not in CLINICAL
