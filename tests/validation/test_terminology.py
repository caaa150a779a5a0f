"""ValueSet membership from the CodeSystems and ValueSets we hold."""

from __future__ import annotations

from adapter.validation.terminology import Terminology

CS = {"resourceType": "CodeSystem", "url": "https://x.example/CodeSystem/colour", "status": "active",
      "content": "complete", "concept": [{"code": "red", "display": "Red",
                                          "concept": [{"code": "scarlet", "display": "Scarlet"}]},
                                         {"code": "blue", "display": "Blue"}]}
ALL = {"resourceType": "ValueSet", "url": "https://x.example/ValueSet/colour", "status": "active",
       "compose": {"include": [{"system": CS["url"]}]}}
SOME = {"resourceType": "ValueSet", "url": "https://x.example/ValueSet/warm", "status": "active",
        "compose": {"include": [{"system": CS["url"], "concept": [{"code": "red"}, {"code": "scarlet"}]}]}}
NESTED = {"resourceType": "ValueSet", "url": "https://x.example/ValueSet/not-scarlet", "status": "active",
          "compose": {"include": [{"valueSet": [ALL["url"]]}],
                      "exclude": [{"system": CS["url"], "concept": [{"code": "scarlet"}]}]}}
FILTERED = {"resourceType": "ValueSet", "url": "https://x.example/ValueSet/f", "status": "active",
            "compose": {"include": [{"system": "http://snomed.info/sct",
                                     "filter": [{"property": "concept", "op": "is-a", "value": "1"}]}]}}


def terminology() -> Terminology:
    return Terminology([CS, ALL, SOME, NESTED, FILTERED])


def test_whole_code_system_with_nested_concepts():
    t = terminology()
    assert t.contains(ALL["url"], CS["url"], "scarlet") is True
    assert t.contains(ALL["url"], CS["url"], "green") is False
    assert t.contains(ALL["url"] + "|1.0.0", CS["url"], "blue") is True


def test_listed_concepts_and_code_without_system():
    t = terminology()
    assert t.contains(SOME["url"], CS["url"], "blue") is False
    assert t.contains(SOME["url"], None, "red") is True


def test_included_value_set_minus_exclusion():
    t = terminology()
    assert t.contains(NESTED["url"], CS["url"], "red") is True
    assert t.contains(NESTED["url"], CS["url"], "scarlet") is False


def test_unknown_or_filtered_value_sets_cannot_be_judged():
    t = terminology()
    assert t.contains("https://x.example/ValueSet/nope", CS["url"], "red") is None
    assert t.contains(FILTERED["url"], "http://snomed.info/sct", "1") is None


def test_display_lookup():
    assert terminology().display(CS["url"], "scarlet") == "Scarlet"
