"""Which mapper reads which partner document, for the HTTP operations and the CLI."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Callable

from ..fhir.errors import FhirError, bad_request
from .document import MappedDocument

MAX_ZIP_BYTES = 64 * 1024 * 1024   # uncompressed: refuse zip bombs
FORM_ROOT = b"HealthAssessmentForm"
NOTIFICATION_ROOT = b"LANotification"
SSDA903_ROOT = b"EXPSSDA903"


def map_form(raw: bytes, content_type: str | None = None) -> MappedDocument:
    from .forms import map_form as mapper

    return mapper(raw)


def map_la_notification(raw: bytes, content_type: str | None = None) -> MappedDocument:
    from .la_notification import map_notification

    return map_notification(raw)


def map_ssda903(raw: bytes, content_type: str | None = None) -> MappedDocument:
    """903 XML as it is, or the CSV tables in a zip (one .csv per table)."""
    from .ssda903 import map_903

    if raw[:4] == b"PK\x03\x04" or (content_type or "").endswith("zip"):
        return map_903(unzip_csv(raw))
    if raw.lstrip()[:1] == b"<":
        return map_903({"ssda903.xml": raw})
    return map_903({"ssda903.csv": raw})


def unzip_csv(raw: bytes) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise bad_request("the SSDA903 upload is not a readable zip file", code="structure") from None
    files, total = {}, 0
    for info in archive.infolist():
        if info.is_dir():
            continue
        if not info.filename.lower().endswith(".csv"):
            raise bad_request(f"{info.filename}: only .csv tables are accepted in an SSDA903 zip")
        total += info.file_size
        if total > MAX_ZIP_BYTES:
            raise FhirError(413, "too-costly", f"SSDA903 zip expands beyond {MAX_ZIP_BYTES} bytes")
        files[Path(info.filename).name] = archive.read(info)
    if not files:
        raise bad_request("the SSDA903 zip holds no .csv tables")
    return files


MAPPERS: dict[str, Callable[[bytes, str | None], MappedDocument]] = {
    "form": map_form,
    "la-notification": map_la_notification,
    "ssda903": map_ssda903,
}
OPERATION_OF = {"form": "$import-form", "la-notification": "$la-notification", "ssda903": "$import-903"}


def detect(raw: bytes) -> str:
    """The kind of document, from its root element (XML) or its shape (zip, CSV)."""
    if raw[:4] == b"PK\x03\x04":
        return "ssda903"
    head = raw[:4096]
    match = re.search(rb"<\s*(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)[\s>/]", re.sub(rb"<\?.*?\?>", b"", head, flags=re.S))
    if match:
        root = match.group(1)
        for kind, name in (("form", FORM_ROOT), ("la-notification", NOTIFICATION_ROOT), ("ssda903", SSDA903_ROOT)):
            if root == name:
                return kind
        raise bad_request(f"unknown document: root element <{root.decode(errors='replace')}>")
    if head.startswith(b"CHILD,"):
        return "ssda903"
    raise bad_request("unknown document: neither form XML, LA notification XML nor SSDA903")
