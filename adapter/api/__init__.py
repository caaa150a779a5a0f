"""HTTP: the FastAPI application that speaks FHIR REST over the layers below."""
