"""Hardened parsing of partner XML documents and validation against our XSDs.

No DTDs, no entities, no network, no huge trees; every problem is a FhirError whose
diagnostics name the line: 400 when the bytes are not acceptable XML, 422 when the
document is well-formed but breaks its schema.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from lxml import etree

from ..fhir.errors import FhirError, Issue

_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
MAX_ISSUES = 20


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                           remove_comments=True, remove_pis=True, dtd_validation=False)


def parse_document(data: bytes, schema_path: Path | None = None) -> etree._Element:
    """Parse `data` safely and, if given, validate it against the XSD at `schema_path`."""
    if _DTD.search(data):
        raise FhirError(400, "security", "DTDs and entity declarations are not allowed in documents")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or (exc.position[0] if exc.position else "?")
        raise FhirError(400, "structure", f"line {line}: not well-formed XML: {exc.msg}") from None
    if root.getroottree().docinfo.doctype:
        raise FhirError(400, "security", "DTDs are not allowed in documents")
    if schema_path is not None:
        check_schema(root, schema_path)
    return root


@lru_cache(maxsize=None)
def load_schema(schema_path: Path) -> etree.XMLSchema:
    """An XSD of ours (local includes only; nothing is fetched)."""
    doc = etree.parse(str(schema_path), _parser())
    return etree.XMLSchema(doc)


def check_schema(root: etree._Element, schema_path: Path) -> None:
    schema = load_schema(schema_path)
    if schema.validate(root):
        return
    issues = []
    for err in list(schema.error_log)[:MAX_ISSUES]:
        where = err.path or ""
        issues.append(Issue("structure", f"line {err.line}: {err.message}", expression=[where] if where else []))
    raise FhirError(422, "structure", issues[0].diagnostics, issues=issues)


def line_of(element: etree._Element) -> str:
    return f"line {element.sourceline}" if element.sourceline else "line ?"
