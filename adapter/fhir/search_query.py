"""Parse FHIR search parameters into a structured query (no SQL here).

The result says what to match (clauses, AND between them; each clause's values are
OR'ed) and how to shape the result (_sort, _count, _include, _summary, ...). Unknown
or malformed parameters are errors under `Prefer: handling=strict` and warnings
under the default lenient handling, as the FHIR search page prescribes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Union

from .errors import Issue, bad_request
from .search_params import SearchParam, SearchRegistry

RESULT_PARAMS = {"_sort", "_count", "_offset", "_include", "_revinclude", "_summary",
                 "_elements", "_total", "_format", "_pretty", "_contained", "_containedType"}
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "missing", "text"},
    "uri": {"missing", "below", "above"},
    "reference": {"missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
}
SPECIAL = {"_id": "token", "_lastUpdated": "date"}
SYSTEM_PARAMS = {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"}


@dataclass
class ParamClause:
    param: SearchParam
    modifier: str | None
    values: list[str]


@dataclass
class ChainClause:
    """`param.inner`: resources whose `param` refers to a resource matching `inner`.

    One option per possible target type (for `subject.name`, both Patient and Group
    may have `name`); any option may match.
    """

    param: SearchParam
    options: list[tuple[str, "Clause"]]


@dataclass
class HasClause:
    source_type: str
    param: SearchParam
    inner: "Clause"


Clause = Union[ParamClause, ChainClause, HasClause]


@dataclass
class Include:
    source_type: str
    param: str | None  # None: every reference parameter ("*")
    target_type: str | None
    iterate: bool = False
    reverse: bool = False


@dataclass
class SearchQuery:
    resource_type: str | None
    clauses: list[Clause] = field(default_factory=list)
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param code, descending)
    count: int | None = None
    offset: int = 0
    includes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    total: str | None = None
    warnings: list[Issue] = field(default_factory=list)
    raw: list[tuple[str, str]] = field(default_factory=list)  # the parameters, for links


class QueryParser:
    def __init__(self, registry: SearchRegistry, default_count: int, max_count: int):
        self.registry = registry
        self.default_count = default_count
        self.max_count = max_count

    def parse(self, resource_type: str | None, params: Iterable[tuple[str, str]],
              strict: bool = False) -> SearchQuery:
        params = list(params)
        for name, value in params:
            if "\x00" in name or "\x00" in value:
                raise bad_request(f"search parameter '{name.replace(chr(0), '')}' holds a NUL character", [name])
        query = SearchQuery(resource_type=resource_type, raw=[(k, v) for k, v in params
                                                              if k not in ("_format", "_pretty", "_offset")])
        for name, value in params:
            try:
                self._one(query, name, value)
            except _Unknown as exc:
                if strict:
                    raise bad_request(str(exc), [name], code="not-supported") from None
                query.warnings.append(Issue("not-supported", f"{exc} (ignored)", severity="warning",
                                            expression=[name]))
        if query.count is None:
            query.count = self.default_count
        return query

    # -- one parameter -------------------------------------------------------
    def _one(self, query: SearchQuery, name: str, value: str) -> None:
        base = name.split(":", 1)[0]
        if base in RESULT_PARAMS:
            self._result_param(query, name, value)
            return
        if query.resource_type is None:
            query.clauses.append(self._system_clause(name, value))
            return
        query.clauses.append(self._clause(query.resource_type, name, value))

    def _system_clause(self, name: str, value: str) -> ParamClause:
        """Across all types only the parameters every resource has (_id, _tag, ...) apply."""
        code = name.split(":", 1)[0]
        if "." in name or code.startswith("_has") or code not in SYSTEM_PARAMS:
            raise _Unknown(f"'{name}' cannot be searched across all resource types; "
                           f"use one of {', '.join(sorted(SYSTEM_PARAMS))} or search a type")
        any_type = self.registry.resource_types[0]
        clause = self._clause(any_type, name, value)
        assert isinstance(clause, ParamClause)
        return clause

    def _clause(self, rtype: str, name: str, value: str) -> Clause:
        if name.startswith("_has:"):
            return self._has(rtype, name, value)
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        param = self._param(rtype, code)
        if dot:
            if param.type != "reference":
                raise bad_request(f"'{code}' is not a reference parameter and cannot be chained", [name])
            targets = (modifier,) if modifier else param.targets
            if modifier and modifier not in param.targets and param.targets:
                raise bad_request(f"'{code}' cannot refer to {modifier}", [name])
            inner_by_type = []
            for target in targets:
                if target not in self.registry.resource_types:
                    continue
                try:
                    inner_by_type.append((target, self._clause(target, rest, value)))
                except _Unknown:
                    continue
            if not inner_by_type:
                raise _Unknown(f"unknown chained parameter '{rest}' for {', '.join(targets) or 'any type'}")
            return ChainClause(param, inner_by_type)
        if modifier:
            self._check_modifier(param, modifier, name)
        values = _split_values(value)
        if modifier == "missing" and value not in ("true", "false"):
            raise bad_request(f"':missing' takes true or false, not '{value}'", [name])
        if not values:
            raise bad_request(f"search parameter '{name}' has an empty value", [name])
        if param.type in ("date", "number", "quantity") and modifier != "missing":
            for v in values:
                _check_prefixed(param, v, name)
        return ParamClause(param, modifier or None, values)

    def _has(self, rtype: str, name: str, value: str) -> Clause:
        parts = name.split(":", 3)
        if len(parts) < 4:
            raise bad_request(f"'{name}': _has needs the form _has:Type:reference:parameter", [name])
        _, source_type, ref_code, inner_name = parts
        if source_type not in self.registry.resource_types:
            raise _Unknown(f"unknown resource type '{source_type}' in '{name}'")
        ref = self._param(source_type, ref_code)
        if ref.type != "reference":
            raise bad_request(f"'{ref_code}' is not a reference parameter of {source_type}", [name])
        return HasClause(source_type, ref, self._clause(source_type, inner_name, value))

    def _param(self, rtype: str, code: str) -> SearchParam:
        if code in SPECIAL:
            return SearchParam(code=code, type=SPECIAL[code], resource_type=rtype, expression="")
        param = self.registry.get(rtype, code)
        if param is None:
            raise _Unknown(f"unknown search parameter '{code}' for {rtype}")
        return param

    @staticmethod
    def _check_modifier(param: SearchParam, modifier: str, name: str) -> None:
        if param.type == "reference" and modifier[:1].isupper():
            return  # a type modifier, e.g. subject:Patient
        if modifier not in MODIFIERS.get(param.type, set()):
            raise bad_request(f"modifier ':{modifier}' is not supported for {param.type} parameter "
                              f"'{param.code}'", [name], code="not-supported")

    # -- result parameters -----------------------------------------------------
    def _result_param(self, query: SearchQuery, name: str, value: str) -> None:
        base, _, modifier = name.partition(":")
        if base == "_count":
            query.count = min(_non_negative(name, value), self.max_count)
        elif base == "_offset":
            query.offset = _non_negative(name, value)
        elif base == "_sort":
            for key in value.split(","):
                key = key.strip()
                desc = key.startswith("-")
                code = key.lstrip("-")
                if code not in ("_id", "_lastUpdated") and (
                        query.resource_type is None or self.registry.get(query.resource_type, code) is None):
                    raise _Unknown(f"unknown sort parameter '{code}'")
                query.sort.append((code, desc))
        elif base in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):
                raise bad_request(f"unknown modifier on {base}: '{modifier}'", [name])
            query.includes.append(self._include(value, base == "_revinclude", bool(modifier), name))
        elif base == "_summary":
            if value not in ("true", "false", "text", "data", "count"):
                raise bad_request(f"_summary must be true, false, text, data or count, not '{value}'", [name])
            query.summary = value
        elif base == "_elements":
            query.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif base == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise bad_request(f"_total must be none, estimate or accurate, not '{value}'", [name])
            query.total = value
        elif base in ("_contained", "_containedType"):
            if value not in ("false", "container"):
                raise _Unknown(f"{base}={value} is not supported")

    def _include(self, value: str, reverse: bool, iterate: bool, name: str) -> Include:
        parts = value.split(":")
        if len(parts) not in (2, 3):
            raise bad_request(f"{name} must be Type:parameter[:targetType], not '{value}'", [name])
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if source not in self.registry.resource_types:
            raise _Unknown(f"unknown resource type '{source}' in {name}")
        if code != "*":
            param = self.registry.get(source, code)
            if param is None or param.type != "reference":
                raise _Unknown(f"'{code}' is not a reference parameter of {source} ({name})")
        return Include(source, None if code == "*" else code, target, iterate, reverse)


class _Unknown(Exception):
    """An unknown parameter: an error when strict, a warning when lenient."""


def _split_values(value: str) -> list[str]:
    """Split on commas not escaped with a backslash, unescaping `\\,` `\\|` `\\$` `\\\\`."""
    out, cur, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i:i + 2])
            i += 2
            continue
        if ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return [v for v in out if v != ""]


def unescape(value: str) -> str:
    return value.replace("\\,", ",").replace("\\|", "|").replace("\\$", "$").replace("\\\\", "\\")


def split_prefix(value: str) -> tuple[str, str]:
    if value[:2] in PREFIXES and len(value) > 2 and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


def _check_prefixed(param: SearchParam, value: str, name: str) -> None:
    from .search_params import date_range, parse_number

    _, rest = split_prefix(value)
    if param.type == "date":
        if date_range(rest) is None:
            raise bad_request(f"'{value}' is not a valid date for '{param.code}'", [name])
    else:
        number = rest.split("|", 1)[0]
        if parse_number(number) is None:
            raise bad_request(f"'{value}' is not a valid number for '{param.code}'", [name])


MAX_INT_PARAM = 2_147_483_647


def _non_negative(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 10 or int(value) > MAX_INT_PARAM:
        raise bad_request(f"{name} must be a non-negative integer up to {MAX_INT_PARAM}, not '{value[:20]}'", [name])
    return int(value)
