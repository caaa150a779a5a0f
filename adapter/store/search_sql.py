"""SQL for FHIR search: each clause becomes `id IN (SELECT res_id FROM idx_... WHERE ...)`.

Uncorrelated IN-subqueries let both SQLite and PostgreSQL start from the value
indexes; chains and _has nest the same construction on idx_reference.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable

from sqlalchemy import and_, false, func, literal, not_, or_, select, tuple_
from sqlalchemy.sql import ColumnElement, Select

from ..fhir import search_params as sp
from ..fhir.errors import bad_request
from ..fhir.search_query import (
    ChainClause,
    Clause,
    HasClause,
    ParamClause,
    split_prefix,
    unescape,
)
from .tables import INDEX_TABLES, resource_table

R = resource_table
REF = INDEX_TABLES["reference"]


Restrict = Callable[[str, ColumnElement], "ColumnElement | None"]


def _restricted(restrict: Restrict | None, rtype: str, id_col: ColumnElement) -> list[ColumnElement]:
    cond = restrict(rtype, id_col) if restrict is not None else None
    return [cond] if cond is not None else []


def system_condition(clause: ParamClause, base_url: str | None) -> ColumnElement:
    """A condition on resources of any type, for the parameters all resources share."""
    param = clause.param
    if param.code == "_id":
        return _param_condition(clause, "", R.c.res_id, base_url)
    if param.code == "_lastUpdated":
        return or_(*[_date_match(v, R.c.last_updated, R.c.last_updated) for v in clause.values])
    table = INDEX_TABLES[param.type]
    keys = tuple_(R.c.res_type, R.c.res_id)
    present = select(table.c.res_type, table.c.res_id).where(table.c.param == param.code)
    if clause.modifier == "missing":
        return keys.not_in(present) if clause.values[0] == "true" else keys.in_(present)
    match = MATCHERS[param.type]
    sub = present.where(or_(*[match(table, v, clause, base_url) for v in clause.values]))
    return keys.not_in(sub) if clause.modifier == "not" else keys.in_(sub)


def clause_condition(clause: Clause, rtype: str, id_col: ColumnElement, base_url: str | None,
                     restrict: Restrict | None = None) -> ColumnElement:
    """A condition on `id_col` (ids of resources of type `rtype`) for one clause.

    `restrict(type, id_col)` limits the resources a chain or `_has` may look through to those
    the caller may see (None: no limit), so that neither reveals what the caller may not read.
    """
    if isinstance(clause, ChainClause):
        options = []
        for target, inner in clause.options:
            options.append(and_(REF.c.target_type == target,
                                clause_condition(inner, target, REF.c.target_id, base_url, restrict),
                                *_restricted(restrict, target, REF.c.target_id)))
        sub = select(REF.c.res_id).where(REF.c.res_type == rtype, REF.c.param == clause.param.code,
                                         or_(*options))
        return id_col.in_(sub)
    if isinstance(clause, HasClause):
        sub = select(REF.c.target_id).where(
            REF.c.res_type == clause.source_type, REF.c.param == clause.param.code,
            REF.c.target_type == rtype,
            clause_condition(clause.inner, clause.source_type, REF.c.res_id, base_url, restrict),
            *_restricted(restrict, clause.source_type, REF.c.res_id))
        return id_col.in_(sub)
    return _param_condition(clause, rtype, id_col, base_url)


def _param_condition(clause: ParamClause, rtype: str, id_col: ColumnElement, base_url: str | None) -> ColumnElement:
    param = clause.param
    if param.code == "_id":
        ids = [unescape(v) for v in clause.values]
        if clause.modifier == "not":
            return id_col.not_in(ids)
        return id_col.in_(ids)
    if param.code == "_lastUpdated":
        conds = [_date_match(v, R.c.last_updated, R.c.last_updated) for v in clause.values]
        sub = select(R.c.res_id).where(R.c.res_type == rtype, or_(*conds))
        return id_col.in_(sub)
    table = INDEX_TABLES[param.type]
    scope = [table.c.res_type == rtype, table.c.param == param.code]
    if clause.modifier == "missing":
        present = select(table.c.res_id).where(*scope)
        return id_col.not_in(present) if clause.values[0] == "true" else id_col.in_(present)
    match = MATCHERS[param.type]
    conds = [match(table, v, clause, base_url) for v in clause.values]
    sub = select(table.c.res_id).where(*scope, or_(*conds))
    if clause.modifier == "not":
        return id_col.not_in(sub)
    return id_col.in_(sub)


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _string_match(table, value: str, clause: ParamClause, _base) -> ColumnElement:
    value = unescape(value)
    if clause.modifier == "exact":
        return table.c.exact == value
    norm = _like_escape(sp.normalise_string(value))
    if clause.modifier == "contains":
        return table.c.value.like(f"%{norm}%", escape="\\")
    return table.c.value.like(f"{norm}%", escape="\\")


def _token_match(table, value: str, clause: ParamClause, _base) -> ColumnElement:
    if clause.modifier == "text":
        norm = _like_escape(sp.normalise_string(unescape(value)))
        return table.c.text.like(f"{norm}%", escape="\\")
    system, bar, code = _split_bar(value)
    if not bar:
        return table.c.code == unescape(value)
    conds = []
    if system == "":
        conds.append(table.c.system.is_(None))
    else:
        conds.append(table.c.system == unescape(system))
    if code:
        conds.append(table.c.code == unescape(code))
    return and_(*conds)


def _split_bar(value: str) -> tuple[str, bool, str]:
    """Split `system|code` on the first unescaped bar."""
    i = 0
    while i < len(value):
        if value[i] == "\\":
            i += 2
            continue
        if value[i] == "|":
            return value[:i], True, value[i + 1:]
        i += 1
    return "", False, value


def _uri_match(table, value: str, clause: ParamClause, _base) -> ColumnElement:
    value = unescape(value)
    if clause.modifier == "below":
        return table.c.code.like(_like_escape(value) + "%", escape="\\")
    if clause.modifier == "above":
        return literal(value).like(func.replace(func.replace(table.c.code, "%", "\\%"), "_", "\\_") + "%",
                                   escape="\\")
    return table.c.code == value


def _reference_match(table, value: str, clause: ParamClause, base_url: str | None) -> ColumnElement:
    value = unescape(value)
    type_modifier = clause.modifier if clause.modifier and clause.modifier[:1].isupper() else None
    if "/" not in value and "://" not in value and not value.startswith("urn:"):
        cond = table.c.target_id == value
        if type_modifier:
            return and_(cond, table.c.target_type == type_modifier)
        if len(clause.param.targets) == 1:
            return and_(cond, table.c.target_type == clause.param.targets[0])
        return cond
    ref = sp.parse_reference(value, base_url)
    if ref is None:
        raise bad_request(f"'{value}' is not a reference", [clause.param.code])
    if ref.target_type:
        return and_(table.c.target_type == ref.target_type, table.c.target_id == ref.target_id)
    url = ref.url or value
    return table.c.url == url.split("|")[0]


def _date_index_match(table, value: str, clause: ParamClause, _base) -> ColumnElement:
    return _date_match(value, table.c.low, table.c.high)


def _date_match(value: str, low: ColumnElement, high: ColumnElement) -> ColumnElement:
    prefix, text = split_prefix(value)
    rng = sp.date_range(text)
    if rng is None:
        raise bad_request(f"'{value}' is not a valid date")
    sl, sh = rng.low, rng.high
    if prefix == "eq":
        return and_(low >= sl, high <= sh)
    if prefix == "ne":
        return not_(and_(low >= sl, high <= sh))
    if prefix == "gt":
        return high > sh
    if prefix == "lt":
        return low < sl
    if prefix == "ge":
        return high >= sl
    if prefix == "le":
        return low <= sh
    if prefix == "sa":
        return low > sh
    if prefix == "eb":
        return high < sl
    # ap: overlap with the search range widened by 10% of its distance from now (at least a day)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    gap = max(abs(now - sl), abs(now - sh)) / 10
    gap = max(gap, timedelta(days=1))
    return and_(low <= sh + gap, high >= sl - gap)


def _number_cond(prefix: str, number: Decimal, col, low_col, high_col) -> ColumnElement:
    lo, hi = sp.decimal_bounds(number)
    if prefix == "eq":
        return and_(col >= lo, col < hi)
    if prefix == "ne":
        return or_(col < lo, col >= hi)
    if prefix in ("gt", "sa"):
        return col > number
    if prefix in ("lt", "eb"):
        return col < number
    if prefix == "ge":
        return col >= number
    if prefix == "le":
        return col <= number
    gap = abs(number) / 10
    return and_(col >= number - gap, col <= number + gap)


def _number_match(table, value: str, clause: ParamClause, _base) -> ColumnElement:
    prefix, text = split_prefix(value)
    number = sp.parse_number(text)
    if number is None:
        raise bad_request(f"'{value}' is not a number", [clause.param.code])
    return _number_cond(prefix, number, table.c.value, table.c.low, table.c.high)


def _quantity_match(table, value: str, clause: ParamClause, _base) -> ColumnElement:
    prefix, text = split_prefix(value)
    parts = text.split("|")
    number = sp.parse_number(parts[0])
    if number is None:
        raise bad_request(f"'{value}' is not a quantity", [clause.param.code])
    conds = [_number_cond(prefix, number, table.c.value, table.c.low, table.c.high)]
    if len(parts) == 3:
        system, code = parts[1], parts[2]
        if system:
            conds.append(table.c.system == system)
        if code:
            conds.append(table.c.code == code)
    elif len(parts) == 2 and parts[1]:
        conds.append(table.c.code == parts[1])
    return and_(*conds)


MATCHERS = {
    "string": _string_match, "token": _token_match, "uri": _uri_match,
    "reference": _reference_match, "date": _date_index_match,
    "number": _number_match, "quantity": _quantity_match,
}


def sort_key(rtype: str, param, descending: bool) -> ColumnElement:
    """A correlated scalar subquery giving the value to sort a resource by."""
    table = INDEX_TABLES[param.type]
    column = table.c.value if param.type == "string" else None
    if param.type == "date":
        column = table.c.high if descending else table.c.low
    elif param.type in ("token", "uri"):
        column = table.c.code
    elif param.type in ("number", "quantity"):
        column = table.c.value
    elif param.type == "reference":
        column = func.coalesce(table.c.target_id, table.c.url)
    agg = func.max(column) if descending else func.min(column)
    return (select(agg).where(table.c.res_type == rtype, table.c.res_id == R.c.res_id,
                              table.c.param == param.code).scalar_subquery())


def base_select(rtype: str | None) -> Select:
    cond = [R.c.deleted == false()]
    if rtype:
        cond.append(R.c.res_type == rtype)
    return select(R.c.res_type, R.c.res_id, R.c.version_id, R.c.last_updated, R.c.content).where(*cond)
