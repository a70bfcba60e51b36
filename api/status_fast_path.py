"""The hot path of `GET /v1/whatsapp/session-status/{botId}`, served without FastAPI's routing,
dependency injection and response validation.

The frontend polls this endpoint for every bot it shows, so it is the API's busiest by far. This
ASGI layer answers the ordinary request itself: a well-formed id, at most a `userId` query, a
bearer token with the read scope. Anything else (a bad id, a missing or wrong token, another
query parameter) goes on, untouched, to the FastAPI route in api/routes.py, which stays the one
definition of the endpoint: its OpenAPI entry, its validation and its error answers. Both call
the same SessionService.status and build the same body (schemas.StatusResponse) and errors
(errors.session_error_response); tests/integration/test_api.py compares them byte for byte.

It sits inside errors.RequestLog, so metrics and the log line are the same as for any route
(it sets scope["route"] to the FastAPI route for their template). docs/benchmarks.md ("The
REST API under load") has what it saves.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute

from api.auth import Scope, TokenRegistry, admit
from api.errors import ApiProblem, ASGIApp, Receive, Send, error_response, session_error_response
from api.errors import Scope as AsgiScope
from api.schemas import StatusResponse
from sessions.crd import ID_PATTERN
from sessions.model import SessionError
from sessions.runtime import Runtime

_ID = re.compile(ID_PATTERN)


class StatusFastPath:
    def __init__(self, app: ASGIApp, route: APIRoute) -> None:
        self.app = app
        self.route = route
        self.served = 0  # answered here rather than by the route
        self.prefix = route.path.removesuffix("{botId}")
        if self.prefix + "{botId}" != route.path:
            raise ValueError(f"expected a route ending in {{botId}}, got {route.path}")

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        request = self._ordinary(scope)
        if request is None:
            await self.app(scope, receive, send)
            return
        bot_id, user_id, token = request
        state = scope["app"].state
        registry: TokenRegistry = state.tokens
        caller = registry.authenticate(token)
        if caller is None or not caller.allows(Scope.READ):
            await self.app(scope, receive, send)  # the route answers 401 or 403
            return
        try:
            admit(state, caller)
        except ApiProblem as refused:
            scope["route"] = self.route
            await error_response(refused.status, refused.code, refused.message, refused.headers)(
                scope, receive, send
            )
            return
        self.served += 1
        scope["route"] = self.route
        scope.setdefault("state", {})["actor"] = caller.name
        runtime: Runtime = state.runtime
        try:
            view = await runtime.service.status(bot_id, user_id)
        except SessionError as exc:
            await session_error_response(exc)(scope, receive, send)
            return
        body = StatusResponse.json_of(view.state)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                    (b"x-session-source", view.source.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _ordinary(self, scope: AsgiScope) -> tuple[str, str | None, str] | None:
        """(botId, userId, token) when this is a request the fast path may answer."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return None
        path = _route_path(scope)
        if not path.startswith(self.prefix):
            return None
        bot_id = path[len(self.prefix) :]
        if _ID.fullmatch(bot_id) is None:
            return None
        user_id: str | None = None
        if scope["query_string"]:
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            if len(query) != 1 or query[0][0] != "userId" or _ID.fullmatch(query[0][1]) is None:
                return None
            user_id = query[0][1]
        token = _bearer_token(scope["headers"])
        if token is None:
            return None
        return bot_id, user_id, token


def _bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of the first Authorization header, when it is plainly `Bearer <token>`."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token or not token.isprintable() or " " in token:
                return None
            return token
    return None


def _route_path(scope: AsgiScope) -> str:
    """The path the router matches (Starlette's get_route_path): without the root path."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path
