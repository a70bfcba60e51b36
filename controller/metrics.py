"""The operator's Prometheus metrics (served on BOTSESSION_METRICS_PORT, default 9090)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from sessions.adapters.guard import guard_metrics

REGISTRY = CollectorRegistry()

SESSIONS = Gauge("botsession_sessions", "BotSessions by phase", ["phase"], registry=REGISTRY)
TRANSITIONS = Counter(
    "botsession_transitions_total",
    "Phase transitions observed",
    ["from_phase", "to_phase", "reason"],
    registry=REGISTRY,
)
SWEEP_DURATION = Histogram(
    "botsession_sweep_duration_seconds",
    "Duration of expiry sweeps",
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
SWEEP_REMOVED = Counter(
    "botsession_sweep_removed_total",
    "Sessions the sweep removed from Redis",
    ["why"],
    registry=REGISTRY,
)
SWEEP_FAILURES = Counter(
    "botsession_sweep_failures_total", "Failed sweeps (alert on this)", registry=REGISTRY
)
SWEEP_LAST_SUCCESS = Gauge(
    "botsession_sweep_last_success_timestamp_seconds",
    "When the last sweep succeeded",
    registry=REGISTRY,
)
SWEEP_LEADER = Gauge(
    "botsession_sweep_leader", "1 on the replica holding the sweep lease", registry=REGISTRY
)
PREFIX_SHARED = Gauge(
    "botsession_redis_prefix_shared",
    "1 while the housekeeping lease under this Redis key prefix is held by an installation "
    "in another namespace (each needs its own BOTSESSION_REDIS_KEY_PREFIX)",
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "botsession_reconcile_errors_total", "Errors while reconciling", ["stage"], registry=REGISTRY
)
HEALED = Counter(
    "botsession_healed_total",
    "Sessions restored into a store from BotSessions",
    ["store"],
    registry=REGISTRY,
)
ORPHANED_KEYS = Gauge(
    "botsession_orphaned_redis_keys",
    "session:* hashes that no BotSession owns (left alone)",
    registry=REGISTRY,
)
STUCK_CONNECTING = Gauge(
    "botsession_connecting_oldest_seconds",
    "Age of the oldest session in connecting",
    registry=REGISTRY,
)


HANDLED_OBJECTS = Counter(
    "botsession_handled_objects_total",
    "BotSessions handled at least once since the operator started (after a restart, all "
    "are resumed when this reaches their number)",
    registry=REGISTRY,
)


GUARDS = guard_metrics(REGISTRY, "botsession")


def serve(port: int) -> None:
    if port:
        start_http_server(port, registry=REGISTRY)


STALE_SYNCS = Counter(
    "botsession_stale_syncs_total",
    "Syncs whose status was not written because the BotSession had moved on to a newer "
    "revision meanwhile (a stale body, e.g. while an operator hands over to its successor)",
    registry=REGISTRY,
)
CAUGHT_UP = Counter(
    "botsession_caught_up_total",
    "BotSessions synced by the catch-up because kopf's queue had not reached them within "
    "BOTSESSION_CATCH_UP_AFTER (controller.catch_up)",
    registry=REGISTRY,
)
LAST_SEEN_COPIED = Counter(
    "botsession_last_seen_copied_total",
    "BotSessions whose lastSeen was copied from Redis (API-server writes; at most "
    "BOTSESSION_LAST_SEEN_WRITES_PER_SECOND)",
    registry=REGISTRY,
)
LAST_SEEN_UNSYNCED = Gauge(
    "botsession_last_seen_unsynced",
    "Sessions with a heartbeat whose lastSeen is not yet copied to their BotSession (a "
    "backlog that keeps growing means the write budget is too small for the sessions)",
    registry=REGISTRY,
)
EVENTS_DROPPED = Counter(
    "botsession_events_dropped_total",
    "Transition Events not posted because the operator was past BOTSESSION_EVENTS_PER_SECOND "
    "(the transitions are in the history all the same)",
    registry=REGISTRY,
)
HEARTBEATS_LOST = Counter(
    "botsession_heartbeats_lost_total",
    "Active sessions made inactive (HeartbeatLost) because they heartbeated and then stayed "
    "silent past their heartbeat timeout",
    registry=REGISTRY,
)
HEARTBEATING = Gauge(
    "botsession_heartbeat_deadlines",
    "Active sessions that heartbeat (each has a deadline; past it, its heartbeat is lost)",
    registry=REGISTRY,
)
HEARTBEAT_LOSS_PAUSED = Gauge(
    "botsession_heartbeat_loss_paused",
    "1 while heartbeat-loss detection waits because bots could not be heard (no API replica "
    "serving, or one heartbeat timeout after that)",
    registry=REGISTRY,
)
WEBHOOK_DELIVERED = Counter(
    "botsession_webhook_deliveries_total",
    "Session events a webhook endpoint took (a 2xx answer)",
    ["endpoint"],
    registry=REGISTRY,
)
WEBHOOK_FAILED_ATTEMPTS = Counter(
    "botsession_webhook_failed_attempts_total",
    "Webhook attempts that failed (no answer in time, no connection, not 2xx); each is retried",
    ["endpoint"],
    registry=REGISTRY,
)
WEBHOOK_GIVEN_UP = Counter(
    "botsession_webhook_given_up_total",
    "Session events given up after retrying for BOTSESSION_WEBHOOK_RETRY_WINDOW (alert on this)",
    ["endpoint"],
    registry=REGISTRY,
)
WEBHOOK_WAITING = Gauge(
    "botsession_webhook_waiting_seconds",
    "How long the oldest event an endpoint has not taken yet has waited (0: caught up)",
    ["endpoint"],
    registry=REGISTRY,
)
