"""BotSession names hold no user id (the API server logs every request's URL, and user ids are
often phone numbers); objects created under the old names keep working; a name collision is
refused clearly. Against the real API server."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from devstack.controlplane import ControlPlane
from sessions.adapters.kubernetes.botsessions import (
    CUSTOM_NAME,
    NAME_LABEL,
    KubeBotSessions,
    kept_labels,
    manifest,
    resource_name,
)
from sessions.adapters.kubernetes.client import KubeClient
from sessions.adapters.kubernetes.crd import API_VERSION, KIND
from sessions.adapters.redis.store import RedisStore
from sessions.adapters.sql.store import SqlStore
from sessions.domain.model import (
    Identity,
    NameCollision,
    Phase,
    ReportedState,
    SessionKey,
    SessionNotFound,
)
from sessions.domain.settings import load_settings
from sessions.usecases.service import SessionService
from tests.conftest import eventually

MERGE_PATCH = "application/merge-patch+json"

pytestmark = pytest.mark.integration

IDENTITY = Identity("4915112345678", "Jane", "session_123")


@pytest.mark.parametrize(
    ("bot", "user"),
    [("Bot_1", "4915112345678@c.us"), ("b", "jane.doe@example.com"), ("@@", "+49-151")],
)
def test_a_name_holds_the_bot_but_not_the_user(bot: str, user: str) -> None:
    name = resource_name(SessionKey(bot, user))
    digits = "".join(c for c in user if c.isdigit())
    assert len(name) <= 63 and name == name.lower()
    assert (digits == "" or digits not in name) and user.split("@")[0].lower() not in name
    assert len(name.rsplit("-", 1)[1]) == 20  # 80 bits of digest
    assert name != resource_name(SessionKey(bot, user + "x"))


def legacy_resource_name(key: SessionKey) -> str:
    """The name BotSessions got before names stopped holding the user id."""
    digest = hashlib.sha256(f"{key.bot_id}\0{key.user_id}".encode()).hexdigest()[:10]
    slug = "-".join(
        re.sub(r"[^a-z0-9]+", "-", part.lower()).strip("-")[:40].strip("-")
        for part in (key.bot_id, key.user_id)
    )
    return f"{slug}-{digest}"


async def test_a_botsession_under_its_old_name_is_found_once_labelled_and_reported_to(
    kube_botsessions: KubeBotSessions,
    redis_store: RedisStore,
    sql_store: SqlStore,
) -> None:
    service = SessionService(kube_botsessions, redis_store, sql_store, load_settings())
    key = SessionKey("bot-1", "4915112345678@c.us")
    body = manifest(key, IDENTITY, kube_botsessions.namespace)
    body["metadata"]["name"] = legacy_resource_name(key)
    await kube_botsessions.objects.create(body)
    # what the operator does with every BotSession whose name is not the derived one
    labels = kept_labels(body["metadata"]["name"], key)
    assert labels[NAME_LABEL] == CUSTOM_NAME
    patch = {"metadata": {"labels": labels}}
    await kube_botsessions.objects.patch(body["metadata"]["name"], patch, MERGE_PATCH)
    found = await eventually(lambda: kube_botsessions.get(key))
    assert found.name == legacy_resource_name(key)
    result = await service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    assert not result.created and result.state.phase is Phase.ACTIVE
    again = await kube_botsessions.get(key)
    assert again is not None and again.name == legacy_resource_name(key)


def botsession_lists(plane: ControlPlane) -> float:
    """LIST requests for BotSessions the API server has answered (its own counter)."""
    total = 0.0
    for line in plane.apiserver.get("/metrics").splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and 'resource="botsessions"' in line
            and 'verb="LIST"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_lookup_miss_costs_one_get_and_no_list(
    kube_botsessions: KubeBotSessions,
    redis_store: RedisStore,
    sql_store: SqlStore,
    controlplane: ControlPlane,
) -> None:
    """A first report, a heartbeat for an unknown user and a clear of an absent session each
    look the session up: 50 users of one bot must not cost 50 LISTs of the bot."""
    service = SessionService(kube_botsessions, redis_store, sql_store, load_settings())
    before = botsession_lists(controlplane)
    for i in range(50):
        await service.report(SessionKey("bot-many", f"user-{i}"), ReportedState.CONNECTING)
        assert await kube_botsessions.get(SessionKey("bot-many", f"nobody-{i}")) is None
    with pytest.raises(SessionNotFound):
        await service.heartbeat(SessionKey("bot-many", "made-up"))
    assert botsession_lists(controlplane) == before


async def test_a_name_taken_by_another_session_is_refused_clearly(
    kube_botsessions: KubeBotSessions, kube_client: KubeClient
) -> None:
    """Two sessions whose names collide (forced here: a digest of 80 bits does not collide by
    chance): the second is refused with NameCollision, not an endless revision conflict."""
    mine, other = SessionKey("bot-1", "mine"), SessionKey("bot-1", "someone-else")
    squatter: dict[str, Any] = manifest(other, IDENTITY, kube_botsessions.namespace)
    squatter["metadata"]["name"] = resource_name(mine)
    await kube_botsessions.objects.create(squatter)
    with pytest.raises(NameCollision, match="taken by another session"):
        await kube_botsessions.create(mine, IDENTITY)
    # the squatter is custom-named for its own key: found once labelled, as the operator does
    name = resource_name(mine)
    patch = {"metadata": {"labels": kept_labels(name, other)}}
    await kube_botsessions.objects.patch(name, patch, MERGE_PATCH)
    record = await eventually(lambda: kube_botsessions.get(other))
    assert record.name == resource_name(mine)
    assert (record.key, API_VERSION, KIND) == (other, "botsession.dev/v1alpha1", "BotSession")
