"""The API's pure ASGI layers, outermost first: RequestLog (one log line and the metrics per
request, the 500 envelope), BodyLimit (413 before a large body is read or authenticated)
and the fast paths (the ordinary session-status and heartbeat requests answered without
FastAPI's machinery). api.app stacks them in that order."""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics
from api.auth import Scope as TokenScope
from api.auth import TokenRegistry, admit, bearer_token
from api.errors import ApiProblem, error_body, error_response, session_error_response
from api.schemas import HeartbeatResponse, StatusResponse
from sessions.adapters.kubernetes.crd import ID_PATTERN
from sessions.domain.logs import event
from sessions.domain.model import SessionError, SessionKey
from sessions.runtime import Runtime

log = logging.getLogger("api")
_ID = re.compile(ID_PATTERN)


QUIET_ROUTES = frozenset({"/healthz", "/readyz"})
SLOW = 1.0  # seconds: a request this slow is logged whatever its route


class RequestLog:
    """Pure ASGI middleware: one log line per request (method, route template, status,
    duration, the token's name) and the 500 envelope for anything unexpected.

    It logs the route *template*, never the raw path or query (they hold user ids, which
    may be phone numbers), and never headers or bodies.
    """

    def __init__(self, app: ASGIApp, quiet: frozenset[str] = QUIET_ROUTES) -> None:
        """`quiet`: route templates whose answers below 400, and faster than SLOW, are
        counted in the metrics but not logged."""
        self.app = app
        self.quiet = quiet

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False
        state = scope.setdefault("state", {})

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            status = 500
            # where it broke, but not the exception's message: messages of database and
            # HTTP errors quote parameters and URLs, i.e. user ids and phone numbers
            trace = traceback.extract_tb(exc.__traceback__)[-10:]
            event(
                log,
                "unexpected error",
                logging.ERROR,
                route=_route(scope),
                error=exc.__class__.__name__,
                trace=[f"{f.filename}:{f.lineno} in {f.name}" for f in trace],
            )
            if not response_started:
                body = json.dumps(
                    error_body("internal_error", "unexpected error; it has been logged")
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            metrics.observe(
                scope.get("method"), _route(scope), status, time.perf_counter() - started
            )
            took = time.perf_counter() - started
            if _route(scope) not in self.quiet or status >= 400 or took >= SLOW:
                event(
                    log,
                    "request",
                    logging.INFO,
                    method=scope.get("method"),
                    route=_route(scope),
                    status=status,
                    ms=round(took * 1000, 1),
                    actor=state.get("actor"),
                )


def _route(scope: Scope) -> str | None:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        # read it here, at most max_bytes + one chunk, and hand it on whole: the app (FastAPI
        # turns any error while reading a body into a 400) never sees an oversized one
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: wait for a disconnect, as usual
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        metrics.BODY_TOO_LARGE.inc()
        body = json.dumps(
            error_body(
                "payload_too_large",
                f"the request body is larger than {self.max_bytes} bytes",
                limit=self.max_bytes,
            )
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class FastPath:
    """An endpoint's hot path, served without FastAPI's routing, dependency injection and
    response validation.

    The ordinary request (well-formed ids, nothing more in the query than the route allows,
    a bearer token with the route's scope) is answered here; anything else (a bad id, a
    missing or wrong token, another query parameter) goes on, untouched, to the FastAPI route
    in api/routes.py, which stays the one definition of the endpoint: its OpenAPI entry, its
    validation and its error answers. Both call the same SessionService method and build the
    same body and errors (errors.session_error_response); tests/integration/test_api.py
    compares them byte for byte.

    It sits inside RequestLog, so metrics and the log line are the same as for any route (it
    sets scope["route"] to the FastAPI route for their template). docs/benchmarks.md ("The
    REST API under load", "The write path (issue 20)") has what it saves.
    """

    method = "GET"
    needs = TokenScope.READ

    def __init__(self, app: ASGIApp, route: APIRoute) -> None:
        self.app = app
        self.route = route
        self.served = 0  # answered here rather than by the route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = self._ordinary(scope)
        if request is None:
            await self.app(scope, receive, send)
            return
        ids, token = request
        state = scope["app"].state
        registry: TokenRegistry = state.tokens
        caller = registry.authenticate(token)
        if caller is None or not caller.allows(self.needs):
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
            body, extra = await self.answer(runtime, *ids)
        except SessionError as exc:
            await session_error_response(exc)(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def ids(self, scope: Scope) -> tuple[str | None, ...] | None:
        """The route's ids when the path and query are the ordinary ones."""
        raise NotImplementedError

    async def answer(
        self, runtime: Runtime, *ids: str | None
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The 200 body and the headers beside content-length and content-type."""
        raise NotImplementedError

    def _ordinary(self, scope: Scope) -> tuple[tuple[str | None, ...], str] | None:
        """(ids, token) when this is a request the fast path may answer."""
        if scope["type"] != "http" or scope["method"] != self.method:
            return None
        ids = self.ids(scope)
        if ids is None:
            return None
        token = _header_token(scope["headers"])
        if token is None or not token.isprintable() or " " in token:
            return None
        return ids, token


class StatusFastPath(FastPath):
    """`GET /v1/whatsapp/session-status/{botId}[?userId=]`: the frontend polls it for every bot
    it shows, so it is the API's busiest endpoint by far."""

    def __init__(self, app: ASGIApp, route: APIRoute) -> None:
        super().__init__(app, route)
        self.prefix = route.path.removesuffix("{botId}")
        if self.prefix + "{botId}" != route.path:
            raise ValueError(f"expected a route ending in {{botId}}, got {route.path}")

    def ids(self, scope: Scope) -> tuple[str | None, ...] | None:
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
        return bot_id, user_id

    async def answer(
        self, runtime: Runtime, *ids: str | None
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        bot_id, user_id = ids
        assert bot_id is not None
        view = await runtime.service.status(bot_id, user_id)
        return StatusResponse.json_of(view.state), [(b"x-session-source", view.source.encode())]


class HeartbeatFastPath(FastPath):
    """`POST /v1/whatsapp/sessions/{botId}/{userId}/heartbeat`: every live bot session sends one
    every 30 s or so (100,000 sessions: 3,333 a second), and it only touches Redis, so
    FastAPI's own work per request was most of its cost."""

    method = "POST"
    needs = TokenScope.REPORT

    def __init__(self, app: ASGIApp, route: APIRoute) -> None:
        super().__init__(app, route)
        self.prefix, _, self.suffix = route.path.partition("{botId}/{userId}")
        if not self.suffix or self.prefix + "{botId}/{userId}" + self.suffix != route.path:
            raise ValueError(f"expected a route with {{botId}}/{{userId}}, got {route.path}")

    def ids(self, scope: Scope) -> tuple[str | None, ...] | None:
        path = _route_path(scope)
        if scope["query_string"] or not path.startswith(self.prefix):
            return None
        if not path.endswith(self.suffix):
            return None
        bot_id, slash, user_id = path[len(self.prefix) : -len(self.suffix)].partition("/")
        if not slash or _ID.fullmatch(bot_id) is None or _ID.fullmatch(user_id) is None:
            return None
        return bot_id, user_id

    async def answer(
        self, runtime: Runtime, *ids: str | None
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        bot_id, user_id = ids
        assert bot_id is not None and user_id is not None
        beat = await runtime.service.heartbeat(SessionKey(bot_id, user_id))
        return HeartbeatResponse.json_of(beat), []


def _header_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None


def _route_path(scope: Scope) -> str:
    """The path the router matches (Starlette's get_route_path): without the root path."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path
