"""FHIRPath for invariants: fhirpathpy on the R4 model, plus the functions it lacks.

fhirpathpy 2.2.4 implements FHIRPath's normative core but not the FHIR-specific
additions constraints use. We add them as user-defined functions:

- `hasValue()`: true when the input is a single primitive with an actual value (not one
  carrying only extensions);
- `lowBoundary([precision])` / `highBoundary([precision])` for decimals, dates, dateTimes
  and times (the FHIRPath 2.0 definitions, with the default precisions).

Expressions are compiled once. The focus of an evaluation may be any node inside the
resource (the element an invariant sits on); `%resource` and `%rootResource` are the
resource, `%context` the focus. Decimals (our JSON reader's type) become floats first,
since fhirpathpy expects JSON types.
"""

from __future__ import annotations

import re
from decimal import ROUND_FLOOR, Decimal
from functools import lru_cache
from typing import Any, Callable

import fhirpathpy
from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.engine.nodes import FP_DateTime, FP_Time, ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from ..fhir.jsonio import plain

MODEL = models["r4"]


class FhirPathError(Exception):
    """An expression that does not parse or cannot be evaluated."""


# ---- functions fhirpathpy lacks ------------------------------------------------------------

def _is_extension_only(value: Any) -> bool:
    """fhirpathpy's representation of a primitive's `_name` part (extensions, no value)."""
    return isinstance(value, dict) and set(value) <= {"id", "extension"}


def _has_value(inputs: list) -> bool:
    items = [v for v in inputs if not _is_extension_only(v)]
    if len(items) != 1:
        return False
    value = items[0]
    return value is not None and not isinstance(value, (dict, list))


_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_DATETIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
                       r"(Z|[+-]\d{2}:\d{2})?$")
_TIME = re.compile(r"^T?(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")
_DAYS = {1: 31, 2: 28, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


def _last_day(year: int, month: int) -> int:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return 29 if month == 2 and leap else _DAYS[month]


def _decimal_boundary(value: Any, precision: int | None, high: bool) -> Decimal | None:
    if isinstance(value, bool):
        return None
    number = Decimal(str(value))
    exponent = number.as_tuple().exponent
    if not isinstance(exponent, int):
        return None
    digits = max(0, -exponent)
    precision = 8 if precision is None else precision
    if precision < 0 or precision > 28:
        return None
    half = Decimal(5).scaleb(-(digits + 1))  # half a unit in the last given digit
    bound = number + half if high else number - half
    if precision >= digits + 1:
        return bound.quantize(Decimal(1).scaleb(-precision))
    # fewer digits asked for than the boundary has: truncate towards the boundary's side
    step = Decimal(1).scaleb(-precision)
    floor = (bound / step).to_integral_value(rounding=ROUND_FLOOR) * step
    return (floor + step if high and floor != bound else floor).quantize(step)


def _date_boundary(text: str, precision: int | None, high: bool):
    m = _DATE.match(text)
    if m:
        year, month, day = int(m.group(1)), m.group(2), m.group(3)
        precision = 8 if precision is None else precision
        month_n = int(month) if month else (12 if high else 1)
        day_n = int(day) if day else (_last_day(year, month_n) if high else 1)
        if precision == 4:
            return FP_DateTime(f"{year:04d}")
        if precision == 6:
            return FP_DateTime(f"{year:04d}-{month_n:02d}")
        if precision == 8:
            return FP_DateTime(f"{year:04d}-{month_n:02d}-{day_n:02d}")
        return None
    m = _DATETIME.match(text)
    if m:
        y, mo, d, hh, mm = (int(m.group(i)) for i in range(1, 6))
        ss = int(m.group(6)) if m.group(6) else (59 if high else 0)
        if m.group(6) is None:
            ms = "999" if high else "000"
        else:
            ms = (m.group(7) or "")[:3].ljust(3, "9" if high else "0")
        tz = m.group(8) or ("-12:00" if high else "+14:00")
        precision = 17 if precision is None else precision
        if precision != 17:
            return None
        return FP_DateTime(f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}.{ms}{tz}")
    return None


def _time_boundary(text: str, precision: int | None, high: bool):
    m = _TIME.match(text)
    if not m:
        return None
    precision = 9 if precision is None else precision
    if precision != 9:
        return None
    hh = int(m.group(1))
    mm = int(m.group(2)) if m.group(2) else (59 if high else 0)
    ss = int(m.group(3)) if m.group(3) else (59 if high else 0)
    ms = (m.group(4) or "")[:3].ljust(3, "9" if high else "0") if m.group(3) else ("999" if high else "000")
    return FP_Time(f"{hh:02d}:{mm:02d}:{ss:02d}.{ms}")


def _boundary(high: bool) -> Callable:
    def fn(inputs: list, precision: Any = None) -> list:
        if precision == []:
            precision = None
        if len(inputs) != 1:
            return []
        value = inputs[0]
        if isinstance(value, FP_Time):
            out = _time_boundary(value.asStr or "", precision, high)
        elif isinstance(value, FP_DateTime):
            out = _date_boundary((value.asStr or "").lstrip("@"), precision, high)
        elif isinstance(value, str):
            if _DATE.match(value) or _DATETIME.match(value):
                out = _date_boundary(value, precision, high)
            elif _TIME.match(value):
                out = _time_boundary(value, precision, high)
            else:
                out = None
        elif isinstance(value, (int, float, Decimal)):
            out = _decimal_boundary(value, precision, high)
        else:
            out = None
        return [] if out is None else [out]

    return fn


FUNCTIONS: dict[str, dict] = {
    "hasValue": {"fn": _has_value},
    "lowBoundary": {"fn": _boundary(False), "arity": {0: [], 1: ["Integer"]}},
    "highBoundary": {"fn": _boundary(True), "arity": {0: [], 1: ["Integer"]}},
}


# ---- evaluation -----------------------------------------------------------------------------

class _RaisingListener(ErrorListener):
    def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):  # noqa: N802 - antlr's name
        raise FhirPathError(f"syntax error at {line}:{column}: {msg}")


def _syntax_check(expression: str) -> None:
    """fhirpathpy's parser recovers from syntax errors silently; we want them reported."""
    listener = _RaisingListener()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    parser.expression()
    if parser.getCurrentToken().type != Token.EOF:
        raise FhirPathError(f"unexpected '{parser.getCurrentToken().text}' after the expression")


@lru_cache(maxsize=2048)
def compile_expression(expression: str) -> Callable:
    """The compiled expression; raises FhirPathError when it does not parse."""
    try:
        _syntax_check(expression)
        return fhirpathpy.compile(expression, model=MODEL, options={"userInvocationTable": FUNCTIONS})
    except Exception as exc:  # noqa: BLE001 - the parser raises assorted exception types
        raise FhirPathError(f"cannot parse FHIRPath '{expression}': {exc}") from None


def type_of_path(path: str) -> str:
    """The model's type name for an element path ('Patient.identifier' -> 'Identifier').

    Backbone elements keep their path ('Task.restriction'), which is how the R4 model
    names them; anything unknown is returned unchanged.
    """
    path = MODEL["pathsDefinedElsewhere"].get(path, path)
    return MODEL["path2Type"].get(path, path)


def _node(value: Any, path: str | None) -> Any:
    if isinstance(value, dict) and "resourceType" in value:
        return ResourceNode.create_node(value)
    if path is None:
        return value
    return ResourceNode.create_node(value, type_of_path(path))


def evaluate(expression: str, resource: dict, context: Any = None, *, path: str | None = None) -> list:
    """Evaluate `expression` with `context` (a node of `resource`; default the resource) as focus.

    `path` names the focus's element path or type (e.g. 'Patient.identifier' or 'Identifier')
    so that choice elements such as `value` resolve; a resource focus needs none.
    Raises FhirPathError when the expression does not parse or fails to evaluate.
    """
    fn = compile_expression(expression)
    root = plain(resource)
    root_node = _node(root, None)
    # a resource focus goes in as data: fhirpathpy matches a leading type name ('Patient.x') on it
    if context is None or context is resource:
        focus_node = root
    elif isinstance(context, dict) and "resourceType" in context:
        focus_node = plain(context)
    else:
        focus_node = _node(plain(context), path)
    variables = {"resource": root_node, "rootResource": root_node, "context": focus_node}
    try:
        return list(fn(focus_node, variables))
    except Exception as exc:  # noqa: BLE001 - fhirpathpy raises bare Exceptions
        raise FhirPathError(f"FHIRPath '{expression}' failed: {exc}") from None


def check_detail(expression: str, node: Any, resource: dict, *,
                 path: str | None = None) -> tuple[bool, str | None]:
    """(passed, reason): an invariant passes when it evaluates to true.

    Empty, false, several values and errors are failures; `reason` says which.
    """
    try:
        result = evaluate(expression, resource, node, path=path)
    except FhirPathError as exc:
        return False, str(exc)
    if not result:
        return False, "evaluated to empty"
    if len(result) > 1:
        return False, f"evaluated to {len(result)} values, not one boolean"
    value = result[0]
    if isinstance(value, bool):
        return value, None if value else "evaluated to false"
    return True, None  # a single non-boolean value counts as true (FHIRPath singleton rule)


def check(expression: str, node: Any, resource: dict, *, path: str | None = None) -> bool:
    """True when the invariant holds on `node` (an element of `resource`, or the resource)."""
    return check_detail(expression, node, resource, path=path)[0]
