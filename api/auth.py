"""Bearer tokens with scopes, from a mounted file and/or the environment.

Format (YAML or JSON; the environment variable takes JSON):

    - name: frontend          # who it is: recorded as the actor of what it does
      token: "<32+ random characters>"
      scopes: [read, report]
    - name: ops
      token: "..."
      scopes: [admin]

A token may carry its own rate limit (`rateLimit: {perSecond: 20, burst: 40}`, or `off`);
without one, a token gets the default limit (BOTSESSION_API_RATE_LIMIT), except an `admin`
token, which is not limited unless its entry says so (api/limits.py).

A mapping `{"tokens": [...]}` is accepted too. Scopes: `read` (status, list, detail),
`report` (report, heartbeat, clear one session), `admin` (everything, including clearing all
sessions of a bot). Only SHA-256 digests of the tokens are kept in memory, compared in
constant time; no error message or log line ever holds a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api import metrics
from api.errors import ApiProblem, retry_after_header
from api.limits import Rate, RateLimiter
from sessions.domain.logs import event

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")


class Scope(StrEnum):
    READ = "read"
    REPORT = "report"
    ADMIN = "admin"


class TokenError(ValueError):
    """The token configuration is invalid (the message never holds a token)."""


_UNSET = object()  # a token entry without `rateLimit`: the default applies


@dataclass(frozen=True)
class ApiToken:
    name: str
    digest: bytes  # SHA-256 of the token
    scopes: frozenset[Scope]
    rate: Rate | None = None  # its own limit (None: none, or the default when `defaulted`)
    defaulted: bool = True  # no `rateLimit` in its entry

    def limit(self, default: Rate | None) -> Rate | None:
        """The limit that applies: its own, else the default (admin tokens: none)."""
        if not self.defaulted:
            return self.rate
        return None if Scope.ADMIN in self.scopes else default

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_tokens(text: str, source: str) -> list[ApiToken]:
    """Parse a token list (YAML or JSON); TokenError names the bad entry, never its token."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise TokenError(f"{source}: not valid YAML or JSON{where}") from None
    if data is None:
        return []
    if isinstance(data, dict) and set(data) == {"tokens"}:
        data = data["tokens"]
    if not isinstance(data, list):
        raise TokenError(f"{source}: expected a list of {{name, token, scopes}}")
    tokens: list[ApiToken] = []
    for index, entry in enumerate(data):
        where = f"{source}: entry {index + 1}"
        if not isinstance(entry, dict):
            raise TokenError(f"{where}: expected a mapping with name, token and scopes")
        unknown = set(entry) - {"name", "token", "scopes", "rateLimit"}
        if unknown:
            raise TokenError(f"{where}: unknown keys {sorted(map(str, unknown))}")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise TokenError(
                f"{where}: name must be 1-64 characters of letters, digits and . _ : @ -"
            )
        where = f"{source}: token {name!r}"
        token = entry.get("token")
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise TokenError(f"{where}: token must be a string of {MIN_TOKEN_LENGTH}+ characters")
        if any(c.isspace() for c in token) or not token.isprintable():
            raise TokenError(f"{where}: token must not hold whitespace or control characters")
        scopes = entry.get("scopes")
        if isinstance(scopes, str):
            scopes = [scopes]
        if not isinstance(scopes, list) or not scopes:
            raise TokenError(f"{where}: scopes must be a non-empty list of read, report, admin")
        try:
            parsed = frozenset(Scope(s) for s in scopes)
        except ValueError:
            raise TokenError(f"{where}: scopes must be among read, report, admin") from None
        given = entry.get("rateLimit", _UNSET)
        rate = None if given is _UNSET else parse_rate(given, where)
        tokens.append(ApiToken(name, digest(token), parsed, rate, given is _UNSET))
    return tokens


def parse_rate(value: Any, where: str) -> Rate | None:
    """`off` (or false / null), or {perSecond: >0, burst: >=1 (default 2 x perSecond)}."""
    if value in ("off", False, None):
        return None
    if not isinstance(value, dict) or set(value) - {"perSecond", "burst"}:
        raise TokenError(f"{where}: rateLimit must be off or {{perSecond, burst}}")
    try:
        per_second = float(value["perSecond"])
        return Rate(per_second, int(value.get("burst", max(1, math.ceil(2 * per_second)))))
    except (KeyError, TypeError, ValueError):
        raise TokenError(f"{where}: rateLimit needs perSecond > 0 and burst >= 1") from None


def _check_unique(tokens: list[ApiToken]) -> None:
    names = [t.name for t in tokens]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TokenError(f"token names must be unique: {duplicates} appear more than once")
    by_digest: dict[bytes, str] = {}
    for t in tokens:
        if t.digest in by_digest:
            raise TokenError(f"tokens {by_digest[t.digest]!r} and {t.name!r} are the same token")
        by_digest[t.digest] = t.name


class TokenRegistry:
    """The configured tokens. The file (a mounted Secret) is re-read when it changes, at
    most every `reload_interval` seconds; a broken new file keeps the previous tokens."""

    def __init__(
        self,
        env_text: str | None = None,
        file: Path | None = None,
        reload_interval: float = 5.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.file = file
        self.reload_interval = reload_interval
        self._clock = clock
        self._env_tokens = parse_tokens(env_text, "BOTSESSION_API_TOKENS") if env_text else []
        self._file_tokens: list[ApiToken] = []
        self._file_stamp: tuple[int, int, int] | None = None
        self._checked_at = clock()
        if file is not None:
            self._file_tokens = self._read_file(file)
        self.tokens = self._combine()
        if not self.tokens:
            raise TokenError(
                "no API tokens configured: set BOTSESSION_API_TOKENS_FILE or BOTSESSION_API_TOKENS"
            )

    def _read_file(self, file: Path) -> list[ApiToken]:
        try:
            stat = os.stat(file)
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise TokenError(f"cannot read token file {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise TokenError(f"token file {file} is not UTF-8") from None
        self._file_stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        return parse_tokens(text, str(file))

    def _combine(self) -> list[ApiToken]:
        tokens = self._env_tokens + self._file_tokens
        _check_unique(tokens)
        return tokens

    def _maybe_reload(self) -> None:
        if self.file is None:
            return
        now = self._clock()
        if now - self._checked_at < self.reload_interval:
            return
        self._checked_at = now
        try:
            stat = os.stat(self.file)
        except OSError:
            return  # mid-rotation of a mounted Secret: keep what we have
        if (stat.st_mtime_ns, stat.st_size, stat.st_ino) == self._file_stamp:
            return
        previous = self._file_tokens
        try:
            self._file_tokens = self._read_file(self.file)
            tokens = self._combine()
            if not tokens:
                raise TokenError(f"token file {self.file} holds no tokens")
        except TokenError as exc:
            self._file_tokens = previous
            # remember the broken version, so it is not parsed again until it changes
            self._file_stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            event(
                log,
                "token file not reloaded; keeping the previous tokens",
                logging.ERROR,
                error=str(exc),
            )
            return
        self.tokens = tokens
        event(log, "token file reloaded", tokens=len(tokens))

    def named(self, name: str) -> ApiToken | None:
        """The token configured under `name` now (a stream ticket's issuer), or None."""
        self._maybe_reload()
        return next((token for token in self.tokens if token.name == name), None)

    def authenticate(self, presented: str) -> ApiToken | None:
        """The token presented, or None. Every configured token is compared (in constant
        time, on digests), so timing does not tell which one nearly matched."""
        self._maybe_reload()
        wanted = digest(presented)
        found: ApiToken | None = None
        for token in self.tokens:
            if hmac.compare_digest(token.digest, wanted):
                found = token
        return found


# --- the FastAPI side --------------------------------------------------------------------


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value; None for anything else.
    The one parser of the route's dependency and the status fast path."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def admit(state: Any, token: ApiToken) -> None:
    """Take one request from the token's bucket, or refuse with 429 and Retry-After."""
    limiter: RateLimiter = state.limiter
    wait = limiter.admit(token.name, token.limit(state.default_rate))
    if wait is not None:
        metrics.RATE_LIMITED.labels(token.name).inc()
        raise ApiProblem(
            429,
            "rate_limited",
            f"token {token.name!r} is over its rate limit; retry after {wait:g} s",
            retry_after_header(wait),
        )


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token (docs/api.md): `Authorization: Bearer <token>`",
)

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


def require(scope: Scope) -> Callable[..., Awaitable[ApiToken]]:
    """A dependency: the caller's token, which must allow `scope` (401/403 otherwise).
    The token's name becomes the request's actor (for logs and the service)."""

    async def dependency(
        request: Request,
        _scheme: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> ApiToken:
        # `_scheme` only declares the security scheme in the OpenAPI document; the header
        # is read by the one parser the status fast path uses too
        presented = bearer_token(request.headers.get("authorization"))
        if presented is None:
            raise ApiProblem(
                401,
                "unauthorized",
                "missing bearer token (Authorization: Bearer <token>)",
                UNAUTHORIZED_HEADERS,
            )
        registry: TokenRegistry = request.app.state.tokens
        return authorize(request, registry.authenticate(presented), scope)

    return dependency


def authorize(request: Request, token: ApiToken | None, scope: Scope) -> ApiToken:
    """The request's token, which must exist and allow `scope` (401/403 otherwise); it
    becomes the request's actor and takes one request from its bucket."""
    if token is None:
        raise ApiProblem(401, "unauthorized", "invalid token", UNAUTHORIZED_HEADERS)
    request.state.actor = token.name
    if not token.allows(scope):
        raise ApiProblem(
            403,
            "forbidden",
            f"token {token.name!r} lacks the {scope.value} scope",
            required=scope.value,
        )
    admit(request.app.state, token)
    return token
