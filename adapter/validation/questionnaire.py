"""Validation of a QuestionnaireResponse against its Questionnaire (FHIR R4 and SDC rules).

A response is judged against the Questionnaire it claims to answer: where each item sits,
the type and number of its answers, the options and limits the Questionnaire sets, which
items enableWhen switches on or off and, once the response is completed, that every
enabled required item is answered. Problems come back as a list of Issues (never raised)
so that a caller can report them all in one OperationOutcome; each names the linkId and
its FHIRPath location in the response.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Callable

from ..fhir.errors import Issue
from .terminology import Terminology, default_terminology

ROOT = "QuestionnaireResponse"
_EXT = "http://hl7.org/fhir/StructureDefinition/"
MIN_VALUE = _EXT + "minValue"
MAX_VALUE = _EXT + "maxValue"
MIN_LENGTH = _EXT + "minLength"
REGEX = _EXT + "regex"
MAX_DECIMAL_PLACES = _EXT + "maxDecimalPlaces"
UNIT = _EXT + "questionnaire-unit"
UNIT_OPTION = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-unitOption"

_ANSWER_TYPES = {
    "boolean": "valueBoolean", "decimal": "valueDecimal", "integer": "valueInteger",
    "date": "valueDate", "dateTime": "valueDateTime", "time": "valueTime",
    "string": "valueString", "text": "valueString", "url": "valueUri",
    "attachment": "valueAttachment", "reference": "valueReference", "quantity": "valueQuantity",
}
_NO_ANSWERS = ("group", "display")
_TEXT_VALUES = ("valueString", "valueUri")
_CHECKED_STATUSES = ("completed", "amended")
_ORDERED = ("number", "moment", "time", "quantity")
_OPERATORS: dict[str, Callable[[int, int], bool]] = {
    "=": operator.eq, "!=": operator.ne, ">": operator.gt,
    "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}

Typed = tuple[str, Any]  # (kind, value) in a form that can be compared


def validate_response(response: dict, questionnaire: dict,
                      terminology: Terminology | None = None) -> list[Issue]:
    """Every way `response` departs from `questionnaire`, as Issues located in the response.

    `terminology` answers answerValueSet membership; without one, our published
    terminology (profiles/) is used.
    """
    checker = _Checker(questionnaire, terminology if terminology is not None else default_terminology())
    checker.issues.extend(_check_canonical(response, questionnaire))
    checker.walk(response.get("item") or [], None, ROOT, None)
    checker.check_occurrences()
    if response.get("status") in _CHECKED_STATUSES:
        checker.check_required()
    return checker.issues


def _check_canonical(response: dict, questionnaire: dict) -> list[Issue]:
    """Rule 1: the response must claim this Questionnaire (url, and version when it names one)."""
    where = [f"{ROOT}.questionnaire"]
    claimed = response.get("questionnaire")
    if not claimed:
        return [Issue("invalid", "The response does not name the Questionnaire it answers", expression=where)]
    url, _, version = claimed.partition("|")
    if url != questionnaire.get("url"):
        return [Issue("invalid", f"The response answers '{claimed}', not Questionnaire "
                                 f"'{questionnaire.get('url')}'", expression=where)]
    if version and version != questionnaire.get("version"):
        return [Issue("invalid", f"The response answers version '{version}' of '{url}', but the "
                                 f"Questionnaire is version '{questionnaire.get('version')}'", expression=where)]
    return []


@dataclass
class _Index:
    """The Questionnaire's items by linkId, built once per call so every lookup is a dict hit."""

    items: dict[str, dict]
    parent: dict[str, str | None]  # linkId of the enclosing item, None at the top level
    position: dict[str, int]  # place among its siblings, for the order check


def _index(questionnaire: dict) -> _Index:
    """Walk the Questionnaire once; a duplicated linkId keeps its first item."""
    items: dict[str, dict] = {}
    parent: dict[str, str | None] = {}
    position: dict[str, int] = {}
    stack: list[tuple[str | None, list]] = [(None, questionnaire.get("item") or [])]
    while stack:
        owner, children = stack.pop()
        for i, qitem in enumerate(children):
            link = qitem.get("linkId")
            if link is None or link in items:
                continue
            items[link], parent[link], position[link] = qitem, owner, i
            if qitem.get("item"):
                stack.append((link, qitem["item"]))
    return _Index(items, parent, position)


@dataclass(eq=False)
class _Occurrence:
    """One response item matched to its Questionnaire item, and where it sits.

    `chain` holds the serials of the enclosing occurrences and its own; enableWhen uses
    it to find the nearest occurrence of the question it depends on.
    """

    qitem: dict
    node: dict
    path: str
    chain: tuple[int, ...]
    parent: _Occurrence | None


@dataclass
class _Level:
    """One list of sibling response items: what is there, for the required-item check."""

    owner: str | None  # linkId whose Questionnaire children belong here
    present: set[str]
    path: str
    context: _Occurrence | None


@dataclass
class _Rules:
    """What a Questionnaire item asks of each answer, read from the item once per call."""

    types: frozenset[str]
    options: list[tuple[str, Any]]
    open: bool
    value_set: str | None
    max_length: int | None
    min_length: int | None
    regex: str | None
    minimum: Typed | None
    maximum: Typed | None
    max_places: int | None
    units: list[dict]


class _Checker:
    """Two passes: match response items to the Questionnaire, then judge their answers."""

    def __init__(self, questionnaire: dict, terminology: Terminology):
        self.questionnaire = questionnaire
        self.index = _index(questionnaire)
        self.terminology = terminology
        self.issues: list[Issue] = []
        self.occurrences: list[_Occurrence] = []
        self.by_link: dict[str, list[_Occurrence]] = {}
        self.levels: list[_Level] = []
        self._enabled: dict[int, bool] = {}
        self._rules: dict[str, _Rules] = {}
        self._contained: Terminology | None = None

    def issue(self, code: str, path: str, text: str, severity: str = "error") -> None:
        """Collect rather than raise, so the caller sees every problem at once."""
        self.issues.append(Issue(code, text, severity, [path]))

    # -- pass 1: where items sit (rules 2, 3, 9, 10) --------------------------------------

    def walk(self, nodes: list, owner: str | None, path: str, context: _Occurrence | None) -> None:
        """Match one list of sibling response items to the Questionnaire items expected there."""
        present: set[str] = set()
        furthest = -1
        for i, node in enumerate(nodes):
            where = f"{path}.item[{i}]"
            link = node.get("linkId")
            qitem = self.index.items.get(link)
            if qitem is None:
                self.issue("structure", where, f"Item '{link}' is not in the Questionnaire")
                continue
            if self.index.parent[link] != owner:
                home = self.index.parent[link]
                place = "at the top level" if home is None else f"under item '{home}'"
                self.issue("structure", where, f"Item '{link}' belongs {place} in the Questionnaire")
                continue
            if self.index.position[link] < furthest:
                self.issue("structure", where, f"Item '{link}' is out of the Questionnaire's order",
                           severity="warning")
            furthest = max(furthest, self.index.position[link])
            if link in present and not qitem.get("repeats"):
                self.issue("structure", where, f"Item '{link}' does not repeat but appears more than once")
            present.add(link)
            chain = (context.chain if context else ()) + (len(self.occurrences),)
            occurrence = _Occurrence(qitem, node, where, chain, context)
            self.occurrences.append(occurrence)
            self.by_link.setdefault(link, []).append(occurrence)
            self.walk_children(occurrence)
        self.levels.append(_Level(owner, present, path, context))

    def walk_children(self, occ: _Occurrence) -> None:
        """Groups hold children in item.item, questions in answer.item; display items hold neither."""
        qitem, node, path = occ.qitem, occ.node, occ.path
        link, kind = qitem["linkId"], qitem.get("type")
        if kind in _NO_ANSWERS:
            if node.get("answer"):
                self.issue("structure", f"{path}.answer", f"Item '{link}' is a {kind} and carries no answers")
            if kind == "group":
                self.walk(node.get("item") or [], link, path, occ)
            elif node.get("item"):
                self.issue("structure", f"{path}.item", f"Display item '{link}' has no child items")
            return
        if node.get("item"):
            self.issue("structure", f"{path}.item",
                       f"Items nested in question '{link}' belong under its answers (answer.item)")
        for j, answer in enumerate(node.get("answer") or []):
            where = f"{path}.answer[{j}]"
            if qitem.get("item"):
                self.walk(answer.get("item") or [], link, where, occ)
            elif answer.get("item"):
                self.issue("structure", f"{where}.item",
                           f"Question '{link}' has no child items, so its answers carry none")

    # -- pass 2: answers, enableWhen and required (rules 3-8) -----------------------------

    def check_occurrences(self) -> None:
        """Judge each matched item's answers, and refuse answers where enableWhen says the item is off."""
        for occ in self.occurrences:
            if occ.qitem.get("type") not in _NO_ANSWERS:
                self.check_answers(occ)
            if _has_value(occ.node) and not self.enabled(occ):
                self.issue("business-rule", occ.path,
                           f"Item '{occ.qitem['linkId']}' is disabled by enableWhen but has answers")

    def check_answers(self, occ: _Occurrence) -> None:
        """Answer count, then each answer's type, options and limits."""
        qitem = occ.qitem
        link = qitem["linkId"]
        answers = occ.node.get("answer") or []
        if len(answers) > 1 and not qitem.get("repeats"):
            self.issue("structure", f"{occ.path}.answer[1]",
                       f"Question '{link}' does not repeat but has {len(answers)} answers")
        rules = self.rules(qitem)
        for j, answer in enumerate(answers):
            found = _value(answer)
            if found is None:
                continue
            key, value = found
            where = f"{occ.path}.answer[{j}].{key}"
            if key not in rules.types:
                allowed = " or ".join(sorted(rules.types)) or "no answer"
                self.issue("structure", where, f"Question '{link}' ({qitem.get('type')}) takes {allowed}, not {key}")
                continue
            self.check_choice(link, rules, key, value, where)
            self.check_limits(link, rules, key, value, where)

    def check_choice(self, link: str, rules: _Rules, key: str, value: Any, where: str) -> None:
        """Rule 7: coded answers come from answerOption or the answerValueSet."""
        if rules.open and key == "valueString":
            return
        if rules.options and not any(_option_matches(key, value, k, v) for k, v in rules.options):
            self.issue("code-invalid", where, f"Answer {_show(value)} to '{link}' is not one of its answerOptions")
        if rules.value_set and key == "valueCoding" and value.get("code"):
            verdict = self.in_value_set(rules.value_set, value)
            if verdict is False:
                self.issue("code-invalid", where,
                           f"Answer {_show(value)} to '{link}' is not in ValueSet '{rules.value_set}'")
            elif verdict is None:
                self.issue("code-invalid", where, f"Cannot check answer {_show(value)} to '{link}': "
                                                  f"ValueSet '{rules.value_set}' is not known here",
                           severity="information")

    def check_limits(self, link: str, rules: _Rules, key: str, value: Any, where: str) -> None:
        """Rule 8: lengths, pattern, bounds, decimal places and units the item sets."""
        if key in _TEXT_VALUES and isinstance(value, str):
            if rules.max_length is not None and len(value) > rules.max_length:
                self.issue("value", where, f"Answer to '{link}' is longer than maxLength {rules.max_length}")
            if rules.min_length is not None and len(value) < rules.min_length:
                self.issue("value", where, f"Answer to '{link}' is shorter than minLength {rules.min_length}")
            if rules.regex is not None:
                pattern = _compiled(rules.regex)
                if pattern is None:
                    self.issue("invalid", where, f"Cannot check answer to '{link}': its regex "
                                                 f"'{rules.regex}' does not compile", severity="warning")
                elif not pattern.fullmatch(value):
                    self.issue("value", where, f"Answer to '{link}' does not match the pattern '{rules.regex}'")
        if rules.minimum or rules.maximum:
            typed = _typed(key[len("value"):], value)
            if rules.minimum and _order(typed, rules.minimum) == -1:
                self.issue("value", where, f"Answer {_show(value)} to '{link}' is below its minValue")
            if rules.maximum and _order(typed, rules.maximum) == 1:
                self.issue("value", where, f"Answer {_show(value)} to '{link}' is above its maxValue")
        number = value if key == "valueDecimal" else None
        if key == "valueQuantity" and isinstance(value, dict):
            number = value.get("value")
        if rules.max_places is not None and number is not None and _places(number) > rules.max_places:
            self.issue("value", where, f"Answer to '{link}' has more than {rules.max_places} decimal places")
        if (rules.units and key == "valueQuantity"
                and not any(_coding_matches(_unit(value), unit) for unit in rules.units)):
            self.issue("code-invalid", where, f"Answer to '{link}' is in unit {_show(_unit(value))}, "
                                              f"not one the Questionnaire allows")

    def check_required(self) -> None:
        """Rule 4: enabled required items are present and answered (completed responses only)."""
        for occ in self.occurrences:
            if not occ.qitem.get("required") or not self.enabled(occ):
                continue
            if occ.qitem.get("type") == "group":
                if not _answered_below(occ.node):
                    self.issue("required", occ.path, f"Required group '{occ.qitem['linkId']}' has no answers")
            elif occ.qitem.get("type") != "display" and not _has_value(occ.node):
                self.issue("required", occ.path, f"Required question '{occ.qitem['linkId']}' has no answer")
        for level in self.levels:
            if level.context is not None and not self.enabled(level.context):
                continue
            expected = (self.index.items[level.owner].get("item") if level.owner
                        else self.questionnaire.get("item")) or []
            for qitem in expected:
                link = qitem.get("linkId")
                if (qitem.get("required") and link not in level.present
                        and self.condition_holds(qitem, level.context)):
                    self.issue("required", level.path, f"Required item '{link}' is missing")

    # -- enableWhen (rule 5) --------------------------------------------------------------

    def enabled(self, occ: _Occurrence) -> bool:
        """An item is enabled when its parent is and its own enableWhen holds (memoised)."""
        key = occ.chain[-1]
        if key not in self._enabled:
            self._enabled[key] = False  # conditions that loop back here enable nothing
            self._enabled[key] = ((occ.parent is None or self.enabled(occ.parent))
                                  and self.condition_holds(occ.qitem, occ))
        return self._enabled[key]

    def condition_holds(self, qitem: dict, context: _Occurrence | None) -> bool:
        """enableWhen combined by enableBehavior; without one, several conditions must all hold."""
        conditions = qitem.get("enableWhen")
        if not conditions:
            return True
        chain = context.chain if context else ()
        results = (self.condition(c, chain) for c in conditions)
        return any(results) if qitem.get("enableBehavior") == "any" else all(results)

    def condition(self, when: dict, chain: tuple[int, ...]) -> bool:
        """One enableWhen, with the R4 meaning of each operator over all answers to its question."""
        answers = self.answers_to(when.get("question"), chain)
        op = when.get("operator")
        if op == "exists":
            return bool(answers) == (when.get("answerBoolean") is True)
        found = _value(when, "answer")
        if found is None or op not in _OPERATORS:
            return False
        expected = _typed(found[0][len("answer"):], found[1])
        if op == "!=":  # R4: true when no answer equals the enableWhen answer
            return not any(_holds("=", actual, expected) for actual in answers)
        return any(_holds(op, actual, expected) for actual in answers)

    def answers_to(self, link: str | None, chain: tuple[int, ...]) -> list[Typed]:
        """Answers of the nearest enabled occurrence(s) of `link`: the one sharing most ancestors."""
        candidates = self.by_link.get(link or "") or []
        if not candidates:
            return []
        best = max(_shared(c.chain, chain) for c in candidates)
        out: list[Typed] = []
        for occ in candidates:
            if _shared(occ.chain, chain) == best and self.enabled(occ):
                for answer in occ.node.get("answer") or []:
                    found = _value(answer)
                    if found is not None:
                        out.append(_typed(found[0][len("value"):], found[1]))
        return out

    # -- reading the Questionnaire --------------------------------------------------------

    def rules(self, qitem: dict) -> _Rules:
        """The item's rules, read once per call however many times the item is answered."""
        link = qitem["linkId"]
        if link not in self._rules:
            self._rules[link] = _read_rules(qitem)
        return self._rules[link]

    def in_value_set(self, url: str, coding: dict) -> bool | None:
        """Membership; `#id` names a ValueSet contained in the Questionnaire."""
        terminology = self.terminology
        if url.startswith("#"):
            if self._contained is None:
                self._contained = Terminology(
                    {**r, "url": "#" + r["id"]} if r.get("resourceType") == "ValueSet" and r.get("id") else r
                    for r in self.questionnaire.get("contained") or [])
            terminology = self._contained
        return terminology.contains(url, coding.get("system"), coding["code"])


def _read_rules(qitem: dict) -> _Rules:
    """Allowed answer types (choice types follow answerOption), options, limits and units."""
    kind = qitem.get("type")
    options = [found for option in qitem.get("answerOption") or [] if (found := _value(option)) is not None]
    if kind in ("choice", "open-choice"):
        types = {key for key, _ in options} or {"valueCoding"}
        if kind == "open-choice":
            types.add("valueString")
    else:
        types = {_ANSWER_TYPES[kind]} if kind in _ANSWER_TYPES else set()
    units = [e["valueCoding"] for e in qitem.get("extension") or []
             if e.get("url") in (UNIT, UNIT_OPTION) and isinstance(e.get("valueCoding"), dict)]
    return _Rules(
        types=frozenset(types), options=options, open=kind == "open-choice",
        value_set=qitem.get("answerValueSet"), max_length=qitem.get("maxLength"),
        min_length=_extension(qitem, MIN_LENGTH, "valueInteger"), regex=_extension(qitem, REGEX, "valueString"),
        minimum=_bound(qitem, MIN_VALUE), maximum=_bound(qitem, MAX_VALUE),
        max_places=_extension(qitem, MAX_DECIMAL_PLACES, "valueInteger"), units=units)


def _extension(qitem: dict, url: str, key: str) -> Any:
    """The first value of an extension on the item, or None when the item does not set it."""
    for ext in qitem.get("extension") or []:
        if ext.get("url") == url and key in ext:
            return ext[key]
    return None


def _bound(qitem: dict, url: str) -> Typed | None:
    """minValue/maxValue in comparable form, whatever value[x] the extension uses."""
    for ext in qitem.get("extension") or []:
        if ext.get("url") == url and (found := _value(ext)) is not None:
            return _typed(found[0][len("value"):], found[1])
    return None


# -- values ---------------------------------------------------------------------------------

def _value(element: dict, prefix: str = "value") -> tuple[str, Any] | None:
    """The (key, value) of an element's value[x] (or answer[x]), if it has one."""
    n = len(prefix)
    for key, value in element.items():
        if key.startswith(prefix) and len(key) > n and key[n].isupper():
            return key, value
    return None


def _has_value(node: dict) -> bool:
    return any(_value(a) is not None for a in node.get("answer") or [])


def _answered_below(node: dict) -> bool:
    """True when any question below this response item carries a value."""
    stack = list(node.get("item") or [])
    while stack:
        child = stack.pop()
        if _has_value(child):
            return True
        stack.extend(child.get("item") or [])
        for answer in child.get("answer") or []:
            stack.extend(answer.get("item") or [])
    return False


def _typed(type_name: str, value: Any) -> Typed:
    """A value in comparable form: numbers as Decimal, dates and times parsed."""
    if type_name in ("Integer", "Decimal"):
        return "number", _decimal(value)
    if type_name in ("Date", "DateTime"):
        return "moment", _moment(value)
    if type_name == "Time":
        return "time", _time(value)
    if type_name in ("String", "Uri"):
        return "string", value
    if type_name == "Reference":
        return "reference", value.get("reference") if isinstance(value, dict) else None
    return type_name.lower(), value  # boolean, coding, quantity, attachment


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _moment(value: Any) -> tuple[int, ...] | datetime | None:
    """A date or dateTime: a (year, month, day) prefix for partial dates, else a datetime."""
    if not isinstance(value, str):
        return None
    try:
        if "T" in value:
            return datetime.fromisoformat(value)
        return tuple(int(part) for part in value.split("-"))
    except ValueError:
        return None


def _time(value: Any) -> time | None:
    try:
        return time.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def _sign(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def _order(actual: Typed, expected: Typed) -> int | None:
    """-1/0/1 as `actual` is below/equal to/above `expected`; None when they cannot be ordered."""
    kind, a = actual
    if kind != expected[0] or kind not in _ORDERED or a is None or expected[1] is None:
        return None
    b = expected[1]
    if kind == "quantity":
        if not isinstance(a, dict) or not isinstance(b, dict):
            return None
        if b.get("code") and not _coding_matches(_unit(a), _unit(b)):
            return None
        a, b = _decimal(a.get("value")), _decimal(b.get("value"))
        return None if a is None or b is None else _sign(a, b)
    if kind == "moment":
        return _moment_order(a, b)
    return _sign(a, b)


def _moment_order(a: tuple | datetime, b: tuple | datetime) -> int | None:
    """Dates compare on the precision they share; equal prefixes of unequal precision cannot be ordered."""
    if isinstance(a, datetime) and isinstance(b, datetime):
        if (a.tzinfo is None) != (b.tzinfo is None):
            return None
        return _sign(a, b)
    ta = (a.year, a.month, a.day) if isinstance(a, datetime) else a
    tb = (b.year, b.month, b.day) if isinstance(b, datetime) else b
    n = min(len(ta), len(tb))
    if ta[:n] != tb[:n]:
        return _sign(ta[:n], tb[:n])
    same_precision = len(ta) == len(tb) and isinstance(a, datetime) == isinstance(b, datetime)
    return 0 if same_precision else None


def _holds(op: str, actual: Typed, expected: Typed) -> bool:
    """One answer against one enableWhen answer: ordered kinds by order, others by equality."""
    if actual[0] != expected[0]:
        return False
    if actual[0] in _ORDERED:
        order = _order(actual, expected)
        return order is not None and _OPERATORS[op](order, 0)
    if op not in ("=", "!="):
        return False
    if actual[0] == "coding":
        same = _coding_matches(actual[1], expected[1])
    else:
        same = actual[1] == expected[1]
    return same if op == "=" else not same


def _coding_matches(actual: dict, expected: dict) -> bool:
    """Same code, and the same system whenever the Questionnaire's side names one."""
    return (isinstance(actual, dict) and actual.get("code") is not None
            and actual.get("code") == expected.get("code")
            and (not expected.get("system") or actual.get("system") == expected.get("system")))


def _option_matches(key: str, value: Any, option_key: str, option_value: Any) -> bool:
    if key != option_key:
        return False
    if key == "valueCoding":
        return _coding_matches(value, option_value)
    if key == "valueReference":
        return isinstance(value, dict) and value.get("reference") == option_value.get("reference")
    return value == option_value


def _unit(quantity: Any) -> dict:
    if not isinstance(quantity, dict):
        return {}
    return {"system": quantity.get("system"), "code": quantity.get("code")}


def _shared(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """How many enclosing occurrences two chains share: the nearer, the more."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _places(number: Any) -> int:
    """Decimal places as written: Decimal keeps "2.50" apart from "2.5"."""
    value = _decimal(number)
    if value is None:
        return 0
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern | None:
    """A regex extension compiled once; None when Python cannot compile it."""
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _show(value: Any) -> str:
    """A value for a diagnostic: codings as system|code, anything else as its repr."""
    if isinstance(value, dict) and ("code" in value or "system" in value):
        return f"{value.get('system') or ''}|{value.get('code') or ''}"
    return repr(value)
