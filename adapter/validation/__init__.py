"""Validation of what partners send: structure now, profiles and questionnaires on top."""
