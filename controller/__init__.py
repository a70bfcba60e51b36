"""kopf wiring: thin handlers that call the session core (sessions.*)."""
