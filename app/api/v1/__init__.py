"""Version 1 of the API. Routers carry the whole prefix, so route templates (metrics, logs) are full."""

PREFIX = "/api/v1"
