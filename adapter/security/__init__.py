"""Who is asking: the caller identity every store operation receives."""
