"""Structural validation against the R4 model (fhir.resources R4B models).

It checks element names, cardinality, types and primitive formats; the store keeps
the client's own JSON (fhir.resources would re-serialise decimals without their
precision), so the model is used to judge, never to rewrite.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from ..fhir.errors import FhirError, Issue

MAX_ISSUES = 20


@lru_cache(maxsize=None)
def _model(resource_type: str):
    return get_fhir_model_class(resource_type)


def _path(resource_type: str, loc: tuple) -> str:
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "__root__":
            continue
        else:
            out += f".{part}"
    return out


def validate_structure(resource: dict[str, Any]) -> None:
    """Raise a 422 FhirError listing every structural problem, each naming its element."""
    rtype = resource.get("resourceType")
    try:
        model = _model(rtype)
    except (KeyError, ValueError, AttributeError):
        raise FhirError(422, "not-supported", f"unknown resource type '{rtype}'", ["resourceType"]) from None
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        issues = []
        for err in exc.errors()[:MAX_ISSUES]:
            where = _path(rtype, tuple(err.get("loc", ())))
            message = err.get("msg", "invalid")
            if err.get("type") == "extra_forbidden":
                message = "unknown element"
            issues.append(Issue("structure", f"{where}: {message}", expression=[where]))
        raise FhirError(422, "structure", issues[0].diagnostics, issues=issues) from None
    except (ValueError, TypeError) as exc:  # fhir.resources raises these outside pydantic too
        raise FhirError(422, "structure", f"{rtype}: {exc}", [rtype]) from None

