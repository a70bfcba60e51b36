"""How uvicorn serves the API. Kept free of imports: bench/bare_app.py serves its bare
contender with these options too, and must not load the API to get them."""

from typing import Any

UVICORN_OPTIONS: dict[str, Any] = {
    "log_config": None,  # uvicorn's records go through sessions.domain.logs (JSON, redacted)
    "access_log": False,  # api.middleware.RequestLog logs route templates, never raw paths
    "server_header": False,
    "lifespan": "on",
}
