"""Is this operator the active one of a kopf active/standby pair?

kopf keeps its peers in the status of a KopfPeering object ({identity: {priority, lifetime,
lastseen}}) and pauses a peer while another live peer has a higher or the same priority.
The housekeeping (which kopf does not pause) reads the same status with the same rule, so
only the peer kopf lets handle objects also holds the housekeeping lease. Its identity is
kopf's: the POD_ID environment variable, which controller.main sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sessions.adapters.kubernetes.client import ApiError, CustomObjects, KubeClient
from sessions.domain.model import parse_time, utcnow


class Activity(Protocol):
    async def active(self) -> bool:
        """True while this replica may do the periodic work."""


class Standalone:
    """No peering: the only replica is always the active one."""

    async def active(self) -> bool:
        return True


def is_active(peers: dict[str, Any], identity: str, priority: int, now: datetime) -> bool:
    """kopf's rule: paused while any other live peer has a priority >= ours."""
    for peer, info in peers.items():
        if peer == identity or not isinstance(info, dict):
            continue
        seen = parse_time(info["lastseen"]) if info.get("lastseen") else now
        if seen + timedelta(seconds=int(info.get("lifetime", 60))) <= now:
            continue  # dead: kopf ignores it too
        if int(info.get("priority", 0)) >= priority:
            return False
    return True


@dataclass
class KopfPeers:
    client: KubeClient
    namespace: str
    name: str
    identity: str
    priority: int

    async def active(self) -> bool:
        peerings = CustomObjects(self.client, "kopf.dev", "v1", self.namespace, "kopfpeerings")
        try:
            body = await peerings.get(self.name)
        except ApiError as exc:
            if exc.status == 404:  # kopf has not registered anybody yet
                return True
            raise
        return is_active(body.get("status") or {}, self.identity, self.priority, utcnow())
