"""The one validation entry point: structure, then profiles, then questionnaire rules.

`validate()` returns issues (it never raises for invalid content), so the same call
serves `$validate`, the write path (errors become a 422) and the offline CLI.
"""

from __future__ import annotations

from ..fhir.errors import FhirError, Issue
from .conformance import Resolver
from .structure import validate_structure
from .terminology import Terminology

OUR_BASE = "https://lac-fhir-adapter.example/fhir/"


class Validator:
    def __init__(self, terminology: Terminology):
        self.terminology = terminology

    def validate(self, resource: dict, resolve: Resolver, profile: str | None = None) -> list[Issue]:
        """All issues of `resource`; `profile` adds one profile to those in meta.profile."""
        try:
            validate_structure(resource)
        except FhirError as err:
            return list(err.issues)
        issues: list[Issue] = []
        claimed = list((resource.get("meta") or {}).get("profile") or [])
        if profile and profile not in claimed:
            claimed.append(profile)
        for canonical in claimed:
            issues += self._profile(resource, canonical, resolve, explicit=canonical == profile)
        if resource.get("resourceType") == "QuestionnaireResponse":
            issues += self._questionnaire(resource, resolve)
        return issues

    def _profile(self, resource: dict, canonical: str, resolve: Resolver, explicit: bool) -> list[Issue]:
        sd = resolve("StructureDefinition", canonical)
        if sd is None:
            # A profile we do not hold cannot be checked: an error if it claims to be ours
            # or was asked for explicitly, otherwise a warning (UK Core and others).
            severity = "error" if explicit or canonical.startswith(OUR_BASE) else "warning"
            return [Issue("not-found", f"profile {canonical} is not known to this server",
                          severity=severity,
                          expression=[f"{resource.get('resourceType')}.meta.profile"] if not explicit else [])]
        if sd.get("type") != resource.get("resourceType"):
            return [Issue("invalid", f"profile {canonical} is for {sd.get('type')}, not "
                                     f"{resource.get('resourceType')}", expression=[f"{resource.get('resourceType')}.meta.profile"])]
        from .profiles import validate_profile

        return validate_profile(resource, sd, self.terminology,
                                lambda url: resolve("StructureDefinition", url))

    def _questionnaire(self, response: dict, resolve: Resolver) -> list[Issue]:
        canonical = response.get("questionnaire")
        if not canonical:
            return []
        questionnaire = resolve("Questionnaire", canonical)
        if questionnaire is None:
            severity = "error" if canonical.startswith(OUR_BASE) else "warning"
            return [Issue("not-found", f"Questionnaire {canonical} is not known to this server",
                          severity=severity, expression=["QuestionnaireResponse.questionnaire"])]
        from .questionnaire import validate_response

        return validate_response(response, questionnaire, self.terminology)


def errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity in ("error", "fatal")]
