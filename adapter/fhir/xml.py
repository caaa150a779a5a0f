"""FHIR R4 XML <-> FHIR JSON, driven by the vendored element definitions.

The rest of the server works on FHIR JSON (Python dicts, decimals as Decimal), so XML is
only a wire format: `parse_resource` turns an XML body into the same dict `jsonio` would
give for the equivalent JSON, and `serialize_resource` writes a dict back as XML.

XML needs the definitions because it is not self-describing: whether an element repeats
(JSON array), which primitive type a `value` attribute has (JSON boolean, number or
string), the element order, and which elements are attributes all come from
`profiles/r4/elements.json`. We compile those once into per-context child maps so that a
parse is one tree walk with dict lookups.

Hardening: the input must be UTF-8 and must not carry a DTD (no entity expansion, no
external fetches), the lxml parser resolves nothing and loads nothing, and every element,
attribute and text node must be one the definitions allow. Every problem is a 400 whose
diagnostics name the source line and the element path.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from lxml import etree

from .errors import FhirError, bad_request
from .jsonio import FhirDecimal

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

ELEMENTS_PATH = Path(__file__).resolve().parents[2] / "profiles" / "r4" / "elements.json"

_F = "{" + FHIR_NS + "}"
_DIV_TAG = "{" + XHTML_NS + "}div"
_EXT_TAG = _F + "extension"
_NSMAP = {None: FHIR_NS}
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
# Attributes a schema-aware client may add; they carry no FHIR content.
_IGNORED_ATTRS = frozenset({"{%s}schemaLocation" % XSI_NS, "{%s}noNamespaceSchemaLocation" % XSI_NS})
# Only XML's own whitespace may sit between elements (not NBSP and friends).
_XML_WS = " \t\r\n"
_DTD_RE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_SYNTAX_POS_RE = re.compile(r", line (\d+), column (\d+)$")
_ABSTRACT_RESOURCES = frozenset({"Resource", "DomainResource"})

# How an element is represented; decides both the XML shape and the JSON shape.
_ATTR, _PRIMITIVE, _COMPLEX, _RESOURCE, _XHTML = range(5)

_MISSING = object()


# --------------------------------------------------------------------------- primitives
# Lexical forms from the R4 datatypes page; checked before conversion so that nothing
# unbounded (e.g. a 10 MB integer) reaches int().

_INTEGER_RE = re.compile(r"-?(?:0|[1-9][0-9]{0,9})")
_POSITIVE_INT_RE = re.compile(r"\+?[1-9][0-9]{0,9}")
_UNSIGNED_INT_RE = re.compile(r"0|[1-9][0-9]{0,9}")
_DECIMAL_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INT_MIN, _INT_MAX = -2147483648, 2147483647


class _LexicalError(ValueError):
    """A primitive value that does not match its type; the message is for the client."""


def _parse_boolean(text: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise _LexicalError("expected 'true' or 'false'")


def _int_parser(pattern: re.Pattern[str], low: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if pattern.fullmatch(text):
            value = int(text)
            if low <= value <= _INT_MAX:
                return value
        raise _LexicalError(f"expected {what} between {low} and {_INT_MAX}")
    return parse


def _parse_decimal(text: str) -> Decimal:
    if _DECIMAL_RE.fullmatch(text):
        return FhirDecimal(text)
    raise _LexicalError("expected a decimal number such as 2.00, -1 or 1.5e3")


def _parse_string(text: str) -> str:
    return text


def _format_boolean(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise _LexicalError("expected a JSON boolean")


def _int_formatter(low: int, what: str) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        if type(value) is int and low <= value <= _INT_MAX:
            return str(value)
        raise _LexicalError(f"expected a JSON integer ({what} between {low} and {_INT_MAX})")
    return fmt


def _format_decimal(value: Any) -> str:
    if isinstance(value, Decimal) and value.is_finite():
        return str(value)
    if type(value) is int:
        return str(value)
    if type(value) is float and value == value and value not in (float("inf"), float("-inf")):
        return repr(value)
    raise _LexicalError("expected a finite JSON number")


def _format_string(value: Any) -> str:
    if type(value) is str and value:
        return value
    raise _LexicalError("expected a non-empty JSON string")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "boolean": _parse_boolean,
    "integer": _int_parser(_INTEGER_RE, _INT_MIN, "an integer"),
    "positiveInt": _int_parser(_POSITIVE_INT_RE, 1, "a positive integer"),
    "unsignedInt": _int_parser(_UNSIGNED_INT_RE, 0, "an unsigned integer"),
    "decimal": _parse_decimal,
}
_FORMATTERS: dict[str, Callable[[Any], str]] = {
    "boolean": _format_boolean,
    "integer": _int_formatter(_INT_MIN, "an integer"),
    "positiveInt": _int_formatter(1, "a positive integer"),
    "unsignedInt": _int_formatter(0, "an unsigned integer"),
    "decimal": _format_decimal,
}


# --------------------------------------------------------------------------- definitions

class _Child:
    """One child an XML element / JSON object may have, for one concrete type.

    A choice element (`value[x]`) yields one _Child per allowed type, sharing `group`.
    """

    __slots__ = ("name", "uname", "tag", "type", "kind", "repeats", "ctx", "order", "group",
                 "defname", "choice", "parse", "format")

    def __init__(self, name: str, tag: str, type_code: str, kind: int, repeats: bool,
                 ctx: _Context | None, order: int, group: int, defname: str) -> None:
        self.name = name                 # JSON property name, e.g. valueQuantity
        self.uname = "_" + name          # JSON property for a primitive's id/extensions
        self.tag = tag                   # Clark tag in XML, e.g. {http://hl7.org/fhir}valueQuantity
        self.type = type_code
        self.kind = kind
        self.repeats = repeats
        self.ctx = ctx                   # children of this element's content
        self.order = order               # definition order (sort key when writing XML)
        self.group = group               # element index; choice variants share it
        self.defname = defname           # as defined, e.g. value[x]
        self.choice = defname.endswith("[x]")
        self.parse = _PARSERS.get(type_code, _parse_string)
        self.format = _FORMATTERS.get(type_code, _format_string)


class _Context:
    """The children allowed inside one kind of element (a type, or a backbone path in a type)."""

    __slots__ = ("name", "by_tag", "by_json", "attrs", "is_resource")

    def __init__(self, name: str, is_resource: bool) -> None:
        self.name = name
        self.by_tag: dict[str, _Child] = {}    # XML child elements
        self.by_json: dict[str, _Child] = {}   # JSON properties (incl. _name and attributes)
        self.attrs: dict[str, _Child] = {}     # XML attributes (id, url, value)
        self.is_resource = is_resource


class _Schema:
    __slots__ = ("resources", "extension")

    def __init__(self, resources: dict[str, _Context], extension: _Context) -> None:
        self.resources = resources
        self.extension = extension


def _capitalise(type_code: str) -> str:
    return type_code[:1].upper() + type_code[1:]


@functools.lru_cache(maxsize=1)
def _schema() -> _Schema:
    """Compile elements.json into contexts once; contexts are shared and may be cyclic."""
    raw = json.loads(ELEMENTS_PATH.read_bytes())
    kinds: dict[str, str] = raw["kinds"]
    types: dict[str, dict[str, dict]] = raw["types"]

    by_parent: dict[str, dict[str, list[tuple[str, dict]]]] = {}
    for type_name, elements in types.items():
        groups: dict[str, list[tuple[str, dict]]] = {}
        for path, element in elements.items():
            groups.setdefault(path.rpartition(".")[0], []).append((path, element))
        by_parent[type_name] = groups

    contexts: dict[tuple[str, str], _Context] = {}
    pending: list[tuple[str, str]] = []

    def context(type_name: str, prefix: str) -> _Context:
        key = (type_name, prefix)
        ctx = contexts.get(key)
        if ctx is None:
            is_resource = not prefix and kinds.get(type_name) == "resource"
            ctx = contexts[key] = _Context(f"{type_name}.{prefix}" if prefix else type_name, is_resource)
            pending.append(key)
        return ctx

    def fill(type_name: str, prefix: str) -> None:
        ctx = contexts[(type_name, prefix)]
        for index, (path, element) in enumerate(by_parent[type_name].get(prefix, [])):
            defname = path.rpartition(".")[2]
            repeats = bool(element.get("m"))
            representation = element.get("x") or ()
            if "c" in element:
                variants = [("BackboneElement", defname, context(type_name, element["c"]))]
            else:
                choice = defname.endswith("[x]")
                variants = []
                for type_code in element["t"]:
                    name = defname[:-3] + _capitalise(type_code) if choice else defname
                    if type_code in ("BackboneElement", "Element"):
                        sub = context(type_name, path)
                    elif kinds.get(type_code) in ("complex-type", "primitive-type") and type_code != "xhtml":
                        sub = context(type_code, "")
                    elif type_code == "xhtml" or kinds.get(type_code) == "resource":
                        sub = None
                    else:
                        raise RuntimeError(f"{ELEMENTS_PATH}: {type_name}.{path} has unknown type {type_code!r}")
                    variants.append((type_code, name, sub))
            for variant, (type_code, name, sub) in enumerate(variants):
                if "xmlAttr" in representation:
                    kind, tag = _ATTR, name
                elif type_code == "xhtml":
                    kind, tag = _XHTML, _DIV_TAG
                elif kinds.get(type_code) == "resource":
                    kind, tag = _RESOURCE, _F + name
                elif kinds.get(type_code) == "primitive-type":
                    kind, tag = _PRIMITIVE, _F + name
                else:
                    kind, tag = _COMPLEX, _F + name
                child = _Child(name, tag, type_code, kind, repeats, sub,
                               index * 256 + variant, index, defname)
                ctx.by_json[name] = child
                if kind == _ATTR:
                    ctx.attrs[name] = child
                else:
                    ctx.by_tag[tag] = child
                    if kind == _PRIMITIVE:
                        ctx.by_json[child.uname] = child

    resources = {name: context(name, "") for name, kind in kinds.items()
                 if kind == "resource" and name not in _ABSTRACT_RESOURCES}
    extension = context("Extension", "")
    while pending:
        fill(*pending.pop())
    return _Schema(resources, extension)


# --------------------------------------------------------------------------- error paths

def _local_name(tag: Any) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else "(non-element node)"


def _namespace(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


def _resource_context(tag: Any) -> _Context | None:
    if isinstance(tag, str) and tag.startswith(_F):
        return _schema().resources.get(tag[len(_F):])
    return None


def _element_path(el: Any) -> str:
    """FHIRPath-like location of an element (`Bundle.entry[0].resource.name[1]`).

    Computed only when reporting an error, by walking from the root with the
    definitions, so the happy path carries no path bookkeeping.
    """
    chain = []
    node = el
    while node is not None:
        chain.append(node)
        node = node.getparent()
    chain.reverse()
    parts = [_local_name(chain[0].tag)]
    ctx = _resource_context(chain[0].tag)
    i = 1
    while i < len(chain):
        node = chain[i]
        child = ctx.by_tag.get(node.tag) if ctx is not None else None
        if child is None:
            parts.append(_local_name(node.tag))
            ctx = None
        else:
            segment = child.name
            if child.repeats:
                index = sum(1 for s in node.itersiblings(preceding=True) if s.tag == node.tag)
                segment += f"[{index}]"
            parts.append(segment)
            if child.kind == _RESOURCE:
                i += 1  # the resource element itself is not a path step in FHIRPath
                ctx = _resource_context(chain[i].tag) if i < len(chain) else None
            else:
                ctx = child.ctx
        i += 1
    return ".".join(parts)


def _xml_error(el: Any, message: str, path: str | None = None) -> FhirError:
    """A 400 for input XML: `line N: message`, with the element path as expression."""
    if path is None:
        path = _element_path(el)
    return bad_request(f"line {el.sourceline}: {message}", expression=[path], code="structure")


def _json_error(el: Any, message: str, key: str | None = None) -> FhirError:
    """A 400 for a JSON resource being written; `el` is the XML element built for its object."""
    path = _element_path(el)
    if key is not None:
        path = f"{path}.{key}"
    return bad_request(f"{message} at {path}", expression=[path], code="structure")


# --------------------------------------------------------------------------- parsing XML

_parsers = threading.local()


def _parser() -> etree.XMLParser:
    """The hardened parser, one per thread (lxml parsers must not be shared concurrently)."""
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
            remove_comments=True, remove_pis=True)
    return parser


def _reject_dtd(data: bytes) -> None:
    if _DTD_RE.search(data):
        raise bad_request("DTDs are not allowed in FHIR XML (found a DOCTYPE or ENTITY declaration)",
                          code="structure")


def _parse_document(data: bytes, what: str) -> Any:
    """Parse with the hardened parser; malformed input becomes a 400 with line and column."""
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        message = exc.msg or "unreadable document"
        line, column = exc.lineno, None
        match = _SYNTAX_POS_RE.search(message)
        if match:
            line, column = int(match.group(1)), match.group(2)
            message = message[:match.start()]
        where = f"line {line}, column {column}" if column else f"line {line}"
        raise bad_request(f"{where}: malformed {what}: {message}", code="structure") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise bad_request("DTDs are not allowed in FHIR XML", code="structure")
    return root


def parse_resource(data: bytes) -> dict:
    """FHIR XML bytes to the resource as FHIR JSON (a dict); any problem is a 400."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, bytes):
        data = bytes(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"FHIR XML must be UTF-8 encoded (invalid UTF-8 at byte {exc.start})",
                          code="structure") from None
    _reject_dtd(data)
    root = _parse_document(data, "XML")
    encoding = (root.getroottree().docinfo.encoding or "UTF-8").upper()
    if encoding not in ("UTF-8", "UTF8", "US-ASCII", "ASCII"):
        raise bad_request(f"FHIR XML must be UTF-8 encoded (the XML declaration says {encoding})",
                          code="structure")
    return _parse_resource_element(root)


def _parse_resource_element(el: Any) -> dict:
    tag = el.tag
    if not isinstance(tag, str) or not tag.startswith(_F):
        namespace = _namespace(tag) if isinstance(tag, str) else ""
        found = f"namespace '{namespace}'" if namespace else "no namespace"
        raise _xml_error(el, f"element '{_local_name(tag)}' is in {found}, expected a resource "
                             f"in namespace '{FHIR_NS}'", path=_resource_path(el))
    resource_type = tag[len(_F):]
    ctx = _schema().resources.get(resource_type)
    if ctx is None:
        raise _xml_error(el, f"unknown resource type '{resource_type}'", path=_resource_path(el))
    out: dict = {"resourceType": resource_type}
    _parse_children(el, ctx, out)
    return out


def _resource_path(el: Any) -> str:
    """Where a resource element sits: its container's path, or its own name at the root."""
    parent = el.getparent()
    return _element_path(parent) if parent is not None else _local_name(el.tag)


def _check_text(el: Any, text: str | None) -> None:
    if text and text.strip(_XML_WS):
        raise _xml_error(el, f"text content {text.strip()[:40]!r} is not allowed in "
                             f"{_element_path(el)} (FHIR values go in value attributes)")


def _unknown_child(child: Any, parent: Any, ctx: _Context | None) -> FhirError:
    tag = child.tag
    if not isinstance(tag, str):
        return _xml_error(child, f"unexpected non-element node in {_element_path(parent)}",
                          path=_element_path(parent))
    namespace = _namespace(tag)
    local = _local_name(tag)
    hint = ""
    if local == "div" and ctx is not None and _DIV_TAG in ctx.by_tag:
        hint = f" (Narrative.div must be in namespace '{XHTML_NS}')"
    if namespace != FHIR_NS:
        found = f"namespace '{namespace}'" if namespace else "no namespace"
        return _xml_error(child, f"element '{local}' in {found} is not allowed in "
                                 f"{_element_path(parent)}{hint}")
    return _xml_error(child, f"unknown element '{local}' in {_element_path(parent)}{hint}")


def _parse_children(el: Any, ctx: _Context, out: dict) -> None:
    """Fill `out` with the JSON for element `el` whose allowed content is `ctx`."""
    attrib = el.attrib
    if attrib:
        for key, value in attrib.items():
            child = ctx.attrs.get(key)
            if child is None:
                if key in _IGNORED_ATTRS:
                    continue
                raise _xml_error(el, f"unknown attribute '{_local_name(key)}' on {_element_path(el)}")
            if not value:
                raise _xml_error(el, f"attribute '{key}' on {_element_path(el)} is empty")
            out[child.name] = value
    _check_text(el, el.text)
    repeating_primitives: list[_Child] | None = None
    choices: set[int] | None = None
    for node in el:
        tail = node.tail
        if tail and tail.strip(_XML_WS):
            _check_text(el, tail)
        child = ctx.by_tag.get(node.tag)
        if child is None:
            raise _unknown_child(node, el, ctx)
        kind = child.kind
        name = child.name
        if kind == _PRIMITIVE:
            value, meta = _parse_primitive(node, child)
            if child.repeats:
                values = out.get(name)
                if values is None:
                    values = out[name] = []
                    metas = out[child.uname] = []
                    if repeating_primitives is None:
                        repeating_primitives = []
                    repeating_primitives.append(child)
                else:
                    metas = out[child.uname]
                values.append(value)
                metas.append(meta)
            else:
                if name in out or child.uname in out:
                    raise _duplicate(node, el, child)
                if child.choice:
                    if choices is None:
                        choices = set()
                    elif child.group in choices:
                        raise _choice_conflict(node, el, ctx, child, out)
                    choices.add(child.group)
                if value is not None:
                    out[name] = value
                if meta is not None:
                    out[child.uname] = meta
            continue
        if kind == _COMPLEX:
            value = {}
            _parse_children(node, child.ctx, value)
        elif kind == _RESOURCE:
            value = _parse_contained(node, child)
        else:
            value = _div_string(node)
        if child.repeats:
            items = out.get(name)
            if items is None:
                out[name] = [value]
            else:
                items.append(value)
        else:
            if name in out:
                raise _duplicate(node, el, child)
            if child.choice:
                if choices is None:
                    choices = set()
                elif child.group in choices:
                    raise _choice_conflict(node, el, ctx, child, out)
                choices.add(child.group)
            out[name] = value
    if repeating_primitives:
        for child in repeating_primitives:
            if all(v is None for v in out[child.name]):
                del out[child.name]
            if all(m is None for m in out[child.uname]):
                del out[child.uname]


def _duplicate(node: Any, parent: Any, child: _Child) -> FhirError:
    return _xml_error(node, f"element '{child.name}' appears more than once in "
                            f"{_element_path(parent)} but does not repeat")


def _choice_conflict(node: Any, parent: Any, ctx: _Context, child: _Child, out: dict) -> FhirError:
    """A choice element takes one type: `valueString` next to `valueBoolean` is an error."""
    other = next(c.name for c in ctx.by_tag.values()
                 if c.group == child.group and c is not child and (c.name in out or c.uname in out))
    return _xml_error(node, f"element '{child.name}' conflicts with '{other}' in "
                            f"{_element_path(parent)}: {child.defname} has only one value")


def _parse_primitive(el: Any, child: _Child) -> tuple[Any, dict | None]:
    """A primitive element to (JSON value or None, `_name` object or None)."""
    value = None
    meta: dict | None = None
    for key, text in el.attrib.items():
        if key == "value":
            if not text:
                raise _xml_error(el, f"empty value attribute on {_element_path(el)} "
                                     f"(omit the element instead)")
            try:
                value = child.parse(text)
            except _LexicalError as exc:
                raise _xml_error(el, f"invalid {child.type} value {text[:60]!r} for "
                                     f"{_element_path(el)}: {exc}") from None
        elif key == "id":
            if not text:
                raise _xml_error(el, f"attribute 'id' on {_element_path(el)} is empty")
            meta = {"id": text}
        elif key not in _IGNORED_ATTRS:
            raise _xml_error(el, f"unknown attribute '{_local_name(key)}' on {_element_path(el)}")
    _check_text(el, el.text)
    extensions: list | None = None
    if len(el):
        extension_ctx = _schema().extension
        for node in el:
            tail = node.tail
            if tail and tail.strip(_XML_WS):
                _check_text(el, tail)
            if node.tag != _EXT_TAG:
                raise _unknown_child(node, el, None)
            item: dict = {}
            _parse_children(node, extension_ctx, item)
            if extensions is None:
                extensions = []
                if meta is None:
                    meta = {}
                meta["extension"] = extensions
            extensions.append(item)
    if value is None and extensions is None:
        raise _xml_error(el, f"{_element_path(el)} has no value attribute and no extensions")
    return value, meta


def _parse_contained(el: Any, child: _Child) -> dict:
    """`<contained><Patient>..</Patient></contained>`: the single child is the resource."""
    for key in el.attrib:
        if key not in _IGNORED_ATTRS:
            raise _xml_error(el, f"unknown attribute '{_local_name(key)}' on {_element_path(el)}")
    _check_text(el, el.text)
    count = len(el)
    if count != 1:
        raise _xml_error(el, f"{_element_path(el)} must contain exactly one resource, found {count} elements")
    node = el[0]
    _check_text(el, node.tail)
    if child.type != "Resource" and node.tag != _F + child.type:
        raise _xml_error(node, f"{_element_path(el)} must contain a {child.type}, "
                               f"found '{_local_name(node.tag)}'", path=_element_path(el))
    return _parse_resource_element(node)


def _div_string(el: Any) -> str:
    """Narrative XHTML as the JSON string form: the div with its own xmlns declaration only."""
    div = copy.deepcopy(el)
    div.tail = None
    etree.cleanup_namespaces(div)
    return etree.tostring(div, encoding="unicode")


# --------------------------------------------------------------------------- writing XML

def serialize_resource(resource: dict, pretty: bool = False) -> bytes:
    """A FHIR JSON resource (dict) to UTF-8 FHIR XML bytes, elements in definition order."""
    if not isinstance(resource, dict):
        raise bad_request("a resource must be a JSON object", code="structure")
    try:
        root = _build_resource(None, resource)
    except RecursionError:
        raise bad_request("resource is nested too deeply to write as XML", code="too-costly") from None
    if pretty:
        _indent(root, 0)
    return _XML_DECLARATION + etree.tostring(root, encoding="UTF-8")


def _build_resource(parent: Any, resource: Any) -> Any:
    if not isinstance(resource, dict):
        where = _element_path(parent) if parent is not None else "resource"
        raise bad_request(f"a resource must be a JSON object at {where}", expression=[where],
                          code="structure")
    resource_type = resource.get("resourceType")
    ctx = _schema().resources.get(resource_type) if isinstance(resource_type, str) else None
    if ctx is None:
        where = _element_path(parent) if parent is not None else "resourceType"
        what = f"unknown resource type {resource_type!r}" if resource_type is not None else "missing resourceType"
        raise bad_request(f"{what} at {where}", expression=[where], code="structure")
    if parent is None:
        el = etree.Element(_F + resource_type, nsmap=_NSMAP)
    else:
        el = etree.SubElement(parent, _F + resource_type)
    _build_children(el, resource, ctx)
    return el


def _order(child: _Child) -> int:
    return child.order


def _build_children(el: Any, obj: dict, ctx: _Context) -> None:
    """Append the XML for JSON object `obj` (content `ctx`) to element `el`."""
    by_json = ctx.by_json
    present: dict[_Child, None] = {}
    for key in obj:
        child = by_json.get(key)
        if child is None:
            if key == "resourceType" and ctx.is_resource:
                continue
            raise _json_error(el, f"unknown property '{key}'", key)
        present[child] = None
    group = -1
    for child in sorted(present, key=_order):
        if child.group == group:
            other = next(c for c in present if c.group == group and c is not child)
            raise _json_error(el, f"'{child.name}' and '{other.name}' both given for {child.defname}",
                              child.name)
        group = child.group
        kind = child.kind
        if kind == _PRIMITIVE:
            _build_primitive(el, child, obj.get(child.name, _MISSING), obj.get(child.uname, _MISSING))
            continue
        value = obj[child.name]
        if kind == _ATTR:
            _set(el, child.name, _format(el, child, value, child.name), child.name)
            continue
        if child.repeats:
            if not isinstance(value, list) or not value:
                raise _json_error(el, f"'{child.name}' must be a non-empty array", child.name)
            items = value
        else:
            if isinstance(value, list):
                raise _json_error(el, f"'{child.name}' does not repeat and must not be an array", child.name)
            items = (value,)
        for item in items:
            if kind == _COMPLEX:
                node = etree.SubElement(el, child.tag)
                if not isinstance(item, dict):
                    raise _json_error(node, "expected a JSON object")
                _build_children(node, item, child.ctx)
            elif kind == _RESOURCE:
                node = etree.SubElement(el, child.tag)
                if (child.type != "Resource" and isinstance(item, dict)
                        and item.get("resourceType") != child.type):
                    raise _json_error(node, f"expected a {child.type} resource, "
                                            f"found {item.get('resourceType')!r}")
                _build_resource(node, item)
            else:
                el.append(_div_element(el, item))


def _format(el: Any, child: _Child, value: Any, key: str | None) -> str:
    try:
        return child.format(value)
    except _LexicalError as exc:
        raise _json_error(el, f"invalid {child.type} value {_preview(value)}: {exc}", key) from None


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _set(el: Any, name: str, value: str, key: str | None) -> None:
    try:
        el.set(name, value)
    except ValueError:
        raise _json_error(el, "value contains characters that XML cannot carry", key) from None


def _build_primitive(el: Any, child: _Child, value: Any, meta: Any) -> None:
    if not child.repeats:
        if value is None or meta is None:
            name = child.name if value is None else child.uname
            raise _json_error(el, f"'{name}' must not be null", name)
        _build_primitive_item(el, child, value, meta)
        return
    values = meta_items = None
    count = -1
    for key, given in ((child.name, value), (child.uname, meta)):
        if given is _MISSING:
            continue
        if not isinstance(given, list) or not given:
            raise _json_error(el, f"'{key}' must be a non-empty array", key)
        if count >= 0 and len(given) != count:
            raise _json_error(el, f"'{child.uname}' must have as many items as '{child.name}'", child.uname)
        count = len(given)
        if key == child.name:
            values = given
        else:
            meta_items = given
    for i in range(count):
        item_value = values[i] if values is not None else None
        item_meta = meta_items[i] if meta_items is not None else None
        if item_value is None and item_meta is None:
            raise _json_error(el, f"item {i} of '{child.name}' has neither a value nor an id/extension",
                              f"{child.name}[{i}]")
        _build_primitive_item(el, child,
                              _MISSING if item_value is None else item_value,
                              _MISSING if item_meta is None else item_meta)


def _build_primitive_item(parent: Any, child: _Child, value: Any, meta: Any) -> None:
    node = etree.SubElement(parent, child.tag)
    extensions = None
    if meta is not _MISSING:
        if not isinstance(meta, dict):
            raise _json_error(node, f"'{child.uname}' must be a JSON object")
        for key in meta:
            if key not in ("id", "extension"):
                raise _json_error(node, f"unknown property '{key}' in '{child.uname}'", key)
        if "id" in meta:
            element_id = meta["id"]
            if type(element_id) is not str or not element_id:
                raise _json_error(node, f"'id' in '{child.uname}' must be a non-empty string", "id")
            _set(node, "id", element_id, "id")
        extensions = meta.get("extension")
        if extensions is not None and (not isinstance(extensions, list) or not extensions):
            raise _json_error(node, f"'extension' in '{child.uname}' must be a non-empty array", "extension")
    if value is not _MISSING:
        _set(node, "value", _format(node, child, value, None), None)
    elif not extensions:
        raise _json_error(node, f"'{child.name}' has no value and '{child.uname}' has no extension")
    if extensions:
        extension_ctx = _schema().extension
        for item in extensions:
            ext = etree.SubElement(node, _EXT_TAG)
            if not isinstance(item, dict):
                raise _json_error(ext, "expected a JSON object")
            _build_children(ext, item, extension_ctx)


def _div_element(parent: Any, text: Any) -> Any:
    """Narrative.div string to an XHTML element, through the same hardened parser as input."""
    if type(text) is not str:
        raise _json_error(parent, "Narrative div must be a string of XHTML", "div")
    data = text.encode("utf-8")
    try:
        _reject_dtd(data)
        div = _parse_document(data, "XHTML")
    except FhirError as exc:
        raise _json_error(parent, f"invalid Narrative div ({exc.diagnostics})", "div") from None
    if div.tag != _DIV_TAG:
        raise _json_error(parent, f"Narrative div must be a <div xmlns=\"{XHTML_NS}\"> element, "
                                  f"found <{_local_name(div.tag)}> in {_namespace(div.tag) or 'no namespace'}",
                          "div")
    return div


def _indent(el: Any, level: int) -> None:
    """Indent FHIR elements for `pretty`, leaving the whitespace inside XHTML divs alone."""
    if not len(el) or el.tag == _DIV_TAG:
        return
    inner = "\n" + "  " * (level + 1)
    el.text = inner
    last = None
    for node in el:
        node.tail = inner
        _indent(node, level + 1)
        last = node
    last.tail = "\n" + "  " * level
