"""lac-fhir-adapter: FHIR R4 adapter for looked-after children's health assessments."""

__version__ = "0.1.0"
