"""The transition table, walked pair by pair, and the report rules of the design notes."""

from __future__ import annotations

import itertools

import pytest

from sessions.domain.model import (
    TRANSITIONS,
    InvalidSessionInput,
    Phase,
    Reason,
    ReportedState,
    SessionKey,
    Transition,
    TransitionRefused,
    allowed_next,
    check_transition,
    format_time,
    mask_phone,
    parse_time,
    plan_report,
)

pytestmark = pytest.mark.unit

C: Phase = Phase.CONNECTING
A: Phase = Phase.ACTIVE
I: Phase = Phase.INACTIVE  # noqa: E741 - the table below reads better with one letter
F: Phase = Phase.FAILED

# The expected verdict for each of the 16 (from, to) pairs, written out by hand from the
# requirements and the design notes (not derived from the table under test).
# "ok": allowed with any reason; "eol": only with Expired/Cleared; "same": not a transition;
# "no": refused.
EXPECTED = {
    (C, C): "same",
    (C, A): "ok",
    (C, I): "eol",
    (C, F): "ok",
    (A, C): "no",
    (A, A): "same",
    (A, I): "ok",
    (A, F): "no",
    (I, C): "ok",
    (I, A): "no",
    (I, I): "same",
    (I, F): "no",
    (F, C): "ok",
    (F, A): "no",
    (F, I): "eol",
    (F, F): "same",
}


@pytest.mark.parametrize(("frm", "to"), list(itertools.product(Phase, Phase)))
def test_every_pair_of_the_table(frm: Phase, to: Phase) -> None:
    verdict = EXPECTED[(frm, to)]
    if verdict == "same":
        assert (frm, to) not in TRANSITIONS
        assert (
            plan_report(
                frm,
                {
                    C: ReportedState.CONNECTING,
                    A: ReportedState.CONNECTED,
                    F: ReportedState.FAILED,
                    I: ReportedState.DISCONNECTED,
                }[to],
            )
            == []
        )
    elif verdict == "no":
        with pytest.raises(TransitionRefused) as refused:
            check_transition(frm, to)
        assert refused.value.current == frm
        assert to not in refused.value.allowed
        assert f"from {frm.value} to {to.value}" in str(refused.value)
    elif verdict == "eol":
        for reason in (Reason.EXPIRED, Reason.CLEARED):
            assert check_transition(frm, to, reason) == reason
        with pytest.raises(TransitionRefused):
            check_transition(frm, to)
        with pytest.raises(TransitionRefused):
            check_transition(frm, to, Reason.DISCONNECTED)
    else:
        assert check_transition(frm, to) in TRANSITIONS[(frm, to)]


@pytest.mark.parametrize("to", list(Phase))
def test_an_empty_phase_may_only_become_connecting(to: Phase) -> None:
    if to is C:
        assert check_transition(None, to) == Reason.CREATED
    else:
        with pytest.raises(TransitionRefused, match=r"allowed next: connecting$"):
            check_transition(None, to, Reason.EXPIRED)


def test_any_phase_may_expire_or_be_cleared() -> None:
    for phase in (C, A, F):
        assert check_transition(phase, I, Reason.EXPIRED) == Reason.EXPIRED
        assert check_transition(phase, I, Reason.CLEARED) == Reason.CLEARED


def test_refusal_names_current_and_allowed_next() -> None:
    with pytest.raises(TransitionRefused) as refused:
        check_transition(I, A)
    assert refused.value.allowed == [C]
    assert str(refused.value) == (
        "cannot move a session from inactive to active; allowed next: connecting"
    )
    assert allowed_next(C) == [A, F, I]


def test_first_report_connecting() -> None:
    assert plan_report(None, ReportedState.CONNECTING) == [Transition(None, C, Reason.CREATED)]


def test_first_report_connected_records_connecting_then_active() -> None:
    assert plan_report(None, ReportedState.CONNECTED) == [
        Transition(None, C, Reason.CREATED),
        Transition(C, A, Reason.CONNECTED),
    ]


def test_restarted_bot_records_two_transitions() -> None:
    assert plan_report(A, ReportedState.CONNECTING) == [
        Transition(A, I, Reason.RESTARTED),
        Transition(I, C, Reason.RECONNECTING),
    ]


def test_reporter_reason_is_kept() -> None:
    assert plan_report(A, ReportedState.DISCONNECTED, Reason.LOGGED_OUT) == [
        Transition(A, I, Reason.LOGGED_OUT)
    ]


def test_a_reporter_cannot_claim_an_operator_reason_on_the_wrong_step() -> None:
    with pytest.raises(TransitionRefused):
        plan_report(C, ReportedState.CONNECTED, Reason.EXPIRED)


def test_refused_reports() -> None:
    with pytest.raises(TransitionRefused):
        plan_report(I, ReportedState.CONNECTED)
    with pytest.raises(TransitionRefused):
        plan_report(None, ReportedState.DISCONNECTED)
    with pytest.raises(TransitionRefused):
        plan_report(F, ReportedState.DISCONNECTED)


@pytest.mark.parametrize("bad", ["", "a:b", "x" * 129, "with space", "tab\t", "ümlaut"])
def test_ids_that_would_break_the_key_layout_are_refused(bad: str) -> None:
    with pytest.raises(InvalidSessionInput, match="botId"):
        SessionKey(bad, "user")


def test_ids_of_real_bots_are_accepted() -> None:
    key = SessionKey("bot-1", "4915112345678@c.us")
    assert str(key) == "bot-1:4915112345678@c.us"


def test_phone_masking_keeps_three_digits() -> None:
    assert mask_phone("1234567890") == "*******890"
    assert mask_phone("") == ""


def test_time_format_is_the_contracts() -> None:
    moment = parse_time("2025-01-01T00:00:00Z")
    assert format_time(moment) == "2025-01-01T00:00:00Z"


@pytest.mark.parametrize("bad", ["bot-1\n", "bot-1\r\n"])
def test_a_trailing_newline_is_not_an_id(bad: str) -> None:
    with pytest.raises(InvalidSessionInput):
        SessionKey(bad, "user")
    from sessions.domain.model import validate_phone

    with pytest.raises(InvalidSessionInput):
        validate_phone("4915112345678\n")
