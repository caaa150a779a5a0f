"""Mapping what partners send (form XML, LA notifications, SSDA903) to FHIR, and back.

The rules are data under mappings/; the modules here read a source, apply its mapping
definition and return a MappedDocument, which adapter.mapping.ingest stores in one
transaction with the source kept and Provenance pointing at it.
"""
