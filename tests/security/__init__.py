"""SMART Backend Services authentication: scopes, token endpoint, access tokens, outbound credentials."""
