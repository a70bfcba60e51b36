"""The bots' client of the botsession API (docs/bot-client.md): `report`, `heartbeat` and
`status` over aiohttp, with the API's answers as dataclasses (botsession.models) and its
errors as exceptions (botsession.errors).

Retries, bounded by RetryPolicy (tenacity):

- 429 and 503 (and 409 session_deleting) wait what `Retry-After` says (plus a little jitter,
  never less), while that fits into the call's time budget; otherwise they are raised at
  once, with `retry_after` set;
- no answer (connection refused or reset, a timeout) and 409 revision_conflict wait with
  exponential backoff and full jitter.

Retrying a report is safe: repeating a phase records nothing. Nothing here logs a userId, a
phone number or the token; lines carry the botId and the userId's fingerprint.

    async with BotSessionClient("http://botsession-api:8000", token) as client:
        await client.report("shop-bot", "4915112345678", ReportState.CONNECTED)
        await client.heartbeat("shop-bot", "4915112345678")
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from yarl import URL

from botsession.errors import (
    ApiUnreachable,
    BotSessionError,
    RateLimited,
    SessionInactive,
    SessionNotFound,
    TransitionRefused,
    Unavailable,
    error_from_response,
)
from botsession.models import (
    HeartbeatResult,
    Reason,
    ReportResult,
    ReportState,
    SessionStatus,
)
from botsession.privacy import fingerprint_key, user_fingerprint

log = logging.getLogger("botsession.client")

V1 = "/v1/whatsapp"
# botId and userId: what the API accepts (docs/api.md); checked before anything is sent
ID = re.compile(r"^[A-Za-z0-9._@+=\-]{1,128}$")


@dataclass(frozen=True)
class RetryPolicy:
    """How long one call keeps trying. `budget`: seconds from the first attempt, waits
    included, after which the last error is raised (a Retry-After that does not fit is not
    waited for); `attempts`: at most this many tries; no answer backs off exponentially with
    full jitter from `backoff_first` up to `backoff_max` seconds."""

    budget: float = 30.0
    attempts: int = 10
    backoff_first: float = 0.25
    backoff_max: float = 5.0
    jitter: float = 0.1  # a Retry-After wait is stretched by up to this fraction (up to 1 s)

    def wait(self, state: RetryCallState) -> float:
        """tenacity's wait: Retry-After when the error carries one, else the backoff."""
        error = state.outcome.exception() if state.outcome else None
        hinted = error.retry_after if isinstance(error, BotSessionError) else None
        if hinted is not None:
            return hinted + random.uniform(0, min(1.0, self.jitter * hinted))  # noqa: S311
        backoff = wait_random_exponential(multiplier=self.backoff_first, max=self.backoff_max)
        return float(backoff(state))


NO_RETRIES = RetryPolicy(attempts=1)


def _retryable(error: BaseException) -> bool:
    return isinstance(error, BotSessionError) and error.retryable


def check_id(name: str, value: str) -> str:
    if not isinstance(value, str) or not ID.fullmatch(value):
        raise ValueError(f"{name} must be 1-128 characters of letters, digits and . _ @ + = -")
    return value


def report_body(
    state: ReportState | str,
    *,
    reason: Reason | str | None = None,
    phone_number: str | None = None,
    display_name: str | None = None,
    session_id: str | None = None,
    heartbeat_timeout_seconds: int | None = None,
) -> dict[str, Any]:
    """The report's JSON body (api.schemas.ReportRequest); fields left None are left out."""
    body: dict[str, Any] = {"state": ReportState(state).value}
    optional = {
        "reason": Reason(reason).value if reason is not None else None,
        "phoneNumber": phone_number,
        "displayName": display_name,
        "sessionId": session_id,
        "heartbeatTimeoutSeconds": heartbeat_timeout_seconds,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


class BotSessionClient:
    """An async client for one API (base URL) and one token with the `report` scope (and
    `read` for `status`). Use it as an async context manager, or call `aclose()`."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        fingerprint_key: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """`timeout`: seconds per attempt; `retry`: RetryPolicy() by default, NO_RETRIES for
        none; `fingerprint_key`: for log lines (default $BOTSESSION_FINGERPRINT_KEY);
        `session`: an aiohttp session to share (not closed by this client)."""
        self.base_url = URL(base_url.rstrip("/"))
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retry = retry or RetryPolicy()
        self._key = _key_of(fingerprint_key)
        self._session = session
        self._owns_session = session is None

    def __repr__(self) -> str:  # never the token
        return f"BotSessionClient({str(self.base_url)!r})"

    async def __aenter__(self) -> Self:
        self._http()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    def fingerprint(self, user_id: str) -> str:
        """What this client's log lines carry instead of the userId."""
        return user_fingerprint(user_id, self._key)

    # --- the endpoints ---------------------------------------------------------------

    async def report(
        self,
        bot_id: str,
        user_id: str,
        state: ReportState | str,
        *,
        reason: Reason | str | None = None,
        phone_number: str | None = None,
        display_name: str | None = None,
        session_id: str | None = None,
        heartbeat_timeout_seconds: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> ReportResult:
        """POST .../sessions/{botId}/{userId}/report. The identity and the heartbeat timeout
        are recorded by the report that creates the session; later ones do not change them.
        Raises TransitionRefused (with `current` and `allowed`) for a refused transition."""
        body = report_body(
            state,
            reason=reason,
            phone_number=phone_number,
            display_name=display_name,
            session_id=session_id,
            heartbeat_timeout_seconds=heartbeat_timeout_seconds,
        )
        answer, _headers = await self._call(
            "POST", bot_id, user_id, "report", body=body, retry=retry
        )
        return ReportResult.from_json(answer)

    async def heartbeat(
        self, bot_id: str, user_id: str, *, retry: RetryPolicy | None = None
    ) -> HeartbeatResult:
        """POST .../sessions/{botId}/{userId}/heartbeat. Raises SessionInactive (409) when the
        session is inactive (report `connecting` first), SessionNotFound (404) when unknown."""
        answer, _headers = await self._call("POST", bot_id, user_id, "heartbeat", retry=retry)
        return HeartbeatResult.from_json(answer)

    async def status(
        self, bot_id: str, user_id: str, *, retry: RetryPolicy | None = None
    ) -> SessionStatus:
        """GET session-status/{botId}?userId= (the token needs the `read` scope)."""
        answer, headers = await self._call("GET", bot_id, user_id, "status", retry=retry)
        return SessionStatus.from_json(answer, headers.get("X-Session-Source"))

    # --- the requests ----------------------------------------------------------------

    def _url(self, bot_id: str, user_id: str, endpoint: str) -> URL:
        bot = quote(check_id("botId", bot_id), safe="")
        user = quote(check_id("userId", user_id), safe="")
        if endpoint == "status":
            path = f"{V1}/session-status/{bot}?userId={user}"
        else:
            path = f"{V1}/sessions/{bot}/{user}/{endpoint}"
        return URL(str(self.base_url) + path, encoded=True)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
            self._owns_session = True
        return self._session

    async def _call(
        self,
        method: str,
        bot_id: str,
        user_id: str,
        endpoint: str,
        *,
        body: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> tuple[dict[str, Any], Mapping[str, str]]:
        url = self._url(bot_id, user_id, endpoint)
        policy = retry or self.retry

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.info(
                "botsession %s of bot %s user %s: %s; retrying in %.1f s (attempt %d)",
                endpoint,
                bot_id,
                self.fingerprint(user_id),
                error.code if isinstance(error, BotSessionError) else type(error).__name__,
                state.upcoming_sleep,
                state.attempt_number,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=policy.wait,
            stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.budget),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(method, url, body, user_id)
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    async def _once(
        self, method: str, url: URL, body: Mapping[str, Any] | None, user_id: str
    ) -> tuple[dict[str, Any], Mapping[str, str]]:
        try:
            async with self._http().request(
                method, url, json=body, headers=self._headers, allow_redirects=False
            ) as response:
                content = await response.read()
                if response.status >= 400:
                    raise error_from_response(
                        response.status,
                        content,
                        response.headers.get("Retry-After"),
                        user_id,
                    )
                try:
                    answer = json.loads(content)
                except ValueError:
                    answer = None
                if not isinstance(answer, dict):
                    raise BotSessionError(response.status, "bad_answer", "not a JSON object")
                return answer, response.headers
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            # the exception's text names the host, never the path (which holds the userId)
            raise ApiUnreachable(
                None, "unreachable", f"no answer from the API ({type(exc).__name__})"
            ) from exc


def _key_of(key: str | None) -> bytes:
    return fingerprint_key(key)


__all__ = [
    "NO_RETRIES",
    "ApiUnreachable",
    "BotSessionClient",
    "BotSessionError",
    "HeartbeatResult",
    "RateLimited",
    "Reason",
    "ReportResult",
    "ReportState",
    "RetryPolicy",
    "SessionInactive",
    "SessionNotFound",
    "SessionStatus",
    "TransitionRefused",
    "Unavailable",
    "check_id",
    "report_body",
]
