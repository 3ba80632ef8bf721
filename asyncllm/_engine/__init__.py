"""The engine: queueing, slots, retries, breaker, tracker and request IDs; it knows nothing of HTTP."""
