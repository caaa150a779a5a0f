"""SearchParameters as data, and extraction of their index values from resources.

Each R4 SearchParameter carries a FHIRPath expression. Most are simple paths
(`Patient.name.family`, `(Observation.value as Quantity)`,
`Task.for.where(resolve() is Patient)`); a small evaluator handles those quickly,
and everything else goes to fhirpathpy, so every parameter works and common ones
are cheap on the write path.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Callable, Iterable

from .definitions import search_parameter_bundle
from .jsonio import plain

INDEXED_TYPES = ("string", "token", "reference", "date", "number", "quantity", "uri")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _choice_suffixes() -> frozenset[str]:
    """`DateTime`, `Period`, `Quantity`, ...: every type a choice element may carry, capitalised."""
    from .definitions import element_index

    types = set(element_index()["kinds"])
    return frozenset(t[0].upper() + t[1:] for t in types)


def _choice_stems() -> frozenset[str]:
    """`value`, `effective`, `onset`, ...: the last name of every choice element (`value[x]`) of
    any type, so that looking for an absent element that is no choice costs one dict lookup."""
    from .definitions import element_index

    return frozenset(path[:-3].rsplit(".", 1)[-1] for elements in element_index()["types"].values()
                     for path in elements if path.endswith("[x]"))


_CHOICE_SUFFIXES = _choice_suffixes()
_CHOICE_STEMS = _choice_stems()


@dataclass(frozen=True)
class SearchParam:
    code: str
    type: str
    resource_type: str
    expression: str
    targets: tuple[str, ...] = ()
    url: str = ""
    description: str = ""
    modifiers: tuple[str, ...] = field(default=())


def _split_union(expr: str) -> list[str]:
    """Split a FHIRPath expression on top-level `|`."""
    parts, depth, cur = [], 0, []
    for ch in expr:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "|" and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def _starts_with_type(part: str, rtype: str) -> bool:
    stripped = part.lstrip("(")
    return stripped.startswith(rtype + ".") or stripped == rtype


class SearchRegistry:
    """Search parameters by resource type, built from the vendored R4 definitions."""

    def __init__(self, resource_types: Iterable[str]):
        self.resource_types = tuple(resource_types)
        self._by_type: dict[str, dict[str, SearchParam]] = {t: {} for t in self.resource_types}
        for entry in search_parameter_bundle()["entry"]:
            sp = entry["resource"]
            if sp["type"] not in INDEXED_TYPES or not sp.get("expression"):
                continue
            for base in sp["base"]:
                targets = [base] if base not in ("Resource", "DomainResource") else list(self.resource_types)
                for rtype in targets:
                    if rtype not in self._by_type:
                        continue
                    expr = self._expression_for(sp["expression"], base, rtype)
                    if expr is None:
                        continue
                    self._by_type[rtype][sp["code"]] = SearchParam(
                        code=sp["code"], type=sp["type"], resource_type=rtype, expression=expr,
                        targets=tuple(sp.get("target", ())), url=sp["url"],
                        description=sp.get("description", ""))

    @staticmethod
    def _expression_for(expression: str, base: str, rtype: str) -> str | None:
        parts = [p for p in _split_union(expression) if _starts_with_type(p, base)]
        if not parts:
            return None
        if base in ("Resource", "DomainResource"):
            parts = [p.replace(base + ".", rtype + ".", 1) for p in parts]
        return " | ".join(parts)

    def params(self, resource_type: str) -> dict[str, SearchParam]:
        return self._by_type.get(resource_type, {})

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self._by_type.get(resource_type, {}).get(code)


# ---------------------------------------------------------------------------
# Expression evaluation

_SIMPLE_STEP = re.compile(r"[A-Za-z][A-Za-z0-9]*(\[\d+\])?")
_WHERE_RESOLVE = re.compile(r"where\(resolve\(\) is ([A-Za-z]+)\)")
_WHERE_EQ = re.compile(r"where\(([A-Za-z]+)\s*=\s*'([^']*)'\)")
_AS_CALL = re.compile(r"as\(([A-Za-z]+)\)")
_PAREN_AS = re.compile(r"^\((.+) as ([A-Za-z]+)\)(\..+)?$")


def _children(nodes: list, name: str) -> list:
    """Child elements called `name`; for a choice element (`effective`), whichever
    `effective<Type>` the node holds, as FHIRPath navigates choice types."""
    out = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        val = node.get(name)
        if val is None:
            if name not in _CHOICE_STEMS:
                continue
            val = _choice_value(node, name)
            if val is None:
                continue
        if isinstance(val, list):
            out.extend(v for v in val if v is not None)
        else:
            out.append(val)
    return out


def _choice_value(node: dict, name: str):
    for key, value in node.items():
        if len(key) > len(name) and key.startswith(name) and key[len(name):] in _CHOICE_SUFFIXES:
            return value
    return None


def _choice(nodes: list, stem: str, type_name: str) -> list:
    return _children(nodes, stem + type_name[0].upper() + type_name[1:])


def _reference_type(ref: Any) -> str | None:
    if not isinstance(ref, dict):
        return None
    value = ref.get("reference")
    if isinstance(value, str):
        parts = value.split("?")[0].rstrip("/").split("/")
        if len(parts) >= 2:
            if len(parts) >= 4 and parts[-2] == "_history":
                return parts[-4]
            return parts[-2]
    return ref.get("type")


def _compile_steps(path: str) -> list[Callable[[list], list] | str] | None:
    """Compile `a.b.where(...).as(T)` into step functions, or None if unsupported."""
    steps: list[Callable[[list], list] | str] = []
    tokens = _tokenise(path)
    if tokens is None:
        return None
    for tok in tokens:
        if m := _WHERE_RESOLVE.fullmatch(tok):
            target = m.group(1)
            steps.append(lambda nodes, t=target: [n for n in nodes if _reference_type(n) == t])
        elif m := _WHERE_EQ.fullmatch(tok):
            key, val = m.group(1), m.group(2)
            steps.append(lambda nodes, k=key, v=val: [n for n in nodes if isinstance(n, dict) and n.get(k) == v])
        elif m := _AS_CALL.fullmatch(tok):
            return None  # handled by caller through the "as" rewrite
        elif _SIMPLE_STEP.fullmatch(tok):
            name, _, idx = tok.partition("[")
            if idx:
                index = int(idx[:-1])
                steps.append(lambda nodes, n=name, i=index: _children(nodes, n)[i:i + 1])
            else:
                steps.append(name)  # a child step: run inline by `_run_steps`
        else:
            return None
    return steps


def _run_steps(nodes: list, steps: tuple) -> list:
    """Apply compiled steps: a str is a child step (`_children`, inlined: this loop runs for
    every search parameter of every resource written), anything else a function of the nodes."""
    for step in steps:
        if step.__class__ is str:
            out: list = []
            for node in nodes:
                if not isinstance(node, dict):
                    continue
                val = node.get(step)
                if val is None:
                    if step not in _CHOICE_STEMS:
                        continue
                    val = _choice_value(node, step)
                    if val is None:
                        continue
                if val.__class__ is list:
                    out += [v for v in val if v is not None]
                else:
                    out.append(val)
            nodes = out
        else:
            nodes = step(nodes)
        if not nodes:
            break
    return nodes


def _tokenise(path: str) -> list[str] | None:
    tokens, depth, cur = [], 0, []
    for ch in path:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "." and depth == 0:
            tokens.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    tokens.append("".join(cur))
    return tokens if all(tokens) else None


class _Compiled:
    """One union part of an expression, as fast steps or a fhirpathpy function."""

    def __init__(self, part: str):
        self.fast: Callable[[dict], list] | None = self._fast(part)
        self.slow = None
        if self.fast is None:
            import fhirpathpy
            from fhirpathpy.models import models

            self.slow = fhirpathpy.compile(part, model=models["r4"])

    @staticmethod
    def _fast(part: str) -> Callable[[dict], list] | None:
        part = part.strip()
        suffix = ""
        m = _PAREN_AS.fullmatch(part)
        if m:
            part, type_name, suffix = m.group(1), m.group(2), (m.group(3) or "")[1:]
        else:
            m2 = re.fullmatch(r"(.+)\.as\(([A-Za-z]+)\)(\..+)?", part)
            if m2:
                part, type_name, suffix = m2.group(1), m2.group(2), (m2.group(3) or "")[1:]
            else:
                type_name = None
        tokens = _tokenise(part)
        if tokens is None or len(tokens) < 2:
            return None
        root = tokens[0]
        head = _compile_steps(".".join(tokens[1:-1])) if len(tokens) > 2 else []
        if head is None:
            return None
        last = tokens[-1]
        if type_name is not None:
            if not _SIMPLE_STEP.fullmatch(last) or "[" in last:
                return None
            head = head + [lambda nodes, s=last, t=type_name: _choice(nodes, s, t)]
        else:
            tail = _compile_steps(last)
            if tail is None:
                return None
            head = head + tail
        if suffix:
            more = _compile_steps(suffix)
            if more is None:
                return None
            head = head + more

        def run(resource: dict, steps=tuple(head), root=root) -> list:
            if resource.get("resourceType") != root:
                return []
            return _run_steps([resource], steps)

        return run

    def evaluate(self, resource: dict) -> list:
        if self.fast is not None:
            return self.fast(resource)
        try:
            return list(self.slow(plain(resource)))
        except Exception:  # noqa: BLE001 - an expression fhirpathpy cannot evaluate indexes nothing
            return []


@lru_cache(maxsize=None)
def compile_expression(expression: str) -> tuple[_Compiled, ...]:
    return tuple(_Compiled(p) for p in _split_union(expression))


def evaluate(expression: str, resource: dict) -> list:
    out: list = []
    for part in compile_expression(expression):
        out.extend(part.evaluate(resource))
    return out


# ---------------------------------------------------------------------------
# Index values

@dataclass(frozen=True)
class TokenValue:
    system: str | None
    code: str | None
    text: str | None = None


@dataclass(frozen=True)
class ReferenceValue:
    target_type: str | None
    target_id: str | None
    url: str | None


@dataclass(frozen=True)
class DateValue:
    low: datetime
    high: datetime


@dataclass(frozen=True)
class NumberValue:
    value: Decimal
    low: Decimal
    high: Decimal
    system: str | None = None
    code: str | None = None


def normalise_string(value: str) -> str:
    """Case- and accent-insensitive form used by string search."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def string_values(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        out: list[str] = []
        for key in ("text", "family", "given", "prefix", "suffix", "line", "city", "district",
                    "state", "postalCode", "country", "display", "value"):
            val = node.get(key)
            if isinstance(val, str):
                out.append(val)
            elif isinstance(val, list):
                out.extend(v for v in val if isinstance(v, str))
        return out
    return []


def token_values(node: Any) -> list[TokenValue]:
    if isinstance(node, bool):
        return [TokenValue(None, "true" if node else "false")]
    if isinstance(node, (str, int)):
        return [TokenValue(None, str(node))]
    if not isinstance(node, dict):
        return []
    if "coding" in node or ("text" in node and "system" not in node and "value" not in node):
        out = [TokenValue(c.get("system"), c.get("code"), c.get("display"))
               for c in node.get("coding", []) if isinstance(c, dict)]
        if node.get("text"):
            out.append(TokenValue(None, None, node["text"]))
        return out
    if "value" in node and ("system" in node or "use" in node or "type" in node or "period" in node
                            or "assigner" in node or "rank" in node):
        if isinstance(node.get("value"), str):
            text = None
            if isinstance(node.get("type"), dict):
                text = node["type"].get("text")
            if "rank" in node or node.get("system") in ("phone", "fax", "email", "pager", "url", "sms", "other"):
                return [TokenValue(None, node["value"], text)]  # ContactPoint: match the value
            return [TokenValue(node.get("system"), node["value"], text)]
    if "code" in node or "system" in node:
        return [TokenValue(node.get("system"), node.get("code"), node.get("display"))]
    if "value" in node and isinstance(node["value"], str):
        return [TokenValue(None, node["value"])]
    return []


def parse_reference(value: str, base_url: str | None = None) -> ReferenceValue | None:
    """A literal reference as (type, id) when local, else as an absolute URL."""
    if not value or value.startswith("#"):
        return None
    if base_url and value.startswith(base_url.rstrip("/") + "/"):
        value = value[len(base_url.rstrip("/")) + 1:]
    if "://" in value or value.startswith("urn:"):
        return ReferenceValue(None, None, value)
    parts = value.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) == 2 and parts[0][:1].isupper() and _ID.fullmatch(parts[1]):
        return ReferenceValue(parts[0], parts[1], None)
    return ReferenceValue(None, None, value)


def reference_values(node: Any, base_url: str | None = None) -> list[ReferenceValue]:
    if isinstance(node, str):  # canonical
        return [ReferenceValue(None, None, node.split("|")[0])]
    if isinstance(node, dict) and isinstance(node.get("reference"), str):
        ref = parse_reference(node["reference"], base_url)
        return [ref] if ref else []
    return []


_DATE_RE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?")


def date_range(text: str) -> DateValue | None:
    """The instant range [low, high] a FHIR date/dateTime/instant denotes, in naive UTC."""
    m = _DATE_RE.fullmatch(text.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    try:
        if month is None:
            low = datetime(int(year), 1, 1)
            high = datetime(int(year) + 1, 1, 1)
        elif day is None:
            low = datetime(int(year), int(month), 1)
            high = datetime(int(year) + (month == "12"), int(month) % 12 + 1, 1)
        elif hour is None:
            low = datetime(int(year), int(month), int(day))
            high = low + timedelta(days=1)
        else:
            micro = int(round(float(frac) * 1_000_000)) if frac else 0
            low = datetime(int(year), int(month), int(day), int(hour), int(minute),
                           int(second or 0), min(micro, 999_999))
            if second is None:
                high = low + timedelta(minutes=1)
            elif frac is None:
                high = low + timedelta(seconds=1)
            else:
                high = low + timedelta(microseconds=1)
            if tz and tz != "Z":
                sign = 1 if tz[0] == "+" else -1
                offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
                low -= sign * offset
                high -= sign * offset
    except (ValueError, OverflowError):
        return None
    return DateValue(low, high - timedelta(microseconds=1))


def date_values(node: Any) -> list[DateValue]:
    if isinstance(node, str):
        r = date_range(node)
        return [r] if r else []
    if isinstance(node, dict):
        if "start" in node or "end" in node:
            start = date_range(node["start"]) if isinstance(node.get("start"), str) else None
            end = date_range(node["end"]) if isinstance(node.get("end"), str) else None
            return [DateValue(start.low if start else datetime.min, end.high if end else datetime.max)]
        if "event" in node:
            return [r for e in node["event"] if isinstance(e, str) and (r := date_range(e))]
    return []


def decimal_bounds(value: Decimal) -> tuple[Decimal, Decimal]:
    """Implicit precision range: 100 means [99.5, 100.5), 1.50 means [1.495, 1.505)."""
    exponent = value.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    return value - half, value + half


# Numbers are indexed (and searched) with exponents within this range; both databases store them
# exactly (PostgreSQL's numeric stops near 10^131072), and no measurement of a child needs more.
MAX_EXPONENT = 1000


def storable_number(value: Decimal) -> bool:
    return value.is_finite() and (value.is_zero() or -MAX_EXPONENT <= value.adjusted() <= MAX_EXPONENT)


def number_values(node: Any) -> list[NumberValue]:
    if isinstance(node, bool):
        return []
    if isinstance(node, (int, Decimal)):
        value = _storable(Decimal(node))
        low, high = decimal_bounds(value)
        return [NumberValue(value, low, high)]
    if isinstance(node, dict) and isinstance(node.get("value"), (int, Decimal)) and not isinstance(node.get("value"), bool):
        value = _storable(Decimal(node["value"]))
        low, high = decimal_bounds(value)
        return [NumberValue(value, low, high, node.get("system"), node.get("code") or node.get("unit"))]
    return []


def _storable(value: Decimal) -> Decimal:
    if not storable_number(value):
        from .errors import FhirError

        raise FhirError(422, "value", f"the number {str(value)[:40]} is outside the range this server "
                                      f"stores (exponents from -{MAX_EXPONENT} to {MAX_EXPONENT})")
    return value


def parse_number(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if storable_number(value) else None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
