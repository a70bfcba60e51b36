"""What kopf keeps on each BotSession: nothing but its finalizer.

kopf's change detection keeps a copy of an object's "essence" in an annotation
(`last-handled-configuration`) and rewrites it after every handled change: one more PATCH of
every BotSession per transition, once the essence held status.revision. The sync is an
`on.event` handler (it decides from the object itself whether there is work: in step, or
not), and the only change-detecting handler left is the finalizer's `on.delete`, which
needs no diff. So the essence is neither stored nor built (kopf deep-copies the whole body to
build it, on every event).
"""

from __future__ import annotations

from typing import Any

import kopf


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff-base storage that keeps nothing: every event looks like a creation to kopf's
    change detection, which has no creation handlers to call, and so writes nothing."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None
