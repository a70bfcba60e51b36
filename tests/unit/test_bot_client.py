"""The bots' client's pure logic (botsession; issue 22 item 2): Retry-After, the error
envelope as exceptions, the retry waits, the report body, the answers as dataclasses, and
that it stays in step with the server's enums and fingerprints without importing them."""

from __future__ import annotations

import ast
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tenacity import AsyncRetrying, RetryCallState

import sessions.domain.model as server_model
from api import schemas
from botsession import errors, privacy
from botsession.client import RetryPolicy, check_id, report_body
from botsession.errors import (
    MAX_RETRY_AFTER,
    ApiUnreachable,
    BotSessionError,
    RateLimited,
    SessionInactive,
    TransitionRefused,
    Unavailable,
    error_from_response,
    parse_retry_after,
)
from botsession.models import (
    HeartbeatResult,
    Phase,
    Reason,
    ReportResult,
    ReportState,
    SessionStatus,
)
from sessions.domain import privacy as server_privacy

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        (" 7 ", 7.0),
        ("0.5", 0.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("Tue, 01 Dec 2026 12:00:30 GMT", 30.0),
        ("Tue, 01 Dec 2026 11:59:00 GMT", 0.0),  # in the past: now
        ("99999999", MAX_RETRY_AFTER),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def envelope(code: str, message: str = "m", **details: Any) -> bytes:
    import json

    return json.dumps(
        {"success": False, "error": {"code": code, "message": message, **details}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (401, "unauthorized", errors.Unauthorized),
        (403, "forbidden", errors.Forbidden),
        (404, "session_not_found", errors.SessionNotFound),
        (404, "not_found", BotSessionError),
        (409, "transition_refused", TransitionRefused),
        (409, "session_inactive", SessionInactive),
        (409, "session_deleting", errors.SessionDeleting),
        (409, "revision_conflict", errors.RevisionConflict),
        (422, "invalid_input", errors.InvalidInput),
        (429, "rate_limited", RateLimited),
        (500, "internal_error", BotSessionError),
        (503, "store_unavailable", Unavailable),
        (503, "overloaded", Unavailable),
        (503, "not_ready", Unavailable),
    ],
)
def test_the_envelope_becomes_a_typed_error(
    status: int, code: str, kind: type[BotSessionError]
) -> None:
    error = error_from_response(status, envelope(code, "what"), None)
    assert type(error) is kind
    assert (error.status, error.code, error.message) == (status, code, "what")


def test_an_error_carries_the_envelope_s_fields_and_retry_after() -> None:
    refused = error_from_response(
        409,
        envelope(
            "transition_refused",
            current="active",
            requested="failed",
            allowed=["inactive"],
        ),
    )
    assert isinstance(refused, TransitionRefused)
    assert refused.current is Phase.ACTIVE and refused.requested is Phase.FAILED
    assert refused.allowed == [Phase.INACTIVE]
    assert not refused.retryable

    down = error_from_response(503, envelope("store_unavailable", store="redis"), "3")
    assert isinstance(down, Unavailable)
    assert down.store == "redis" and down.retry_after == 3.0 and down.retryable
    assert error_from_response(429, envelope("rate_limited"), "2").retry_after == 2.0


def test_a_body_that_is_not_the_envelope_is_named_by_its_status() -> None:
    gateway = error_from_response(502, b"<html>Bad Gateway</html>")
    assert isinstance(gateway, Unavailable) and gateway.code == "http_502"
    teapot = error_from_response(418, b"")
    assert type(teapot) is BotSessionError and teapot.code == "http_418"
    assert not teapot.retryable


def test_an_error_names_the_user_only_by_fingerprint() -> None:
    user = "4915112345678@c.us"
    error = error_from_response(
        404, envelope("session_not_found", f"no session for b:{user}"), user_id=user
    )
    assert user not in str(error) and user not in error.message
    assert privacy.user_fingerprint(user) in error.message


def test_the_fingerprint_is_the_server_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_privacy, "_key", b"k" * 32)  # configure("k" * 32), undone after
    key = privacy.fingerprint_key("k" * 32)
    assert privacy.user_fingerprint("jane", key) == server_privacy.user_fingerprint("jane")
    monkeypatch.setenv(privacy.KEY_VARIABLE, "k" * 32)
    assert privacy.user_fingerprint("jane") == server_privacy.user_fingerprint("jane")
    monkeypatch.delenv(privacy.KEY_VARIABLE)
    assert privacy.user_fingerprint("jane") != server_privacy.user_fingerprint("jane")


def test_the_enums_are_the_server_s() -> None:
    assert [s.value for s in ReportState] == [s.value for s in server_model.ReportedState]
    assert [p.value for p in Phase] == [p.value for p in server_model.Phase]
    assert [r.value for r in Reason] == [r.value for r in server_model.Reason]


def state_with(error: BaseException, attempt: int = 1) -> RetryCallState:
    state = RetryCallState(AsyncRetrying(), None, (), {})
    state.attempt_number = attempt
    state.set_exception((type(error), error, None))
    return state


def test_the_wait_honours_retry_after_with_jitter_on_top() -> None:
    policy = RetryPolicy()
    limited = RateLimited(429, "rate_limited", "slow down", retry_after=2.0)
    waits = [policy.wait(state_with(limited)) for _ in range(200)]
    assert min(waits) >= 2.0 and max(waits) <= 2.2


def test_without_retry_after_the_wait_backs_off_exponentially_with_jitter() -> None:
    policy = RetryPolicy(backoff_first=0.25, backoff_max=5.0)
    gone = ApiUnreachable(None, "unreachable", "no answer")
    first = [policy.wait(state_with(gone, 1)) for _ in range(200)]
    later = [policy.wait(state_with(gone, 10)) for _ in range(200)]
    assert min(first) >= 0 and max(first) <= 0.25
    assert max(later) <= 5.0 and len(set(later)) > 100  # jittered, capped
    assert sum(later) / len(later) > 1.0


def test_which_errors_the_client_retries() -> None:
    retried = {
        kind
        for kind in vars(errors).values()
        if isinstance(kind, type) and issubclass(kind, BotSessionError) and kind.retryable
    }
    assert retried == {
        ApiUnreachable,
        RateLimited,
        Unavailable,
        errors.SessionDeleting,
        errors.RevisionConflict,
    }


def test_the_report_body_mirrors_the_api_s() -> None:
    assert report_body("connected") == {"state": "connected"}
    body = report_body(
        ReportState.DISCONNECTED,
        reason=Reason.LOGGED_OUT,
        phone_number="4915112345678",
        display_name="Jane",
        session_id="s-1",
        heartbeat_timeout_seconds=0,
    )
    assert schemas.ReportRequest.model_validate(body).model_dump(exclude_none=True) == body
    with pytest.raises(ValueError, match="logged_out"):
        report_body("logged_out")


@pytest.mark.parametrize("bad", ["", "a:b", "a/b", "x" * 129, "ü"])
def test_ids_are_checked_before_anything_is_sent(bad: str) -> None:
    with pytest.raises(ValueError, match="userId"):
        check_id("userId", bad)
    assert check_id("userId", "4915112345678@c.us") == "4915112345678@c.us"


def example(model: type[Any]) -> dict[str, Any]:
    examples: list[dict[str, Any]] = model.model_config["json_schema_extra"]["examples"]
    return examples[0]


def test_the_api_s_answers_parse_into_the_dataclasses() -> None:
    report = ReportResult.from_json(example(schemas.ReportResponse))
    assert report.created and report.status is Phase.ACTIVE
    assert report.session.last_seen == datetime(2025, 1, 1, tzinfo=UTC)
    assert [t.from_phase for t in report.transitions] == [None, Phase.CONNECTING]
    assert report.transitions[1].reason == Reason.CONNECTED
    assert "1234567890" not in repr(report) and "user-1" not in repr(report)

    beat = HeartbeatResult.from_json(example(schemas.HeartbeatResponse))
    assert beat.status is Phase.ACTIVE and beat.revision == 2
    assert beat.expires_at == datetime(2025, 1, 2, tzinfo=UTC)

    status = SessionStatus.from_json(example(schemas.StatusResponse), "redis")
    assert status.status is Phase.ACTIVE and status.phone_number == "1234567890"
    assert "1234567890" not in repr(status)


def test_the_client_imports_nothing_of_the_server() -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__", "aiohttp", "tenacity", "yarl"}
    root = Path(__file__).resolve().parents[2] / "botsession"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top == "botsession", (path.name, name)
