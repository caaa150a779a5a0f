"""FHIR REST semantics independent of HTTP: interactions, bundles, capability.

The HTTP server turns requests into `FhirRequest`s; batch and transaction entries are
turned into the same `FhirRequest`s, so one code path serves both.
"""
