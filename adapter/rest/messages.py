"""A FHIR interaction request and its response, with no HTTP library in sight."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..store.repository import Stored


@dataclass
class FhirRequest:
    method: str
    path: list[str]                       # segments after the FHIR base
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None                      # parsed resource (dict), JSON Patch (list) or None
    content_type: str | None = None
    raw: bytes | None = None              # the body as received, for operations that take documents

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def url(self) -> str:
        from urllib.parse import urlencode

        path = "/".join(self.path)
        return f"{path}?{urlencode(self.params)}" if self.params else path


@dataclass
class FhirResponse:
    status: int
    resource: dict | None = None          # a resource to serialise
    stored: Stored | None = None          # a stored version; its bytes are served as they are
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None          # a non-FHIR body (e.g. an HTML report) ...
    media_type: str | None = None         # ... and its media type

    def body_resource(self) -> dict | None:
        if self.resource is not None:
            return self.resource
        if self.stored is not None and self.stored.content is not None:
            return self.stored.resource()
        return None
