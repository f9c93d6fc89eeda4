"""asyncio helpers every layer shares: waiting on a condition, backoff and retries, the supervisor
that owns background loops. Imports only ``wire`` (for the error tree)."""
