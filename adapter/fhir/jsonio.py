"""FHIR JSON in and out without losing decimal precision.

FHIR forbids changing `2.00` into `2.0`, and float parsing does exactly that. We parse
numbers with a fraction or exponent into Decimal and write them back with their own
digits through orjson.Fragment. Nesting depth is bounded so a hostile body cannot
exhaust the stack.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

from .errors import bad_request

MAX_DEPTH = 64


class FhirDecimal(Decimal):
    """A Decimal that remembers its lexical form: `1e3` stays `1e3`, `0.0000001` stays so.

    Arithmetic gives plain Decimals; only values read from a document keep their text.
    """

    def __new__(cls, text: str) -> "FhirDecimal":
        obj = super().__new__(cls, text)
        obj._text = text
        return obj

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"FhirDecimal('{self._text}')"


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    if isinstance(value, bytes):  # stored JSON text embedded as it is (rest.rawjson.RawJson)
        return orjson.Fragment(bytes(value))
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any, pretty: bool = False) -> bytes:
    """Serialise to compact (or indented) UTF-8 JSON bytes."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, default=_default, option=option)


# C0 control characters FHIR strings may not hold (tab, CR and LF are allowed).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _check_tree(value: Any, limit: int) -> None:
    """Refuse JSON nested deeper than `limit` or holding control characters in strings/keys."""
    stack = [(value, 1, "")]
    while stack:
        node, depth, where = stack.pop()
        if depth > limit:
            raise bad_request(f"JSON nesting deeper than {limit} levels", code="too-costly")
        if isinstance(node, dict):
            for key, item in node.items():
                if _CONTROL.search(key):
                    raise bad_request(f"control character in the JSON property name at {where or '/'}",
                                      code="structure")
                if isinstance(item, str):
                    if _CONTROL.search(item):
                        raise bad_request(f"control character in the string at {where}/{key}", code="structure")
                elif isinstance(item, (dict, list)):
                    stack.append((item, depth + 1, f"{where}/{key}"))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                if isinstance(item, str):
                    if _CONTROL.search(item):
                        raise bad_request(f"control character in the string at {where}/{i}", code="structure")
                elif isinstance(item, (dict, list)):
                    stack.append((item, depth + 1, f"{where}/{i}"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON, keeping decimals exact; malformed or too deep input is a 400."""
    try:
        value = json.loads(data, parse_float=FhirDecimal, parse_constant=_reject_constant)
    except RecursionError:
        raise bad_request(f"JSON nesting deeper than {max_depth} levels", code="too-costly") from None
    except (ValueError, UnicodeDecodeError) as exc:
        detail = str(exc)
        if isinstance(exc, json.JSONDecodeError):
            detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise bad_request(f"malformed JSON: {detail}", code="structure") from None
    _check_tree(value, max_depth)
    return value


def loads_stored(data: bytes | str) -> Any:
    """Parse JSON this server wrote itself (stored content): decimals kept exact, without the
    checks of `loads`, which the content passed when it was written. Half the cost of `loads`
    on a write that re-reads a child's records (bench/README.md)."""
    return json.loads(data, parse_float=FhirDecimal)


def loads_resource(data: bytes | str) -> dict:
    """Parse a body that must be a JSON object with a resourceType."""
    value = loads(data)
    if not isinstance(value, dict):
        raise bad_request("body must be a JSON object (a FHIR resource)", code="structure")
    if not isinstance(value.get("resourceType"), str):
        raise bad_request("resource has no resourceType", ["resourceType"], code="structure")
    return value


def plain(value: Any) -> Any:
    """A copy with Decimals as floats, for libraries that want plain JSON types (fhirpathpy)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    return value
