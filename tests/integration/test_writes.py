"""API-server writes per transition, counted by the API server itself (its
apiserver_request_total), with the operator running: what one report costs the control
plane, by verb and resource. Issue 20 asks for the minimum the design allows; these bounds
keep what has been reached (run with -s to see them)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from devstack.controlplane import ControlPlane
from sessions.domain.model import ReportedState, SessionKey
from tests.conftest import eventually
from tests.integration.operator_stack import IDENTITY, Stack, synced_everywhere

pytestmark = pytest.mark.integration

WRITE_VERBS = ("POST", "PATCH", "PUT", "DELETE")
SETTLE = 3.0  # seconds for kopf to finish with an object after its last change


def writes(plane: ControlPlane) -> Counter[str]:
    """Writes so far to BotSessions and Events, by 'VERB resource[/subresource]', with the
    HTTP code when the API server refused one (a compare-and-swap that lost: 409, 422)."""
    counts: Counter[str] = Counter()
    for line in plane.apiserver.get("/metrics").splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(
            part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(",")
        )
        verb, resource = labels.get("verb", "").strip('"'), labels.get("resource", "").strip('"')
        if verb not in WRITE_VERBS or resource not in ("botsessions", "events"):
            continue
        sub = labels.get("subresource", '""').strip('"')
        code = labels.get("code", '""').strip('"')
        refused = "" if code.startswith("2") else f" ({code})"
        name = f"{verb} {resource}{'/' + sub if sub else ''}{refused}"
        counts[name] += int(float(line.rsplit(" ", 1)[1]))
    return counts


async def test_writes_of_a_first_report_and_of_a_transition(stack: Stack) -> None:
    warm = SessionKey("bot-writes", "warm")
    key = SessionKey("bot-writes", "counted")
    with stack.operator():
        await stack.service.report(warm, ReportedState.CONNECTED, identity=IDENTITY)
        await eventually(lambda: synced_everywhere(stack, [warm]), timeout=30)
        await asyncio.sleep(SETTLE)

        before = writes(stack.plane)
        await stack.service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
        await eventually(lambda: synced_everywhere(stack, [key]), timeout=30)
        await asyncio.sleep(SETTLE)
        first = writes(stack.plane) - before

        before = writes(stack.plane)
        await stack.service.report(key, ReportedState.DISCONNECTED)
        await eventually(lambda: synced_everywhere(stack, [key]), timeout=30)
        await asyncio.sleep(SETTLE)
        then = writes(stack.plane) - before

    print(f"first report (new session, connecting -> active): {dict(first)}")
    print(f"one transition (active -> inactive): {dict(then)}")
    # as measured on 2026-12-01 (docs/benchmarks.md, "Writes per report"): a first report
    # makes 9 writes and loses 2-3 compare-and-swaps; a transition makes 4
    assert done(first).total() <= 9, first
    assert first["POST botsessions"] == 1
    assert refused(first).total() <= 3, first
    assert done(then).total() <= 4, then
    assert refused(then).total() <= 1, then


def done(counts: Counter[str]) -> Counter[str]:
    return Counter({name: n for name, n in counts.items() if not name.endswith(")")})


def refused(counts: Counter[str]) -> Counter[str]:
    return counts - done(counts)
