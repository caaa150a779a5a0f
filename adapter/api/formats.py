"""Content negotiation: FHIR JSON (and plain JSON), FHIR XML, _format and _pretty."""

from __future__ import annotations

from typing import Any

from ..fhir import jsonio
from ..fhir.errors import FhirError
from ..rest.rawjson import RawJson

JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "text/json"}
XML_TYPES = {"application/fhir+xml", "application/xml", "application/xml+fhir", "text/xml"}
FORMAT_ALIASES = {"json": "json", "xml": "xml", **{t: "json" for t in JSON_TYPES}, **{t: "xml" for t in XML_TYPES}}
JSON_CONTENT_TYPE = "application/fhir+json; charset=utf-8"
XML_CONTENT_TYPE = "application/fhir+xml; charset=utf-8"


def media_type(header: str | None) -> str | None:
    if not header:
        return None
    return header.split(";", 1)[0].strip().lower()


def response_format(format_param: str | None, accept: str | None) -> str:
    """'json' or 'xml': `_format` wins over Accept; JSON unless XML is clearly preferred."""
    if format_param:
        fmt = FORMAT_ALIASES.get(format_param.strip().lower().split(";")[0])
        if fmt is None:
            raise FhirError(406, "not-supported", f"_format '{format_param}' is not supported; "
                                                  "use json or xml")
        return fmt
    if accept:
        types = [media_type(part) for part in accept.split(",")]
        for t in types:
            if t in JSON_TYPES or t in ("*/*", "application/*"):
                return "json"
            if t in XML_TYPES:
                return "xml"
    return "json"


def parse_body(data: bytes, content_type: str | None) -> Any:
    """Parse a request body by its media type (415 for one we do not speak)."""
    kind = media_type(content_type)
    if kind in JSON_TYPES or kind == "application/json-patch+json" or kind is None:
        return jsonio.loads(data)
    if kind in XML_TYPES:
        from ..fhir import xml as fhir_xml

        return fhir_xml.parse_resource(data)
    raise FhirError(415, "not-supported", f"Content-Type '{content_type}' is not supported; send "
                                          "application/fhir+json or application/fhir+xml")


def materialise(value: Any) -> Any:
    """Replace embedded stored JSON (RawJson) with parsed values, for XML or pretty output."""
    if isinstance(value, RawJson):
        return jsonio.loads(bytes(value))
    if isinstance(value, dict):
        return {k: materialise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialise(v) for v in value]
    return value


def render(resource: Any, fmt: str, pretty: bool) -> bytes:
    if fmt == "xml":
        from ..fhir import xml as fhir_xml

        return fhir_xml.serialize_resource(materialise(resource), pretty=pretty)
    if pretty:
        return jsonio.dumps(materialise(resource), pretty=True)
    return jsonio.dumps(resource)
