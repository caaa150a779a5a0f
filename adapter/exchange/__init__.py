"""Exchange with partners: the registry, the outbox and its delivery worker."""
