"""FastAPI wiring: routes, auth and schemas over the session core (sessions.*)."""
