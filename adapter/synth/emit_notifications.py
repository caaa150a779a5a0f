"""A child's story as LA health notifications (mappings/la-notification/, one event per message).

The XML follows la-notification-1.0.xsd and fixtures/la-notifications/; the project's own
mapper (adapter/mapping/la_notification.py) reads it. Element order is the XSD's.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from .population import Authority, Child, ConsentDecision, Event, Person, Placement

NAMESPACE = "https://lac-fhir-adapter.example/ns/la-notification/1.0"
SLUG = {"EnteredCare": "entered-care", "PlacementChange": "placement-change", "LegalStatusChange":
        "legal-status-change", "Consent": "consent", "LeftCare": "left-care", "BecameCareLeaver": "became-care-leaver"}


@dataclass
class Notification:
    name: str          # file name, e.g. 01-entered-care.xml
    message_id: str
    xml: bytes
    event: Event


def message_id(child: Child, position: int) -> str:
    return f"{child.la.prefix}-N-{child.index + 1:06d}-{position:02d}"


def notifications(child: Child) -> list[Notification]:
    out = []
    for position, event in enumerate(child.events, start=1):
        mid = message_id(child, position)
        out.append(Notification(f"{position:02d}-{SLUG[event.kind]}.xml", mid, render(child, event, mid), event))
    return out


def _t(tag: str, value: str, indent: str) -> str:
    return f"{indent}<{tag}>{escape(value)}</{tag}>\n"


def _name(person: Person, tag: str, indent: str) -> str:
    return (f"{indent}<{tag}>\n" + _t("Given", person.given, indent + "  ") + _t("Family", person.family, indent + "  ")
            + f"{indent}</{tag}>\n")


def _authority(tag: str, la: Authority, indent: str) -> str:
    return f"{indent}<{tag}>\n" + _t("Code", la.code, indent + "  ") + _t("Name", la.name, indent + "  ") + f"{indent}</{tag}>\n"


def _placement(p: Placement, indent: str) -> str:
    inner = indent + "  "
    out = (f"{indent}<Placement>\n" + _t("Type", p.type, inner) + _t("Provider", p.provider, inner)
           + _t("PostcodeDistrict", p.district, inner) + _t("OutOfArea", "true" if p.out_of_area else "false", inner))
    if p.health_ods:
        out += _t("HealthProviderOds", p.health_ods, inner)
    return out + f"{indent}</Placement>\n"


def _consent(c: ConsentDecision, indent: str) -> str:
    inner = indent + "  "
    out = f"{indent}<Consent>\n" + _t("Decision", c.decision, inner)
    for purpose in c.purposes:
        out += _t("Purpose", purpose, inner)
    out += _t("Grantor", c.grantor, inner)
    if c.capacity:
        out += _t("Capacity", c.capacity, inner)
    out += _t("LegalBasis", c.legal_basis, inner)
    if c.grantor in ("parent-with-pr", "other-person-with-pr"):
        out += _name(c.grantor_name, "GrantorName", inner) + _t("Relationship", c.relationship, inner)
    return out + _t("Date", c.date.isoformat(), inner) + f"{indent}</Consent>\n"


def render(child: Child, event: Event, mid: str) -> bytes:
    """One notification as XML bytes (UTF-8)."""
    i1, i2, i3 = "  ", "    ", "      "
    child_xml = (f"{i1}<Child>\n" + _t("NhsNumber", child.nhs, i2) + _t("LaChildId", child.la_child_id, i2)
                 + _name(Person(child.given, child.family), "Name", i2) + _t("BirthDate", child.birth.isoformat(), i2)
                 + _t("Sex", child.sex, i2) + f"{i1}</Child>\n")
    body = f"{i1}<{event.kind}>\n"
    if event.kind == "EnteredCare":
        sw = child.social_worker
        body += (_t("Date", event.date.isoformat(), i2) + _t("LegalStatus", event.legal_status, i2)
                 + _placement(event.placement, i2) + _authority("PlacingAuthority", child.la, i2)
                 + _authority("ResponsibleAuthority", child.la, i2)
                 + f"{i2}<SocialWorker>\n" + _name(sw, "Name", i3) + _t("Phone", sw.phone, i3) + _t("Email", sw.email, i3)
                 + f"{i2}</SocialWorker>\n")
        if event.consent is not None:
            body += _consent(event.consent, i2)
    elif event.kind == "PlacementChange":
        body += (_t("EpisodeStart", child.entered.isoformat(), i2) + _t("Date", event.date.isoformat(), i2)
                 + _placement(event.placement, i2))
    elif event.kind == "LegalStatusChange":
        body += (_t("EpisodeStart", child.entered.isoformat(), i2) + _t("Date", event.date.isoformat(), i2)
                 + _t("LegalStatus", event.legal_status, i2))
    elif event.kind == "Consent":
        c = event.consent
        body = _consent(c, i1)
    elif event.kind == "LeftCare":
        body += (_t("EpisodeStart", child.entered.isoformat(), i2) + _t("Date", event.date.isoformat(), i2)
                 + _t("Reason", event.reason, i2))
    elif event.kind == "BecameCareLeaver":
        body += _t("Date", event.date.isoformat(), i2) + _t("Ehcp", "true" if child.ehcp else "false", i2)
    if event.kind != "Consent":
        body += f"{i1}</{event.kind}>\n"
    minute = (child.index * 7 + len(mid)) % 50
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<LANotification xmlns="{NAMESPACE}" version="1.0">\n'
            + _t("MessageId", mid, i1) + _t("Sent", f"{event.sent.isoformat()}T{9 + child.index % 8:02d}:{minute:02d}:00Z", i1)
            + _authority("LocalAuthority", child.la, i1) + child_xml + body + "</LANotification>\n")
    return text.encode("utf-8")
