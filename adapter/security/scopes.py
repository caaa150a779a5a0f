"""SMART on FHIR scopes: parsing, checking an interaction, and narrowing a request.

Backend services (client credentials) act for a system, so only the `system/` context is
supported; `user/` and `patient/` scopes need a user or patient launch context this server
does not have and are refused in a token request (and never grant anything in `allows`).

Both syntaxes are understood:

- SMART v2: `system/<Type|*>.<cruds>`, the letters in that order, each at most once
  (c create, r read, u update, d delete, s search), e.g. `system/Task.cru`, `system/*.rs`.
- SMART v1: `system/<Type|*>.<read|write|*>`; `read` is `rs`, `write` is `cud`, `*` is `cruds`
  (the v1-to-v2 equivalence of the SMART App Launch 2.0 specification).

A v2 scope with a query suffix (`system/Observation.rs?category=laboratory`) restricts the
resources by search parameters. This server does not enforce such restrictions, and ignoring
one would grant more than was asked for, so such a scope is refused as unsupported
(`ScopeError`) in a token request, and grants nothing in `allows`.

Scopes that are not resource scopes (`openid`, `offline_access`, `launch`, ...) are refused in
a token request too: a backend service client has no use for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

INTERACTIONS = "cruds"  # create read update delete search, in the order SMART v2 writes them
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
CONTEXTS = ("system",)

# What /.well-known/smart-configuration advertises as examples of what may be asked for.
SCOPES_SUPPORTED = ("system/*.cruds", "system/*.rs", "system/*.read", "system/*.write", "system/*.*")

_SCOPE = re.compile(r"^(?P<context>[a-z]+)/(?P<type>\*|[A-Z][A-Za-z]{0,63})\.(?P<perm>[a-z*]+)(?P<query>\?.*)?$")
_V2 = re.compile(r"^c?r?u?d?s?$")


class ScopeError(ValueError):
    """A scope that cannot be granted: malformed or unsupported. The message says which."""


@dataclass(frozen=True)
class Scope:
    context: str                 # "system"
    resource_type: str           # a FHIR resource type, or "*"
    interactions: frozenset[str]  # subset of c r u d s

    def covers(self, other: Scope) -> bool:
        return (self.context == other.context
                and self.resource_type in ("*", other.resource_type)
                and other.interactions <= self.interactions)

    def text(self) -> str:
        """The v2 spelling."""
        return f"{self.context}/{self.resource_type}.{''.join(c for c in INTERACTIONS if c in self.interactions)}"


@lru_cache(maxsize=4096)
def parse_scope(text: str) -> Scope:
    """One scope, v1 or v2; ScopeError if it is malformed or not supported here."""
    m = _SCOPE.match(text)
    if not m:
        raise ScopeError(f"scope {text!r} is not a SMART resource scope (context/Type.permissions)")
    if m["query"] is not None:
        raise ScopeError(f"scope {text!r}: scopes restricted by search parameters (?...) are not supported")
    if m["context"] not in CONTEXTS:
        raise ScopeError(f"scope {text!r}: only system/ scopes are supported (SMART Backend Services)")
    perm = m["perm"]
    if perm in V1:
        letters = V1[perm]
    elif perm and _V2.match(perm):
        letters = perm
    else:
        raise ScopeError(f"scope {text!r}: permissions must be read, write, * or SMART v2 letters in the "
                         f"order c r u d s")
    return Scope(m["context"], m["type"], frozenset(letters))


def parse_scopes(text: str) -> list[Scope]:
    """A space-separated scope list (as in a token request); ScopeError on the first bad one."""
    return [parse_scope(s) for s in text.split()]


def _valid(scopes) -> list[Scope]:
    out = []
    for s in scopes:
        try:
            out.append(parse_scope(s))
        except ScopeError:
            continue  # unparsable or unsupported scopes grant nothing
    return out


@lru_cache(maxsize=1024)
def _valid_cached(scopes: frozenset[str]) -> tuple[Scope, ...]:
    return tuple(_valid(scopes))


def allows(scopes: frozenset[str], resource_type: str, interaction: str) -> bool:
    """Do these granted scopes permit `interaction` (one of c r u d s) on `resource_type`?"""
    if interaction not in INTERACTIONS or len(interaction) != 1:
        raise ValueError(f"interaction must be one of {', '.join(INTERACTIONS)}, not {interaction!r}")
    if not isinstance(scopes, frozenset):
        scopes = frozenset(scopes)
    return any(s.resource_type in ("*", resource_type) and interaction in s.interactions
               for s in _valid_cached(scopes))


def narrow(requested, allowed) -> frozenset[str]:
    """The scopes to grant: what was requested, cut down to what the registry allows.

    `requested` is a space-separated string or an iterable of scopes; every one must parse
    (ScopeError otherwise). `allowed` scopes that do not parse are ignored. A requested scope
    covered by one allowed scope is granted as spelled; one only partly allowed is granted as
    its v2 intersection (`system/*.cruds` against `system/Task.rs` gives `system/Task.rs`); one
    not allowed at all is dropped. ScopeError if nothing remains (the OAuth `invalid_scope`).
    """
    texts = requested.split() if isinstance(requested, str) else list(requested)
    if not texts:
        raise ScopeError("no scope requested")
    wanted = [(t, parse_scope(t)) for t in texts]
    grants = _valid(allowed)
    granted: set[str] = set()
    for text, want in wanted:
        if any(g.covers(want) for g in grants):
            granted.add(text)
            continue
        for g in grants:
            if g.context != want.context:
                continue
            if want.resource_type == "*":
                rtype = g.resource_type
            elif g.resource_type in ("*", want.resource_type):
                rtype = want.resource_type
            else:
                continue
            both = want.interactions & g.interactions
            if both:
                granted.add(Scope(want.context, rtype, frozenset(both)).text())
    granted = _minimal(granted)
    if not granted:
        raise ScopeError(f"none of the requested scopes ({' '.join(texts)}) is allowed for this client")
    return frozenset(granted)


def _minimal(texts: set[str]) -> set[str]:
    """Drop a granted scope another granted scope already covers (keeps the response tidy)."""
    parsed = {t: parse_scope(t) for t in texts}
    out = set()
    for t, s in parsed.items():
        if any(o != t and parsed[o].covers(s) and (not s.covers(parsed[o]) or o < t) for o in parsed):
            continue
        out.add(t)
    return out
