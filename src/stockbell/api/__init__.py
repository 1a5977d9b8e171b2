"""HTTP surfaces: the native /v1 API, OAuth tokens, and (later) the seed adapters."""
