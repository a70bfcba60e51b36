"""The two contenders of bench/api_benchmark.py, served by uvicorn with the same settings.

  python -m bench.bare_app bare --port 8001 [--workers 1] [--loop auto] [--http auto]
  python -m bench.bare_app api  --port 8002 ...   # BOTSESSION_* settings from the environment

`bare` is a FastAPI app with one `GET /bare` route returning a constant JSON of the size of a
session-status answer: FastAPI's floor. `api` is the real API exactly as `python -m api`
builds it (api.main.run: create_app from the BOTSESSION_* / BOTSESSION_API_* environment, then
sessions.domain.logs JSON logging at BOTSESSION_API_LOG_LEVEL). Both configure logging the same way
and both are served by uvicorn.run with api.serving's options (no access log, no server header,
lifespan on, uvicorn's own logging config off) plus the same --workers, --loop and --http.
The factories run in each worker (uvicorn imports "bench.bare_app:<name>" there).
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI

from api.serving import UVICORN_OPTIONS
from sessions.domain import logs

# the shape and size of a session-status answer for a seeded session
BODY: dict[str, Any] = {
    "success": True,
    "status": "active",
    "lastSeen": "2025-01-01T00:00:00Z",
    "phoneNumber": "4915112345678",
    "displayName": "Bench User 000000",
    "sessionId": "session_000000",
}


def log_level() -> str:
    return os.environ.get("BOTSESSION_API_LOG_LEVEL", "INFO")


def bare() -> FastAPI:
    """One route, a constant answer; the same logging set-up as the API."""
    app = FastAPI(title="bare")

    @app.get("/bare")
    async def constant() -> dict[str, Any]:
        return BODY

    logs.configure(log_level())
    return app


def api() -> FastAPI:
    """The real API, as api.main.run builds it (host and port come from uvicorn here)."""
    from api.app import create_app
    from api.settings import load_api_settings
    from sessions.domain.settings import load_settings

    api_settings = load_api_settings()
    app = create_app(load_settings(), api_settings=api_settings)
    logs.configure(api_settings.log_level)
    return app


def listen_with_tcp_nodelay() -> None:
    """Work around uvicorn#3149 for `--workers N`: uvicorn binds the shared listener with
    proto 0, asyncio then skips TCP_NODELAY on every accepted connection, and each keep-alive
    response waits ~40 ms for the client's delayed ACK (both contenders pinned at ~730
    requests/s). The listener is re-wrapped with proto IPPROTO_TCP, which the workers inherit.
    One worker is not affected (asyncio binds the socket itself there)."""
    bind = uvicorn.Config.bind_socket

    def bind_socket(config: uvicorn.Config) -> socket.socket:
        sock = bind(config)
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return sock
        return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())

    uvicorn.Config.bind_socket = bind_socket  # type: ignore[method-assign,assignment]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("app", choices=["bare", "api"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--loop", default="auto", help="uvicorn --loop: auto, asyncio, uvloop")
    parser.add_argument("--http", default="auto", help="uvicorn --http: auto, h11, httptools")
    args = parser.parse_args(argv)
    if args.workers > 1:
        listen_with_tcp_nodelay()
    uvicorn.run(
        f"bench.bare_app:{args.app}",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop=args.loop,
        http=args.http,
        **UVICORN_OPTIONS,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
