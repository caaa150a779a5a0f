"""FHIR errors as exceptions that carry their OperationOutcome and HTTP status.

Every layer raises FhirError; only the API turns it into a response, so the same
error reads the same over HTTP, in a batch entry and on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Issue:
    """One OperationOutcome.issue: severity, code (IssueType) and a human diagnostic."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        out: dict = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class FhirError(Exception):
    """An error a client should see as an OperationOutcome with `status`."""

    def __init__(self, status: int, code: str, diagnostics: str,
                 expression: list[str] | None = None, issues: list[Issue] | None = None):
        super().__init__(diagnostics)
        self.status = status
        self.issues = issues or [Issue(code, diagnostics, expression=expression or [])]

    @property
    def diagnostics(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)

    def outcome(self) -> dict:
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def bad_request(diagnostics: str, expression: list[str] | None = None, code: str = "invalid") -> FhirError:
    return FhirError(400, code, diagnostics, expression)


def not_found(diagnostics: str) -> FhirError:
    return FhirError(404, "not-found", diagnostics)


def invalid_resource(diagnostics: str, expression: list[str] | None = None) -> FhirError:
    return FhirError(422, "invalid", diagnostics, expression)
