"""The BotSession CustomResourceDefinition, generated from the domain model.

`crds/botsessions.yaml` is this module's output (`botsession crd > crds/botsessions.yaml`);
a test fails when the file drifts. The CEL transition rules are built from
sessions.domain.model.TRANSITIONS, so the API server refuses exactly what the domain refuses.
"""

from __future__ import annotations

from typing import Any

import yaml

from sessions.domain.model import TRANSITIONS, Phase, Reason

GROUP = "botsession.dev"
VERSION = "v1alpha1"
KIND = "BotSession"
PLURAL = "botsessions"
SINGULAR = "botsession"
SHORT_NAMES = ["bs"]
CATEGORIES = ["chatbot"]
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = f"{GROUP}/cleanup"

ID_PATTERN = r"^[A-Za-z0-9._@+=\-]{1,128}$"
_RFC3339 = {"type": "string", "format": "date-time", "maxLength": 40}


def _quoted(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def transition_rule() -> str:
    """CEL: a phase change must be a pair of the domain table, with one of its reasons."""
    pairs = []
    for (frm, to), reasons in TRANSITIONS.items():
        if frm is None:
            continue  # the empty phase has its own rule
        pairs.append(
            f"(oldSelf.status.phase == '{frm.value}' && self.status.phase == '{to.value}'"
            f" && has(self.status.reason) && self.status.reason in "
            f"{_quoted(sorted(r.value for r in reasons))})"
        )
    return (
        "!has(oldSelf.status) || !has(oldSelf.status.phase) || "
        "(has(self.status) && has(self.status.phase) && "
        "(self.status.phase == oldSelf.status.phase || " + " || ".join(pairs) + "))"
    )


def first_phase_rule() -> str:
    """CEL: after an empty phase only the table's first phase (with its reason) may follow."""
    firsts = " || ".join(
        f"(self.status.phase == '{to.value}' && has(self.status.reason) && "
        f"self.status.reason in {_quoted(sorted(r.value for r in reasons))})"
        for (frm, to), reasons in TRANSITIONS.items()
        if frm is None
    )
    return (
        "(has(oldSelf.status) && has(oldSelf.status.phase)) || !has(self.status) || "
        f"!has(self.status.phase) || {firsts}"
    )


REVISION_RULE = (
    "!has(oldSelf.status) || !has(oldSelf.status.revision) || "
    "(has(self.status) && has(self.status.revision) && "
    "(self.status.revision > oldSelf.status.revision || "
    "(self.status.revision == oldSelf.status.revision && "
    "(!has(oldSelf.status.phase) || (has(self.status.phase) && "
    "self.status.phase == oldSelf.status.phase)))))"
)


INCARNATION_RULE = (
    "!has(oldSelf.status) || !has(oldSelf.status.incarnation) || "
    "(has(self.status) && has(self.status.incarnation) && "
    "self.status.incarnation == oldSelf.status.incarnation)"
)


def _id_field(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "description": description,
        "pattern": ID_PATTERN,
        "maxLength": 128,
        "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "is immutable"}],
    }


def _condition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": {"type": "string", "maxLength": 316},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
            "lastTransitionTime": _RFC3339,
            "reason": {"type": "string", "maxLength": 1024},
            "message": {"type": "string", "maxLength": 32768},
        },
    }


def _transition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["revision", "to", "reason", "at"],
        "properties": {
            "revision": {"type": "integer", "format": "int64", "minimum": 1},
            "from": {"type": "string", "enum": ["", *(p.value for p in Phase)]},
            "to": {"type": "string", "enum": [p.value for p in Phase]},
            "reason": {"type": "string", "enum": [r.value for r in Reason]},
            "actor": {"type": "string", "maxLength": 128},
            "at": _RFC3339,
        },
    }


def spec_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["botId", "userId"],
        "properties": {
            "botId": _id_field("The bot this session belongs to (immutable)."),
            "userId": _id_field("The user (chat) of the session (immutable)."),
            "phoneNumber": {
                "type": "string",
                "pattern": r"^[0-9]{5,20}$",
                "description": "Digits only.",
            },
            "displayName": {"type": "string", "maxLength": 256},
            "sessionId": {"type": "string", "maxLength": 256},
            "ttlSeconds": {
                "type": "integer",
                "minimum": 1,
                "maximum": 31536000,
                "description": "Overrides the configured session TTL for this session.",
            },
            "heartbeatTimeoutSeconds": {
                "type": "integer",
                "minimum": 0,
                "maximum": 86400,
                "description": "Overrides the configured heartbeat timeout for this session: "
                "active, heartbeating, then silent this long becomes inactive "
                "(HeartbeatLost). 0: never.",
            },
        },
    }


def status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": [p.value for p in Phase]},
            "reason": {"type": "string", "enum": [r.value for r in Reason]},
            "message": {"type": "string", "maxLength": 1024},
            "revision": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "Incremented by every phase change (compare-and-swap).",
            },
            "incarnation": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "Set with the first phase (epoch milliseconds): a BotSession "
                "created again for the same user is a new incarnation, newer in Redis and "
                "the database than the deleted one whatever their revisions.",
            },
            "lastSeen": _RFC3339,
            "expiresAt": _RFC3339,
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
            "syncedRevision": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "The revision the controller has copied to Redis and the "
                "database (and announced as an Event).",
            },
            "recentTransitions": {
                "type": "array",
                "maxItems": 10,
                "description": "The last transitions, oldest first; the controller backfills "
                "the database's history from them.",
                "items": _transition_schema(),
            },
            "conditions": {
                "type": "array",
                "maxItems": 8,
                "items": _condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }


def _column(name: str, path: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
    if priority:
        column["priority"] = priority
    return column


PRINTER_COLUMNS = [
    _column("Status", ".status.phase"),
    _column("Bot", ".spec.botId"),
    _column("User", ".spec.userId"),
    _column("Last Seen", ".status.lastSeen", "date"),
    _column("Expires", ".status.expiresAt"),  # a future time: "date" would print <invalid>
    _column("Age", ".metadata.creationTimestamp", "date"),
    _column("Reason", ".status.reason", priority=1),
    _column("Revision", ".status.revision", "integer", priority=1),
    _column("Session", ".spec.sessionId", priority=1),
    _column("Synced", '.status.conditions[?(@.type=="Synced")].status', priority=1),
]


def crd() -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "x-kubernetes-validations": [
            {
                "rule": first_phase_rule(),
                "message": "a session's first phase must be connecting",
                "reason": "FieldValueForbidden",
                "fieldPath": ".status.phase",
            },
            {
                "rule": transition_rule(),
                "message": "this phase transition (or its reason) is not allowed; see the "
                "transition table in docs/architecture.md",
                "reason": "FieldValueForbidden",
                "fieldPath": ".status.phase",
            },
            {
                "rule": REVISION_RULE,
                "message": "status.revision must never decrease and must increase with "
                "every phase change",
                "reason": "FieldValueInvalid",
                "fieldPath": ".status.revision",
            },
            {
                "rule": INCARNATION_RULE,
                "message": "status.incarnation is immutable once set",
                "reason": "FieldValueInvalid",
                "fieldPath": ".status.incarnation",
            },
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "botsession-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


HEADER = (
    "# Generated from sessions/adapters/kubernetes/crd.py\n"
    "# (the transition table of sessions/domain/model.py).\n"
    "# Do not edit by hand: run `botsession crd > crds/botsessions.yaml`.\n"
)


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)
