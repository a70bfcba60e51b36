"""Kubernetes Events: one per BotSession transition (named after the object and the
revision, so each is posted exactly once), and Warnings about the operator itself."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from typing import Any

from sessions.adapters.kubernetes.client import ApiError, KubeClient
from sessions.adapters.kubernetes.crd import API_VERSION, KIND
from sessions.domain.model import HistoryEntry, format_time
from sessions.domain.records import BotSessionRecord


def involved_botsession(record: BotSessionRecord, namespace: str) -> dict[str, str]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": record.name,
        "namespace": namespace,
        "uid": record.uid,
    }


def event_manifest(
    involved: dict[str, str],
    namespace: str,
    *,
    type_: str,
    reason: str,
    message: str,
    name: str,
    now: datetime,
    component: str = "botsession-operator",
) -> dict[str, Any]:
    stamp = format_time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": involved,
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "source": {"component": component},
        "reportingComponent": component,
    }


async def _post_event(client: KubeClient, namespace: str, body: dict[str, Any]) -> bool:
    try:
        await client.create_event(namespace, body)
    except ApiError as exc:
        if exc.status == 409:  # already posted under this name
            return False
        raise
    return True


def event_name(object_name: str, entry: HistoryEntry) -> str:
    """One per transition: a returning user's new incarnation gets Events of its own."""
    if entry.incarnation:
        return f"{object_name}.i{entry.incarnation}.r{entry.revision}"
    return f"{object_name}.r{entry.revision}"


async def announce_transition(
    client: KubeClient, namespace: str, record: BotSessionRecord, entry: HistoryEntry
) -> bool:
    """Post the Event of one transition, exactly once: its name is derived from the object
    and the revision, so a retry (or a restarted operator) finds it already there."""
    frm = entry.from_phase.value if entry.from_phase else "(none)"
    body = event_manifest(
        involved_botsession(record, namespace),
        namespace,
        type_="Normal",
        reason=entry.reason.value,
        message=f"{frm} -> {entry.to_phase.value} (revision {entry.revision}, by {entry.actor})",
        name=event_name(record.name, entry),
        now=entry.at,
    )
    return await _post_event(client, namespace, body)


async def post_operator_warning(
    client: KubeClient, namespace: str, *, reason: str, message: str
) -> None:
    """A Warning about the operator itself: on its Pod when it knows it (POD_NAME from the
    downward API), else on the namespace."""
    pod = os.environ.get("POD_NAME")
    involved = (
        {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": namespace}
        if pod
        # the API server wants involvedObject.namespace == the event's namespace
        else {"apiVersion": "v1", "kind": "Namespace", "name": namespace, "namespace": namespace}
    )
    now = datetime.now(UTC)
    body = event_manifest(
        involved,
        namespace,
        type_="Warning",
        reason=reason,
        message=message,
        name=f"botsession-operator.{reason.lower()}.{now.timestamp():.0f}{secrets.token_hex(3)}",
        now=now,
    )
    await _post_event(client, namespace, body)
