"""Running in production: access (API keys, tenants, limits), TLS, graceful shutdown, event-loop lag."""
