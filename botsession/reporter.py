"""SessionReporter: one bot session's reports, and its heartbeats while it is connected.

A bot calls `connected()`, `connecting()`, `disconnected()`, `logged_out()` or `failed()`
from its WhatsApp library's connection events (docs/bot-client.md); the reporter turns each
into the report the transition table accepts, and while the bot says it is connected it
heartbeats on its own, every `heartbeat_interval` seconds:

- a heartbeat answered 409 session_inactive or 404 (the operator found the heartbeats lost,
  or the session was swept or cleared) re-establishes the session: `connecting`, then
  `connected`, since the bot still says it is connected;
- while the API cannot be reached or answers 429/503 (an API restart, a Redis outage), it
  keeps trying, honouring Retry-After or backing off exponentially with jitter, and goes on
  heartbeating once the API answers again;
- a report that cannot be delivered now (the API is away) is not raised to the bot: the
  method returns None and the reporter delivers it in the background (the latest wins).
  Errors no retry can fix (401, 403, 422) are raised.

Only one request of a reporter is in flight at a time, so reports reach the API in the
order the bot made them. Log lines carry the botId and the userId's fingerprint only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from types import TracebackType
from typing import Self

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never

from botsession.client import NO_RETRIES, BotSessionClient, RetryPolicy, check_id
from botsession.errors import (
    BotSessionError,
    SessionInactive,
    SessionNotFound,
    TransitionRefused,
)
from botsession.models import HeartbeatResult, Phase, Reason, ReportResult, ReportState

log = logging.getLogger("botsession.reporter")

# errors that no retry fixes: a bot's configuration or a bug (raised to the bot's call)
PERMANENT = {400, 401, 403, 404, 413, 422}


class SessionReporter:
    def __init__(
        self,
        client: BotSessionClient,
        bot_id: str,
        user_id: str,
        *,
        heartbeat_interval: float = 30.0,
        phone_number: str | None = None,
        display_name: str | None = None,
        session_id: str | None = None,
        heartbeat_timeout_seconds: int | None = None,
        backoff: RetryPolicy | None = None,
    ) -> None:
        """The identity and `heartbeat_timeout_seconds` go with each report (the API records
        them when a report creates the session). `backoff`: the waits of the background
        retries (Retry-After when given; else exponential with jitter from `backoff_first` to
        `backoff_max`, by default 1 s to the heartbeat interval, at most 30 s)."""
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        self.client = client
        self.bot_id = check_id("botId", bot_id)
        self._user_id = check_id("userId", user_id)
        self.user = client.fingerprint(user_id)  # for log lines
        self.heartbeat_interval = heartbeat_interval
        self.identity = {
            "phone_number": phone_number,
            "display_name": display_name,
            "session_id": session_id,
        }
        self.heartbeat_timeout_seconds = heartbeat_timeout_seconds
        self.backoff = backoff or RetryPolicy(
            backoff_first=1.0, backoff_max=min(30.0, heartbeat_interval)
        )
        self.wanted: ReportState | None = None  # what the bot last said
        self._reason: Reason | None = None  # with it
        self.last_result: ReportResult | None = None
        self.last_heartbeat: HeartbeatResult | None = None
        self.heartbeats = 0  # heartbeats answered
        self.reestablished = 0  # times a lost session was reported connected again
        self._pending = False  # the wanted state is not reported yet
        self._lock = asyncio.Lock()  # one request at a time, in the bot's order
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SessionReporter(bot={self.bot_id!r}, user={self.user!r}, wanted={self.wanted})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def heartbeating(self) -> bool:
        return self.wanted is ReportState.CONNECTED and self._running()

    @property
    def pending(self) -> bool:
        """The bot's last state is not reported yet (the reporter keeps trying)."""
        return self._pending

    # --- what the bot says ------------------------------------------------------------

    async def connected(
        self,
        *,
        phone_number: str | None = None,
        display_name: str | None = None,
        session_id: str | None = None,
    ) -> ReportResult | None:
        """The connection is open: report `connected` (after `connecting` if the session is
        inactive or failed) and heartbeat from now on."""
        given = {
            "phone_number": phone_number,
            "display_name": display_name,
            "session_id": session_id,
        }
        self.identity.update({k: v for k, v in given.items() if v is not None})
        return await self._say(ReportState.CONNECTED, None)

    async def connecting(self, reason: Reason | None = None) -> ReportResult | None:
        """The bot is (re)connecting: report `connecting`; no heartbeats meanwhile."""
        return await self._say(ReportState.CONNECTING, reason)

    async def disconnected(self, reason: Reason | None = None) -> ReportResult | None:
        """The connection closed: report `disconnected` (an unfinished connect: `failed`)
        and stop heartbeating."""
        return await self._say(ReportState.DISCONNECTED, reason)

    async def logged_out(self) -> ReportResult | None:
        """The user logged the bot out (the session's credentials are void): `disconnected`
        with reason LoggedOut, and stop heartbeating."""
        return await self._say(ReportState.DISCONNECTED, Reason.LOGGED_OUT)

    async def failed(self, reason: Reason | None = None) -> ReportResult | None:
        """Connecting failed (ConnectFailed, or ConnectTimeout): report `failed`; a session
        that was active is reported `disconnected` instead."""
        return await self._say(ReportState.FAILED, reason)

    async def aclose(self) -> None:
        """Stop heartbeating and any background report; reports nothing (say
        `disconnected()` first when the bot goes away for good)."""
        await self._stop()

    # --- the work ----------------------------------------------------------------------

    async def _say(self, state: ReportState, reason: Reason | None) -> ReportResult | None:
        async with self._lock:
            await self._stop()
            self.wanted, self._reason, self._pending = state, reason, True
            try:
                result = await self._report_wanted(None)
            except BotSessionError as exc:
                if exc.status in PERMANENT:
                    self._pending = False
                    raise
                log.warning(
                    "botsession report %s of bot %s user %s not delivered (%s); retrying "
                    "in the background",
                    state.value,
                    self.bot_id,
                    self.user,
                    exc.code,
                )
                self._start()
                return None
            if state is ReportState.CONNECTED:
                self._start()
            return result

    async def _report(
        self, state: ReportState, reason: Reason | None, retry: RetryPolicy | None
    ) -> ReportResult:
        result = await self.client.report(
            self.bot_id,
            self._user_id,
            state,
            reason=reason,
            heartbeat_timeout_seconds=self.heartbeat_timeout_seconds,
            retry=retry,
            **self.identity,
        )
        self.last_result = result
        return result

    async def _report_wanted(self, retry: RetryPolicy | None) -> ReportResult | None:
        """Report what the bot last said, the way the transition table allows; None when the
        session is already where the bot's state leads (nothing to record)."""
        state, reason = self.wanted, self._reason
        assert state is not None
        try:
            result: ReportResult | None = await self._report(state, reason, retry)
        except TransitionRefused as refused:
            result = await self._instead(state, refused, retry)
        self._pending = False
        return result

    async def _instead(
        self, state: ReportState, refused: TransitionRefused, retry: RetryPolicy | None
    ) -> ReportResult | None:
        current = refused.current
        if state is ReportState.CONNECTED:
            # inactive or failed: a session comes back through connecting
            await self._report(ReportState.CONNECTING, None, retry)
            return await self._report(ReportState.CONNECTED, None, retry)
        if state is ReportState.DISCONNECTED and current is Phase.CONNECTING:
            # a connection that never opened failed
            return await self._report(ReportState.FAILED, Reason.CONNECT_FAILED, retry)
        if state is ReportState.FAILED and current is Phase.ACTIVE:
            return await self._report(ReportState.DISCONNECTED, None, retry)
        if current in (Phase.INACTIVE, Phase.FAILED):
            return None  # not live already: nothing to record
        raise refused

    def _running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _start(self) -> None:
        self._task = asyncio.create_task(
            self._keep(), name=f"botsession-reporter-{self.bot_id}-{self.user}"
        )

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep(self) -> None:
        """Deliver a pending report, then, while connected, heartbeat; retry forever."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(BotSessionError),
            wait=self.backoff.wait,
            stop=stop_never,
            before_sleep=self._retrying,
            reraise=True,
        )
        while True:
            if not self._pending:
                if self.wanted is not ReportState.CONNECTED:
                    return
                # a little jitter, so that many sessions of one process spread out
                await asyncio.sleep(self.heartbeat_interval * random.uniform(0.9, 1.0))  # noqa: S311
            async for attempt in retrying:
                with attempt:
                    await self._step()

    async def _step(self) -> None:
        async with self._lock:
            if self._pending:
                await self._report_wanted(NO_RETRIES)
                return
            try:
                self.last_heartbeat = await self.client.heartbeat(
                    self.bot_id, self._user_id, retry=NO_RETRIES
                )
                self.heartbeats += 1
                return
            except (SessionInactive, SessionNotFound) as lost:
                log.warning(
                    "botsession heartbeat of bot %s user %s: %s; reporting connected again",
                    self.bot_id,
                    self.user,
                    lost.code,
                )
                self._pending = True
            await self._report_wanted(NO_RETRIES)
            self.reestablished += 1

    def _retrying(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        code = error.code if isinstance(error, BotSessionError) else type(error).__name__
        level = (
            logging.ERROR
            if isinstance(error, BotSessionError) and not (error.retryable)
            else logging.INFO
        )
        log.log(
            level,
            "botsession %s of bot %s user %s: %s; trying again in %.1f s",
            "report" if self._pending else "heartbeat",
            self.bot_id,
            self.user,
            code,
            state.upcoming_sleep,
        )
