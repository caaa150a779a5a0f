"""Persistence: tables, schema upgrades, the repository and the SQL for search."""
