"""The assessment request's lifecycle: FHIR R4 Task states and what completion needs.

Plain functions: a caller asks them before it stores a Task change, so an invalid step
can be refused with an OperationOutcome and every accepted step stays in Task history.
"""

from __future__ import annotations

# FHIR R4 Task state machine (task.html#statemachine), as this pathway uses it.
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"requested", "cancelled"}),
    "requested": frozenset({"received", "accepted", "rejected", "cancelled"}),
    "received": frozenset({"accepted", "rejected", "cancelled"}),
    "accepted": frozenset({"ready", "in-progress", "on-hold", "cancelled"}),
    "ready": frozenset({"in-progress", "on-hold", "cancelled", "failed"}),
    "in-progress": frozenset({"completed", "failed", "on-hold", "cancelled"}),
    "on-hold": frozenset({"in-progress", "ready", "cancelled", "failed"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
    "failed": frozenset(),
    "rejected": frozenset(),
    "entered-in-error": frozenset(),
}
ALWAYS_ALLOWED = "entered-in-error"
# What a completed assessment Task must carry as output (Task.output.valueReference).
REQUIRED_OUTPUTS = ("QuestionnaireResponse", "CarePlan")


def transition_problem(old: str | None, new: str) -> str | None:
    """Why `old` → `new` is not a valid Task step, or None when it is."""
    if new not in TRANSITIONS:
        return f"'{new}' is not a Task status"
    if old is None or old == new or new == ALWAYS_ALLOWED:
        return None
    if new not in TRANSITIONS.get(old, frozenset()):
        allowed = ", ".join(sorted(TRANSITIONS.get(old, ()))) or "none: it is final"
        return f"a Task cannot go from '{old}' to '{new}' (from '{old}': {allowed})"
    return None


def output_references(task: dict) -> list[str]:
    refs = []
    for output in task.get("output") or []:
        ref = (output.get("valueReference") or {}).get("reference")
        if isinstance(ref, str):
            refs.append(ref)
    return refs


def missing_outputs(task: dict) -> list[str]:
    """Resource types a completed Task still lacks among its outputs."""
    types = {ref.split("/")[-2] if "/" in ref else "" for ref in output_references(task)}
    return [t for t in REQUIRED_OUTPUTS if t not in types]
