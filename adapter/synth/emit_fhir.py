"""FHIR for a child: each partner document mapped by the project's own mappers.

Exact path (`Mapper(exact=True)`): what the document operations do (`documents.MAPPERS[detect]`,
via `cli_fixtures.map_document`), with the mapper's random urn:uuids replaced by stable ones
derived from the document identifier and the entry index, as `cli_fixtures.normalise_bundle`
does, so the output is byte-for-byte reproducible.

Fast path (the default): documents of one kind differ mostly in their values (names, dates,
ids, free text, SDQ scores), not in their structure (codes, flags, which elements are
there). The document's *shape* is its bytes with those values cut out. The first document of
each shape is mapped by the real mapper in a *prototype* form, every value replaced by a
unique marker; later documents of the same shape get the prototype's FHIR with the markers
replaced by their own values (JSON-escaped), plus the one value a mapper derives from a
value (the IHA due date, 20 working days after entering care, by the project's clock). The
output is identical to the exact path (tests/synth compare them byte for byte); a document
whose values would make two markers ambiguous, or whose prototype the mapper refuses, is
mapped exactly. `Mapper.stats` counts both.

`ChildStore` folds a child's transaction Bundles, in load order, into the resources a FHIR
server holds afterwards (what NDJSON carries): a conditional create that finds its match
creates nothing, a conditional update replaces, a JSON Patch is applied, and references
(urn:uuid and conditional) become `Type/id`. Ids are the stable urn:uuids of the creating
entries, except for Organizations and Practitioners, which many children share: their ids
come from their identifiers (`shared_id`), and the writer keeps only the first of each.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from functools import cache, lru_cache
from urllib.parse import unquote
from xml.sax.saxutils import unescape

import jsonpatch
import orjson

from ..cli_fixtures import _UUID, document_key, map_document, stable_uuid
from ..fhir import jsonio
from ..fhir.jsonio import FhirDecimal
from ..pathway.clocks import add_working_days, bank_holidays
from ..validation.terminology import default_terminology
from .emit_forms import varied_text_names

SHARED_TYPES = ("Organization", "Practitioner")
_SHARED_NS = uuid.UUID("5b0c8a52-8d7e-4f36-9c51-1ac5a1f0e903")
_PATCH = "application/json-patch+json"
_XML_ENTITIES = {"&quot;": '"', "&apos;": "'"}


def loads(text: str | bytes):
    """JSON with FHIR decimals kept as written (jsonio.loads without its input checks: the
    text is the mappers' own output)."""
    return json.loads(text, parse_float=FhirDecimal)


@dataclass
class Mapped:
    bundle: dict
    key: str          # the document identifier "system|value"
    text: str         # the Bundle's JSON text (compact, the mapper's key order)


# -- normalising urn:uuids (cli_fixtures.normalise_bundle, on text) --------------------------------

def normalise_text(text: str, full_urls: list[str], key: str) -> str:
    """normalise_bundle's renaming applied to the Bundle's JSON text: entry fullUrls become
    stable_uuid(key, entry-i), any other urn:uuid stable_uuid(key, other-n) in order of appearance."""
    names: dict[str, str] = {}
    for index, full_url in enumerate(full_urls):
        if full_url and _UUID.fullmatch(full_url) and full_url not in names:
            names[full_url] = stable_uuid(key, f"entry-{index}")

    def rename(match: re.Match) -> str:
        value = match.group(0)
        if value not in names:
            names[value] = stable_uuid(key, f"other-{len(names)}")
        return names[value]

    return _UUID.sub(rename, text)


def _full_urls(bundle: dict) -> list[str]:
    return [e.get("fullUrl") if isinstance(e.get("fullUrl"), str) else "" for e in bundle.get("entry") or []]


def exact(raw: bytes) -> Mapped:
    doc = map_document(raw)
    key = document_key(doc)
    text = normalise_text(jsonio.dumps(doc.bundle).decode("utf-8"), _full_urls(doc.bundle), key)
    return Mapped(loads(text), key, text)


# -- the fast path ---------------------------------------------------------------------------------

# A value the generator varies: (element, its attributes, text) or (attribute, value). Only the
# form Texts that vary from child to child are values (the others are shape: a Text missed here
# costs prototypes, never correctness); role, version and relationship are choices between fixed
# wordings, so they are shape too.
_VALUES = re.compile(
    rb'<(Date|Integer|Name|Author|NhsNumber|LaChildId|Given|Family|BirthDate|EpisodeStart|Sent|MessageId|Phone'
    rb'|Email|PostcodeDistrict|LegalStatus|Type|Provider|Reason)(?:\s[^>]*)?>([^<]*)</\1>'
    rb'|<Text name="(?:' + "|".join(varied_text_names()).encode() + rb')"[^>]*>([^<]*)</Text>'
    rb'|\s(nhsNumber|dateOfBirth|documentId|completed)="([^"]*)"'
    rb'|<Coded name="(?:sexAtBirth|legalStatus|categoryOfNeed|type|provider|grantor|capacity|legalBasis)" '
    rb'code="([^"]*)" system="([^"]*)">([^<]*)</Coded>')
# Notification codes that only ever become a Coding (no rule of the mapping branches on them).
_NOTIFICATION_CODES = {b"LegalStatus": "ssda903-legal-status", b"Type": "ssda903-placement-type",
                       b"Provider": "ssda903-placement-provider", b"Reason": "ssda903-reason-episode-ceased"}
_KIND = {b"Date": "date", b"BirthDate": "date", b"EpisodeStart": "date", b"dateOfBirth": "date",
         b"completed": "datetime", b"Sent": "datetime", b"Integer": "integer", b"NhsNumber": "nhs",
         b"nhsNumber": "nhs", b"Phone": "phone", b"Email": "email", b"PostcodeDistrict": "district"}
_ENTERED_CARE_DATE = re.compile(rb"<EnteredCare>\s*<Date>([^<]+)</Date>")


def _marker_nhs() -> str:
    from .population import nhs_number

    return next(n for n in (nhs_number(999999990 - i) for i in range(11)) if n)


def _shift(value: str) -> str:
    """A date (or dateTime) 400 years earlier: same weekday, same leap years, same order."""
    return f"{int(value[:4]) - 400:04d}{value[4:]}"


def _coding(system: str, code: str, display: str) -> str:
    """A valueCoding as the form mapper writes it (display only when the XML gives one)."""
    out = {"system": system, "code": code}
    if display.strip():
        out["display"] = display.strip()
    return orjson.dumps(out).decode("utf-8")


def _codings(values: list[tuple[str, str]]) -> list[str]:
    """The Coding text of each free code: a form's (its display is the XML text that follows it)
    or a notification's (the mapping's $coding: display from our CodeSystem)."""
    out = []
    for (kind, value), (_, display) in zip(values, values[1:] + [("", "")]):
        if kind == "code":
            system, code = value.split("\x00")
            out.append(_coding(system, code, display))
        elif kind == "ncode":
            name, code = value.split("\x00")
            system = _notification_systems() + name
            out.append(_notification_coding(system, code))
    return out


@cache
def _notification_coding(system: str, code: str) -> str:
    return _coding(system, code, default_terminology().display(system, code) or "")


@lru_cache(maxsize=1)
def _notification_systems() -> str:
    from ..mapping.la_notification import load_mapping

    return load_mapping()["code_systems"]


def _marker(kind: str, value: str, position: int) -> str:
    if kind in ("code", "display", "ncode"):
        return value.split("\x00")[-1]      # codes must stay valid: the prototype keeps its own
    if kind in ("date", "datetime"):
        return _shift(value)
    if kind == "integer":
        return str(900000 + position)
    if kind == "nhs":
        return _MARKER_NHS_VALUE
    if kind == "phone":
        return f"0999{position:06d}"
    if kind == "email":
        return f"zq{position}x@zq.example"
    if kind == "district":
        return f"QZ{position % 10}{chr(65 + position // 10 % 26)}"
    return f"zq{position}x"


_MARKER_NHS_VALUE = _marker_nhs()


@dataclass
class _Shape:
    parts: list[bytes]              # the document between its values
    values: list[tuple[str, str]]   # (kind, value) in document order

    @property
    def key(self) -> bytes:
        return b"\x00".join(self.parts)

    def with_values(self, values: list[str]) -> bytes:
        out = [self.parts[0]]
        for value, part in zip(values, self.parts[1:]):
            out.append(value.encode("utf-8"))
            out.append(part)
        return b"".join(out)


def _value(raw: bytes) -> str:
    value = raw.decode("utf-8")
    return unescape(value, _XML_ENTITIES) if "&" in value else value


def _shape(raw: bytes) -> _Shape:
    parts, values, last = [], [], 0
    for m in _VALUES.finditer(raw):
        tag, text, ttext, attribute, avalue, code, system, display = m.groups()
        if system:
            # a code the generator varies: its code and display are values (kept as they are in the
            # prototype, which must stay valid); its system is shape
            parts.append(raw[last:m.start(6)])
            values.append(("code", system.decode("utf-8") + "\x00" + code.decode("utf-8")))
            parts.append(raw[m.end(6):m.start(8)])
            values.append(("display", _value(display)))
            last = m.end(8)
            continue
        if tag:
            group = 2
            value = ("ncode", _NOTIFICATION_CODES[tag] + "\x00" + text.decode("utf-8")) \
                if tag in _NOTIFICATION_CODES else (_KIND.get(tag, "text"), _value(text))
        elif attribute:
            group, value = 5, (_KIND.get(attribute, "text"), _value(avalue))
        else:
            group, value = 3, ("text", _value(ttext))
        parts.append(raw[last:m.start(group)])
        values.append(value)
        last = m.end(group)
    parts.append(raw[last:])
    return _Shape(parts, values)


@dataclass
class _Prototype:
    text: str | None            # the prototype's Bundle JSON (patch data as PATCH<n> placeholders), None: map exactly
    markers: list[str]
    key: str                    # its document identifier, with markers
    due: str | None             # its IHA due date (EnteredCare), derived from a marker date
    patches: list[str] = field(default_factory=list)   # each JSON Patch's JSON text, with markers
    full_urls: list[str] | None = None                 # the entries' fullUrls (placeholders)
    codings: list[str] = field(default_factory=list)   # the valueCoding text of each varied code
    pieces: dict[str, list[str]] = field(default_factory=dict)  # text, key and patches cut at their markers

    def cut(self, name: str, text: str) -> list[str]:
        found = self.pieces.get(name)
        if found is None:
            found = self.pieces[name] = _pieces(text)
        return found


# Every marker _marker can make (and the marker NHS number); a match that is not one of the
# document's markers is left as it is.
_MARKERS = re.compile(r"zq\d+x(?:@zq\.example)?|1[5-6]\d\d-\d\d-\d\d(?:T\d\d:\d\d:\d\dZ)?|9000\d\d|0999\d{6}"
                      r"|QZ\d[A-Z]|" + _MARKER_NHS_VALUE)
_PATCH_SLOT = re.compile(r'"PATCH(\d+)"')
_MARKER_PIECES = re.compile(f"({_MARKERS.pattern})")


def _pieces(text: str) -> list[str]:
    """The text cut at its markers: [text, marker, text, ..., text] (what _MARKERS.sub scans)."""
    return _MARKER_PIECES.split(text)


def _fill(pieces: list[str], subs: dict[str, str]) -> str:
    """_MARKERS.sub with each marker replaced by its value (or kept), without scanning again."""
    out = pieces[:]
    out[1::2] = [subs.get(marker, marker) for marker in pieces[1::2]]
    return "".join(out)


def _escape(value: str) -> str:
    return orjson.dumps(value).decode("utf-8")[1:-1]


def _iha_due(entered: str) -> str:
    from ..mapping.la_notification import load_mapping

    days = int(load_mapping()["constants"]["iha-due-working-days"])
    return add_working_days(date.fromisoformat(entered), days, bank_holidays()).isoformat()


@dataclass
class Mapper:
    exact: bool = False
    prototypes: dict[bytes, _Prototype] = field(default_factory=dict)
    stats: Counter = field(default_factory=Counter)

    def map(self, raw: bytes) -> Mapped:
        if self.exact:
            self.stats["exact"] += 1
            return exact(raw)
        shape = _shape(raw)
        proto = self.prototypes.get(shape.key)
        if proto is None:
            proto = self.prototypes[shape.key] = self._prototype(shape)
            self.stats["prototypes"] += 1
        if proto.text is None:
            self.stats["exact"] += 1
            return exact(raw)
        subs: dict[str, str] = {}
        for marker, (kind, value) in zip(proto.markers, shape.values):
            if kind in ("code", "display", "ncode"):
                continue
            value = _escape(value) if kind in ("text", "email") else value
            if subs.setdefault(marker, value) != value:
                self.stats["exact"] += 1      # two values share a marker in this shape: ambiguous
                return exact(raw)
        if proto.due is not None:
            entered = _ENTERED_CARE_DATE.search(raw).group(1).decode()
            if subs.setdefault(proto.due, _iha_due(entered)) != _iha_due(entered):
                self.stats["exact"] += 1
                return exact(raw)
        text = _fill(proto.cut("text", proto.text), subs)
        changed = [(mine, theirs) for mine, theirs in zip(proto.codings, _codings(shape.values)) if mine != theirs]
        for mine, theirs in changed:
            text = text.replace(mine, theirs)
        if changed and proto.patches:   # codes first, then markers, as the patches were always made
            patches = list(proto.patches)
            for mine, theirs in changed:
                patches = [p.replace(mine, theirs) for p in patches]
            patches = [_fill(_pieces(p), subs) for p in patches]
        else:
            patches = [_fill(proto.cut(f"patch{i}", p), subs) for i, p in enumerate(proto.patches)]
        if patches:
            data = [base64.b64encode(p.encode("utf-8")).decode("ascii") for p in patches]
            text = _PATCH_SLOT.sub(lambda m: f'"{data[int(m.group(1))]}"', text)
        key = _fill(proto.cut("key", proto.key), subs)
        text = normalise_text(text, proto.full_urls, key)
        self.stats["templated"] += 1
        return Mapped(loads(text), key, text)

    def _prototype(self, shape: _Shape) -> _Prototype:
        markers, used = [], set()
        for i, (kind, value) in enumerate(shape.values):
            marker = _marker(kind, value, i)
            if kind in ("date", "datetime"):
                # one marker per position (two equal dates here may differ in the next document of
                # this shape); moving a later element's date forward keeps the order the checks need
                while marker in used:
                    day = date.fromisoformat(marker[:10]).toordinal() + 1
                    marker = date.fromordinal(day).isoformat() + marker[10:]
                used.add(marker)
            markers.append(marker)
        raw = shape.with_values(markers)
        try:
            doc = map_document(raw)
        except Exception:  # noqa: BLE001 - a shape whose markers the mapper refuses is mapped exactly
            return _Prototype(None, markers, "", None)
        bundle = doc.bundle
        patches = []
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") or {}
            if resource.get("contentType") == _PATCH:
                # the mapper's own encoding: json.dumps(ops, ensure_ascii=False, separators=(",", ":"))
                patches.append(base64.b64decode(resource["data"]).decode("utf-8"))
                resource["data"] = f"PATCH{len(patches) - 1}"
        # placeholders for the mapper's random urn:uuids, in order (normalising later renames them);
        # they hold no 9 followed by 0, so no integer marker (9000nn) can occur inside one
        names: dict[str, str] = {}
        full_urls = [names.setdefault(u, f"urn:uuid:00000000-0000-4000-8000-{len(names):012x}") if u else u
                     for u in _full_urls(bundle)]
        text = _UUID.sub(lambda m: names.setdefault(m.group(0), f"urn:uuid:00000000-0000-4000-8000-{len(names):012x}"),
                         jsonio.dumps(bundle).decode("utf-8"))
        due = None
        entered = _ENTERED_CARE_DATE.search(raw)
        if entered is not None:
            due = _iha_due(entered.group(1).decode())
        codings = _codings(shape.values)
        everything = text + "".join(patches)
        systems = [c.split(',"code"')[0] for c in codings]
        if len(set(systems)) != len(systems) or any(everything.count(c) != everything.count(s + ",")
                                                    for c, s in zip(codings, systems)):
            return _Prototype(None, markers, "", None)   # a varied code's system has other codings too
        proto = _Prototype(text, markers, document_key(doc), due, patches, codings=codings)
        proto.full_urls = full_urls
        return proto


# -- the resources a server holds ----------------------------------------------------------------

def _identifiers(resource: dict) -> list[str]:
    found = resource.get("identifier") or []
    found = [found] if isinstance(found, dict) else found   # QuestionnaireResponse.identifier is 0..1
    return [f"{i.get('system')}|{i.get('value')}" for i in found if i.get("value")]


def _criteria(query: str) -> list[str]:
    """`identifier=a|b,c|d` (OR) as a list of system|value tokens; only identifier searches are used."""
    out = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "identifier":
            out += [unquote(v) for v in value.split(",")]
    return out


def shared_id(rtype: str, resource: dict) -> str:
    """The id of a resource many children share (Organization, Practitioner): from its first
    identifier, so every child and every worker process names it the same way."""
    token = (_identifiers(resource) or [json.dumps(resource, sort_keys=True)])[0]
    return str(uuid.uuid5(_SHARED_NS, f"{rtype}|{token}"))


_REFERENCE = re.compile(r'"reference":"([^"]*)"')


class ChildStore:
    """A child's resources as JSON text (the NDJSON lines), in creation order."""

    def __init__(self):
        self.resources: dict[tuple[str, str], str] = {}      # (type, id) -> resource JSON text
        self.index: dict[tuple[str, str], str] = {}          # (type, identifier token) -> id

    def _find(self, rtype: str, tokens: list[str]) -> str | None:
        for token in tokens:
            found = self.index.get((rtype, token))
            if found:
                return found
        return None

    def _resolve(self, reference: str) -> str | None:
        rtype, _, query = reference.partition("?")
        return f"{rtype}/{found}" if query and (found := self._find(rtype, _criteria(query))) else None

    def add(self, bundle: dict) -> None:
        """Apply one transaction Bundle, as a server would (creates before references are rewritten)."""
        local: dict[str, str] = {}      # fullUrl -> Type/id
        pending: list[tuple[str, dict, str, str]] = []
        for entry in bundle.get("entry") or []:
            request, resource = entry["request"], entry.get("resource")
            method, url = request["method"], request["url"]
            if method == "PATCH":
                pending.append(("PATCH", entry, url, ""))
                continue
            rtype = resource["resourceType"]
            if method == "POST":
                found = self._find(rtype, _criteria(request.get("ifNoneExist", "")))
                if found:
                    local[entry["fullUrl"]] = f"{rtype}/{found}"
                    continue
                rid = shared_id(rtype, resource) if rtype in SHARED_TYPES else entry["fullUrl"].rsplit(":", 1)[1]
            else:  # PUT Type?identifier=...
                rid = self._find(rtype, _criteria(url.partition("?")[2])) or entry["fullUrl"].rsplit(":", 1)[1]
            local[entry["fullUrl"]] = f"{rtype}/{rid}"
            for token in _identifiers(resource):
                self.index.setdefault((rtype, token), rid)
            pending.append((method, entry, rtype, rid))
        for method, entry, rtype_or_url, rid in pending:
            if method == "PATCH":
                self._patch(entry, rtype_or_url)
                continue
            body = jsonio.dumps({"resourceType": rtype_or_url, "id": rid,
                                 **{k: v for k, v in entry["resource"].items() if k != "resourceType"}})
            self.resources[(rtype_or_url, rid)] = _REFERENCE.sub(
                lambda m: f'"reference":"{self._target(m.group(1), local)}"', body.decode("utf-8"))

    def _target(self, reference: str, local: dict[str, str]) -> str:
        if reference in local:
            return local[reference]
        if "?" in reference:
            return self._resolve(reference) or reference
        return reference

    def _patch(self, entry: dict, url: str) -> None:
        rtype, _, query = url.partition("?")
        rid = self._find(rtype, _criteria(query))
        if rid is None or (rtype, rid) not in self.resources:
            raise ValueError(f"PATCH {url}: no such resource in this child's history")
        ops = loads(base64.b64decode(entry["resource"]["data"]))
        patched = jsonpatch.apply_patch(loads(self.resources[(rtype, rid)]), ops, in_place=True)
        self.resources[(rtype, rid)] = jsonio.dumps(patched).decode("utf-8")
