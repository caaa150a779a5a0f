"""Structural validation against the R4 model (fhir.resources R4B models).

It checks element names, cardinality, types and primitive formats; the store keeps
the client's own JSON (fhir.resources would re-serialise decimals without their
precision), so the model is used to judge, never to rewrite.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from ..fhir.errors import FhirError, Issue

MAX_ISSUES = 20
_PRIMITIVES = ("Boolean|Integer|String|Decimal|Uri|Url|Canonical|Base64Binary|Instant|Date|DateTime|"
               "Time|Code|Oid|Id|Markdown|UnsignedInt|PositiveInt|Uuid")
_PRIMITIVE_CHOICE = re.compile(rf"[a-z][A-Za-z]*?({_PRIMITIVES})")


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
        for err in exc.errors():
            if _primitive_extension_of_choice(resource, err):
                continue
            if len(issues) == MAX_ISSUES:
                break
            where = _path(rtype, tuple(err.get("loc", ())))
            message = err.get("msg", "invalid")
            if err.get("type") == "extra_forbidden":
                message = "unknown element"
            issues.append(Issue("structure", f"{where}: {message}", expression=[where]))
        if issues:
            raise FhirError(422, "structure", issues[0].diagnostics, issues=issues) from None
    except (ValueError, TypeError) as exc:  # fhir.resources raises these outside pydantic too
        raise FhirError(422, "structure", f"{rtype}: {exc}", [rtype]) from None



def _primitive_extension_of_choice(resource: dict, err: dict) -> bool:
    """True for fhir.resources' false rejection of `_valueString` beside `valueString`.

    FHIR allows id/extension on a primitive choice value (`_valueString`, with or
    without `valueString`), but the R4B models reject it as an unknown element. We
    accept it when it names a primitive type and holds only `id` and `extension`, which
    is all FHIR allows there.
    """
    loc = tuple(err.get("loc", ()))
    if err.get("type") != "extra_forbidden" or not loc or not str(loc[-1]).startswith("_"):
        return False
    node = resource
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    name = str(loc[-1])
    if not isinstance(node, dict) or not _PRIMITIVE_CHOICE.fullmatch(name[1:]):
        return False
    value = node[name]
    items = value if isinstance(value, list) else [value]
    return all(item is None or (isinstance(item, dict) and set(item) <= {"id", "extension"}
                                and isinstance(item.get("extension", []), list)) for item in items)
