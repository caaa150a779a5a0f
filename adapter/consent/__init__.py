"""Consent rules as data (config/consent.toml) and plain functions: who may grant a Consent,
whether a child's Consents permit sharing, which resource types that gates. No HTTP, no SQL."""

from .rules import (
    INFORMATION_SHARING,
    ChildFacts,
    ConsentRules,
    Decision,
    age_on,
    child_facts_from,
    gated_types,
    grantor_problems,
    load_rules,
    rules_from_dict,
    sharing_decision,
)

__all__ = [
    "INFORMATION_SHARING",
    "ChildFacts",
    "ConsentRules",
    "Decision",
    "age_on",
    "child_facts_from",
    "gated_types",
    "grantor_problems",
    "load_rules",
    "rules_from_dict",
    "sharing_decision",
]
