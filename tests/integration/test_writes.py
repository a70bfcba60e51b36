"""API-server writes per transition, counted by the API server itself (its
apiserver_request_total), with the operator running: what one report costs the control
plane, by verb and resource. Issue 20 asks for the minimum the design allows; these bounds
keep what has been reached (run with -s to see them)."""

from __future__ import annotations

import asyncio
from collections import Counter
from functools import partial

import pytest

from devstack.controlplane import ControlPlane
from sessions.adapters.kubernetes.botsessions import KubeBotSessions
from sessions.adapters.kubernetes.crd import FINALIZER
from sessions.domain.model import ReportedState, SessionKey
from sessions.usecases.service import SessionService
from tests.conftest import eventually
from tests.integration.operator_stack import IDENTITY, Stack, synced_everywhere

pytestmark = pytest.mark.integration

WRITE_VERBS = ("POST", "PATCH", "PUT", "DELETE")
SETTLE = 3.0  # seconds for kopf to finish with an object after its last change
REPORTS = 10


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


async def test_writes_of_first_reports_and_of_transitions(stack: Stack) -> None:
    warm = SessionKey("bot-writes", "warm")
    keys = [SessionKey("bot-writes", f"u{i}") for i in range(REPORTS)]
    # wired as the API wires it (sessions.runtime): its BotSessions are born with the finalizer
    api = KubeBotSessions(
        stack.botsessions.objects.client, stack.namespace, creator="api", finalizer=FINALIZER
    )
    service = SessionService(api, stack.redis, stack.sql, stack.service.settings)
    with stack.operator():
        await service.report(warm, ReportedState.CONNECTED, identity=IDENTITY)
        await eventually(lambda: synced_everywhere(stack, [warm]), timeout=30)
        await asyncio.sleep(SETTLE)

        before = writes(stack.plane)
        for key in keys:  # one after another, as new users come
            await service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
            await eventually(partial(synced_everywhere, stack, [key]), timeout=30)
        await asyncio.sleep(SETTLE)
        first = writes(stack.plane) - before

        before = writes(stack.plane)
        for key in keys:
            await service.report(key, ReportedState.DISCONNECTED)
            await eventually(partial(synced_everywhere, stack, [key]), timeout=30)
        await asyncio.sleep(SETTLE)
        then = writes(stack.plane) - before

    print(f"{REPORTS} first reports (new sessions, connecting -> active): {dict(first)}")
    print(f"{REPORTS} transitions (active -> inactive): {dict(then)}")
    # measured on 2026-12-01 (docs/benchmarks.md, "Writes per report"): a first report of
    # `connected` (two transitions) is 6 writes (the create, the API's two compare-and-swaps,
    # the operator's status, two Events) and one refused (the operator's status of revision 1
    # losing to revision 2); a transition is 3 (the API's, the operator's, the Event). kopf
    # writes nothing: no finalizer to add, no annotations (controller.persistence).
    assert first["POST botsessions"] == REPORTS
    assert first["PATCH botsessions"] == 0, first
    # The operator's write of revision 1 is one attempt either way: refused when the API's
    # second compare-and-swap came first (the usual order), or, on a loaded machine, landed
    # when it came before it, and then the operator writes revision 2 as well. So 7
    # attempts per first report, refused or not, and never more than 7 that land.
    assert first.total() <= 7 * REPORTS, first
    assert done(first).total() <= 6 * REPORTS + (REPORTS - refused(first).total()), first
    assert refused(first).total() <= REPORTS + 2, first
    assert done(then).total() <= 3 * REPORTS, then
    assert refused(then).total() <= 2, then


def done(counts: Counter[str]) -> Counter[str]:
    return Counter({name: n for name, n in counts.items() if not name.endswith(")")})


def refused(counts: Counter[str]) -> Counter[str]:
    return counts - done(counts)
