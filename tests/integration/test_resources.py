"""The Kubernetes access layer on the real API server, and the CRD's CEL rules walked pair
by pair against the domain's transition table."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes.client import Configuration

from devstack.controlplane import ControlPlane
from devstack.kubectl import kubectl
from sessions.adapters.kubernetes.botsessions import KubeBotSessions, phase_patch, resource_name
from sessions.adapters.kubernetes.client import ApiError, Connection, KubeClient
from sessions.domain.model import (
    HistoryEntry,
    Identity,
    Phase,
    Reason,
    RevisionConflict,
    SessionKey,
    StoreUnavailable,
    TransitionRefused,
    check_transition,
)
from sessions.domain.records import BotSessionRecord, DeleteOutcome

pytestmark = pytest.mark.integration

T0 = datetime(2031, 5, 17, 10, 0, 0, tzinfo=UTC)
IDENTITY = Identity("4915112345678", "Jane", "session_123")
# how to reach each phase from an empty one, through allowed transitions
PATH_TO = {
    None: [],
    Phase.CONNECTING: [(Phase.CONNECTING, Reason.CREATED)],
    Phase.ACTIVE: [(Phase.CONNECTING, Reason.CREATED), (Phase.ACTIVE, Reason.CONNECTED)],
    Phase.FAILED: [(Phase.CONNECTING, Reason.CREATED), (Phase.FAILED, Reason.CONNECT_FAILED)],
    Phase.INACTIVE: [
        (Phase.CONNECTING, Reason.CREATED),
        (Phase.ACTIVE, Reason.CONNECTED),
        (Phase.INACTIVE, Reason.DISCONNECTED),
    ],
}


def entry_for(record: BotSessionRecord, to: Phase, reason: Reason) -> HistoryEntry:
    return HistoryEntry(record.key, record.revision + 1, record.phase, to, reason, "test", T0)


async def move(
    botsessions: KubeBotSessions, record: BotSessionRecord, to: Phase, reason: Reason
) -> BotSessionRecord:
    return await botsessions.set_phase(
        record, entry_for(record, to, reason), T0, T0 + timedelta(days=1)
    )


def domain_allows(frm: Phase | None, to: Phase, reason: Reason) -> bool:
    try:
        check_transition(frm, to, reason)
    except TransitionRefused:
        return False
    return True


@pytest.mark.parametrize("frm", list(PATH_TO), ids=lambda p: p or "empty")
async def test_cel_rules_agree_with_the_domain_table_on_every_pair(
    kube_botsessions: KubeBotSessions, kube_client: KubeClient, frm: Phase | None
) -> None:
    key = SessionKey("bot-cel", f"from-{frm or 'empty'}")
    record, _ = await kube_botsessions.create(key, IDENTITY)
    for to, reason in PATH_TO[frm]:
        record = await move(kube_botsessions, record, to, reason)
    assert record.phase == frm
    disagreements = []
    refusal_statuses: set[int] = set()
    checked = 0
    for to, reason in itertools.product(Phase, Reason):
        if to == frm:
            continue  # not a transition: a refresh, checked below
        content_type, body = phase_patch(record, entry_for(record, to, reason), T0, T0)
        try:
            await kube_botsessions.objects.patch_status(
                resource_name(key), body, content_type, dry_run="All"
            )
            server_allows = True
        except ApiError as exc:
            server_allows = False
            refusal_statuses.add(exc.status)
        checked += 1
        if server_allows != domain_allows(frm, to, reason):
            disagreements.append((frm, to, reason, server_allows))
    assert checked == (4 if frm is None else 3) * len(Reason)
    assert disagreements == []
    assert refusal_statuses == {422}  # refused by validation, not by anything else


async def test_revision_must_grow_with_a_phase_change(
    kube_botsessions: KubeBotSessions, kube_client: KubeClient
) -> None:
    key = SessionKey("bot-1", "rev")
    record = await move(
        kube_botsessions,
        (await kube_botsessions.create(key, IDENTITY))[0],
        Phase.CONNECTING,
        Reason.CREATED,
    )
    ops = [
        {"op": "replace", "path": "/status/phase", "value": "active"},
        {"op": "replace", "path": "/status/reason", "value": "Connected"},
    ]
    with pytest.raises(ApiError, match="revision") as refused:
        await kube_botsessions.objects.patch_status(
            resource_name(key), ops, "application/json-patch+json"
        )
    assert refused.value.status == 422
    assert (await kube_botsessions.get(key)) == record


async def test_create_get_and_set_phase_round_trip(
    kube_botsessions: KubeBotSessions, controlplane: ControlPlane, namespace: str
) -> None:
    key = SessionKey("Bot_1", "4915112345678@c.us")
    created, _ = await kube_botsessions.create(key, IDENTITY, ttl_seconds=600)
    assert (created.phase, created.revision, created.identity) == (None, 0, IDENTITY)
    assert created.name == resource_name(key)
    again, was_created = await kube_botsessions.create(key, Identity())
    assert not was_created
    assert again.name == created.name and again.identity == IDENTITY
    connecting = await move(kube_botsessions, created, Phase.CONNECTING, Reason.CREATED)
    active = await move(kube_botsessions, connecting, Phase.ACTIVE, Reason.CONNECTED)
    fetched = await kube_botsessions.get(key)
    assert fetched == active
    assert (fetched.phase, fetched.reason, fetched.revision) == (Phase.ACTIVE, Reason.CONNECTED, 2)
    assert [e.revision for e in fetched.recent] == [1, 2]
    assert fetched.ttl(timedelta(hours=24)) == timedelta(seconds=600)
    table = kubectl(controlplane.kubeconfig, "get", "bs", "-n", namespace).stdout
    assert "active" in table and "Bot_1" in table


async def test_a_stale_revision_is_a_conflict(kube_botsessions: KubeBotSessions) -> None:
    key = SessionKey("bot-1", "cas")
    created, _ = await kube_botsessions.create(key, IDENTITY)
    connecting = await move(kube_botsessions, created, Phase.CONNECTING, Reason.CREATED)
    with pytest.raises(RevisionConflict):  # first-phase CAS: resourceVersion moved on
        await move(kube_botsessions, created, Phase.CONNECTING, Reason.CREATED)
    await move(kube_botsessions, connecting, Phase.ACTIVE, Reason.CONNECTED)
    with pytest.raises(RevisionConflict):  # later CAS: the revision test fails
        await move(kube_botsessions, connecting, Phase.FAILED, Reason.CONNECT_FAILED)


async def test_a_stale_sync_never_sets_an_older_synced_revision(
    kube_botsessions: KubeBotSessions,
) -> None:
    """An operator that synced revision 1 from a stale body (handing over to its
    successor, which already synced revision 2) must not write syncedRevision 1."""
    created, _ = await kube_botsessions.create(SessionKey("bot-1", "handover"), IDENTITY)
    first = await move(kube_botsessions, created, Phase.CONNECTING, Reason.CREATED)
    second = await move(kube_botsessions, first, Phase.ACTIVE, Reason.CONNECTED)
    assert await kube_botsessions.set_sync_status(second, {"syncedRevision": 2})
    assert not await kube_botsessions.set_sync_status(first, {"syncedRevision": 1})
    stored = await kube_botsessions.get(second.key)
    assert stored is not None and stored.synced_revision == 2
    gone = await kube_botsessions.delete(second.key, timedelta(seconds=10))
    assert gone is DeleteOutcome.DELETED
    assert not await kube_botsessions.set_sync_status(second, {"syncedRevision": 2})


async def test_a_refused_transition_is_transition_refused(
    kube_botsessions: KubeBotSessions,
) -> None:
    key = SessionKey("bot-1", "refused")
    record = await move(
        kube_botsessions,
        (await kube_botsessions.create(key, IDENTITY))[0],
        Phase.CONNECTING,
        Reason.CREATED,
    )
    with pytest.raises(TransitionRefused):
        await move(kube_botsessions, record, Phase.INACTIVE, Reason.DISCONNECTED)


async def test_recent_transitions_keep_the_last_ten(kube_botsessions: KubeBotSessions) -> None:
    key = SessionKey("bot-1", "busy")
    record = await move(
        kube_botsessions,
        (await kube_botsessions.create(key, IDENTITY))[0],
        Phase.CONNECTING,
        Reason.CREATED,
    )
    for _ in range(6):
        record = await move(kube_botsessions, record, Phase.FAILED, Reason.CONNECT_FAILED)
        record = await move(kube_botsessions, record, Phase.CONNECTING, Reason.RETRYING)
    assert record.revision == 13
    assert [e.revision for e in record.recent] == list(range(4, 14))


async def test_list_bot_finds_only_that_bot(kube_botsessions: KubeBotSessions) -> None:
    for bot, user in [("bot+1=x", "a"), ("bot+1=x", "b"), ("bot-2", "a")]:
        await kube_botsessions.create(SessionKey(bot, user), IDENTITY)
    listed = await kube_botsessions.list_bot("bot+1=x")
    assert sorted(r.key.user_id for r in listed) == ["a", "b"]
    assert len(await kube_botsessions.list_all()) == 3


async def test_delete_waits_and_reports_pending_finalizers(
    kube_botsessions: KubeBotSessions, controlplane: ControlPlane, namespace: str
) -> None:
    gone, stuck = SessionKey("bot-1", "gone"), SessionKey("bot-1", "stuck")
    await kube_botsessions.create(gone, IDENTITY)
    await kube_botsessions.create(stuck, IDENTITY)
    kubectl(
        controlplane.kubeconfig,
        "patch",
        "bs",
        resource_name(stuck),
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":["test.example/hold"]}}',
    )
    assert await kube_botsessions.delete(gone, timedelta(seconds=5)) is DeleteOutcome.DELETED
    assert await kube_botsessions.delete(gone, timedelta(seconds=5)) is DeleteOutcome.ABSENT
    wait = timedelta(milliseconds=500)
    assert await kube_botsessions.delete(stuck, wait) is DeleteOutcome.PENDING
    record = await kube_botsessions.get(stuck)
    assert record is not None and record.deleting


async def test_an_unreachable_api_server_is_store_unavailable() -> None:
    configuration = Configuration(host="https://127.0.0.1:1", api_key={"BearerToken": "x"})
    client = KubeClient(Connection(configuration, "default"))
    with pytest.raises(StoreUnavailable, match="kubernetes is unavailable"):
        await KubeBotSessions(client, "default").get(SessionKey("b", "u"))
    await client.close()
