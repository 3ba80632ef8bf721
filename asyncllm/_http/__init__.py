"""The HTTP layer: transport, JSON, and the HTTP half of a backend (send, request, stream, status to error)."""
