"""FHIR knowledge with no HTTP and no SQL: definitions, JSON/XML, errors, search parameters."""
