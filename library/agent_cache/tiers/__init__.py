"""The three cache tiers: each one's policy (TTL precedence, hit/miss) and its I/O through the backend."""
