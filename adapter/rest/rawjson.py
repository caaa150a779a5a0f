"""Stored JSON bytes carried inside a response structure without being re-parsed."""

from __future__ import annotations


class RawJson(bytes):
    """JSON text of a stored resource; `jsonio.dumps` embeds it as it is."""
